//! Events a server stored, as the model reads them. The server replays them onto the histories
//! it serves, and training on served events replays them onto the log, through this one mapping,
//! so that a fine-tuned model learns from exactly what the served model saw.

use std::collections::HashMap;

use super::{Dataset, Event, Feedback, ItemIdx, User, UserIdx};
use crate::api::{EventKind, StoredEvent, UserEvent};

/// The model's feedback for an API event; the server validated `value` for the kinds that need
/// it. `None` for an undo, which takes feedback back rather than adding any.
pub fn feedback(kind: EventKind, value: Option<f32>) -> Option<Feedback> {
    Some(match kind {
        EventKind::Impression => Feedback::Impression,
        EventKind::Click => Feedback::Click,
        EventKind::Like => Feedback::Like,
        EventKind::Skip => Feedback::Skip,
        EventKind::Rating => Feedback::Rating(value.unwrap_or(0.0)),
        EventKind::WatchTime => Feedback::WatchTime(value.unwrap_or(0.0)),
        EventKind::Undo => return None,
    })
}

/// Appends `user`'s stored events to `events`, in write order, as the model reads them, and
/// returns how many were skipped because `item_index` does not know their item:
/// - an undo takes back the latest like or skip of its item;
/// - an item's impression and what follows it are **one exposure**, one event, as OneRec reads an
///   exposure with its feedback: the impression becomes the feedback, watch times add up, and
///   explicit feedback (like, skip, rating, click) outranks watch time, which outranks an
///   impression. So a feed that reports every card it shows, and how long it stayed on screen,
///   does not crowd the history with one event per report. Only the events replayed in this call
///   merge: a logged event is an exposure of its own.
pub fn replay<'a>(
    item_index: impl Fn(&str) -> Option<ItemIdx>,
    stored: impl IntoIterator<Item = &'a StoredEvent>,
    user: UserIdx,
    events: &mut Vec<Event>,
) -> usize {
    let served_from = events.len();
    let mut skipped = 0;
    for e in stored {
        let Some(item) = item_index(&e.item) else {
            skipped += 1;
            continue;
        };
        let Some(feedback) = feedback(e.kind, e.value) else {
            take_back(events, item);
            continue;
        };
        let last = events[served_from..].iter().rposition(|e| e.item == item).map(|i| served_from + i);
        match last.and_then(|i| same_exposure(events[i].feedback, feedback).map(|merged| (i, merged))) {
            Some((i, merged)) => events[i].feedback = merged,
            None => events.push(Event { user, item, timestamp: e.timestamp, feedback }),
        }
    }
    skipped
}

/// What an item's latest served event `last` becomes when `next` reports on the same exposure;
/// `None` when `next` is a decision of its own (a like after a skip, say).
fn same_exposure(last: Feedback, next: Feedback) -> Option<Feedback> {
    use Feedback::{Impression, WatchTime};
    match (last, next) {
        (Impression, next) => Some(next),
        (WatchTime(a), WatchTime(b)) => Some(WatchTime(a + b)),
        (WatchTime(_), Impression) => Some(last),
        (WatchTime(_), explicit) => Some(explicit),
        (explicit, Impression | WatchTime(_)) => Some(explicit),
        _ => None,
    }
}

/// An undo: the latest like or skip of `item` leaves the history the model reads. The stored
/// events keep both, so the server's `/history` still shows what happened.
fn take_back(events: &mut Vec<Event>, item: ItemIdx) {
    if let Some(i) =
        events.iter().rposition(|e| e.item == item && matches!(e.feedback, Feedback::Like | Feedback::Skip))
    {
        events.remove(i);
    }
}

/// What [`Dataset::with_served`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServedMerge {
    /// Stored events read.
    pub read: usize,
    /// Events the log gained: those read, less undos, the likes and skips they took back, the
    /// reports merged into an exposure, and the skipped ones.
    pub added: usize,
    /// Users the data set did not have; they join without static features.
    pub new_users: usize,
    /// Events of items outside the catalogue, left out.
    pub unknown_items: usize,
}

