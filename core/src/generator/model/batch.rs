//! A batch of user contexts, and the targets to predict from them, laid out as the tensors the
//! model reads.
//!
//! A context is one **segment** of the stream: `[static | positives | lifelong | recent events]`,
//! holding only the tokens it has. Each token keeps the logical position of its part (static 0,
//! positive `1 + i`, lifelong `1 + positive_len + j`, recent `1 + positive_len + lifelong + k`),
//! whatever the physical slot, and the recent events count from the oldest: the query that sees
//! `v` recent events sees positions `0..v` of the recent part, in a training window as at serving.
//!
//! Segments are **packed** into rows of at most `stream_len` slots, largest first, each into the
//! first row it fits (as `../shared/peers/sasrec.py` packs its windows): on MovieLens-100K a
//! third of a fixed layout would be padding. Attention never crosses a segment, so a packed row
//! computes what separate rows would.
//!
//! Who sees what, inside a segment:
//! - a prefix slot (static, positive, lifelong) attends to the prefix;
//! - the slot of recent event `i` attends to the prefix and recent events `0..=i` (causal);
//! - query `q` reads the state of the last slot it sees: recent event `sees - 1`, or the static
//!   token when it sees no recent event.
//!
//! So a window's context serves every target in it: the target after `v` recent events is a query
//! that sees those `v` and nothing later.

use std::collections::HashMap;

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use super::ModelConfig;
use crate::data::ItemIdx;
use crate::generator::context::UserContext;
use crate::tokenizer::SemanticIds;

/// One prediction from a context: the item after its first `sees` recent events.
#[derive(Clone, Copy, Debug)]
pub struct Query {
    pub sees: usize,
    /// The item to learn, for training; its semantic ID is looked up when the batch is laid out.
    pub item: Option<ItemIdx>,
}

/// What the queries of a training batch should generate, query by query.
#[derive(Clone, Debug)]
pub struct Targets {
    /// `[queries, id_len]`: the semantic IDs.
    pub codes: Tensor<2, Int>,
    /// `[queries]`: the items they name.
    pub items: Tensor<1, Int>,
}

