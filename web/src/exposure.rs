//! What the feed showed, and for how long. A card at least half on screen for the first time on
//! this page is an `impression`; when it leaves the screen, or the feed (liked, skipped, replaced),
//! or the page is hidden, the seconds it stayed are a `watch_time` (dwell), if there was at least
//! [`MIN_DWELL_SECS`] of it.
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
        *t.borrow_mut() = Some(Tracker { observer, report, impressed: HashSet::new(), since: HashMap::new() })
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

/// The page was hidden: every stay on screen ends.
pub fn page_hidden() {
    let on_screen: Vec<String> =
        TRACKER.with(|t| t.borrow().as_ref().map(|t| t.since.keys().cloned().collect()).unwrap_or_default());
    for id in on_screen {
        hidden(&id);
    }
}

fn shown(id: &str) {
    let first = TRACKER.with(|t| {
        let mut t = t.borrow_mut();
        let Some(t) = t.as_mut() else { return false };
        t.since.entry(id.to_string()).or_insert_with(now_secs);
        t.impressed.insert(id.to_string())
    });
    if first {
        send(id, EventKind::Impression, None);
    }
}

fn hidden(id: &str) {
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
