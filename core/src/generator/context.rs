//! The user context the generator reads (DESIGN.md §2, Model), built from a prefix of the user's
//! history, and the training windows that name those prefixes (§2, Training).
//!
//! A context has four parts:
//! - hashed static features;
//! - the last `short_len` events, **oldest first**, each with its feedback and the time since the
//!   event before it. The model reads them causally, so one context serves as the input of a
//!   whole window of next-item targets (see [`training_windows`]);
//! - the last `positive_len` positive events *before* that window;
//! - the events before that window ("lifelong"), compressed to at most C tokens.
//!
//! The positive and lifelong parts only ever hold events older than the recent window. That is
//! what lets every position of the window be a training target without a leak: whatever the
//! position, the prefix it sees is in its past.
//!
//! **Lifelong compression.** DESIGN.md asks for k-means over the item embeddings of the lifelong
//! history. We reuse the tokenizer's level-1 RQ-KMeans centroids, which are a k-means over every
//! item embedding: the older events are grouped by the first code of their item's semantic ID, the
//! C largest groups are kept, and each token carries the group's code, its size and the mean
//! embedding of its events. Why not a fresh k-means?
//! - Per sample, it would cost about 350 GFLOP per epoch on ML-100K; grouping is O(n) per context
//!   and can be updated one event at a time when a user's history grows.
//! - Per user over the whole history, future items would shape the partition of earlier prefixes,
//!   which leaks the targets. The global codebook is fixed before training and sees no sequence.
//! - It is deterministic, and the group's code is a token the model already embeds.

use std::cmp::Reverse;

use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Event, Feedback, ItemIdx, User, UserIdx};
use crate::embed::fnv1a;
use crate::error::{Error, Result};
use crate::generator::trend::{TrendIndex, Trending};
use crate::tokenizer::{Code, Tokenizer};

/// Sizes of the parts of a context. Part of the model configuration, so it lives in the snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContextConfig {
    /// L_s: the most recent events, whatever their feedback; also the length of a training window.
    pub short_len: usize,
    /// L_p: the most recent positive events before the recent window.
    pub positive_len: usize,
    /// C: the most lifelong tokens.
    pub lifelong_tokens: usize,
    /// Hash buckets of the static features, bucket 0 (padding) included.
    pub feature_buckets: usize,
}

impl Default for ContextConfig {
    fn default() -> Self {
        ContextConfig { short_len: 20, positive_len: 256, lifelong_tokens: 16, feature_buckets: 1024 }
    }
}

impl ContextConfig {
    /// Refuses a window that holds no event, segments too long for one attention pass, or no
    /// feature bucket.
    pub fn validate(&self) -> Result<()> {
        const MAX_SEGMENT: usize = 4096;
        if self.short_len == 0 || self.short_len > MAX_SEGMENT || self.positive_len > MAX_SEGMENT {
            return Err(Error::Config(format!(
                "history segments of {} and {} events: the recent one needs 1 to {MAX_SEGMENT} events, \
                 the positive one at most {MAX_SEGMENT}",
                self.short_len, self.positive_len
            )));
        }
        if self.feature_buckets < 2 {
            return Err(Error::Config(format!(
                "{} feature buckets leave none beside the padding bucket 0",
                self.feature_buckets
            )));
        }
        Ok(())
    }
}

/// Number of feedback buckets, padding included: the size of the feedback embedding table.
pub const FEEDBACK_BUCKETS: usize = 12;

/// Feedback as a small integer for an embedding table; 0 is reserved for padding.
///
/// Ratings round to 1–5 (a scale other than MovieLens' is clamped into it), the event kinds take
/// 6–9, and watch time splits at [`Feedback::POSITIVE_WATCH_SECONDS`] into 10 and 11.
pub fn feedback_bucket(feedback: Feedback) -> u8 {
    match feedback {
        // A NaN rating casts to 0, the padding bucket; `max` keeps it a (lowest) rating.
        Feedback::Rating(r) => (r.round().clamp(1.0, 5.0) as u8).max(1),
        Feedback::Impression => 6,
        Feedback::Click => 7,
        Feedback::Like => 8,
        Feedback::Skip => 9,
        Feedback::WatchTime(s) if s >= Feedback::POSITIVE_WATCH_SECONDS => 11,
        Feedback::WatchTime(_) => 10,
    }
}