impl Dataset {
    /// This data set with the events a server stored since added to its users' logs, so that
    /// training learns from what was served. Each user's stored events are replayed in write
    /// order after their logged ones (as the server's histories do), then the user's log is put
    /// back in time order, stably, so that a tie keeps log order. The split rule is kept.
    pub fn with_served(&self, served: &[UserEvent]) -> (Dataset, ServedMerge) {
        let items: HashMap<&str, ItemIdx> =
            self.items.iter().enumerate().map(|(i, item)| (item.id.as_str(), i as ItemIdx)).collect();
        let mut users = self.users.clone();
        let mut user_index: HashMap<String, UserIdx> =
            users.iter().enumerate().map(|(u, user)| (user.id.clone(), u as UserIdx)).collect();
        let mut logs: Vec<Vec<Event>> = (0..self.n_users() as UserIdx).map(|u| self.user_events(u).to_vec()).collect();
        let mut merge = ServedMerge { read: served.len(), ..ServedMerge::default() };
        let mut stored: Vec<Vec<&StoredEvent>> = vec![Vec::new(); logs.len()];
        for e in served {
            let user = *user_index.entry(e.user.clone()).or_insert_with(|| {
                users.push(User { id: e.user.clone(), features: Vec::new() });
                logs.push(Vec::new());
                stored.push(Vec::new());
                merge.new_users += 1;
                (users.len() - 1) as UserIdx
            });
            stored[user as usize].push(&e.event);
        }
        for (user, (log, stored)) in logs.iter_mut().zip(stored).enumerate() {
            merge.unknown_items += replay(|id| items.get(id).copied(), stored, user as UserIdx, log);
        }
        let mut events = Vec::with_capacity(self.events.len() + served.len());
        let mut user_start = vec![0];
        for mut log in logs {
            log.sort_by_key(|e| e.timestamp);
            events.append(&mut log);
            user_start.push(events.len());
        }
        merge.added = events.len() - self.events.len();
        let mut warnings = self.warnings.clone();
        if merge.unknown_items > 0 {
            warnings
                .push(format!("{} served event(s) name items outside the catalogue; left out", merge.unknown_items));
        }
        let dataset = Dataset {
            name: self.name.clone(),
            items: self.items.clone(),
            users,
            events,
            user_start,
            warnings,
            split_rule: self.split_rule,
        };
        (dataset, merge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DatasetBuilder, Origin};

    fn stored(user: &str, item: &str, kind: EventKind, value: Option<f32>, timestamp: i64) -> UserEvent {
        let event_id = format!("{user}-{item}-{timestamp}");
        let event = StoredEvent { event_id, item: item.into(), kind, value, timestamp, request_id: None };
        UserEvent { user: user.into(), event }
    }

    fn log(ds: &Dataset, user: UserIdx) -> Vec<(String, i64, Feedback)> {
        ds.user_events(user).iter().map(|e| (ds.items[e.item as usize].id.clone(), e.timestamp, e.feedback)).collect()
    }

    #[test]
    fn served_events_join_the_log_as_the_server_replays_them() {
        let mut b = DatasetBuilder::new();
        let o = Origin::new("log", 1);
        for (user, item, t) in [("u", "a", 10), ("u", "b", 20), ("v", "a", 5)] {
            b.add_event(user, item, t, Feedback::Rating(4.0), &o);
        }
        let ds = b.finish("log").unwrap().cut_at_time_quantile(0.5);
        let served = [
            stored("u", "b", EventKind::Like, None, 30),
            stored("u", "a", EventKind::WatchTime, Some(42.0), 15),
            stored("new", "a", EventKind::Skip, None, 40),
            stored("u", "b", EventKind::Undo, None, 31),
            stored("u", "gone", EventKind::Click, None, 32),
            stored("new", "b", EventKind::Rating, Some(2.0), 41),
            stored("v", "b", EventKind::Impression, None, 5),
        ];
        let (merged, merge) = ds.with_served(&served);
        assert_eq!(merge, ServedMerge { read: 7, added: 4, new_users: 1, unknown_items: 1 });
        // The undo took the like back; the watch time sits in time order, before the rating at 20.
        assert_eq!(
            log(&merged, 0),
            [
                ("a".into(), 10, Feedback::Rating(4.0)),
                ("a".into(), 15, Feedback::WatchTime(42.0)),
                ("b".into(), 20, Feedback::Rating(4.0))
            ]
        );
        // A tie in time keeps the log's order: the logged event first.
        assert_eq!(log(&merged, 1), [("a".into(), 5, Feedback::Rating(4.0)), ("b".into(), 5, Feedback::Impression)]);
        assert_eq!(merged.users[2], User { id: "new".into(), features: vec![] });
        assert_eq!(log(&merged, 2), [("a".into(), 40, Feedback::Skip), ("b".into(), 41, Feedback::Rating(2.0))]);
        assert!((0..3).all(|u| merged.user_events(u).iter().all(|e| e.user == u)));
        assert_eq!((merged.items, merged.split_rule), (ds.items.clone(), ds.split_rule));
        assert!(merged.warnings.iter().any(|w| w.contains("1 served event(s)")), "{:?}", merged.warnings);
    }

    #[test]
    fn an_exposure_and_its_feedback_are_one_event() {
        let mut b = DatasetBuilder::new();
        let o = Origin::new("log", 1);
        for (item, t) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
            b.add_event("u", item, t, Feedback::Rating(3.0), &o);
        }
        let ds = b.finish("log").unwrap().cut_at_time_quantile(0.5);
        let e = |item: &str, kind, value, t| stored("u", item, kind, value, t);
        let served = [
            // Shown, watched twice, liked, watched again: one like.
            e("a", EventKind::Impression, None, 10),
            e("a", EventKind::WatchTime, Some(3.0), 11),
            e("a", EventKind::WatchTime, Some(4.0), 12),
            e("a", EventKind::Like, None, 13),
            e("a", EventKind::WatchTime, Some(2.0), 14),
            // Shown twice and watched: one watch time of the sum.
            e("b", EventKind::Impression, None, 15),
            e("b", EventKind::Impression, None, 16),
            e("b", EventKind::WatchTime, Some(5.0), 17),
            e("b", EventKind::WatchTime, Some(30.0), 18),
            // Shown and scrolled past: an impression.
            e("c", EventKind::Impression, None, 19),
            // Skipped, then liked: two decisions; an undo takes the like back.
            e("d", EventKind::Skip, None, 20),
            e("d", EventKind::Like, None, 21),
            e("d", EventKind::Undo, None, 22),
        ];
        let (merged, merge) = ds.with_served(&served);
        let logged: Vec<_> = log(&ds, 0);
        assert_eq!(log(&merged, 0)[..4], logged[..], "logged events are exposures of their own");
        assert_eq!(
            log(&merged, 0)[4..],
            [
                ("a".into(), 10, Feedback::Like),
                ("b".into(), 15, Feedback::WatchTime(35.0)),
                ("c".into(), 19, Feedback::Impression),
                ("d".into(), 20, Feedback::Skip)
            ]
        );
        assert_eq!(merge.added, 4);
        // The server's histories replay the same way.
        let items = |id: &str| ds.items.iter().position(|i| i.id == id).map(|i| i as ItemIdx);
        let mut history = Vec::new();
        replay(items, served.iter().map(|e| &e.event), 0, &mut history);
        let read: Vec<(i64, Feedback)> = history.iter().map(|e| (e.timestamp, e.feedback)).collect();
        let want: Vec<(i64, Feedback)> = log(&merged, 0)[4..].iter().map(|(_, t, f)| (*t, *f)).collect();
        assert_eq!(read, want);
    }
}
