//! A batch of user contexts, and the targets to predict from them, laid out as the tensors the
//! model reads.
//!
//! Encoder slots are fixed: `[static | positive × positive_len | lifelong × lifelong_tokens |
//! recent × short_len]`. The recent events are left-aligned, oldest first: the query that sees `v`
//! recent events sees slots `0..v` of the segment, in a training window as at serving, where a
//! user with `v` recent events is decoded. Absent tokens are padding.
//!
//! Who sees what:
//! - a prefix slot (static, positive, lifelong) attends to the prefix;
//! - the slot of recent event `i` attends to the prefix and recent events `0..=i` (causal);
//! - decoder query `q` attends to the prefix and the first `sees` recent events of its context.
//!
//! So a window's context serves every target in it: the target after `v` recent events is a query
//! that sees those `v` and nothing later.

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use super::ModelConfig;
use crate::generator::context::UserContext;
use crate::tokenizer::{Code, SemanticIds};

/// One prediction from a context: the item after its first `sees` recent events.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    pub sees: usize,
    /// The semantic ID to learn, for training.
    pub target: &'a [Code],
}

/// Tensors for one forward pass. Index 0 of every ID-like input means "none"; real ids are shifted by one.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[batch, features]` hashed static features, with `feature_weights` 1 where present.
    pub features: Tensor<2, Int>,
    pub feature_weights: Tensor<2>,
    /// Slots of positive events at the start of the `history_*` tensors.
    pub positive_len: usize,
    /// `[batch, positive_len + short_len]`: the positive events, then the recent ones.
    pub history_items: Tensor<2, Int>,
    pub history_feedback: Tensor<2, Int>,
    pub history_gaps: Tensor<2, Int>,
    /// One `[batch, positive_len + short_len]` tensor per semantic level.
    pub history_codes: Vec<Tensor<2, Int>>,
    /// `[batch, lifelong_tokens, item_embedding_dim + 1]`: mean item embedding and ln(1 + size).
    pub lifelong: Tensor<3>,
    /// `[batch, lifelong_tokens]` first-level code of each group.
    pub lifelong_codes: Tensor<2, Int>,
    /// `[batch, encoder_len, encoder_len]`: true where slot `q` may not attend slot `k`.
    pub encoder_mask: Tensor<3, Bool>,
    /// `[batch, queries, encoder_len]`: true where decoder query `q` may not attend slot `k`.
    pub query_mask: Tensor<3, Bool>,
    /// `[batch, queries]`: the slot of the last event each query sees (the static token's when
    /// it sees none), whose state starts the query's ID.
    pub query_slots: Tensor<2, Int>,
    /// For training: `[batch, queries, id_len]` IDs to predict, `[batch, queries]` weights (1 for
    /// a real query, 0 for padding), and the number of real queries.
    pub targets: Option<(Tensor<3, Int>, Tensor<2>, usize)>,
}

impl Batch {
    /// Lays out `contexts` with one query each that sees the whole context: the next item, to
    /// decode, or to learn when `targets` (one per context) are given.
    pub fn new(
        contexts: &[UserContext],
        targets: Option<&[&[Code]]>,
        ids: &SemanticIds,
        config: &ModelConfig,
        device: &Device,
    ) -> Batch {
        let queries: Vec<Vec<Query>> = match targets {
            Some(targets) => {
                contexts.iter().zip(targets).map(|(c, &target)| vec![Query { sees: c.recent.len(), target }]).collect()
            }
            None => contexts.iter().map(|c| vec![Query { sees: c.recent.len(), target: &[] }]).collect(),
        };
        Batch::layout(contexts, &queries, targets.is_some(), ids, config, device)
    }