/// Number of time-gap buckets, padding included: the size of the gap embedding table.
pub const GAP_BUCKETS: usize = 28;

/// The time since the previous event as a small integer for an embedding table: 0 is padding,
/// 1 a user's first event, 2 a gap of at most a second (events logged together), then one bucket
/// per doubling (3 for 2–3 s, 4 for 4–7 s, … up to about four years).
pub fn gap_bucket(seconds: Option<i64>) -> u8 {
    match seconds {
        None => 1,
        Some(s) if s <= 1 => 2,
        Some(s) => (2 + s.ilog2() as usize).min(GAP_BUCKETS - 1) as u8,
    }
}

/// Number of away-time buckets, padding included: the size of the [`Moment`] gap table.
pub const AWAY_BUCKETS: usize = 8;

/// How long a user has been away when a query is asked, as a small integer for an embedding
/// table: 0 is padding, 1 a user with no event yet, then under an hour (the same session), under
/// a day, a week, 30 days, 90 days, and longer. An hour is the finest step on purpose: offline,
/// a query is asked at its target's timestamp, and a finer clock would tell the model the pace at
/// which the target itself was logged (MovieLens logs a batch of ratings within seconds), which a
/// real request does not know.
pub fn away_bucket(seconds: Option<i64>) -> u8 {
    const STEPS: [i64; 5] = [3_600, 86_400, 7 * 86_400, 30 * 86_400, 90 * 86_400];
    match seconds {
        None => 1,
        Some(s) => 2 + STEPS.iter().take_while(|&&step| s >= step).count() as u8,
    }
}

/// One event of the recent or positive segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryToken {
    pub item: ItemIdx,
    /// [`feedback_bucket`] of the event.
    pub feedback: u8,
    /// [`gap_bucket`] of the time since the user's previous event.
    pub gap: u8,
}

/// A group of lifelong events that share the first code of their items' semantic IDs.
#[derive(Clone, Debug, PartialEq)]
pub struct LifelongToken {
    /// The first-level semantic code of the group.
    pub code: Code,
    /// Events in the group (an item seen twice counts twice).
    pub count: u32,
    /// Mean item embedding of the group's events.
    pub mean_embedding: Vec<f32>,
}

/// What the model reads about one user at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UserContext {
    /// Hashed static features (`age=24`, …), each in `1..feature_buckets`; empty for users without.
    pub static_features: Vec<u32>,
    /// The last `short_len` events, oldest first.
    pub recent: Vec<HistoryToken>,
    /// The last `positive_len` positive events before `recent`, most recent first.
    pub positive: Vec<HistoryToken>,
    /// At most C groups of the events before `recent`, largest group first.
    pub lifelong: Vec<LifelongToken>,
    /// When each query is asked: entry `v` for the query that sees `v` recent events. Empty
    /// when the moment is unknown (see [`context_at`]).
    pub moments: Vec<Moment>,
}

/// What the model knows about the moment a query is asked, beyond the events it sees: a user
/// back after three months wants something else than one in mid-session, and what everyone is
/// watching then (see [`crate::generator::trend`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Moment {
    /// [`away_bucket`] of the time from the last event the query sees to the moment it is asked.
    pub away: u8,
    /// What was popular then; empty for a model without the trend input.
    pub trending: Trending,
}

/// Builds the context from `history`, the user's time-ordered events up to the moment of the
/// prediction; the caller passes a prefix, and nothing after it can leak in.
///
/// Expects a [validated](ContextConfig::validate) config. Panics if an item of `history` lies
/// beyond the tokenizer's catalogue.
pub fn build_context(user: &User, history: &[Event], tokenizer: &Tokenizer, config: &ContextConfig) -> UserContext {
    let split = history.len().saturating_sub(config.short_len);
    let token = |i: usize| {
        let e = &history[i];
        let gap = i.checked_sub(1).map(|p| e.timestamp.saturating_sub(history[p].timestamp));
        HistoryToken { item: e.item, feedback: feedback_bucket(e.feedback), gap: gap_bucket(gap) }
    };
    UserContext {
        static_features: user.features.iter().map(|f| feature_bucket(f, config.feature_buckets)).collect(),
        recent: (split..history.len()).map(token).collect(),
        positive: (0..split)
            .rev()
            .filter(|&i| history[i].feedback.is_positive())
            .take(config.positive_len)
            .map(token)
            .collect(),
        lifelong: lifelong(&history[..split], tokenizer, config.lifelong_tokens),
        moments: Vec::new(),
    }
}

