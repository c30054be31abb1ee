//! On-device re-ranking: a small preference state learned from the user's own feedback, and a
//! re-ranker that blends it with the server's scores.
//!
//! The browser compiles this module to WebAssembly, so it uses nothing but `serde` and the wire
//! types of [`crate::api`]: no threads, no clock, no randomness. Time is always passed in as Unix
//! seconds. The same code runs natively in the tests, so what is tested here is what ships.
//!
//! The state never leaves the device. It keeps two decayed sums, both halving every
//! [`LocalPreferences::half_life_secs`]:
//! - the signed sum of the embeddings of the items the user reacted to (likes pull towards an
//!   item, skips push away), and
//! - a signed weight per tag.
//!
//! Because every term decays by the same factor, decaying the sums lazily (once per update, by
//! the time elapsed) gives exactly the same state as decaying each event separately.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::{EventKind, FeedItem};

/// One week: long enough that a demo session builds up taste, short enough that old taste fades.
pub const DEFAULT_HALF_LIFE_SECS: f64 = 7.0 * 24.0 * 3600.0;

/// Tags with a weight below this (after decay) are dropped, so the state stays small.
const TAG_EPSILON: f32 = 1e-4;
/// At most this many tags are remembered; the weakest go first.
const MAX_TAGS: usize = 512;
/// Watching this long counts as much as a dwell can.
const DWELL_SATURATION_SECS: f32 = 30.0;
/// A full dwell counts half as much as a like: it is a weaker, implicit signal.
const DWELL_MAX_WEIGHT: f32 = 0.5;

/// How far one piece of feedback moves the preference state, and in which direction.
///
/// Explicit signals (like, skip, rating) weigh most; dwell grows with the seconds watched up to
/// [`DWELL_MAX_WEIGHT`]; impressions carry no preference by themselves.
pub fn feedback_weight(kind: EventKind, value: Option<f32>) -> f32 {
    let finite = value.filter(|v| v.is_finite());
    match kind {
        EventKind::Like => 1.0,
        EventKind::Skip => -0.5,
        EventKind::Click => 0.25,
        // An undo carries no taste of its own; [`LocalPreferences::take_back`] reverses the event.
        EventKind::Impression | EventKind::Undo => 0.0,
        EventKind::WatchTime => {
            finite.map_or(0.0, |secs| DWELL_MAX_WEIGHT * (secs.max(0.0) / DWELL_SATURATION_SECS).min(1.0))
        }
        // A five-star scale centred on 3: 5 is a like, 1 a strong dislike.
        EventKind::Rating => finite.map_or(0.0, |r| ((r - 3.0) / 2.0).clamp(-1.0, 1.0)),
    }
}

/// The user's taste as learned on this device, decaying over time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalPreferences {
    /// Feedback loses half its weight every this many seconds.
    pub half_life_secs: f64,
    /// Decayed signed sum of reacted-to item embeddings (as floats), valid at `updated_at`. Empty
    /// until the first event with an embedding; its length is the embedding size seen then.
    vector: Vec<f32>,
    /// Decayed signed feedback per tag, valid at `updated_at`.
    tags: BTreeMap<String, f32>,
    /// Unix seconds at which the sums above were last decayed.
    updated_at: f64,
    /// Events that moved the state, for display and tests.
    events: u64,
}

impl Default for LocalPreferences {
    fn default() -> Self {
        Self::new(DEFAULT_HALF_LIFE_SECS)
    }
}

impl LocalPreferences {
    /// An empty state: every item has affinity 0 until the user reacts to something.
    pub fn new(half_life_secs: f64) -> Self {
        assert!(half_life_secs > 0.0 && half_life_secs.is_finite(), "the half-life must be positive");
        Self { half_life_secs, vector: Vec::new(), tags: BTreeMap::new(), updated_at: f64::NEG_INFINITY, events: 0 }
    }

    /// How many events have moved the state.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// True before any feedback: re-ranking then keeps the server's order (up to diversity).
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// The factor by which the state has decayed between `updated_at` and `now`. A clock that
    /// went backwards decays nothing rather than amplifying old feedback.
    fn decay_factor(&self, now: f64) -> f32 {
        if !self.updated_at.is_finite() || now <= self.updated_at {
            return 1.0;
        }
        0.5f64.powf((now - self.updated_at) / self.half_life_secs) as f32
    }

