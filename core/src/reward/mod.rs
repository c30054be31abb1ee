//! The reward model of preference alignment (DESIGN.md §2 "Alignment"): a multi-task network that
//! predicts, for a user and an item, the probability of each engagement objective, fused into one
//! **P-score** with configurable weights. It scores what the generator proposes during ECPO and DPO,
//! and what it recommends in `onerec eval`, where it can also choose the slate ([`slate`]).

pub mod metrics;
pub mod model;
pub mod slate;
pub mod train;

use std::path::Path;

use burn::tensor::Device;
use burn::tensor::activation::sigmoid;
use serde::{Deserialize, Serialize};

use crate::codec::{self, Format};
use crate::data::{Dataset, Event, Feedback, ItemIdx};
use crate::error::{Error, Result};
use crate::training::weights_from_bytes;
pub use model::{RewardBatch, RewardModel, RewardNetConfig};
pub use train::{RewardReport, RewardTrainConfig, train_reward};

/// One engagement objective: which events are positive for it, and which it says nothing about.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Objective {
    /// A rating at or above the threshold (MovieLens: ≥ 4).
    RatingAtLeast(f32),
    /// A rating at or below the threshold (MovieLens: ≤ 2); a negative objective.
    RatingAtMost(f32),
    /// Clicked (a like or a watch counts as a click too), against a bare impression or a skip.
    Click,
    Like,
    /// A negative objective.
    Skip,
    /// Watched at least [`Feedback::POSITIVE_WATCH_SECONDS`].
    LongWatch,
}

impl Objective {
    /// The label of an event for this objective; `None` when the event does not speak to it
    /// (a rating says nothing of clicks, and an event kind nothing of ratings).
    pub fn label(self, feedback: Feedback) -> Option<bool> {
        use Feedback::*;
        match (self, feedback) {
            (Objective::RatingAtLeast(t), Rating(r)) => Some(r >= t),
            (Objective::RatingAtMost(t), Rating(r)) => Some(r <= t),
            (Objective::RatingAtLeast(_) | Objective::RatingAtMost(_), _) | (_, Rating(_)) => None,
            (Objective::Click, f) => Some(matches!(f, Click | Like | WatchTime(_))),
            (Objective::Like, f) => Some(matches!(f, Like)),
            (Objective::Skip, f) => Some(matches!(f, Skip)),
            (Objective::LongWatch, f) => Some(matches!(f, WatchTime(s) if s >= Feedback::POSITIVE_WATCH_SECONDS)),
        }
    }

    /// Negative objectives enter the P-score as `1 − p`.
    pub fn is_negative(self) -> bool {
        matches!(self, Objective::RatingAtMost(_) | Objective::Skip)
    }

    pub fn name(self) -> String {
        match self {
            Objective::RatingAtLeast(t) => format!("rating>={t}"),
            Objective::RatingAtMost(t) => format!("rating<={t}"),
            Objective::Click => "click".into(),
            Objective::Like => "like".into(),
            Objective::Skip => "skip".into(),
            Objective::LongWatch => "watch".into(),
        }
    }

    /// The objectives a data set supports: the two rating thresholds when it has ratings,
    /// otherwise every event kind that occurs both as a positive and as a negative.
    pub fn for_dataset(dataset: &Dataset) -> Vec<Objective> {
        if dataset.events.iter().any(|e| matches!(e.feedback, Feedback::Rating(_))) {
            return vec![Objective::RatingAtLeast(4.0), Objective::RatingAtMost(2.0)];
        }
        [Objective::Click, Objective::Like, Objective::Skip, Objective::LongWatch]
            .into_iter()
            .filter(|o| {
                let labels: Vec<bool> = dataset.events.iter().filter_map(|e| o.label(e.feedback)).collect();
                labels.iter().any(|&l| l) && labels.iter().any(|&l| !l)
            })
            .collect()
    }
}

