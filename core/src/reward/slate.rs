//! The reward model choosing a slate from the generator's beam.
//!
//! Item i is a user's next item with probability p_i. So a slate's expected NDCG@10 is linear in
//! the p_i of its items, while its P-score@10 is the plain mean of their P-scores. The trade that
//! costs the least expected NDCG per unit of P-score therefore ranks by `p_i + μ·P_i`, with p_i the
//! beam's scores normalised over the beam. It keeps the few items that carry most of the hit
//! probability and replaces the tail.
//!
//! A tilt in log space, `score + λ·P`, multiplies every item's probability by exp(λ·P) alike. That
//! tilted policy is where KL-bounded alignment converges. On MovieLens-100K it paid about 5% of test
//! NDCG@10 for +11% P-score, where this key pays 1.5% for +10.7% (docs/alignment-history.md).
//!
//! `onerec align` chooses μ on validation and stores it, with the reward model, in the aligned
//! snapshot ([`Slate`]), so that `onerec serve` and `onerec eval` rank as it was chosen.

use serde::{Deserialize, Serialize};

use crate::data::{Event, ItemIdx};
use crate::decode::Hypothesis;
use crate::linalg::log_softmax_kernel;
use crate::reward::{RewardFn, RewardSnapshot};

/// How a snapshot's beam becomes its slate: the reward model and the weight μ of
/// [`rank_by_reward`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Slate {
    pub reward: RewardSnapshot,
    pub weight: f32,
    /// The beam μ was chosen with: the beam a feed decodes by default.
    pub beam: usize,
}

/// Each hypothesis' P-score, in beam order. An ID that names no item gets none (0); an item the
/// reward model does not know (added since it was trained) gets the mean P-score of the beam's
/// items it knows, so that it neither gains nor loses against them.
pub fn beam_p_scores(beam: &[Hypothesis], history: &[Event], reward: &dyn RewardFn) -> Vec<f32> {
    let known = |h: &Hypothesis| h.item.filter(|&i| reward.knows(i));
    let pairs: Vec<(&[Event], ItemIdx)> = beam.iter().filter_map(|h| Some((history, known(h)?))).collect();
    let scores = reward.p_scores(&pairs);
    let unknown_score = scores.iter().sum::<f32>() / scores.len().max(1) as f32;
    let mut scores = scores.into_iter();
    beam.iter()
        .map(|h| match (h.item, known(h)) {
            (None, _) => 0.0,
            (Some(_), None) => unknown_score,
            (Some(_), Some(_)) => scores.next().expect("one P-score per known item"),
        })
        .collect()
}

/// The slate at weight μ: the beam's positions, best first, each with its key, the hypothesis'
/// probability within the beam (a softmax of the scores) plus `weight`·its P-score (`p_scores`,
/// in beam order, from [`beam_p_scores`]).
pub fn slate_order(beam: &[Hypothesis], p_scores: &[f32], weight: f32) -> Vec<(usize, f32)> {
    let mut log_probs: Vec<f32> = beam.iter().map(|h| h.score).collect();
    log_softmax_kernel()(&mut log_probs);
    let mut order: Vec<(usize, f32)> =
        log_probs.into_iter().zip(p_scores).map(|(log_prob, &p)| log_prob.exp() + weight * p).enumerate().collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1));
    order
}

