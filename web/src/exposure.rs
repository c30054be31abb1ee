//! What the feed showed, and for how long. A card at least half on screen for the first time on
//! this page is an `impression`; when it leaves the screen, or the feed (liked, skipped, replaced),
//! or the page is hidden (another tab, a minimised window, leaving), the seconds it stayed are a
//! `watch_time` (dwell), if there was at least [`MIN_DWELL_SECS`] of it. When the page is shown
//! again, the cards still on screen start a new stay: time behind another tab is not dwell.
//!
//! The server counts both in the experiment's online metrics (impressions, watch time), and its
//! model reads a card's impression, dwell and like or skip as one exposure with its feedback
//! (`onerec_core::data::served`), so these reports do not crowd the history. One
//! `IntersectionObserver` watches every card; the app is single-threaded, so its state is a
//! thread-local.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use crate::store::now_secs;
use js_sys::Array;
use onerec_core::api::EventKind;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::Closure;
use web_sys::{Element, IntersectionObserver, IntersectionObserverEntry, IntersectionObserverInit};

/// Shorter stays are a card scrolled past, not one looked at.
pub const MIN_DWELL_SECS: f64 = 1.0;
/// The share of a card that must be on screen for it to count as shown.
const VISIBLE: f64 = 0.5;

/// Sends one event about an item: its kind, and the value a watch time needs.
pub type Report = Rc<dyn Fn(&str, EventKind, Option<f32>)>;

struct Tracker {
    observer: IntersectionObserver,
    report: Report,
    /// Items whose impression was sent, on this page.
    impressed: HashSet<String>,
    /// Items on screen now, and since when (seconds).
    since: HashMap<String, f64>,
    /// Whether the page is hidden; while it is, cards on screen are not being looked at.
    page_hidden: bool,
    /// Items on screen while the page is hidden: their stays start when it is shown again.
    paused: HashSet<String>,
}

thread_local! {
    static TRACKER: RefCell<Option<Tracker>> = const { RefCell::new(None) };
}

/// Starts watching for cards; `report` sends each event.
pub fn start(report: Report) {
    let on_change = Closure::<dyn Fn(Array)>::new(|entries: Array| {
        for entry in entries.iter() {
            let entry: IntersectionObserverEntry = entry.unchecked_into();
            let card = entry.target();
            let Some(id) = card.get_attribute("data-id") else { continue };
            if !card.is_connected() {
                // Gone from the page: nothing more to watch.
                TRACKER.with(|t| t.borrow().as_ref().map(|t| t.observer.unobserve(&card)));
            }
            if entry.is_intersecting() && entry.intersection_ratio() >= VISIBLE {
                shown(&id);
            } else {
                hidden(&id);
            }
        }
    });
    let init = IntersectionObserverInit::new();
    init.set_threshold(&VISIBLE.into());
    let Ok(observer) = IntersectionObserver::new_with_options(on_change.as_ref().unchecked_ref(), &init) else {
        web_sys::console::warn_1(&"no IntersectionObserver: impressions and dwell are not reported".into());
        return;
    };
    // The observer lives as long as the page.
    on_change.forget();
    TRACKER.with(|t| {
        *t.borrow_mut() = Some(Tracker {
            observer,
            report,
            impressed: HashSet::new(),
            since: HashMap::new(),
            page_hidden: false,
            paused: HashSet::new(),
        })
    });
}

/// Watches a card (an element with `data-id`) from now on.
pub fn observe(card: &Element) {
    TRACKER.with(|t| {
        if let Some(t) = t.borrow().as_ref() {
            t.observer.observe(card);
        }
    });
}

/// A card left the feed: its stay on screen ends.
pub fn removed(id: &str) {
    hidden(id);
}

/// The page was hidden: every stay on screen ends, and its card waits for the page to be shown.
pub fn page_hidden() {
    let on_screen: Vec<String> = TRACKER.with(|t| {
        let mut t = t.borrow_mut();
        let Some(t) = t.as_mut() else { return Vec::new() };
        t.page_hidden = true;
        t.paused.extend(t.since.keys().cloned());
        t.since.keys().cloned().collect()
    });
    for id in on_screen {
        end_stay(&id);
    }
}

/// The page was shown again: the cards on screen start a new stay.
pub fn page_shown() {
    TRACKER.with(|t| {
        let mut t = t.borrow_mut();
        let Some(t) = t.as_mut() else { return };
        t.page_hidden = false;
        let now = now_secs();
        for id in std::mem::take(&mut t.paused) {
            t.since.insert(id, now);
        }
    });
}

fn shown(id: &str) {
    let first = TRACKER.with(|t| {
        let mut t = t.borrow_mut();
        let Some(t) = t.as_mut() else { return false };
        if t.page_hidden {
            t.paused.insert(id.to_string());
        } else {
            t.since.entry(id.to_string()).or_insert_with(now_secs);
        }
        t.impressed.insert(id.to_string())
    });
    if first {
        send(id, EventKind::Impression, None);
    }
}

/// A card left the screen.
fn hidden(id: &str) {
    TRACKER.with(|t| t.borrow_mut().as_mut().map(|t| t.paused.remove(id)));
    end_stay(id);
}

/// A stay on screen ends: its dwell is reported when it was long enough.
fn end_stay(id: &str) {
    let stayed = TRACKER.with(|t| t.borrow_mut().as_mut().and_then(|t| t.since.remove(id)).map(|at| now_secs() - at));
    if let Some(secs) = stayed.filter(|&s| s >= MIN_DWELL_SECS) {
        send(id, EventKind::WatchTime, Some(((secs * 10.0).round() / 10.0) as f32));
    }
}

/// Reports outside the tracker's borrow: sending updates signals, which may render cards again.
fn send(id: &str, kind: EventKind, value: Option<f32>) {
    if let Some(report) = TRACKER.with(|t| t.borrow().as_ref().map(|t| t.report.clone())) {
        report(id, kind, value);
    }
}