/// [`build_context`] with the [`Moment`] of each query: the query that sees `v` recent events is
/// asked when the event after them happens (its target, in training), and the last one at `now`
/// (the request). Without `now`, the last query has no moment; a `trend` adds what was popular.
pub fn context_at(
    user: &User,
    history: &[Event],
    now: Option<i64>,
    tokenizer: &Tokenizer,
    config: &ContextConfig,
    trend: Option<&TrendIndex>,
) -> UserContext {
    let mut context = build_context(user, history, tokenizer, config);
    let n = context.recent.len();
    let first = history.len() - n;
    context.moments = (0..=n)
        .map_while(|v| {
            let asked = history.get(first + v).map(|e| e.timestamp).or(now)?;
            let last_seen = (first + v).checked_sub(1).map(|i| asked.saturating_sub(history[i].timestamp));
            Some(Moment { away: away_bucket(last_seen), trending: trend.map(|t| t.at(asked)).unwrap_or_default() })
        })
        .collect();
    context
}

/// FNV-1a of the feature string into `1..buckets`, leaving 0 for padding as feedback does.
fn feature_bucket(feature: &str, buckets: usize) -> u32 {
    1 + (fnv1a(feature.bytes()) % (buckets as u64 - 1)) as u32
}

/// Tally of one first-level code over the lifelong events.
#[derive(Clone, Copy)]
struct Group {
    events: u32,
    /// One past the index of the group's most recent event: the larger, the more recent.
    recency: u32,
    /// Index of the group's token, or `u32::MAX` when the group did not make the cut.
    token: u32,
}

/// Groups `older` by first semantic code and keeps the `cap` largest groups (ties: the most recent).
fn lifelong(older: &[Event], tokenizer: &Tokenizer, cap: usize) -> Vec<LifelongToken> {
    if older.is_empty() || cap == 0 {
        return Vec::new();
    }
    let ids = &tokenizer.semantic_ids;
    let first_code = |e: &Event| ids.id_of(e.item)[0] as usize;
    let mut groups = vec![Group { events: 0, recency: 0, token: u32::MAX }; ids.level_sizes[0]];
    let mut codes: Vec<Code> = Vec::new();
    for (i, e) in older.iter().enumerate() {
        let code = first_code(e);
        let group = &mut groups[code];
        if group.events == 0 {
            codes.push(code as Code);
        }
        group.events += 1;
        group.recency = i as u32 + 1;
    }
    codes.sort_unstable_by_key(|&c| Reverse((groups[c as usize].events, groups[c as usize].recency)));
    codes.truncate(cap);

    let dim = tokenizer.embeddings.dim;
    let mut tokens: Vec<LifelongToken> = codes
        .iter()
        .enumerate()
        .map(|(t, &code)| {
            let group = &mut groups[code as usize];
            group.token = t as u32;
            LifelongToken { code, count: group.events, mean_embedding: vec![0.0; dim] }
        })
        .collect();
    for e in older {
        if let Some(token) = tokens.get_mut(groups[first_code(e)].token as usize) {
            let row = tokenizer.embeddings.row(e.item as usize);
            token.mean_embedding.iter_mut().zip(row).for_each(|(m, x)| *m += x);
        }
    }
    for token in &mut tokens {
        let n = token.count as f32;
        token.mean_embedding.iter_mut().for_each(|m| *m /= n);
    }
    tokens
}

/// One training example: predict `target` from the user's first `input_len` events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub user: UserIdx,
    pub input_len: usize,
    pub target: ItemIdx,
}

impl Sample {
    /// The events the context of this sample is built from.
    pub fn history<'a>(&self, dataset: &'a Dataset) -> &'a [Event] {
        &dataset.user_events(self.user)[..self.input_len]
    }
}