    /// Records feedback on `item` at `now` (Unix seconds).
    pub fn observe(&mut self, item: &FeedItem, kind: EventKind, value: Option<f32>, now: f64) {
        self.observe_weighted(&item.embedding, &item.tags, feedback_weight(kind, value), now);
    }

    /// Reverses an earlier [`observe`](Self::observe) of `kind` on `item` (the user pressed undo).
    /// It subtracts the weight as of now, so the little decay since the event is not undone.
    pub fn take_back(&mut self, item: &FeedItem, kind: EventKind, value: Option<f32>, now: f64) {
        self.observe_weighted(&item.embedding, &item.tags, -feedback_weight(kind, value), now);
    }

    /// Records feedback of a given weight on an item described by its quantised embedding and
    /// tags. A weight of 0 changes nothing, not even the clock.
    pub fn observe_weighted(&mut self, embedding: &[i8], tags: &[String], weight: f32, now: f64) {
        if weight == 0.0 || !weight.is_finite() {
            return;
        }
        let decay = self.decay_factor(now);
        if decay != 1.0 {
            self.vector.iter_mut().for_each(|x| *x *= decay);
            self.tags.values_mut().for_each(|w| *w *= decay);
        }
        if now.is_finite() && (now > self.updated_at || !self.updated_at.is_finite()) {
            self.updated_at = now;
        }
        if !embedding.is_empty() {
            if self.vector.len() != embedding.len() {
                // A new model with another embedding size: old directions mean nothing in it.
                self.vector = vec![0.0; embedding.len()];
            }
            for (x, &q) in self.vector.iter_mut().zip(embedding) {
                *x += weight * f32::from(q) / 127.0;
            }
        }
        for tag in tags {
            *self.tags.entry(tag.clone()).or_insert(0.0) += weight;
        }
        self.tags.retain(|_, w| w.abs() >= TAG_EPSILON);
        if self.tags.len() > MAX_TAGS {
            let mut weights: Vec<f32> = self.tags.values().map(|w| w.abs()).collect();
            weights.sort_by(|a, b| b.total_cmp(a));
            let keep_at_least = weights[MAX_TAGS - 1];
            self.tags.retain(|_, w| w.abs() >= keep_at_least);
        }
        self.events += 1;
    }

    /// The state decayed to `now`, in the form the re-ranker reads.
    fn view(&self, now: f64) -> View<'_> {
        let decay = self.decay_factor(now);
        let norm = self.vector.iter().map(|x| x * x).sum::<f32>().sqrt() * decay;
        View { prefs: self, decay, norm }
    }

    /// How much the user is expected to like `item` now, in (-1, 1); 0 for a fresh state.
    pub fn affinity(&self, item: &FeedItem, now: f64) -> f32 {
        self.view(now).affinity(item).0
    }
}

/// The state at one instant; the decay is folded in as one factor.
struct View<'a> {
    prefs: &'a LocalPreferences,
    decay: f32,
    /// Length of the decayed preference vector.
    norm: f32,
}

impl View<'_> {
    /// Affinity in (-1, 1): the mean of an embedding part and a tag part, each saturating with
    /// the amount of evidence (one like of an identical item gives 1/2, many give nearly 1).
    /// Also returns the tag that contributed most, for the why-shown hint.
    fn affinity(&self, item: &FeedItem) -> (f32, f32, Option<usize>) {
        let v = &self.prefs.vector;
        let embedding_part = if v.len() == item.embedding.len() && !v.is_empty() {
            let dot: f32 = v.iter().zip(&item.embedding).map(|(x, &q)| x * f32::from(q)).sum::<f32>() / 127.0;
            self.decay * dot / (1.0 + self.norm)
        } else {
            0.0
        };
        let mut tag_sum = 0.0;
        let mut best: Option<(usize, f32)> = None;
        for (i, tag) in item.tags.iter().enumerate() {
            if let Some(&w) = self.prefs.tags.get(tag) {
                let w = w * self.decay;
                let part = w / (1.0 + w.abs());
                tag_sum += part;
                if best.is_none_or(|(_, b)| part > b) {
                    best = Some((i, part));
                }
            }
        }
        let tag_part = if item.tags.is_empty() { 0.0 } else { tag_sum / item.tags.len() as f32 };
        let best_tag = best.filter(|&(_, part)| part > 0.0).map(|(i, _)| i);
        (0.5 * (embedding_part + tag_part), embedding_part, best_tag)
    }
}

