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
pub mod served;
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
    /// How [`Dataset::split`] holds events out.
    #[serde(default)]
    pub split_rule: SplitRule,
}

/// How the held-out events of DESIGN.md §3 are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SplitRule {
    /// Each user's last event is the test target and the one before it the validation target.
    #[default]
    LeaveOneOut,
    /// One moment for everyone, as a deployment sees time: a user's test target is their first
    /// event at or after `cut`, with every event before the cut as input; the validation target
    /// is their last event before the cut. Nothing after the cut is trained on, so a model
    /// cannot learn what became popular later.
    TimeCut { cut: i64 },
}

/// A user's events cut by the data set's [`SplitRule`] (DESIGN.md §3).
#[derive(Clone, Copy, Debug)]
pub struct UserSplit<'a> {
    /// Everything before the validation event: the input for validation.
    pub train: &'a [Event],
    /// Leave-one-out: the second-to-last event, when the user has at least three.
    pub valid: Option<&'a Event>,
    /// Leave-one-out: the last event, when the user has at least three.
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

    /// The same data, split at the `quantile` of all event timestamps ([`SplitRule::TimeCut`]).
    pub fn cut_at_time_quantile(mut self, quantile: f64) -> Dataset {
        let mut times: Vec<i64> = self.events.iter().map(|e| e.timestamp).collect();
        times.sort_unstable();
        let at = ((times.len() as f64 * quantile.clamp(0.0, 1.0)) as usize).min(times.len().saturating_sub(1));
        self.split_rule = SplitRule::TimeCut { cut: times.get(at).copied().unwrap_or(0) };
        self
    }

    /// One user's split under [`Dataset::split_rule`]. Leave-one-out: last event for test,
    /// second-to-last for validation; users with fewer than three events keep them all for
    /// training. Time cut: see [`SplitRule::TimeCut`]; a user with no event before the cut has no
    /// targets, and one with a single event there trains on it without a validation target.
    pub fn split(&self, user: UserIdx) -> UserSplit<'_> {
        let events = self.user_events(user);
        if let SplitRule::TimeCut { cut } = self.split_rule {
            let (input, after) = events.split_at(events.partition_point(|e| e.timestamp < cut));
            let test = after.first().filter(|_| !input.is_empty());
            return match input.len() {
                0 | 1 => UserSplit { train: input, valid: None, test, test_input: input },
                n => UserSplit { train: &input[..n - 1], valid: Some(&input[n - 1]), test, test_input: input },
            };
        }
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

    /// Puts each run of a user's training events that share a timestamp in a random order. A log
    /// records the order of events logged in the same second only as its file order (MovieLens
    /// stores a page of ratings under one second), which says nothing about the user; a model
    /// trained on one fixed order learns it as if it were a sequence. Training reshuffles the runs
    /// every epoch, so the model learns the set. Held-out events stay where they are.
    pub fn shuffle_training_ties(&mut self, rng: &mut impl rand::Rng) {
        use rand::seq::SliceRandom;
        for u in 0..self.n_users() {
            let (start, train) = (self.user_start[u], self.split(u as UserIdx).train.len());
            for run in self.events[start..start + train].chunk_by_mut(|a, b| a.timestamp == b.timestamp) {
                run.shuffle(rng);
            }
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

    /// Runs of equal timestamps in the training part come out in every order over a few shuffles;
    /// nothing moves across a timestamp or out of the held-out events, which tie with training
    /// events here.
    #[test]
    fn shuffling_ties_permutes_only_training_events_of_one_second() {
        use rand::SeedableRng;
        let mut b = DatasetBuilder::new();
        // Times 0, 5, 5, 5, 7, 9, 9, 9: the last two events (at 9) are held out, and tie with
        // the last training event.
        for (i, t) in [0, 5, 5, 5, 7, 9, 9, 9].into_iter().enumerate() {
            b.add_event("u", &format!("i{i}"), t, Feedback::Click, &Origin::new("t", i + 1));
        }
        let mut ds = b.finish("t").unwrap();
        let original = ds.events.clone();
        let ids = |ds: &Dataset| ds.events.iter().map(|e| ds.items[e.item as usize].id.clone()).collect::<Vec<_>>();
        let mut orders = std::collections::BTreeSet::new();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..60 {
            ds.shuffle_training_ties(&mut rng);
            let now = ids(&ds);
            assert_eq!(now[0], "i0");
            assert_eq!(now[4], "i4");
            assert_eq!(now[5..], ["i5", "i6", "i7"], "the run at 9 holds held-out events");
            let times: Vec<i64> = ds.events.iter().map(|e| e.timestamp).collect();
            assert_eq!(times, original.iter().map(|e| e.timestamp).collect::<Vec<_>>());
            orders.insert(now[1..4].to_vec());
        }
        assert_eq!(orders.len(), 6, "every order of the three events at 5: {orders:?}");
    }

    #[test]
    fn a_time_cut_holds_out_the_first_event_after_one_global_moment() {
        let mut b = DatasetBuilder::new();
        let o = Origin::new("t", 1);
        // u: events at 0, 1, 2, 5, 6; v: 3, 7; w: 8, 9 (all after the cut); x: 4 only.
        for (user, t) in [("u", 0), ("u", 1), ("u", 2), ("u", 5), ("u", 6), ("v", 3), ("v", 7), ("w", 8), ("w", 9)] {
            b.add_event(user, &format!("i{t}"), t, Feedback::Click, &o);
        }
        b.add_event("x", "i4", 4, Feedback::Click, &o);
        let ds = b.finish("t").unwrap().cut_at_time_quantile(0.5);
        // Ten timestamps 0..=9: the median one is 5.
        assert_eq!(ds.split_rule, SplitRule::TimeCut { cut: 5 });
        let times = |events: &[Event]| events.iter().map(|e| e.timestamp).collect::<Vec<_>>();
        let u = ds.split(0);
        assert_eq!(
            (times(u.train), u.valid.map(|e| e.timestamp), u.test.map(|e| e.timestamp)),
            (vec![0, 1], Some(2), Some(5))
        );
        assert_eq!(times(u.test_input), [0, 1, 2]);
        let v = ds.split(1);
        assert_eq!((times(v.train), v.valid.is_none(), v.test.map(|e| e.timestamp)), (vec![3], true, Some(7)));
        let w = ds.split(2);
        assert!(w.train.is_empty() && w.valid.is_none() && w.test.is_none(), "no input before the cut, no target");
        let x = ds.split(3);
        assert_eq!((times(x.train), x.test.is_none()), (vec![4], true));
        // Training never sees an event at or after the cut.
        assert!(ds.train_sequences().flatten().all(|e| e.timestamp < 5));
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
