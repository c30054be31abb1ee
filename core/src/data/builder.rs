//! Collects rows from any loader into a [`Dataset`]: interns ids, orders events, reports guesses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::slice::ParallelSliceMut;

use super::{Dataset, Event, Feedback, Item, ItemIdx, SplitRule, User, UserIdx};
use crate::error::{Error, Result};

/// How many examples of one kind of warning are kept before only counting.
const WARNING_EXAMPLES: usize = 5;

/// Where a row came from, so that errors and warnings can name it.
#[derive(Clone, Debug)]
pub struct Origin {
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
}

impl Origin {
    pub fn new(path: impl AsRef<Path>, line: usize) -> Self {
        Origin { path: path.as_ref().to_path_buf(), line }
    }

    /// A parse error at this row.
    pub fn error(&self, message: impl Into<String>) -> Error {
        Error::parse(&self.path, self.line, message)
    }
}

/// Accumulates a data set row by row, in file order.
#[derive(Default)]
pub struct DatasetBuilder {
    items: Vec<Item>,
    item_index: HashMap<String, ItemIdx>,
    /// Whether an item catalogue was loaded; only then is an unknown item in the log worth a warning.
    has_catalogue: bool,
    users: Vec<User>,
    user_index: HashMap<String, UserIdx>,
    events: Vec<Event>,
    unknown_items: Vec<String>,
    unknown_item_count: usize,
    warnings: Vec<String>,
}

impl DatasetBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a catalogue item; a second row with the same id is an error.
    pub fn add_item(&mut self, item: Item, origin: &Origin) -> Result<ItemIdx> {
        self.has_catalogue = true;
        if self.item_index.contains_key(&item.id) {
            return Err(origin.error(format!("duplicate item id {:?}", item.id)));
        }
        let idx = self.items.len() as ItemIdx;
        self.item_index.insert(item.id.clone(), idx);
        self.items.push(item);
        Ok(idx)
    }

    /// Adds a user with static features; a second row with the same id is an error.
    pub fn add_user(&mut self, user: User, origin: &Origin) -> Result<UserIdx> {
        if let Some(&idx) = self.user_index.get(&user.id) {
            let existing = &mut self.users[idx as usize];
            if !existing.features.is_empty() {
                return Err(origin.error(format!("duplicate user id {:?}", user.id)));
            }
            existing.features = user.features;
            return Ok(idx);
        }
        let idx = self.users.len() as UserIdx;
        self.user_index.insert(user.id.clone(), idx);
        self.users.push(user);
        Ok(idx)
    }

    /// Appends an interaction. An item missing from a loaded catalogue is added without metadata
    /// and reported, never dropped silently.
    pub fn add_event(&mut self, user: &str, item: &str, timestamp: i64, feedback: Feedback, origin: &Origin) {
        let user = self.user_idx(user);
        let item = match self.item_index.get(item) {
            Some(&idx) => idx,
            None => {
                if self.has_catalogue {
                    self.unknown_item_count += 1;
                    if self.unknown_items.len() < WARNING_EXAMPLES {
                        self.unknown_items.push(format!("{}:{} item {item:?}", origin.path.display(), origin.line));
                    }
                }
                let idx = self.items.len() as ItemIdx;
                self.item_index.insert(item.to_string(), idx);
                self.items.push(Item { id: item.to_string(), ..Item::default() });
                idx
            }
        };
        self.events.push(Event { user, item, timestamp, feedback });
    }

    /// Records something the loader assumed, to be shown to the user with the data set.
    pub fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }

    fn user_idx(&mut self, id: &str) -> UserIdx {
        if let Some(&idx) = self.user_index.get(id) {
            return idx;
        }
        let idx = self.users.len() as UserIdx;
        self.user_index.insert(id.to_string(), idx);
        self.users.push(User { id: id.to_string(), features: Vec::new() });
        idx
    }

    /// Orders events by user then time (a stable sort, so ties keep file order) and indexes users.
    pub fn finish(mut self, name: &str) -> Result<Dataset> {
        if self.events.is_empty() {
            return Err(Error::invalid(name, "the data set has no interactions"));
        }
        if self.unknown_item_count > 0 {
            self.warnings.push(format!(
                "{} interaction(s) name items missing from the item file; they were kept without title or tags (first: {})",
                self.unknown_item_count,
                self.unknown_items.join(", ")
            ));
        }
        self.events.par_sort_by_key(|e| (e.user, e.timestamp));
        let mut user_start = vec![0usize; self.users.len() + 1];
        for e in &self.events {
            user_start[e.user as usize + 1] += 1;
        }
        for u in 0..self.users.len() {
            user_start[u + 1] += user_start[u];
        }
        Ok(Dataset {
            name: name.to_string(),
            items: self.items,
            users: self.users,
            events: self.events,
            user_start,
            warnings: self.warnings,
            split_rule: SplitRule::LeaveOneOut,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_in_time_keep_file_order() {
        let mut b = DatasetBuilder::new();
        let o = Origin::new("log", 1);
        b.add_event("u", "late", 10, Feedback::Click, &o);
        b.add_event("u", "tie-first", 5, Feedback::Click, &o);
        b.add_event("v", "x", 1, Feedback::Click, &o);
        b.add_event("u", "tie-second", 5, Feedback::Click, &o);
        let ds = b.finish("log").unwrap();
        let ids: Vec<&str> = ds.user_events(0).iter().map(|e| ds.items[e.item as usize].id.as_str()).collect();
        assert_eq!(ids, ["tie-first", "tie-second", "late"]);
        assert_eq!(ds.user_events(1).len(), 1);
    }

    #[test]
    fn unknown_items_are_reported_and_duplicates_refused() {
        let mut b = DatasetBuilder::new();
        b.add_item(Item { id: "1".into(), ..Item::default() }, &Origin::new("items", 2)).unwrap();
        let err = b.add_item(Item { id: "1".into(), ..Item::default() }, &Origin::new("items", 3)).unwrap_err();
        assert_eq!(err.to_string(), "items:3: duplicate item id \"1\"");
        b.add_event("u", "2", 0, Feedback::Like, &Origin::new("log", 7));
        let ds = b.finish("d").unwrap();
        assert_eq!(ds.n_items(), 2);
        assert!(ds.warnings[0].contains("log:7 item \"2\""), "{:?}", ds.warnings);
    }

    #[test]
    fn an_empty_log_is_an_error() {
        let err = DatasetBuilder::new().finish("empty.inter").unwrap_err();
        assert!(err.to_string().contains("no interactions"));
    }
}