    /// Lays out training windows: `queries[row]` are the targets learnt from `contexts[row]`.
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
        let b = contexts.len();
        let c = &config.context;
        let (positive_len, short_len, lifelong_len) = (c.positive_len, c.short_len, c.lifelong_tokens);
        let history_len = positive_len + short_len;
        let slots = config.encoder_len();
        // Slot offsets: static 0, positive 1.., lifelong, then recent.
        let lifelong_at = 1 + positive_len;
        let recent_at = lifelong_at + lifelong_len;
        let levels = config.semantic_levels;
        let width = contexts.iter().map(|x| x.static_features.len()).max().unwrap_or(0).max(1);
        let q_len = queries.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut features = vec![0i64; b * width];
        let mut feature_weights = vec![0f32; b * width];
        let mut items = vec![0i64; b * history_len];
        let mut feedback = vec![0i64; b * history_len];
        let mut gaps = vec![0i64; b * history_len];
        let mut codes = vec![vec![0i64; b * history_len]; levels];
        let dim = config.item_embedding_dim;
        let mut lifelong = vec![0f32; b * lifelong_len * (dim + 1)];
        let mut lifelong_codes = vec![0i64; b * lifelong_len];
        let mut encoder_mask = vec![true; b * slots * slots];
        let mut query_mask = vec![true; b * q_len * slots];
        let mut query_slots = vec![0i64; b * q_len];
        let id_len = config.level_sizes.len();
        let mut targets = vec![0i64; b * q_len * id_len];
        let mut weights = vec![0f32; b * q_len];
        let mut target_count = 0;
        for (row, context) in contexts.iter().enumerate() {
            for (slot, &f) in context.static_features.iter().enumerate() {
                features[row * width + slot] = f as i64 + 1;
                feature_weights[row * width + slot] = 1.0;
            }
            let recent = &context.recent[context.recent.len().saturating_sub(short_len)..];
            let positive = context.positive.iter().take(positive_len).enumerate();
            let history = positive.chain(recent.iter().enumerate().map(|(i, t)| (positive_len + i, t)));
            for (slot, token) in history {
                let at = row * history_len + slot;
                items[at] = token.item as i64 + 1;
                feedback[at] = token.feedback as i64;
                gaps[at] = token.gap as i64;
                for (level, level_codes) in codes.iter_mut().enumerate() {
                    level_codes[at] = ids.id_of(token.item)[level] as i64 + 1;
                }
            }
            for (slot, group) in context.lifelong.iter().take(lifelong_len).enumerate() {
                let at = (row * lifelong_len + slot) * (dim + 1);
                lifelong[at..at + dim].copy_from_slice(&group.mean_embedding);
                lifelong[at + dim] = (1.0 + group.count as f32).ln();
                lifelong_codes[row * lifelong_len + slot] = group.code as i64 + 1;
            }
            // The real prefix slots, and the slot of each recent event.
            let prefix: Vec<usize> = std::iter::once(0)
                .chain((0..context.positive.len().min(positive_len)).map(|i| 1 + i))
                .chain((0..context.lifelong.len().min(lifelong_len)).map(|i| lifelong_at + i))
                .collect();
            let recent_slot = |i: usize| recent_at + i;
            let visible = |mask: &mut [bool], sees: usize| {
                prefix.iter().for_each(|&k| mask[k] = false);
                (0..sees.min(recent.len())).for_each(|i| mask[recent_slot(i)] = false);
            };
            let encoder = &mut encoder_mask[row * slots * slots..][..slots * slots];
            for &q in &prefix {
                visible(&mut encoder[q * slots..][..slots], 0);
            }
            for i in 0..recent.len() {
                visible(&mut encoder[recent_slot(i) * slots..][..slots], i + 1);
            }
            for (q, query) in queries[row].iter().enumerate() {
                let sees = query.sees.min(recent.len());
                visible(&mut query_mask[(row * q_len + q) * slots..][..slots], sees);
                query_slots[row * q_len + q] = if sees == 0 { 0 } else { recent_slot(sees - 1) as i64 };
                if with_targets {
                    let at = (row * q_len + q) * id_len;
                    targets[at..at + id_len].iter_mut().zip(query.target).for_each(|(t, &c)| *t = c as i64);
                    weights[row * q_len + q] = 1.0;
                    target_count += 1;
                }
            }
        }
        let int2 = |v: Vec<i64>, cols: usize| Tensor::<2, Int>::from_data(TensorData::new(v, [b, cols]), device);
        let bool3 =
            |v: Vec<bool>, rows: usize| Tensor::<3, Bool>::from_data(TensorData::new(v, [b, rows, slots]), device);
        let targets = with_targets.then(|| {
            (
                Tensor::<3, Int>::from_data(TensorData::new(targets, [b, q_len, id_len]), device),
                Tensor::<2>::from_data(TensorData::new(weights, [b, q_len]), device),
                target_count,
            )
        });
        Batch {
            features: int2(features, width),
            feature_weights: Tensor::from_data(TensorData::new(feature_weights, [b, width]), device),
            positive_len,
            history_items: int2(items, history_len),
            history_feedback: int2(feedback, history_len),
            history_gaps: int2(gaps, history_len),
            history_codes: codes.into_iter().map(|v| int2(v, history_len)).collect(),
            lifelong: Tensor::from_data(TensorData::new(lifelong, [b, lifelong_len, dim + 1]), device),
            lifelong_codes: int2(lifelong_codes, lifelong_len),
            encoder_mask: bool3(encoder_mask, slots),
            query_mask: bool3(query_mask, q_len),
            query_slots: int2(query_slots, q_len),
            targets,
        }
    }
}
