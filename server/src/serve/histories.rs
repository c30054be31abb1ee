//! Users' histories as the feed reads them: the data set's events, then the events stored since.
//! The event store is the truth; this is its in-memory index, rebuilt from it at start and kept
//! current by the store's writer before each acknowledgement.

use std::collections::HashMap;
use std::sync::RwLock;

use onerec_core::api::{EventKind, StoredEvent, UserEvent};
use onerec_core::data::served;
use onerec_core::data::{Event, User};

use super::engine::Catalogue;

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
    /// Positive events per item while serving (a like, a high rating, a long watch), less the
    /// likes taken back: what the fresh slots rank items added while serving by.
    chosen: HashMap<String, u32>,
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
        let Index { stored, chosen, new_users } = &mut *index;
        for e in events {
            let history = stored.entry(e.user.clone()).or_insert_with(|| {
                if catalogue.user(&e.user).is_none() {
                    new_users.push(e.user.clone());
                }
                Vec::new()
            });
            let event = &e.event;
            match served::feedback(event.kind, event.value) {
                Some(feedback) if feedback.is_positive() => *chosen.entry(event.item.clone()).or_default() += 1,
                Some(_) => {}
                None => {
                    let undone = history
                        .iter()
                        .rev()
                        .find(|x| x.item == event.item && matches!(x.kind, EventKind::Like | EventKind::Skip));
                    if undone.is_some_and(|x| x.kind == EventKind::Like)
                        && let Some(n) = chosen.get_mut(&event.item)
                    {
                        *n = n.saturating_sub(1);
                    }
                }
            }
            history.push(event.clone());
        }
    }

    /// How many positive events `item` has had while serving (see `Index::chosen`).
    pub fn chosen(&self, item: &str) -> u32 {
        self.index.read().expect("history lock").chosen.get(item).copied().unwrap_or(0)
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

    /// Every stored event, users in id order, each user's in write order.
    pub fn all(&self) -> Vec<UserEvent> {
        let index = self.index.read().expect("history lock");
        let mut users: Vec<&String> = index.stored.keys().collect();
        users.sort_unstable();
        users
            .into_iter()
            .flat_map(|user| {
                index.stored[user].iter().map(|event| UserEvent { user: user.clone(), event: event.clone() })
            })
            .collect()
    }

    /// A page of the users known only through stored events, in the order they appeared, and
    /// how many there are.
    pub fn new_users(&self, offset: usize, limit: usize) -> (Vec<String>, usize) {
        let index = self.index.read().expect("history lock");
        let page = index.new_users.iter().skip(offset).take(limit).cloned().collect();
        (page, index.new_users.len())
    }
}

/// Appends a user's stored events to `events` as the model reads them (`served::replay`).
fn replay<'a>(
    catalogue: &Catalogue,
    stored: impl IntoIterator<Item = &'a StoredEvent>,
    user: u32,
    events: &mut Vec<Event>,
) {
    served::replay(|id| catalogue.item(id), stored, user, events);
}