/// Every prefix of every user's training sequence, with the next training event as its target
/// (SASRec style): `train.len()` samples per user, in user then time order.
///
/// Only [`Dataset::split`]'s training part is used, so validation and test items are never targets.
/// The empty prefix is included: predicting the first event from static features alone teaches
/// the cold-start slate that users with no history get. On ML-100K that gives
/// 100,000 − 2 × 943 = 98,114 samples (97,171 without the empty prefixes).
pub fn training_samples(dataset: &Dataset) -> Vec<Sample> {
    let sequences = || dataset.train_sequences();
    let mut samples = Vec::with_capacity(sequences().map(<[Event]>::len).sum());
    for (user, train) in sequences().enumerate() {
        let user = user as UserIdx;
        samples.extend(train.iter().enumerate().map(|(input_len, e)| Sample { user, input_len, target: e.item }));
    }
    samples
}

/// Many samples in one forward pass: the context of a user's first `end` training events, whose
/// `recent` part (the last `n = min(end, short_len)` of them) the model reads causally. The
/// model then predicts, for every `v` in `0..=n`, the training event that follows the first `v`
/// recent events, from those `v` events and the older parts of the context.
///
/// [`training_windows`] cuts each sequence into such windows so that every sample of
/// [`training_samples`] is the target of exactly one window position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub user: UserIdx,
    pub end: usize,
}

impl Window {
    /// The events the context of this window is built from.
    pub fn history<'a>(&self, dataset: &'a Dataset) -> &'a [Event] {
        &dataset.user_events(self.user)[..self.end]
    }

    /// `(v, target)`: the training event predicted after the first `v` recent events. `v = 0` (the
    /// prefix alone) is a target only in a user's first window; in later ones that event is the
    /// last target of the window before.
    pub fn targets(&self, dataset: &Dataset, short_len: usize) -> Vec<(usize, ItemIdx)> {
        let train = dataset.split(self.user).train;
        let n = self.end.min(short_len);
        let start = self.end - n;
        let first = if start == 0 { 0 } else { 1 };
        (first..=n).filter_map(|v| train.get(start + v).map(|e| (v, e.item))).collect()
    }
}

