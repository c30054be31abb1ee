//! A batch of user contexts (and target IDs) laid out as the tensors the model reads.
//!
//! Encoder slots are fixed: `[static | short-term × short_len | positive × positive_len |
//! lifelong × lifelong_tokens]`; absent tokens are padding, masked out of attention.

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use super::ModelConfig;
use crate::context::UserContext;
use crate::tokenizer::{Code, SemanticIds};

/// Tensors for one forward pass. Index 0 of every ID-like input means "none"; real ids are shifted by one.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[batch, features]` hashed static features, with `feature_weights` 1 where present.
    pub features: Tensor<2, Int>,
    pub feature_weights: Tensor<2>,
    /// `[batch, short_len + positive_len]`.
    pub history_items: Tensor<2, Int>,
    pub history_feedback: Tensor<2, Int>,
    /// One `[batch, short_len + positive_len]` tensor per semantic level.
    pub history_codes: Vec<Tensor<2, Int>>,
    /// `[batch, lifelong_tokens, item_embedding_dim + 1]`: mean item embedding and ln(1 + size).
    pub lifelong: Tensor<3>,
    /// `[batch, lifelong_tokens]` first-level code of each group.
    pub lifelong_codes: Tensor<2, Int>,
    /// `[batch, encoder_len]`, true on padding slots.
    pub padding: Tensor<2, Bool>,
    /// `[batch, id_len]` semantic IDs to predict, for training.
    pub targets: Option<Tensor<2, Int>>,
}

impl Batch {
    /// Lays out `contexts`; `targets`, when given, are the semantic IDs to learn (one per context).
    pub fn new(
        contexts: &[UserContext],
        targets: Option<&[&[Code]]>,
        ids: &SemanticIds,
        config: &ModelConfig,
        device: &Device,
    ) -> Batch {
        let b = contexts.len();
        let c = &config.context;
        let history_len = c.short_len + c.positive_len;
        let levels = config.semantic_levels;
        let width = contexts.iter().map(|x| x.static_features.len()).max().unwrap_or(0).max(1);
        let mut features = vec![0i64; b * width];
        let mut feature_weights = vec![0f32; b * width];
        let mut items = vec![0i64; b * history_len];
        let mut feedback = vec![0i64; b * history_len];
        let mut codes = vec![vec![0i64; b * history_len]; levels];
        let dim = config.item_embedding_dim;
        let mut lifelong = vec![0f32; b * c.lifelong_tokens * (dim + 1)];
        let mut lifelong_codes = vec![0i64; b * c.lifelong_tokens];
        let mut padding = vec![true; b * config.encoder_len()];
        for (row, context) in contexts.iter().enumerate() {
            for (slot, &f) in context.static_features.iter().enumerate() {
                features[row * width + slot] = f as i64 + 1;
                feature_weights[row * width + slot] = 1.0;
            }
            let pad = &mut padding[row * config.encoder_len()..][..config.encoder_len()];
            pad[0] = false;
            let segments = [(0, c.short_len, &context.short_term), (c.short_len, c.positive_len, &context.positive)];
            for (offset, len, tokens) in segments {
                for (slot, token) in tokens.iter().take(len).enumerate() {
                    let at = row * history_len + offset + slot;
                    items[at] = token.item as i64 + 1;
                    feedback[at] = token.feedback as i64;
                    for (level, level_codes) in codes.iter_mut().enumerate() {
                        level_codes[at] = ids.id_of(token.item)[level] as i64 + 1;
                    }
                    pad[1 + offset + slot] = false;
                }
            }
            for (slot, group) in context.lifelong.iter().take(c.lifelong_tokens).enumerate() {
                let at = (row * c.lifelong_tokens + slot) * (dim + 1);
                lifelong[at..at + dim].copy_from_slice(&group.mean_embedding);
                lifelong[at + dim] = (1.0 + group.count as f32).ln();
                lifelong_codes[row * c.lifelong_tokens + slot] = group.code as i64 + 1;
                pad[1 + history_len + slot] = false;
            }
        }
        let int2 = |v: Vec<i64>, cols: usize| Tensor::<2, Int>::from_data(TensorData::new(v, [b, cols]), device);
        let targets = targets.map(|t| {
            let id_len = config.level_sizes.len();
            let flat: Vec<i64> = t.iter().flat_map(|id| id.iter().map(|&c| c as i64)).collect();
            int2(flat, id_len)
        });
        Batch {
            features: int2(features, width),
            feature_weights: Tensor::from_data(TensorData::new(feature_weights, [b, width]), device),
            history_items: int2(items, history_len),
            history_feedback: int2(feedback, history_len),
            history_codes: codes.into_iter().map(|v| int2(v, history_len)).collect(),
            lifelong: Tensor::from_data(TensorData::new(lifelong, [b, c.lifelong_tokens, dim + 1]), device),
            lifelong_codes: int2(lifelong_codes, c.lifelong_tokens),
            padding: Tensor::from_data(TensorData::new(padding, [b, config.encoder_len()]), device),
            targets,
        }
    }
}