/// Tensors for one forward pass. Tokens are built compactly, then placed: `slots` picks, for every
/// slot of the `[rows, len]` layout, a row of `[static tokens | event tokens | lifelong tokens |
/// zeros]`. Index 0 of the feature, feedback and gap inputs means "none" (real values are shifted
/// by one).
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[contexts, features]` hashed static features, with `feature_weights` 1 where present.
    pub features: Tensor<2, Int>,
    pub feature_weights: Tensor<2>,
    /// `[events]`: item index + 1, feedback bucket and gap bucket of every positive and recent event.
    pub event_items: Tensor<1, Int>,
    pub event_feedback: Tensor<1, Int>,
    pub event_gaps: Tensor<1, Int>,
    /// One `[events]` tensor of codes per semantic level.
    pub event_codes: Vec<Tensor<1, Int>>,
    /// `[groups, item_embedding_dim + 1]`: mean item embedding and ln(1 + size) of each lifelong group.
    pub lifelong: Tensor<2>,
    /// `[groups]` first-level code of each group.
    pub lifelong_codes: Tensor<1, Int>,
    /// `[lists, K]`: item index + 1 and share of the entries of each distinct [`Trending`] list
    /// of the batch; list 0 is the empty list (all shares 0) of the tokens that carry none.
    ///
    /// [`Trending`]: crate::generator::trend::Trending
    pub trend_items: Tensor<2, Int>,
    pub trend_shares: Tensor<2>,
    /// `[contexts + events]`: what each static token and each event token carries of the
    /// [`Moment`] of the query that reads its state: its away bucket (0: no query reads this
    /// token, or its moment is unknown) and its trend list.
    ///
    /// [`Moment`]: crate::generator::context::Moment
    pub moment_away: Tensor<1, Int>,
    pub trend_of: Tensor<1, Int>,
    /// `[rows · len]`: the token of each slot (see the struct's doc).
    pub slots: Tensor<1, Int>,
    /// `[rows, len]`: the logical position of each slot.
    pub positions: Tensor<2, Int>,
    /// `[rows, len, len]`: true where slot `q` may not attend slot `k`. Padding sees itself.
    pub hidden: Tensor<3, Bool>,
    /// Whether each of the `rows · len` slots holds a token, row-major.
    pub real_slots: Vec<bool>,
    /// `[queries]`: the slot (in `rows · len`) whose state each query reads, context by context.
    pub queries: Tensor<1, Int>,
    /// For training: what each query should generate.
    pub targets: Option<Targets>,
    /// Seed of this pass's dropout masks; `None` (the default) runs without dropout.
    pub noise_seed: Option<u64>,
}

/// The distinct trend lists of a batch, list 0 empty.
struct TrendLists {
    lists: Vec<Vec<(ItemIdx, f32)>>,
    index: HashMap<*const (ItemIdx, f32), i64>,
}

impl Default for TrendLists {
    fn default() -> Self {
        TrendLists { lists: vec![Vec::new()], index: HashMap::new() }
    }
}

impl TrendLists {
    /// The index of `list`, added if new. Lists are shared (`Arc`s), so identity finds repeats.
    fn index(&mut self, list: &[(ItemIdx, f32)]) -> i64 {
        if list.is_empty() {
            return 0;
        }
        *self.index.entry(list.as_ptr()).or_insert_with(|| {
            self.lists.push(list.to_vec());
            self.lists.len() as i64 - 1
        })
    }

    /// `[lists, K]` items + 1 and shares, padded with item 0 at share 0.
    fn tensors(self, device: &Device) -> (Tensor<2, Int>, Tensor<2>) {
        let k = self.lists.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let rows = self.lists.len();
        let (mut items, mut shares) = (vec![0i64; rows * k], vec![0f32; rows * k]);
        for (r, list) in self.lists.iter().enumerate() {
            for (j, &(item, share)) in list.iter().enumerate() {
                items[r * k + j] = item as i64 + 1;
                shares[r * k + j] = share;
            }
        }
        (
            Tensor::from_data(TensorData::new(items, [rows, k]), device),
            Tensor::from_data(TensorData::new(shares, [rows, k]), device),
        )
    }
}

/// A token of a segment, by kind and index among the batch's tokens of that kind.
#[derive(Clone, Copy)]
enum Token {
    Static(usize),
    Event(usize),
    Group(usize),
}

/// A context's slots before packing, in order.
struct Segment {
    /// `(logical position, token)` of each slot.
    slots: Vec<(i64, Token)>,
    /// Slots (within the segment) of the prefix and of each recent event.
    prefix: usize,
    recent: usize,
}

impl Batch {
    /// Lays out `contexts` with one query each that sees the whole context: the next item, to
    /// decode, or to learn when `targets` (one item per context) are given.
    pub fn new(
        contexts: &[UserContext],
        targets: Option<&[ItemIdx]>,
        ids: &SemanticIds,
        config: &ModelConfig,
        device: &Device,
    ) -> Batch {
        let queries: Vec<Vec<Query>> = match targets {
            Some(targets) => contexts
                .iter()
                .zip(targets)
                .map(|(c, &item)| vec![Query { sees: c.recent.len(), item: Some(item) }])
                .collect(),
            None => contexts.iter().map(|c| vec![Query { sees: c.recent.len(), item: None }]).collect(),
        };
        Batch::layout(contexts, &queries, targets.is_some(), ids, config, device)
    }

    /// Lays out training windows: `queries[i]` are the targets learnt from `contexts[i]`.
    pub fn windows(
        contexts: &[UserContext],
        queries: &[Vec<Query>],
        ids: &SemanticIds,
        config: &ModelConfig,
        device: &Device,
    ) -> Batch {
        Batch::layout(contexts, queries, true, ids, config, device)
    }

    fn layout(
        contexts: &[UserContext],
        queries: &[Vec<Query>],
        with_targets: bool,
        ids: &SemanticIds,
        config: &ModelConfig,
        device: &Device,
    ) -> Batch {
        let c = &config.context;
        let (positive_len, short_len, lifelong_len) = (c.positive_len, c.short_len, c.lifelong_tokens);
        let levels = config.semantic_levels;
        let dim = config.item_embedding_dim;
        let n = contexts.len();
        let width = contexts.iter().map(|x| x.static_features.len()).max().unwrap_or(0).max(1);
        let mut features = vec![0i64; n * width];
        let mut feature_weights = vec![0f32; n * width];
        let (mut items, mut feedback, mut gaps) = (Vec::new(), Vec::new(), Vec::new());
        let mut codes = vec![Vec::new(); levels];
        let (mut lifelong, mut lifelong_codes) = (Vec::new(), Vec::new());
        let mut trends = TrendLists::default();
        // Moments of the static tokens, then of the events: (away bucket, trend list).
        let mut static_moments = Vec::with_capacity(n);
        let mut event_moments = Vec::new();

        // Tokens first: events and lifelong groups in context order; indices are fixed up below
        // once the number of contexts (static tokens) and events is known.
        let mut segments = Vec::with_capacity(n);
        for (i, context) in contexts.iter().enumerate() {
            for (slot, &f) in context.static_features.iter().enumerate() {
                features[i * width + slot] = f as i64 + 1;
                feature_weights[i * width + slot] = 1.0;
            }
            let mut event = |token: &crate::generator::context::HistoryToken| {
                items.push(token.item as i64 + 1);
                feedback.push(token.feedback as i64);
                gaps.push(token.gap as i64);
                for (level, level_codes) in codes.iter_mut().enumerate() {
                    level_codes.push(ids.id_of(token.item)[level] as i64);
                }
                Token::Event(items.len() - 1)
            };
            let positives: Vec<Token> = context.positive.iter().take(positive_len).map(&mut event).collect();
            let skipped = context.recent.len().saturating_sub(short_len);
            let recent: Vec<Token> = context.recent[skipped..].iter().map(&mut event).collect();
            // The query that sees `v` recent events reads the static token (v = 0) or event v - 1.
            let mut moment =
                |v: usize| context.moments.get(v).map_or((0, 0), |m| (m.away as i64, trends.index(&m.trending)));
            static_moments.push(moment(skipped));
            event_moments.extend(std::iter::repeat_n((0, 0), positives.len()));
            event_moments.extend((1..=recent.len()).map(|v| moment(skipped + v)));
            let groups: Vec<Token> = context
                .lifelong
                .iter()
                .take(lifelong_len)
                .map(|group| {
                    lifelong.extend_from_slice(&group.mean_embedding);
                    lifelong.push((1.0 + group.count as f32).ln());
                    lifelong_codes.push(group.code as i64);
                    Token::Group(lifelong_codes.len() - 1)
                })
                .collect();
            let lifelong_at = 1 + positive_len;
            let recent_at = lifelong_at + lifelong_len;
            let mut slots = vec![(0, Token::Static(i))];
            slots.extend(positives.into_iter().enumerate().map(|(k, t)| (1 + k as i64, t)));
            slots.extend(groups.into_iter().enumerate().map(|(k, t)| ((lifelong_at + k) as i64, t)));
            let prefix = slots.len();
            slots.extend(recent.iter().enumerate().map(|(k, &t)| ((recent_at + k) as i64, t)));
            segments.push(Segment { slots, prefix, recent: recent.len() });
        }
        let (events, groups) = (items.len(), lifelong_codes.len());
        // The row of `[static | events | lifelong | zeros]` a token is.
        let zero = (n + events + groups) as i64;
        let token = |t: Token| match t {
            Token::Static(i) => i as i64,
            Token::Event(e) => (n + e) as i64,
            Token::Group(g) => (n + events + g) as i64,
        };

        // Pack segments into rows, largest first, each into the first row with room.
        let capacity = config.stream_len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(segments[i].slots.len()));
        let mut rows: Vec<usize> = Vec::new(); // used slots per row
        let mut placed = vec![(0usize, 0usize); n]; // (row, offset) of each segment
        for &i in &order {
            let len = segments[i].slots.len();
            let row = rows.iter().position(|&used| used + len <= capacity).unwrap_or_else(|| {
                rows.push(0);
                rows.len() - 1
            });
            placed[i] = (row, rows[row]);
            rows[row] += len;
        }
        let len = rows.iter().copied().max().unwrap_or(1).max(1);
        let b = rows.len().max(1);
        let mut slot_tokens = vec![zero; b * len];
        let mut positions = vec![0i64; b * len];
        let mut hidden = vec![true; b * len * len];
        let mut real_slots = vec![false; b * len];
        let mut query_slots = Vec::new();
        let id_len = config.level_sizes.len();
        let mut targets = Vec::new();
        let mut target_items = Vec::new();
        for (i, segment) in segments.iter().enumerate() {
            let (row, offset) = placed[i];
            let at = |k: usize| row * len + offset + k;
            for (k, &(position, t)) in segment.slots.iter().enumerate() {
                slot_tokens[at(k)] = token(t);
                positions[at(k)] = position;
                real_slots[at(k)] = true;
            }
            // Slot `q` of the segment sees its prefix and its first `sees` recent events.
            let visible = |hidden: &mut [bool], q: usize, sees: usize| {
                for k in 0..segment.prefix + sees {
                    hidden[at(q) * len + offset + k] = false;
                }
            };
            for q in 0..segment.prefix {
                visible(&mut hidden, q, 0);
            }
            for r in 0..segment.recent {
                visible(&mut hidden, segment.prefix + r, r + 1);
            }
            for query in &queries[i] {
                let sees = query.sees.min(segment.recent);
                let slot = if sees == 0 { 0 } else { segment.prefix + sees - 1 };
                query_slots.push(at(slot) as i64);
                if let Some(item) = query.item.filter(|_| with_targets) {
                    targets.extend(ids.id_of(item).iter().map(|&c| c as i64));
                    target_items.push(item as i64);
                }
            }
        }
        // A padding slot sees itself, so that no attention row is empty.
        for s in (0..b * len).filter(|&s| !real_slots[s]) {
            hidden[s * len + s % len] = false;
        }
        let int1 = |v: Vec<i64>| {
            let len = v.len();
            Tensor::<1, Int>::from_data(TensorData::new(v, [len]), device)
        };
        let q = query_slots.len();
        let (trend_items, trend_shares) = trends.tensors(device);
        let (moment_away, trend_of) = static_moments.into_iter().chain(event_moments).unzip();
        Batch {
            features: Tensor::from_data(TensorData::new(features, [n, width]), device),
            feature_weights: Tensor::from_data(TensorData::new(feature_weights, [n, width]), device),
            event_items: int1(items),
            event_feedback: int1(feedback),
            event_gaps: int1(gaps),
            event_codes: codes.into_iter().map(int1).collect(),
            lifelong: Tensor::from_data(TensorData::new(lifelong, [groups, dim + 1]), device),
            lifelong_codes: int1(lifelong_codes),
            trend_items,
            trend_shares,
            moment_away: int1(moment_away),
            trend_of: int1(trend_of),
            slots: int1(slot_tokens),
            positions: Tensor::from_data(TensorData::new(positions, [b, len]), device),
            hidden: Tensor::from_data(TensorData::new(hidden, [b, len, len]), device),
            real_slots,
            queries: int1(query_slots),
            targets: with_targets.then(|| Targets {
                codes: Tensor::from_data(TensorData::new(targets, [q, id_len]), device),
                items: int1(target_items),
            }),
            noise_seed: None,
        }
    }
}