/// Re-ranks `beam` into its slate at weight μ ([`slate_order`]); each score becomes its key.
pub fn rank_by_reward(beam: &mut [Hypothesis], history: &[Event], reward: &dyn RewardFn, weight: f32) {
    let order = slate_order(beam, &beam_p_scores(beam, history, reward), weight);
    let ranked: Vec<Hypothesis> = order.into_iter().map(|(i, score)| Hypothesis { score, ..beam[i].clone() }).collect();
    beam.iter_mut().zip(ranked).for_each(|(slot, h)| *slot = h);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Item i has P-score `self.0[i]`.
    struct Table(Vec<f32>);

    impl RewardFn for Table {
        fn p_scores(&self, pairs: &[(&[Event], ItemIdx)]) -> Vec<f32> {
            pairs.iter().map(|&(_, i)| self.0[i as usize]).collect()
        }

        fn knows(&self, item: ItemIdx) -> bool {
            (item as usize) < self.0.len()
        }
    }

    fn hypothesis(item: Option<ItemIdx>, score: f32) -> Hypothesis {
        Hypothesis { item, log_prob: score, score, id: vec![] }
    }

    /// Against the key computed in f64 from its definition: the most probable item keeps its place
    /// with the lowest P-score, and the least probable one, with the highest, overtakes the tail.
    #[test]
    fn ranks_by_probability_within_the_beam_plus_weighted_p_score() {
        let scores = [-1.0f32, -1.5, -4.0, -4.2, -6.0];
        let items = [Some(0), Some(1), Some(2), None, Some(3)];
        let reward = Table(vec![0.2, 0.9, 0.4, 0.95]);
        let mut beam: Vec<Hypothesis> = items.iter().zip(scores).map(|(&i, s)| hypothesis(i, s)).collect();
        let weight = 0.1;
        rank_by_reward(&mut beam, &[], &reward, weight);

        let total: f64 = scores.iter().map(|&s| (s as f64).exp()).sum();
        let mut expected: Vec<(Option<ItemIdx>, f64)> = items
            .iter()
            .zip(scores)
            .map(|(&i, s)| {
                let p_score = i.map_or(0.0, |i| reward.0[i as usize] as f64);
                (i, (s as f64).exp() / total + weight as f64 * p_score)
            })
            .collect();
        expected.sort_by(|a, b| b.1.total_cmp(&a.1));
        let got: Vec<(Option<ItemIdx>, f32)> = beam.iter().map(|h| (h.item, h.score)).collect();
        for ((item, key), (want_item, want_key)) in got.iter().zip(&expected) {
            assert_eq!(item, want_item, "{got:?} vs {expected:?}");
            assert!((*key as f64 - want_key).abs() < 1e-6, "{got:?} vs {expected:?}");
        }
        let order: Vec<Option<ItemIdx>> = beam.iter().map(|h| h.item).collect();
        assert_eq!(order, [Some(0), Some(1), Some(3), Some(2), None]);
    }

    #[test]
    fn weight_zero_keeps_the_order_and_an_empty_beam_is_left_alone() {
        let reward = Table(vec![0.9, 0.1, 0.5]);
        let mut beam = vec![hypothesis(Some(1), -0.5), hypothesis(Some(0), -1.0), hypothesis(Some(2), -3.0)];
        rank_by_reward(&mut beam, &[], &reward, 0.0);
        assert_eq!(beam.iter().map(|h| h.item).collect::<Vec<_>>(), [Some(1), Some(0), Some(2)]);
        let sum: f32 = beam.iter().map(|h| h.score).sum();
        assert!((sum - 1.0).abs() < 1e-6, "the keys are probabilities over the beam");
        rank_by_reward(&mut [], &[], &reward, 1.0);
    }

    /// Item 7 was added after the reward model was trained: it gets the mean P-score of the known
    /// items (0.5), so it stays ahead of the item it led on probability with a lower P-score and
    /// stays behind the one with a higher; asking the model to score it would panic in `Table`.
    #[test]
    fn an_item_the_reward_model_does_not_know_gets_the_mean_p_score_of_those_it_knows() {
        let reward = Table(vec![0.2, 0.8]);
        let scores = [-1.0f32, -1.05, -1.1];
        let mut beam: Vec<Hypothesis> =
            [Some(0), Some(7), Some(1)].iter().zip(scores).map(|(&i, s)| hypothesis(i, s)).collect();
        let weight = 1.0;
        rank_by_reward(&mut beam, &[], &reward, weight);
        let total: f32 = scores.iter().map(|s| s.exp()).sum();
        let key = |s: f32, p: f32| s.exp() / total + weight * p;
        let got: Vec<(Option<ItemIdx>, f32)> = beam.iter().map(|h| (h.item, h.score)).collect();
        let want = [(Some(1), key(-1.1, 0.8)), (Some(7), key(-1.05, 0.5)), (Some(0), key(-1.0, 0.2))];
        for ((item, k), (want_item, want_key)) in got.iter().zip(want) {
            assert_eq!(*item, want_item, "{got:?}");
            assert!((k - want_key).abs() < 1e-6, "{got:?}");
        }
    }
}
