//! The reward network: one user vector from the recent history, one item vector, and one small
//! tower per engagement objective over their interaction (OneRec's multi-task reward model).

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, relu};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::data::{Event, ItemIdx};
use crate::generator::context::{FEEDBACK_BUCKETS, feedback_bucket};

/// Sizes of the reward network; stored in the reward snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RewardNetConfig {
    pub items: usize,
    pub dim: usize,
    pub hidden: usize,
    /// Most recent events the user vector is built from.
    pub history_len: usize,
    /// Number of towers (one per objective).
    pub towers: usize,
}

impl RewardNetConfig {
    pub fn init(&self, device: &Device) -> RewardModel {
        let tower = || Tower {
            hidden: LinearConfig::new(3 * self.dim, self.hidden).init(device),
            out: LinearConfig::new(self.hidden, 1).init(device),
        };
        RewardModel {
            item_embedding: EmbeddingConfig::new(self.items + 1, self.dim).init(device),
            feedback_embedding: EmbeddingConfig::new(FEEDBACK_BUCKETS, self.dim).init(device),
            user_projection: LinearConfig::new(self.dim, self.dim).init(device),
            towers: (0..self.towers).map(|_| tower()).collect(),
        }
    }
}

/// One objective's head: a hidden layer, then the logit.
#[derive(Module, Debug)]
pub struct Tower {
    hidden: Linear,
    out: Linear,
}

/// The multi-task reward network.
#[derive(Module, Debug)]
pub struct RewardModel {
    item_embedding: Embedding,
    feedback_embedding: Embedding,
    user_projection: Linear,
    towers: Vec<Tower>,
}

/// (user history, candidate item) pairs as tensors. Index 0 of the item inputs is padding.
#[derive(Clone, Debug)]
pub struct RewardBatch {
    /// `[batch, history_len]` item index + 1, 0 where empty.
    pub history_items: Tensor<2, Int>,
    /// `[batch, history_len]` feedback bucket of each history event.
    pub history_feedback: Tensor<2, Int>,
    /// `[batch, history_len]` 1 where an event is present.
    pub history_mask: Tensor<2>,
    /// `[batch]` candidate item index + 1.
    pub items: Tensor<1, Int>,
}

impl RewardBatch {
    /// One row per `(history, item)` pair of a network over `known` items; only the last
    /// `history_len` events of each history on those items count.
    pub fn new(pairs: &[(&[Event], ItemIdx)], history_len: usize, known: usize, device: &Device) -> RewardBatch {
        let b = pairs.len();
        let h = history_len.max(1);
        let mut items = vec![0i64; b * h];
        let mut feedback = vec![0i64; b * h];
        let mut mask = vec![0f32; b * h];
        for (row, (history, _)) in pairs.iter().enumerate() {
            let mut recent: Vec<&Event> =
                history.iter().rev().filter(|e| (e.item as usize) < known).take(history_len).collect();
            recent.reverse();
            for (slot, e) in recent.into_iter().enumerate() {
                items[row * h + slot] = e.item as i64 + 1;
                feedback[row * h + slot] = feedback_bucket(e.feedback) as i64;
                mask[row * h + slot] = 1.0;
            }
        }
        let candidates: Vec<i64> = pairs.iter().map(|&(_, item)| item as i64 + 1).collect();
        RewardBatch {
            history_items: Tensor::from_data(TensorData::new(items, [b, h]), device),
            history_feedback: Tensor::from_data(TensorData::new(feedback, [b, h]), device),
            history_mask: Tensor::from_data(TensorData::new(mask, [b, h]), device),
            items: Tensor::from_data(TensorData::new(candidates, [b]), device),
        }
    }
}

impl RewardModel {
    /// Logits `[batch, objectives]`.
    pub fn forward(&self, batch: &RewardBatch) -> Tensor<2> {
        let mask = batch.history_mask.clone().unsqueeze_dim::<3>(2);
        let tokens = self.item_embedding.forward(batch.history_items.clone())
            + self.feedback_embedding.forward(batch.history_feedback.clone());
        let count = batch.history_mask.clone().sum_dim(1).clamp_min(1.0);
        let user = (tokens * mask).sum_dim(1).squeeze_dim::<2>(1) / count;
        let user = gelu(self.user_projection.forward(user));
        let [b] = batch.items.dims();
        let item = self.item_embedding.forward(batch.items.clone().reshape([b, 1])).squeeze_dim::<2>(1);
        let x = Tensor::cat(vec![user.clone(), item.clone(), user * item], 1);
        let logits = self.towers.iter().map(|t| t.out.forward(relu(t.hidden.forward(x.clone())))).collect();
        Tensor::cat(logits, 1)
    }
}