/// Knobs of the re-ranker.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RerankConfig {
    /// Share of the local affinity in an item's relevance; the rest is the server's normalised
    /// score. 0 keeps the server's order, 1 trusts only the device.
    pub affinity_weight: f32,
    /// Weight of the MMR penalty: the candidate's highest cosine similarity to the items already
    /// placed. 0 turns diversity off.
    pub diversity: f32,
    /// How many leading positions are chosen by MMR; the rest follow by relevance alone. MMR costs
    /// O(slate × candidates × dim), so it is spent only where the user looks.
    pub slate: usize,
    /// The last of every `fresh_every` positions goes to a candidate the server kept a position
    /// for ([`FeedItem::fresh`]) while any is left, as the server placed it; 0 ranks them as any
    /// other. Their scores are far below the rest, so relevance alone would sink them.
    pub fresh_every: usize,
}

impl Default for RerankConfig {
    fn default() -> Self {
        Self { affinity_weight: 0.5, diversity: 0.15, slate: 10, fresh_every: 10 }
    }
}

/// Why an item sits where it does, for the card's hint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// The model ranked it high and local taste did not change much.
    Model,
    /// One of its tags is one the user liked.
    LikedTag(String),
    /// Its embedding is close to items the user liked.
    SimilarToLiked,
    /// New to the catalogue, in a position the server keeps for such items.
    Fresh,
}

impl Reason {
    /// A short hint for people. A `column=value` tag (as RecBole's token columns give) shows its
    /// value only: "Because you liked Comedy", "From 1996, like others you liked".
    pub fn hint(&self) -> String {
        match self {
            Reason::Model => "Recommended for you".to_string(),
            Reason::LikedTag(tag) => match tag.split_once('=') {
                Some((column, value)) if column.contains("year") => format!("From {value}, like others you liked"),
                _ => format!("Because you liked {}", tag_label(tag)),
            },
            Reason::SimilarToLiked => "Similar to what you liked".to_string(),
            Reason::Fresh => "New here".to_string(),
        }
    }
}

/// How a tag reads to people, on a card or in a hint: a `column=value` tag (as RecBole's token
/// columns give) shows its value only, with spaces for underscores ("genre=Film_Noir" → "Film Noir").
pub fn tag_label(tag: &str) -> String {
    tag.split_once('=').map_or(tag, |(_, value)| value).replace('_', " ")
}

/// One placed candidate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    /// Position of the candidate in the input slice.
    pub index: usize,
    /// The blended relevance before the diversity penalty.
    pub relevance: f32,
    /// The server's score mapped to [0, 1] over this candidate set.
    pub server: f32,
    /// The local affinity in (-1, 1).
    pub affinity: f32,
    pub reason: Reason,
}

/// Below this, local taste is not worth mentioning in a hint.
const HINT_THRESHOLD: f32 = 0.1;