/// Each user's training sequence cut from its end into windows of `short_len` events (the first
/// may be shorter), in user then time order: the windows' targets are exactly
/// [`training_samples`], each once. A user with L training events costs ⌈L / short_len⌉ causal
/// passes instead of L.
pub fn training_windows(dataset: &Dataset, short_len: usize) -> Vec<Window> {
    let mut windows = Vec::new();
    for (user, train) in dataset.train_sequences().enumerate() {
        let user = user as UserIdx;
        let ends: Vec<usize> = (0..train.len().div_ceil(short_len)).map(|k| train.len() - k * short_len).collect();
        windows.extend(ends.into_iter().rev().map(|end| Window { user, end }));
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DatasetBuilder, Origin};
    use crate::embed::{EmbeddingConfig, ItemEmbeddings};
    use crate::generator::trend::TrendConfig;
    use crate::tokenizer::{Codebooks, RqConfig, SemanticIds, TokenizerReport};

    /// A tokenizer whose item `i` has first code `first_codes[i]` (then `i`, to keep IDs unique)
    /// and embedding `rows[i]`, so that the expected groups are known exactly.
    fn tokenizer(first_codes: &[Code], codes: usize, rows: &[[f32; 2]]) -> Tokenizer {
        let n = first_codes.len();
        let ids: Vec<Code> = first_codes.iter().enumerate().flat_map(|(i, &c)| [c, i as Code]).collect();
        let semantic_ids = SemanticIds::from_codes(ids, vec![codes, n]).unwrap();
        Tokenizer {
            dataset: "hand".into(),
            item_ids: (0..n).map(|i| i.to_string()).collect(),
            embeddings: ItemEmbeddings { dim: 2, data: rows.concat() },
            embedding: EmbeddingConfig { dim: 2, collab_dims: 0, ..EmbeddingConfig::default() },
            config: RqConfig { levels: 1, codes, ..RqConfig::default() },
            codebooks: Codebooks { dim: 2, centroids: Vec::new() },
            semantic_ids,
            report: TokenizerReport {
                items: n,
                dim: 2,
                codes_per_level: codes,
                embedding_energy: 0.0,
                levels: Vec::new(),
                collision_rate_before: 0.0,
                collision_rate_after: 0.0,
                largest_collision_group: 1,
                id_length: 2,
                seconds: 0.0,
            },
        }
    }

    /// Six items over first codes 0–3: {0, 1} → 0, {2} → 1, {3, 4} → 2, {5} → 3.
    fn six_items() -> Tokenizer {
        tokenizer(&[0, 0, 1, 2, 2, 3], 4, &[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    }

    /// One user's events, oldest first, one second apart.
    fn events(log: &[(ItemIdx, Feedback)]) -> Vec<Event> {
        log.iter()
            .enumerate()
            .map(|(t, &(item, feedback))| Event { user: 0, item, timestamp: t as i64, feedback })
            .collect()
    }

    fn rated(items: &[ItemIdx]) -> Vec<Event> {
        events(&items.iter().map(|&i| (i, Feedback::Rating(3.0))).collect::<Vec<_>>())
    }

    fn config(short_len: usize, positive_len: usize, lifelong_tokens: usize) -> ContextConfig {
        ContextConfig { short_len, positive_len, lifelong_tokens, ..ContextConfig::default() }
    }

    fn summary(tokens: &[LifelongToken]) -> Vec<(Code, u32, Vec<f32>)> {
        tokens.iter().map(|t| (t.code, t.count, t.mean_embedding.clone())).collect()
    }

    /// A data set from `(user, item, feedback)` rows in time order; item `"i"` gets index `i`.
    fn dataset(items: usize, rows: &[(&str, ItemIdx, Feedback)]) -> Dataset {
        let mut b = DatasetBuilder::new();
        for i in 0..items {
            b.add_item(crate::data::Item { id: i.to_string(), ..Default::default() }, &Origin::new("items", i + 1))
                .unwrap();
        }
        for (t, &(user, item, feedback)) in rows.iter().enumerate() {
            b.add_event(user, &item.to_string(), t as i64, feedback, &Origin::new("log", t + 1));
        }
        b.finish("hand").unwrap()
    }

    #[test]
    fn feedback_buckets_are_distinct_and_leave_zero_for_padding() {
        let cases = [
            (Feedback::Rating(0.2), 1),
            (Feedback::Rating(2.4), 2),
            (Feedback::Rating(3.5), 4),
            (Feedback::Rating(5.0), 5),
            (Feedback::Rating(9.0), 5),
            (Feedback::Rating(f32::NAN), 1),
            (Feedback::Impression, 6),
            (Feedback::Click, 7),
            (Feedback::Like, 8),
            (Feedback::Skip, 9),
            (Feedback::WatchTime(29.9), 10),
            (Feedback::WatchTime(30.0), 11),
        ];
        for (feedback, bucket) in cases {
            assert_eq!(feedback_bucket(feedback), bucket, "{feedback:?}");
            assert!((1..FEEDBACK_BUCKETS).contains(&(bucket as usize)));
        }
    }

    #[test]
    fn recent_is_the_last_events_oldest_first_with_their_gaps() {
        let tok = six_items();
        let mut history = events(&[
            (0, Feedback::Rating(5.0)),
            (1, Feedback::Click),
            (2, Feedback::Skip),
            (3, Feedback::Rating(2.0)),
            (4, Feedback::Like),
        ]);
        for (e, t) in history.iter_mut().zip([0, 100, 100, 103, 1_000_000]) {
            e.timestamp = t;
        }
        let ctx = build_context(&User::default(), &history, &tok, &config(3, 8, 4));
        // Gaps 0 s, 3 s and 999,897 s (2^19 ≤ gap < 2^20).
        let expected = [(2, 9, 2), (3, 2, 3), (4, 8, 21)];
        let got: Vec<_> = ctx.recent.iter().map(|t| (t.item, t.feedback, t.gap)).collect();
        assert_eq!(got, expected);
        // A history shorter than the window is taken whole, with nothing left for the older parts.
        let ctx = build_context(&User::default(), &history[..2], &tok, &config(3, 8, 4));
        assert_eq!(ctx.recent.iter().map(|t| (t.item, t.gap)).collect::<Vec<_>>(), [(0, 1), (1, 8)]);
        assert!(ctx.lifelong.is_empty() && ctx.positive.is_empty());
    }

    #[test]
    fn each_query_is_asked_when_its_target_happens_and_the_last_at_the_request() {
        let tokenizer = six_items();
        let user = User::default();
        // Events at 0, 1, 2, 3 s; the recent window is the last two (at 2 and 3 s).
        let history = rated(&[0, 1, 2, 3]);
        let trend = TrendIndex::new(
            &rated(&[4, 5, 5, 4, 4]),
            &TrendConfig { window_seconds: 100, items: 2, resolution_seconds: 1 },
        );
        // Query 0 is asked at 2 s, 1 s after the last event before the window; query 1 at 3 s,
        // 1 s after the event at 2 s; query 2 at the request, two days after the event at 3 s.
        // The trend log has item 4 at 0 s, 5 at 1 and 2 s, 4 at 3 and 4 s; a request after its
        // end reads its end.
        let context = context_at(&user, &history, Some(3 + 2 * 86_400), &tokenizer, &config(2, 0, 0), Some(&trend));
        let seen: Vec<(u8, Vec<ItemIdx>)> =
            context.moments.iter().map(|m| (m.away, m.trending.iter().map(|t| t.0).collect())).collect();
        let away = |s| away_bucket(Some(s));
        assert_eq!(seen, [(away(1), vec![4, 5]), (away(1), vec![5, 4]), (away(2 * 86_400), vec![4, 5])]);
        let unknown = context_at(&user, &history, None, &tokenizer, &config(2, 0, 0), None);
        assert_eq!(unknown.moments.len(), 2, "no request moment, no moment for the last query");
        assert!(unknown.moments.iter().all(|m| m.trending.is_empty()), "no index, no trend");
        let first = context_at(&user, &[], Some(7), &tokenizer, &config(2, 0, 0), None);
        assert_eq!(first.moments, [Moment { away: away_bucket(None), trending: Default::default() }]);
    }

    #[test]
    fn away_buckets_step_from_the_session_to_months_and_leave_zero_for_padding() {
        let day = 86_400;
        let cases = [(None, 1), (Some(0), 2), (Some(3_599), 2), (Some(3_600), 3), (Some(day), 4)];
        let longer = [(Some(7 * day), 5), (Some(30 * day), 6), (Some(90 * day - 1), 6), (Some(400 * day), 7)];
        for (seconds, bucket) in cases.into_iter().chain(longer) {
            assert_eq!(away_bucket(seconds), bucket, "{seconds:?}");
        }
        assert_eq!(away_bucket(Some(i64::MAX)) as usize, AWAY_BUCKETS - 1);
    }

    #[test]
    fn gap_buckets_double_and_leave_zero_for_padding() {
        let cases = [(None, 1), (Some(-5), 2), (Some(0), 2), (Some(1), 2), (Some(2), 3), (Some(3), 3), (Some(4), 4)];
        for (gap, bucket) in cases {
            assert_eq!(gap_bucket(gap), bucket, "{gap:?}");
        }
        assert_eq!(gap_bucket(Some(i64::MAX)) as usize, GAP_BUCKETS - 1);
    }

    #[test]
    fn positive_segment_keeps_high_ratings_likes_and_long_watches_before_the_window() {
        let tok = six_items();
        let history = events(&[
            (0, Feedback::Rating(4.0)),
            (1, Feedback::Like),
            (2, Feedback::Rating(3.5)),
            (3, Feedback::WatchTime(45.0)),
            (4, Feedback::Skip),
            (5, Feedback::Rating(5.0)),
            (0, Feedback::Rating(2.0)),
        ]);
        // The window holds the last two events (5, 0); positives come from the five before.
        let ctx = build_context(&User::default(), &history, &tok, &config(2, 2, 4));
        let got: Vec<_> = ctx.positive.iter().map(|t| (t.item, t.feedback)).collect();
        assert_eq!(got, [(3, 11), (1, 8)]);
        let all = build_context(&User::default(), &history, &tok, &config(2, 10, 4));
        assert_eq!(all.positive.iter().map(|t| t.item).collect::<Vec<_>>(), [3, 1, 0]);
    }

    #[test]
    fn lifelong_groups_older_events_by_first_code() {
        let tok = six_items();
        // The last two events (5, 2) are short-term; the seven before them are lifelong.
        let history = rated(&[0, 3, 1, 2, 0, 4, 5, 5, 2]);
        let ctx = build_context(&User::default(), &history, &tok, &config(2, 8, 16));
        let expected = vec![
            (0, 3, vec![2.0 / 3.0, 1.0 / 3.0]), // items 0, 1, 0
            (2, 2, vec![1.0, 1.0]),             // items 3, 4
            (3, 1, vec![3.0, 3.0]),             // item 5, most recent event at index 6
            (1, 1, vec![1.0, 1.0]),             // item 2, most recent event at index 3
        ];
        assert_eq!(summary(&ctx.lifelong), expected);
    }

    #[test]
    fn lifelong_keeps_the_c_largest_groups_ties_to_the_most_recent() {
        let tok = six_items();
        let codes = |history: &[Event], cap| {
            let ctx = build_context(&User::default(), history, &tok, &config(2, 8, cap));
            ctx.lifelong.iter().map(|t| t.code).collect::<Vec<_>>()
        };
        // Codes 1 and 3 tie with one event each: the more recent one wins, whichever code it is.
        assert_eq!(codes(&rated(&[0, 3, 1, 2, 0, 4, 5, 5, 2]), 3), [0, 2, 3]);
        assert_eq!(codes(&rated(&[0, 3, 1, 5, 0, 4, 2, 5, 2]), 3), [0, 2, 1]);
        assert_eq!(codes(&rated(&[0, 3, 1, 5, 0, 4, 2, 5, 2]), 1), [0]);
        assert!(codes(&rated(&[0, 3, 1, 5, 0, 4, 2, 5, 2]), 0).is_empty());
    }

    #[test]
    fn static_features_hash_stably_into_non_padding_buckets() {
        // The published FNV-1a 64 test vector: a changed hash would silently scramble saved models.
        assert_eq!(fnv1a("foobar".bytes()), 0x8594_4171_f739_67e8);
        let tok = six_items();
        let user = User { id: "u".into(), features: vec!["foobar".into(), "age=24".into(), "gender=M".into()] };
        let cfg = ContextConfig::default();
        let ctx = build_context(&user, &[], &tok, &cfg);
        assert_eq!(ctx.static_features[0], 1 + (0x8594_4171_f739_67e8u64 % 1023) as u32);
        assert!(ctx.static_features.iter().all(|&b| (1..1024).contains(&b)), "{:?}", ctx.static_features);
        let again = build_context(&User { id: "v".into(), ..user.clone() }, &rated(&[1]), &tok, &cfg);
        assert_eq!(again.static_features, ctx.static_features);
        let small = build_context(&user, &[], &tok, &ContextConfig { feature_buckets: 2, ..cfg });
        assert_eq!(small.static_features, [1, 1, 1]);
    }

    #[test]
    fn empty_history_gives_an_empty_context() {
        let ctx = build_context(&User::default(), &[], &six_items(), &ContextConfig::default());
        assert_eq!(ctx, UserContext::default());
    }

    #[test]
    fn config_refuses_positions_or_buckets_that_cannot_work() {
        assert!(ContextConfig::default().validate().is_ok());
        let long = ContextConfig { positive_len: 70_000, ..ContextConfig::default() };
        assert!(long.validate().unwrap_err().to_string().contains("70000"));
        let one = ContextConfig { feature_buckets: 1, ..ContextConfig::default() };
        assert!(one.validate().unwrap_err().to_string().contains("padding"));
    }

    #[test]
    fn every_training_prefix_is_a_sample_with_the_next_event_as_target() {
        let r = Feedback::Rating(4.0);
        let ds = dataset(
            6,
            &[
                ("a", 0, r),
                ("b", 1, r),
                ("a", 1, r),
                ("c", 2, r),
                ("a", 2, r),
                ("b", 3, r),
                ("a", 3, r),
                ("d", 4, r),
                ("a", 4, r),
                ("c", 5, r),
                ("b", 5, r),
            ],
        );
        // a: 5 events → 3 train; b: 3 → 1; c: 2, too few to hold out → 2; d: 1 → 1.
        let samples = training_samples(&ds);
        let got: Vec<_> = samples.iter().map(|s| (s.user, s.input_len, s.target)).collect();
        assert_eq!(got, [(0, 0, 0), (0, 1, 1), (0, 2, 2), (1, 0, 1), (2, 0, 2), (2, 1, 5), (3, 0, 4)]);
        for s in &samples {
            let split = ds.split(s.user);
            assert!(s.input_len < split.train.len(), "{s:?}: the target lies in the training part");
            assert_eq!(s.target, split.train[s.input_len].item);
            assert_eq!(s.history(&ds), &split.train[..s.input_len]);
            assert_ne!(Some(s.target), split.valid.map(|e| e.item));
            assert_ne!(Some(s.target), split.test.map(|e| e.item));
        }
    }

    #[test]
    fn windows_cover_every_training_sample_once_with_only_earlier_events_in_view() {
        let r = Feedback::Rating(4.0);
        let mut rows = Vec::new();
        // a: 12 events (10 train), b: 3 (1 train), c: 2 (2 train, too few to hold out).
        for t in 0..12 {
            rows.push(("a", t % 6, r));
        }
        rows.extend([("b", 1, r), ("b", 2, r), ("b", 3, r), ("c", 4, r), ("c", 5, r)]);
        let ds = dataset(6, &rows);
        let windows = training_windows(&ds, 4);
        let ends: Vec<_> = windows.iter().map(|w| (w.user, w.end)).collect();
        assert_eq!(ends, [(0, 2), (0, 6), (0, 10), (1, 1), (2, 2)]);
        let mut covered = Vec::new();
        for w in &windows {
            let train = ds.split(w.user).train;
            assert_eq!(w.history(&ds), &train[..w.end]);
            let n = w.end.min(4);
            for (v, target) in w.targets(&ds, 4) {
                // The target follows the first v recent events: it is the training event at end − n + v.
                let at = w.end - n + v;
                assert_eq!(target, train[at].item, "{w:?} v {v}");
                covered.push(Sample { user: w.user, input_len: at, target });
            }
        }
        assert_eq!(covered, training_samples(&ds));
    }

    #[test]
    fn future_events_change_neither_earlier_contexts_nor_earlier_samples() {
        let r = |x: f32| Feedback::Rating(x);
        let past = [("u", 0, r(5.0)), ("u", 3, r(2.0)), ("v", 2, r(4.0)), ("u", 1, r(4.0)), ("u", 2, r(1.0))];
        let mut rows = past.to_vec();
        rows.extend([("u", 2, r(3.0)), ("u", 0, r(4.0)), ("u", 5, r(5.0)), ("u", 4, r(5.0)), ("u", 0, r(1.0))]);
        rows.extend([("u", 3, r(4.0)), ("u", 5, r(4.0)), ("v", 1, r(5.0))]);
        for _ in 0..5 {
            rows.push(("u", 1, Feedback::Like));
        }
        let before = dataset(6, &past);
        let after = dataset(6, &rows);
        let tok = six_items();
        let cfg = config(3, 4, 2);
        let old = training_samples(&before);
        let new = training_samples(&after);
        for s in &old {
            assert!(new.contains(s), "{s:?} vanished");
            let user = &before.users[s.user as usize];
            let context = |ds| build_context(user, s.history(ds), &tok, &cfg);
            assert_eq!(context(&after), context(&before), "{s:?}");
        }
        // The longer prefixes do see the new events.
        let context = |s: &Sample| build_context(&after.users[0], s.history(&after), &tok, &cfg);
        let latest = context(new.iter().rfind(|s| s.user == 0).unwrap());
        assert_ne!(latest, context(old.iter().rfind(|s| s.user == 0).unwrap()));
        assert_eq!(latest.lifelong.len(), 2);
    }
}
