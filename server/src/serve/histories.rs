//! Users' histories as the feed reads them: the data set's events, then the events stored since.
//! The event store is the truth; this is its in-memory index, rebuilt from it at start and kept
//! current by the store's writer before each acknowledgement.

use std::collections::HashMap;
use std::sync::RwLock;

use onerec_core::api::{EventKind, StoredEvent};
use onerec_core::data::{Event, Feedback, ItemIdx, User};

use super::engine::Catalogue;
use super::store::UserEvent;

/// Stands in for the data set's user index in events of users the data set does not have; the
/// model never reads it.
const NEW_USER: u32 = u32::MAX;

#[derive(Default)]
pub struct Histories {
    index: RwLock<Index>,
}

#[derive(Default)]
struct Index {
    stored: HashMap<String, Vec<StoredEvent>>,
    /// Users the data set does not have, in the order their first event came: a stable order
    /// that pages without sorting.
    new_users: Vec<String>,
}

/// Events per history page unless asked otherwise, and the most a page holds.
pub const HISTORY_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;

impl Histories {
    /// Records committed events (in write order).
    pub fn apply(&self, catalogue: &Catalogue, events: &[UserEvent]) {
        let mut index = self.index.write().expect("history lock");
        let Index { stored, new_users } = &mut *index;
        for e in events {
            let history = stored.entry(e.user.clone()).or_insert_with(|| {
                if catalogue.user(&e.user).is_none() {
                    new_users.push(e.user.clone());
                }
                Vec::new()
            });
            history.push(e.event.clone());
        }
    }

    /// The user and their whole history, oldest first, or `None` for a user nobody knows.
    pub fn history(&self, catalogue: &Catalogue, id: &str) -> Option<(User, Vec<Event>)> {
        let index = catalogue.user(id);
        let stored = self.index.read().expect("history lock");
        let recent = stored.stored.get(id);
        if index.is_none() && recent.is_none() {
            return None;
        }
        let (user, mut events) = match index {
            Some(u) => (catalogue.dataset.users[u as usize].clone(), catalogue.dataset.user_events(u).to_vec()),
            None => (User { id: id.to_string(), features: Vec::new() }, Vec::new()),
        };
        replay(catalogue, recent.into_iter().flatten(), index.unwrap_or(NEW_USER), &mut events);
        Some((user, events))
    }

    /// A page of the events stored for a user since the data set, newest first, starting below
    /// `before` (a position in the user's append-only list, so a cursor stays valid while new
    /// events arrive), and the cursor of the next page. `None` for an unknown user.
    pub fn recent(
        &self,
        catalogue: &Catalogue,
        id: &str,
        before: Option<usize>,
        limit: usize,
    ) -> Option<(Vec<StoredEvent>, Option<usize>)> {
        let index = self.index.read().expect("history lock");
        let Some(events) = index.stored.get(id) else {
            return catalogue.user(id).map(|_| (Vec::new(), None));
        };
        let end = before.unwrap_or(events.len()).min(events.len());
        let start = end.saturating_sub(limit);
        let page = events[start..end].iter().rev().cloned().collect();
        Some((page, (start > 0).then_some(start)))
    }

    /// The stored events of every user as the model reads them (an undo takes its like or skip
    /// back), for the "popular now" counts.
    pub fn served(&self, catalogue: &Catalogue) -> Vec<Event> {
        let index = self.index.read().expect("history lock");
        let mut events = Vec::new();
        for stored in index.stored.values() {
            let mut user = Vec::new();
            replay(catalogue, stored, NEW_USER, &mut user);
            events.append(&mut user);
        }
        events
    }

    /// A page of the users known only through stored events, in the order they appeared, and
    /// how many there are.
    pub fn new_users(&self, offset: usize, limit: usize) -> (Vec<String>, usize) {
        let index = self.index.read().expect("history lock");
        let page = index.new_users.iter().skip(offset).take(limit).cloned().collect();
        (page, index.new_users.len())
    }
}

/// Appends stored events to `events` as the model reads them: events of items outside the
/// catalogue are skipped, and an undo takes back the like or skip it undoes.
fn replay<'a>(
    catalogue: &Catalogue,
    stored: impl IntoIterator<Item = &'a StoredEvent>,
    user: u32,
    events: &mut Vec<Event>,
) {
    for e in stored {
        let Some(item) = catalogue.item(&e.item) else { continue };
        match feedback(e.kind, e.value) {
            Some(feedback) => events.push(Event { user, item, timestamp: e.timestamp, feedback }),
            None => take_back(events, item),
        }
    }
}

/// The model's feedback for an API event; `value` has been validated for the kinds that need it.
/// `None` for an undo, which is no feedback but the removal of one.
fn feedback(kind: EventKind, value: Option<f32>) -> Option<Feedback> {
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

/// An undo: the latest like or skip of `item` leaves the history the model reads. The stored
/// events keep both, so `/history` still shows what happened.
fn take_back(events: &mut Vec<Event>, item: ItemIdx) {
    if let Some(i) =
        events.iter().rposition(|e| e.item == item && matches!(e.feedback, Feedback::Like | Feedback::Skip))
    {
        events.remove(i);
    }
}