/// Orders `candidates` for this user now: relevance is the server's min-max normalised score
/// blended with the local affinity, and the first `config.slate` positions are picked greedily by
/// MMR so that the top of the feed is not all one kind. Every candidate appears exactly once.
/// Ties go to the earlier candidate, so the result is deterministic.
pub fn rerank(prefs: &LocalPreferences, now: f64, candidates: &[FeedItem], config: &RerankConfig) -> Vec<Ranked> {
    let n = candidates.len();
    let view = prefs.view(now);
    let server = normalised_scores(candidates);
    let alpha = config.affinity_weight.clamp(0.0, 1.0);
    let mut ranked: Vec<Ranked> = candidates
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let (affinity, embedding_part, best_tag) = view.affinity(item);
            // A liked tag reads best; then closeness in embedding; else it is the model's pick.
            let reason = match best_tag {
                _ if item.fresh && config.fresh_every > 0 => Reason::Fresh,
                Some(t) if affinity > HINT_THRESHOLD => Reason::LikedTag(item.tags[t].clone()),
                _ if embedding_part > HINT_THRESHOLD => Reason::SimilarToLiked,
                _ => Reason::Model,
            };
            Ranked {
                index,
                relevance: (1.0 - alpha) * server[index] + alpha * affinity,
                server: server[index],
                affinity,
                reason,
            }
        })
        .collect();

    // MMR over the leading positions; `max_sim[i]` is candidate i's highest cosine similarity to
    // the items placed so far, kept up to date after each placement.
    let slate = config.slate.min(n);
    let norms: Vec<f32> = candidates.iter().map(|c| i8_norm(&c.embedding)).collect();
    let mut placed = vec![false; n];
    let mut max_sim = vec![f32::NEG_INFINITY; n];
    let mut order = Vec::with_capacity(n);
    for _ in 0..slate {
        let mut best: Option<(usize, f32)> = None;
        for i in (0..n).filter(|&i| !placed[i]) {
            let penalty = if order.is_empty() { 0.0 } else { config.diversity * max_sim[i] };
            let value = ranked[i].relevance - penalty;
            if best.is_none_or(|(_, b)| value > b) {
                best = Some((i, value));
            }
        }
        let (chosen, _) = best.expect("slate ≤ candidates");
        placed[chosen] = true;
        order.push(chosen);
        for i in (0..n).filter(|&i| !placed[i]) {
            let sim = cosine_i8(&candidates[i].embedding, norms[i], &candidates[chosen].embedding, norms[chosen]);
            max_sim[i] = max_sim[i].max(sim);
        }
    }
    let mut rest: Vec<usize> = (0..n).filter(|&i| !placed[i]).collect();
    rest.sort_by(|&a, &b| ranked[b].relevance.total_cmp(&ranked[a].relevance).then(a.cmp(&b)));
    order.extend(rest);
    let order = keep_fresh_positions(order, candidates, config.fresh_every);

    let mut slots: Vec<Option<Ranked>> = ranked.drain(..).map(Some).collect();
    order.into_iter().map(|i| slots[i].take().expect("each candidate is placed once")).collect()
}

/// `order` with the fresh candidates, in their order, moved to the last of every `every`
/// positions while any is left (see [`RerankConfig::fresh_every`]).
fn keep_fresh_positions(order: Vec<usize>, candidates: &[FeedItem], every: usize) -> Vec<usize> {
    if every == 0 {
        return order;
    }
    let (fresh, others): (Vec<usize>, Vec<usize>) = order.into_iter().partition(|&i| candidates[i].fresh);
    let (mut fresh, mut others) = (fresh.into_iter(), others.into_iter());
    (1..=candidates.len())
        .map(|position| {
            let next = if position % every == 0 { fresh.next().or_else(|| others.next()) } else { None };
            next.or_else(|| others.next()).or_else(|| fresh.next()).expect("one candidate per position")
        })
        .collect()
}

/// Server scores mapped to [0, 1] by min-max over the finite ones; a non-finite score counts as
/// the minimum, and equal scores all map to 1/2.
fn normalised_scores(candidates: &[FeedItem]) -> Vec<f32> {
    let finite = candidates.iter().map(|c| c.score).filter(|s| s.is_finite());
    let (lo, hi) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), s| (lo.min(s), hi.max(s)));
    candidates
        .iter()
        .map(|c| {
            if !c.score.is_finite() {
                0.0
            } else if hi > lo {
                (c.score - lo) / (hi - lo)
            } else {
                0.5
            }
        })
        .collect()
}

fn i8_norm(v: &[i8]) -> f32 {
    (v.iter().map(|&q| i32::from(q) * i32::from(q)).sum::<i32>() as f32).sqrt()
}

/// Cosine similarity of two quantised embeddings; 0 when either is empty, zero or the sizes
/// differ, so that such items are never penalised for similarity.
fn cosine_i8(a: &[i8], norm_a: f32, b: &[i8], norm_b: f32) -> f32 {
    if a.len() != b.len() || norm_a == 0.0 || norm_b == 0.0 {
        return 0.0;
    }
    let dot: i32 = a.iter().zip(b).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum();
    dot as f32 / (norm_a * norm_b)
}