/// The P-score: the weighted mean over objectives of `p` (or `1 − p` for a negative objective),
/// so that it lies in [0, 1] and higher is always better.
pub fn fuse(objectives: &[Objective], weights: &[f32], probabilities: &[f32]) -> f32 {
    let (mut total, mut weight) = (0.0, 0.0);
    for ((o, &w), &p) in objectives.iter().zip(weights).zip(probabilities) {
        total += w * if o.is_negative() { 1.0 - p } else { p };
        weight += w;
    }
    if weight > 0.0 { total / weight } else { 0.0 }
}

/// A trained reward model with its objectives and fusion weights, as stored in `reward.snap`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RewardSnapshot {
    pub net: RewardNetConfig,
    pub objectives: Vec<Objective>,
    /// Fusion weight of each objective in the P-score.
    pub weights: Vec<f32>,
    /// Item ids of the catalogue the model was trained on, in index order.
    pub item_ids: Vec<String>,
    /// Burnpack bytes of the network.
    pub parameters: Vec<u8>,
    pub report: RewardReport,
}

const FORMAT: Format = Format { magic: b"ONRECRWD", version: 1, kind: "reward model" };

impl RewardSnapshot {
    pub fn save(&self, path: &Path) -> Result<()> {
        codec::save(FORMAT, self, path)
    }

    /// Reads a reward snapshot, refusing a damaged one or one whose parts disagree.
    pub fn load(path: &Path) -> Result<RewardSnapshot> {
        let s: RewardSnapshot = codec::load(FORMAT, path)?;
        if s.objectives.len() != s.net.towers || s.weights.len() != s.net.towers || s.item_ids.len() != s.net.items {
            return Err(Error::corrupt(path, "the reward model's objectives, weights and towers disagree"));
        }
        Ok(s)
    }

    /// The scorer on `device`, refusing a data set with another catalogue. The data set may list
    /// items after those the model was trained on (items added since): it does not know them.
    pub fn scorer(&self, dataset: &Dataset, device: &Device) -> Result<Reward> {
        if self.item_ids.len() > dataset.n_items() || self.item_ids.iter().zip(&dataset.items).any(|(a, b)| *a != b.id)
        {
            return Err(Error::Config(format!(
                "the reward model was trained on another catalogue ({} items) than {} ({} items)",
                self.item_ids.len(),
                dataset.name,
                dataset.n_items()
            )));
        }
        let model = weights_from_bytes(self.net.init(device), &self.parameters, "the reward model")?;
        Ok(Reward {
            model,
            net: self.net.clone(),
            objectives: self.objectives.clone(),
            weights: self.weights.clone(),
            device: device.clone(),
        })
    }
}

/// Scores (history, item) pairs: what alignment maximises.
pub trait RewardFn: Sync {
    /// The P-score of each pair; each item must be one the model [knows](RewardFn::knows).
    fn p_scores(&self, pairs: &[(&[Event], ItemIdx)]) -> Vec<f32>;

    /// Whether the model was trained with this item, and so can score it. Items added to the
    /// catalogue after it was trained are unknown; in a history they are passed over.
    fn knows(&self, _item: ItemIdx) -> bool {
        true
    }
}

/// A reward model ready to score.
#[derive(Clone, Debug)]
pub struct Reward {
    pub model: RewardModel,
    pub net: RewardNetConfig,
    pub objectives: Vec<Objective>,
    pub weights: Vec<f32>,
    pub device: Device,
}

impl Reward {
    /// Per-objective probabilities, `pairs.len() × objectives`, row-major.
    pub fn probabilities(&self, pairs: &[(&[Event], ItemIdx)]) -> Vec<f32> {
        if pairs.is_empty() {
            return Vec::new();
        }
        debug_assert!(pairs.iter().all(|&(_, i)| self.knows(i)), "only items the reward model knows");
        let batch = RewardBatch::new(pairs, self.net.history_len, self.net.items, &self.device);
        sigmoid(self.model.forward(&batch)).into_data().try_to_vec::<f32>().expect("f32 probabilities")
    }
}

impl RewardFn for Reward {
    fn p_scores(&self, pairs: &[(&[Event], ItemIdx)]) -> Vec<f32> {
        let t = self.objectives.len();
        self.probabilities(pairs).chunks_exact(t).map(|p| fuse(&self.objectives, &self.weights, p)).collect()
    }

