//! Interaction logs and item catalogues: the [`Dataset`] every later stage reads.
//!
//! Loaders for the supported formats live in submodules; they all feed a [`DatasetBuilder`],
//! which interns ids, keeps file order for timestamp ties and reports ids it had to guess.

mod builder;
pub mod csv;
pub mod fetch;
mod fields;
pub mod movielens;
pub mod recbole;
pub mod source;
pub mod stats;
pub mod synth;
mod table;

use serde::{Deserialize, Serialize};

pub use builder::{DatasetBuilder, Origin};
pub use source::{DataFormat, DataSource};

/// Dense index of an item in [`Dataset::items`].
pub type ItemIdx = u32;
/// Dense index of a user in [`Dataset::users`].
pub type UserIdx = u32;

/// What a user did with an item. Explicit ratings and implicit event kinds share one log.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Feedback {
    /// An explicit rating, on the scale of the source (1–5 for MovieLens).
    Rating(f32),
    Impression,
    Click,
    Like,
    Skip,
    /// Seconds watched.
    WatchTime(f32),
}

impl Feedback {
    /// Rating at or above which feedback counts as positive (MovieLens convention).
    pub const POSITIVE_RATING: f32 = 4.0;
    /// Seconds of watching that count as a positive signal.
    pub const POSITIVE_WATCH_SECONDS: f32 = 30.0;

    /// Whether this event says the user enjoyed the item; feeds the positive-history tokens.
    pub fn is_positive(self) -> bool {
        match self {
            Feedback::Rating(r) => r >= Self::POSITIVE_RATING,
            Feedback::Like => true,
            Feedback::WatchTime(s) => s >= Self::POSITIVE_WATCH_SECONDS,
            Feedback::Impression | Feedback::Click | Feedback::Skip => false,
        }
    }

    /// Parses an event kind such as `click` or `like`; `None` for anything else.
    pub fn from_kind(kind: &str) -> Option<Feedback> {
        match kind.trim().to_ascii_lowercase().as_str() {
            "impression" | "view" | "show" => Some(Feedback::Impression),
            "click" => Some(Feedback::Click),
            "like" => Some(Feedback::Like),
            "skip" | "dislike" => Some(Feedback::Skip),
            _ => None,
        }
    }
}

/// One interaction, in dense indices.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub user: UserIdx,
    pub item: ItemIdx,
    /// Seconds since the Unix epoch (or any monotone clock of the source).
    pub timestamp: i64,
    pub feedback: Feedback,
}

/// An item of the catalogue, with the text that content embeddings are built from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The id as written in the source files.
    pub id: String,
    pub title: String,
    /// Genres, classes or free tags.
    pub tags: Vec<String>,
}

/// A user, with static features as `name=value` tokens (age, gender, occupation…).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub features: Vec<String>,
}

/// A loaded data set: catalogue, users and every user's time-ordered events.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Dataset {
    pub name: String,
    pub items: Vec<Item>,
    pub users: Vec<User>,
    /// All events, grouped by user, each group ordered by timestamp with file order breaking ties.
    pub events: Vec<Event>,
    /// `events[user_start[u]..user_start[u + 1]]` are user `u`'s events.
    pub user_start: Vec<usize>,
    /// Things the loader had to assume (unknown ids, skipped columns), one line each.
    pub warnings: Vec<String>,
}

/// A user's events cut by the leave-one-out protocol (DESIGN.md §3).
#[derive(Clone, Copy, Debug)]
pub struct UserSplit<'a> {
    /// Everything before the validation event: the input for validation.
    pub train: &'a [Event],
    /// The second-to-last event, when the user has at least three.
    pub valid: Option<&'a Event>,
    /// The last event, when the user has at least three.
    pub test: Option<&'a Event>,
    /// Train plus the validation event: the input for test.
    pub test_input: &'a [Event],
}

impl Dataset {
    pub fn n_users(&self) -> usize {
        self.users.len()
    }

    pub fn n_items(&self) -> usize {
        self.items.len()
    }

    /// The time-ordered events of one user.
    pub fn user_events(&self, user: UserIdx) -> &[Event] {
        let u = user as usize;
        &self.events[self.user_start[u]..self.user_start[u + 1]]
    }

    /// Leave-one-out split of one user: last event for test, second-to-last for validation.
    /// Users with fewer than three events keep them all for training.
    pub fn split(&self, user: UserIdx) -> UserSplit<'_> {
        let events = self.user_events(user);
        let n = events.len();
        if n < 3 {
            return UserSplit { train: events, valid: None, test: None, test_input: events };
        }
        UserSplit {
            train: &events[..n - 2],
            valid: Some(&events[n - 2]),
            test: Some(&events[n - 1]),
            test_input: &events[..n - 1],
        }
    }

    /// The training part of every user's sequence, for statistics that must not see held-out events.
    pub fn train_sequences(&self) -> impl Iterator<Item = &[Event]> + '_ {
        (0..self.n_users() as UserIdx).map(|u| self.split(u).train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leave_one_out_holds_out_the_last_two_events() {
        let mut b = DatasetBuilder::new();
        for (i, item) in ["a", "b", "c", "d"].iter().enumerate() {
            b.add_event("u", item, i as i64, Feedback::Rating(4.0), &Origin::new("t", i + 1));
        }
        b.add_event("short", "a", 0, Feedback::Click, &Origin::new("t", 9));
        let ds = b.finish("t").unwrap();
        let s = ds.split(0);
        assert_eq!(s.train.len(), 2);
        assert_eq!(ds.items[s.valid.unwrap().item as usize].id, "c");
        assert_eq!(ds.items[s.test.unwrap().item as usize].id, "d");
        assert_eq!(s.test_input.len(), 3);
        let short = ds.split(1);
        assert_eq!(short.train.len(), 1);
        assert!(short.valid.is_none() && short.test.is_none());
    }

    #[test]
    fn positive_feedback_follows_the_rating_threshold() {
        assert!(Feedback::Rating(4.0).is_positive());
        assert!(!Feedback::Rating(3.5).is_positive());
        assert!(Feedback::Like.is_positive());
        assert!(!Feedback::Skip.is_positive());
        assert_eq!(Feedback::from_kind(" Like "), Some(Feedback::Like));
        assert_eq!(Feedback::from_kind("purchase"), None);
    }
}