#[cfg(test)]
// The reference below is deliberately written as plain index loops.
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::*;

    /// A tiny deterministic generator, so the tests need no `rand`.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn unit(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32
        }
    }

    fn unit_embedding(rng: &mut XorShift, dim: usize) -> Vec<i8> {
        let v: Vec<f32> = (0..dim).map(|_| rng.unit() * 2.0 - 1.0).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        crate::api::quantise_embedding(&v.iter().map(|x| x / norm).collect::<Vec<_>>())
    }

    fn item(id: usize, score: f32, tags: &[&str], embedding: Vec<i8>) -> FeedItem {
        FeedItem {
            id: id.to_string(),
            title: format!("item {id}"),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            score,
            semantic_id: vec![],
            embedding,
            fresh: false,
        }
    }

    fn random_candidates(rng: &mut XorShift, n: usize, dim: usize, tag_pool: &[&str]) -> Vec<FeedItem> {
        (0..n)
            .map(|i| {
                let tags: Vec<&str> =
                    (0..1 + rng.next() % 3).map(|_| tag_pool[(rng.next() % tag_pool.len() as u64) as usize]).collect();
                item(i, -10.0 * rng.unit(), &tags, unit_embedding(rng, dim))
            })
            .collect()
    }

    // ---- The naive reference: every quantity recomputed from the raw events with plain loops.

    struct Event {
        embedding: Vec<i8>,
        tags: Vec<String>,
        weight: f64,
        time: f64,
    }

    fn ref_affinity(events: &[Event], half_life: f64, now: f64, item: &FeedItem) -> f64 {
        let dim = item.embedding.len();
        let mut v = vec![0.0f64; dim];
        let mut tags: BTreeMap<String, f64> = BTreeMap::new();
        for e in events {
            let d = 0.5f64.powf((now - e.time) / half_life);
            for k in 0..dim {
                v[k] += e.weight * d * f64::from(e.embedding[k]) / 127.0;
            }
            for t in &e.tags {
                *tags.entry(t.clone()).or_default() += e.weight * d;
            }
        }
        let mut norm = 0.0;
        let mut dot = 0.0;
        for k in 0..dim {
            norm += v[k] * v[k];
            dot += v[k] * f64::from(item.embedding[k]) / 127.0;
        }
        let emb = dot / (1.0 + norm.sqrt());
        let mut tag = 0.0;
        for t in &item.tags {
            let w = tags.get(t).copied().unwrap_or(0.0);
            tag += w / (1.0 + w.abs());
        }
        if !item.tags.is_empty() {
            tag /= item.tags.len() as f64;
        }
        0.5 * (emb + tag)
    }

    fn ref_rerank(events: &[Event], half_life: f64, now: f64, c: &[FeedItem], cfg: &RerankConfig) -> Vec<(usize, f64)> {
        let n = c.len();
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for x in c {
            lo = lo.min(f64::from(x.score));
            hi = hi.max(f64::from(x.score));
        }
        let a = f64::from(cfg.affinity_weight);
        let mut rel = vec![0.0; n];
        for i in 0..n {
            let s = if hi > lo { (f64::from(c[i].score) - lo) / (hi - lo) } else { 0.5 };
            rel[i] = (1.0 - a) * s + a * ref_affinity(events, half_life, now, &c[i]);
        }
        let cos = |x: &FeedItem, y: &FeedItem| {
            let (mut d, mut nx, mut ny) = (0.0f64, 0.0f64, 0.0f64);
            for k in 0..x.embedding.len() {
                let (p, q) = (f64::from(x.embedding[k]), f64::from(y.embedding[k]));
                d += p * q;
                nx += p * p;
                ny += q * q;
            }
            d / (nx.sqrt() * ny.sqrt())
        };
        let mut out: Vec<usize> = Vec::new();
        for _ in 0..cfg.slate.min(n) {
            let mut best = usize::MAX;
            let mut best_v = f64::NEG_INFINITY;
            for i in 0..n {
                if out.contains(&i) {
                    continue;
                }
                let mut max_sim = f64::NEG_INFINITY;
                for &j in &out {
                    max_sim = max_sim.max(cos(&c[i], &c[j]));
                }
                let penalty = if out.is_empty() { 0.0 } else { f64::from(cfg.diversity) * max_sim };
                if rel[i] - penalty > best_v {
                    best_v = rel[i] - penalty;
                    best = i;
                }
            }
            out.push(best);
        }
        loop {
            let mut best = usize::MAX;
            let mut best_v = f64::NEG_INFINITY;
            for i in 0..n {
                if !out.contains(&i) && rel[i] > best_v {
                    best_v = rel[i];
                    best = i;
                }
            }
            if best == usize::MAX {
                break;
            }
            out.push(best);
        }
        out.into_iter().map(|i| (i, rel[i])).collect()
    }

    #[test]
    fn matches_the_naive_reference_on_random_feedback_and_candidates() {
        let tag_pool = ["drama", "comedy", "horror", "sci-fi", "romance", "war"];
        for seed in 1..=20u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let dim = 16;
            let half_life = 3600.0;
            let history = random_candidates(&mut rng, 12, dim, &tag_pool);
            let mut prefs = LocalPreferences::new(half_life);
            let mut events = Vec::new();
            let mut t = 1_700_000_000.0;
            let kinds = [EventKind::Like, EventKind::Skip, EventKind::WatchTime, EventKind::Click, EventKind::Rating];
            for h in &history {
                t += f64::from(rng.unit()) * 5000.0;
                let kind = kinds[(rng.next() % kinds.len() as u64) as usize];
                let value = Some(rng.unit() * 40.0);
                prefs.observe(h, kind, value, t);
                events.push(Event {
                    embedding: h.embedding.clone(),
                    tags: h.tags.clone(),
                    weight: f64::from(feedback_weight(kind, value)),
                    time: t,
                });
            }
            let now = t + 1800.0;
            let candidates = random_candidates(&mut rng, 60, dim, &tag_pool);
            let cfg = RerankConfig { affinity_weight: 0.6, diversity: 0.3, slate: 15, ..RerankConfig::default() };
            let got = rerank(&prefs, now, &candidates, &cfg);
            let want = ref_rerank(&events, half_life, now, &candidates, &cfg);
            let got_order: Vec<usize> = got.iter().map(|r| r.index).collect();
            let want_order: Vec<usize> = want.iter().map(|r| r.0).collect();
            assert_eq!(got_order, want_order, "seed {seed}");
            for (g, w) in got.iter().zip(&want) {
                assert!((f64::from(g.relevance) - w.1).abs() < 1e-4, "seed {seed}: {} vs {}", g.relevance, w.1);
            }
            for c in &candidates {
                let a = prefs.affinity(c, now);
                let r = ref_affinity(&events, half_life, now, c);
                assert!((f64::from(a) - r).abs() < 1e-4, "seed {seed}: affinity {a} vs {r}");
            }
        }
    }

    #[test]
    fn a_fresh_state_keeps_the_server_order_without_diversity() {
        let mut rng = XorShift(7);
        let mut candidates = random_candidates(&mut rng, 30, 8, &["a", "b"]);
        candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
        let cfg = RerankConfig { diversity: 0.0, ..RerankConfig::default() };
        let order: Vec<usize> =
            rerank(&LocalPreferences::default(), 0.0, &candidates, &cfg).iter().map(|r| r.index).collect();
        assert_eq!(order, (0..30).collect::<Vec<_>>());
    }

    #[test]
    fn fresh_candidates_keep_the_last_position_of_each_page() {
        let mut rng = XorShift(9);
        let mut candidates = random_candidates(&mut rng, 25, 8, &["a", "b"]);
        candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
        // The server's two fresh items score lowest of all.
        for (i, score) in [(23, -50.0), (24, -60.0)] {
            candidates[i].fresh = true;
            candidates[i].score = score;
        }
        let cfg = RerankConfig { diversity: 0.0, ..RerankConfig::default() };
        let ranked = rerank(&LocalPreferences::default(), 0.0, &candidates, &cfg);
        let order: Vec<usize> = ranked.iter().map(|r| r.index).collect();
        let others: Vec<usize> = (0..23).collect();
        assert_eq!(order, [&others[..9], &[23], &others[9..18], &[24], &others[18..]].concat());
        assert_eq!((ranked[9].reason.clone(), ranked[19].reason.hint()), (Reason::Fresh, "New here".to_string()));
        // Without kept positions they rank by relevance: last.
        let cfg = RerankConfig { fresh_every: 0, ..cfg };
        let order: Vec<usize> =
            rerank(&LocalPreferences::default(), 0.0, &candidates, &cfg).iter().map(|r| r.index).collect();
        assert_eq!(order, (0..25).collect::<Vec<_>>());
    }

    #[test]
    fn liking_one_kind_moves_that_kind_up() {
        // Two kinds with distinct embeddings and tags; the server slightly prefers kind B.
        let a_dir = unit_embedding(&mut XorShift(11), 16);
        let b_dir: Vec<i8> = a_dir.iter().map(|&x| x.saturating_neg()).collect();
        let mut candidates = Vec::new();
        for i in 0..20usize {
            let (tag, emb, score) =
                if i.is_multiple_of(2) { ("a", a_dir.clone(), -2.0) } else { ("b", b_dir.clone(), -1.0) };
            candidates.push(item(i, score - i as f32 * 0.01, &[tag], emb));
        }
        let cfg = RerankConfig { diversity: 0.0, slate: 10, ..RerankConfig::default() };
        let top_kind = |prefs: &LocalPreferences| -> usize {
            rerank(prefs, 100.0, &candidates, &cfg)[..10].iter().filter(|r| candidates[r.index].tags[0] == "a").count()
        };
        let mut prefs = LocalPreferences::default();
        assert_eq!(top_kind(&prefs), 0, "the server alone puts kind B first");
        prefs.observe(&candidates[0], EventKind::Like, None, 10.0);
        prefs.observe(&candidates[2], EventKind::Like, None, 20.0);
        // Three likes, so that even the weakest "a" clearly beats the strongest "b" (two would tie).
        prefs.observe(&candidates[4], EventKind::Like, None, 30.0);
        assert_eq!(top_kind(&prefs), 10, "after three likes kind A leads");
        let ranked = rerank(&prefs, 100.0, &candidates, &cfg);
        assert_eq!(ranked[0].reason, Reason::LikedTag("a".into()));
    }

    #[test]
    fn diversity_interleaves_near_duplicates() {
        // Five near-identical items score just above five items of another kind.
        // Orthogonal kinds: similarity 1 within a kind, 0 across.
        let a_dir: Vec<i8> = (0..16).map(|k| if k == 0 { 127 } else { 0 }).collect();
        let b_dir: Vec<i8> = (0..16).map(|k| if k == 1 { 127 } else { 0 }).collect();
        let mut candidates = Vec::new();
        for i in 0..5 {
            candidates.push(item(i, 1.0 - i as f32 * 0.01, &["a"], a_dir.clone()));
        }
        for i in 5..10 {
            candidates.push(item(i, 1.0 - i as f32 * 0.01, &["b"], b_dir.clone()));
        }
        let plain = RerankConfig { diversity: 0.0, affinity_weight: 0.0, slate: 10, ..RerankConfig::default() };
        let diverse = RerankConfig { diversity: 0.5, ..plain };
        let prefs = LocalPreferences::default();
        let kinds = |cfg: &RerankConfig| -> String {
            rerank(&prefs, 0.0, &candidates, cfg).iter().map(|r| candidates[r.index].tags[0].clone()).collect()
        };
        // Normalised scores: a = 1, 8/9, …, 5/9; b = 4/9, …, 0. After the first a, every other a
        // pays 1/2 for similarity, so the best b (4/9) beats the second a (8/9 − 1/2); after that
        // both kinds are represented and relevance decides again.
        assert_eq!(kinds(&plain), "aaaaabbbbb");
        assert_eq!(kinds(&diverse), "abaaaabbbb");
    }

    #[test]
    fn feedback_halves_every_half_life() {
        let it = item(0, 0.0, &["x"], unit_embedding(&mut XorShift(9), 8));
        let mut prefs = LocalPreferences::new(100.0);
        for _ in 0..3 {
            prefs.observe(&it, EventKind::Like, None, 0.0);
        }
        // Tag weight 3 → 3/4 now; 1.5 → 0.6 one half-life later; 0.75 → 3/7 after two.
        let tag_part = |now: f64| {
            let only_tags = FeedItem { embedding: vec![], ..it.clone() };
            2.0 * prefs.affinity(&only_tags, now)
        };
        assert!((tag_part(0.0) - 0.75).abs() < 1e-6);
        assert!((tag_part(100.0) - 0.6).abs() < 1e-6);
        assert!((tag_part(200.0) - 3.0 / 7.0).abs() < 1e-6);
        // A clock that runs backwards does not amplify old feedback.
        assert!((tag_part(-500.0) - 0.75).abs() < 1e-6);
    }

    #[test]
    fn skips_push_away_and_dwell_grows_then_saturates() {
        let it = item(0, 0.0, &["x"], unit_embedding(&mut XorShift(13), 8));
        let mut prefs = LocalPreferences::default();
        prefs.observe(&it, EventKind::Skip, None, 0.0);
        assert!(prefs.affinity(&it, 0.0) < 0.0);
        assert_eq!(feedback_weight(EventKind::WatchTime, Some(15.0)), 0.25);
        assert_eq!(feedback_weight(EventKind::WatchTime, Some(300.0)), 0.5);
        assert_eq!(feedback_weight(EventKind::WatchTime, Some(f32::NAN)), 0.0);
        assert_eq!(feedback_weight(EventKind::Rating, Some(5.0)), 1.0);
        assert_eq!(feedback_weight(EventKind::Rating, Some(1.0)), -1.0);
        let before = prefs.clone();
        prefs.observe(&it, EventKind::Impression, None, 50.0);
        assert_eq!(prefs, before, "impressions carry no preference");
    }

    #[test]
    fn state_round_trips_through_json_and_keeps_ranking() {
        let mut rng = XorShift(21);
        let candidates = random_candidates(&mut rng, 40, 12, &["a", "b", "c"]);
        let mut prefs = LocalPreferences::new(600.0);
        prefs.observe(&candidates[3], EventKind::Like, None, 1000.0);
        prefs.observe(&candidates[8], EventKind::Skip, None, 1200.0);
        let json = serde_json::to_string(&prefs).unwrap();
        let back: LocalPreferences = serde_json::from_str(&json).unwrap();
        assert_eq!(back, prefs);
        let cfg = RerankConfig::default();
        assert_eq!(rerank(&back, 1500.0, &candidates, &cfg), rerank(&prefs, 1500.0, &candidates, &cfg));
    }

    #[test]
    fn every_candidate_appears_once_whatever_the_inputs() {
        let mut rng = XorShift(99);
        let mut candidates = random_candidates(&mut rng, 25, 8, &["a"]);
        candidates[3].score = f32::NAN;
        candidates[4].score = f32::NEG_INFINITY;
        candidates[5].embedding.clear();
        candidates[6].embedding = vec![0; 8];
        candidates[7].embedding = vec![1; 5];
        let mut prefs = LocalPreferences::default();
        prefs.observe(&candidates[0], EventKind::Like, None, 0.0);
        for slate in [0, 1, 10, 25, 100] {
            let cfg = RerankConfig { slate, ..RerankConfig::default() };
            let mut order: Vec<usize> = rerank(&prefs, 1.0, &candidates, &cfg).iter().map(|r| r.index).collect();
            order.sort_unstable();
            assert_eq!(order, (0..25).collect::<Vec<_>>());
        }
        assert!(rerank(&prefs, 1.0, &[], &RerankConfig::default()).is_empty());
    }

    #[test]
    fn a_new_embedding_size_resets_only_the_vector() {
        let mut prefs = LocalPreferences::default();
        prefs.observe(&item(0, 0.0, &["t"], vec![127, 0]), EventKind::Like, None, 0.0);
        prefs.observe(&item(1, 0.0, &["t"], vec![0, 0, 127]), EventKind::Like, None, 0.0);
        let probe = item(2, 0.0, &["t"], vec![0, 0, 127]);
        // Embedding: v = e, |v| = 1 → 1/2. Tags: w = 2 → 2/3. Mean: 7/12.
        assert!((prefs.affinity(&probe, 0.0) - 7.0 / 12.0).abs() < 1e-6);
    }

    #[test]
    fn tag_labels_show_the_value_of_a_column_tag() {
        assert_eq!(tag_label("release_year=1996"), "1996");
        assert_eq!(tag_label("genre=Film_Noir"), "Film Noir");
        assert_eq!(tag_label("Sci-Fi"), "Sci-Fi");
        assert_eq!(tag_label("a=b=c"), "b=c");
    }

    #[test]
    fn hints_never_show_a_column_name() {
        let hint = |tag: &str| Reason::LikedTag(tag.into()).hint();
        assert_eq!(hint("Comedy"), "Because you liked Comedy");
        assert_eq!(hint("genre=Film_Noir"), "Because you liked Film Noir");
        assert_eq!(hint("release_year=1996"), "From 1996, like others you liked");
    }

    #[test]
    fn taking_back_a_like_restores_the_taste_before_it() {
        let it = item(0, 0.0, &["Comedy"], vec![64, -32, 0]);
        let mut prefs = LocalPreferences::default();
        let before = prefs.clone();
        prefs.observe(&it, EventKind::Like, None, 100.0);
        prefs.take_back(&it, EventKind::Like, None, 100.0);
        assert!(prefs.vector.iter().all(|x| x.abs() < 1e-6), "{:?}", prefs.vector);
        assert_eq!(prefs.tags, before.tags);
    }
}