    fn knows(&self, item: ItemIdx) -> bool {
        (item as usize) < self.net.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_the_objective_and_ignore_foreign_events() {
        let at_least = Objective::RatingAtLeast(4.0);
        let at_most = Objective::RatingAtMost(2.0);
        assert_eq!(at_least.label(Feedback::Rating(4.0)), Some(true));
        assert_eq!(at_least.label(Feedback::Rating(3.0)), Some(false));
        assert_eq!(at_most.label(Feedback::Rating(2.0)), Some(true));
        assert_eq!(at_most.label(Feedback::Click), None);
        assert_eq!(Objective::Click.label(Feedback::Rating(5.0)), None);
        assert_eq!(Objective::Click.label(Feedback::Like), Some(true));
        assert_eq!(Objective::Click.label(Feedback::Impression), Some(false));
        assert_eq!(Objective::LongWatch.label(Feedback::WatchTime(31.0)), Some(true));
        assert_eq!(Objective::LongWatch.label(Feedback::WatchTime(3.0)), Some(false));
    }

    #[test]
    fn objectives_follow_what_the_data_records() {
        use crate::data::{DatasetBuilder, Origin};
        let build = |feedback: &[Feedback]| {
            let mut b = DatasetBuilder::new();
            for (t, &f) in feedback.iter().enumerate() {
                b.add_event("u", &format!("i{t}"), t as i64, f, &Origin::new("t", t + 1));
            }
            Objective::for_dataset(&b.finish("t").unwrap())
        };
        let ratings = build(&[Feedback::Rating(5.0), Feedback::Rating(1.0)]);
        assert_eq!(ratings, [Objective::RatingAtLeast(4.0), Objective::RatingAtMost(2.0)]);
        // No watch event reaches 30 s, so "watch" has no positive and is left out.
        let kinds =
            build(&[Feedback::Impression, Feedback::Click, Feedback::Like, Feedback::Skip, Feedback::WatchTime(5.0)]);
        assert_eq!(kinds, [Objective::Click, Objective::Like, Objective::Skip]);
    }

    /// Items 5 and 6 were added after the model was trained on items 0–4: in a history they are
    /// passed over, so the user is the one of the known events, and the last `history_len` known
    /// events count.
    #[test]
    fn events_on_items_the_model_does_not_know_are_passed_over() {
        let device = Device::flex();
        let net = RewardNetConfig { items: 5, dim: 8, hidden: 8, history_len: 2, towers: 2 };
        let reward = Reward {
            model: net.init(&device),
            net,
            objectives: vec![Objective::RatingAtLeast(4.0), Objective::RatingAtMost(2.0)],
            weights: vec![1.0, 1.0],
            device,
        };
        let event = |item, rating| Event { user: 0, item, timestamp: 0, feedback: Feedback::Rating(rating) };
        let with_new = [event(0, 1.0), event(1, 5.0), event(5, 4.0), event(2, 3.0), event(6, 2.0)];
        let known = [event(1, 5.0), event(2, 3.0)];
        assert!(!reward.knows(5) && reward.knows(4));
        let p = |history: &[Event]| reward.p_scores(&[(history, 3), (history, 4)]);
        assert_eq!(p(&with_new), p(&known));
        assert_ne!(p(&with_new), p(&[event(0, 1.0), event(1, 5.0)]), "the history matters");
    }

    #[test]
    fn p_score_is_a_weighted_mean_with_negative_objectives_flipped() {
        let objectives = [Objective::RatingAtLeast(4.0), Objective::RatingAtMost(2.0)];
        // (1 × 0.8 + 0.5 × (1 − 0.2)) / 1.5 = 0.8
        assert!((fuse(&objectives, &[1.0, 0.5], &[0.8, 0.2]) - 0.8).abs() < 1e-6);
        // (2 × 0.6 + 1 × (1 − 0.4)) / 3 = 0.6
        assert!((fuse(&objectives, &[2.0, 1.0], &[0.6, 0.4]) - 0.6).abs() < 1e-6);
        assert_eq!(fuse(&objectives, &[0.0, 0.0], &[0.6, 0.4]), 0.0);
    }
}
