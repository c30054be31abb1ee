//! Users' histories as the feed reads them: the data set's events, then the events stored since.
//! The event store is the truth; this is its in-memory index, rebuilt from it at start and kept
//! current by the store's writer before each acknowledgement.

use std::collections::HashMap;
use std::sync::RwLock;

use onerec_core::api::{EventKind, StoredEvent};
use onerec_core::data::{Event, Feedback, User};

use super::engine::Catalogue;
use super::store::UserEvent;

/// Stands in for the data set's user index in events of users the data set does not have; the
/// model never reads it.
const NEW_USER: u32 = u32::MAX;

#[derive(Default)]
pub struct Histories {
    stored: RwLock<HashMap<String, Vec<StoredEvent>>>,
}

impl Histories {
    /// Records committed events (in write order).
    pub fn apply(&self, events: &[UserEvent]) {
        let mut stored = self.stored.write().expect("history lock");
        for e in events {
            stored.entry(e.user.clone()).or_default().push(e.event.clone());
        }
    }

    /// The user and their whole history, oldest first, or `None` for a user nobody knows.
    pub fn history(&self, catalogue: &Catalogue, id: &str) -> Option<(User, Vec<Event>)> {
        let index = catalogue.user(id);
        let stored = self.stored.read().expect("history lock");
        let recent = stored.get(id);
        if index.is_none() && recent.is_none() {
            return None;
        }
        let (user, mut events) = match index {
            Some(u) => (catalogue.dataset.users[u as usize].clone(), catalogue.dataset.user_events(u).to_vec()),
            None => (User { id: id.to_string(), features: Vec::new() }, Vec::new()),
        };
        let user_index = index.unwrap_or(NEW_USER);
        events.extend(recent.into_iter().flatten().filter_map(|e| {
            Some(Event {
                user: user_index,
                item: catalogue.item(&e.item)?,
                timestamp: e.timestamp,
                feedback: feedback(e.kind, e.value),
            })
        }));
        Some((user, events))
    }

    /// The events stored for a user since the data set, newest first; `None` for an unknown user.
    pub fn recent(&self, catalogue: &Catalogue, id: &str) -> Option<Vec<StoredEvent>> {
        let stored = self.stored.read().expect("history lock");
        match stored.get(id) {
            Some(events) => Some(events.iter().rev().cloned().collect()),
            None => catalogue.user(id).map(|_| Vec::new()),
        }
    }

    /// Ids of the users who exist only through stored events, sorted.
    pub fn new_users(&self, catalogue: &Catalogue) -> Vec<String> {
        let stored = self.stored.read().expect("history lock");
        let mut users: Vec<String> = stored.keys().filter(|u| catalogue.user(u).is_none()).cloned().collect();
        users.sort();
        users
    }
}

/// The model's feedback for an API event; `value` has been validated for the kinds that need it.
fn feedback(kind: EventKind, value: Option<f32>) -> Feedback {
    match kind {
        EventKind::Impression => Feedback::Impression,
        EventKind::Click => Feedback::Click,
        EventKind::Like => Feedback::Like,
        EventKind::Skip => Feedback::Skip,
        EventKind::Rating => Feedback::Rating(value.unwrap_or(0.0)),
        EventKind::WatchTime => Feedback::WatchTime(value.unwrap_or(0.0)),
    }
}
