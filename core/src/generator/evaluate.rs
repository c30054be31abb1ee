//! The generator under DESIGN.md §3's protocol: its beam, as a full ranking, scored by
//! [`crate::eval`]; how many of the IDs it generates are real items (legality: always 1 when
//! constrained, what the format reward raises when free); and, given a reward model, the mean
//! P-score of each user's top 10 legal, unseen items.
//!
//! The reward model can also re-rank the beam ([`crate::reward::slate`]), to show how much
//! P-score it buys and at what cost in NDCG, before or after alignment.

use std::sync::Mutex;

use serde::Serialize;

use crate::data::{Dataset, Event, ItemIdx};
use crate::decode::{Decoding, Hypothesis};
use crate::eval::{self, RankingReport, Stage};
use crate::generator::recommend::{DecodeRequest, Recommender};
use crate::reward::RewardFn;
use crate::reward::slate::{beam_p_scores, slate_order};

/// What [`evaluate`] measures.
#[derive(Clone, Debug, Serialize)]
pub struct GeneratorReport {
    /// One per stage.
    pub ranking: Vec<RankingReport>,
    /// Share of generated IDs, over every stage, that name a catalogue item.
    pub legality: f64,
    /// The same among each beam's first 10.
    pub legality_at_10: f64,
    /// Per stage, the mean over users of the mean P-score of their top 10 (of the items the reward
    /// model knows); empty without a reward.
    pub p_score_at_10: Vec<f64>,
}

/// A reward model for evaluation, and how far it re-ranks the beam.
#[derive(Clone, Copy)]
pub struct RewardRanking<'a> {
    pub model: &'a dyn RewardFn,
    /// μ: each hypothesis ranks by its probability within the beam + μ·P-score (0: as the
    /// generator ranks them); see [`slate_order`].
    pub weight: f32,
}

/// Generated and legal IDs, and per ranking, those among each beam's first 10.
struct Legality {
    generated: usize,
    legal: usize,
    /// (generated, legal) among the first 10, per ranking.
    at_10: Vec<(usize, usize)>,
}

/// Evaluates the generator on `stages` with a beam of `beam`. Under free decoding the history is
/// not excluded (the trie that would exclude it is not used), so legality measures the model alone.
pub fn evaluate(
    recommender: &Recommender,
    dataset: &Dataset,
    stages: &[Stage],
    beam: usize,
    decoding: Decoding,
    reward: Option<RewardRanking>,
) -> GeneratorReport {
    let weights = [reward.map_or(0.0, |r| r.weight)];
    evaluate_ranked(recommender, dataset, stages, beam, decoding, reward.map(|r| r.model), &weights).remove(0)
}

/// [`evaluate`] with the reward model ranking the beam at each of `weights`, from one decode and
/// one scoring of each user's beam: one report per weight, as `evaluate` gives at that weight.
pub fn evaluate_weights(
    recommender: &Recommender,
    dataset: &Dataset,
    stages: &[Stage],
    beam: usize,
    decoding: Decoding,
    reward: &dyn RewardFn,
    weights: &[f32],
) -> Vec<GeneratorReport> {
    evaluate_ranked(recommender, dataset, stages, beam, decoding, Some(reward), weights)
}

/// One report per weight; without a reward model, `weights` is `[0.0]`.
fn evaluate_ranked(
    recommender: &Recommender,
    dataset: &Dataset,
    stages: &[Stage],
    beam: usize,
    decoding: Decoding,
    reward: Option<&dyn RewardFn>,
    weights: &[f32],
) -> Vec<GeneratorReport> {
    let legality = Mutex::new(Legality { generated: 0, legal: 0, at_10: vec![(0, 0); weights.len()] });
    let mut rankings: Vec<Vec<RankingReport>> = weights.iter().map(|_| Vec::new()).collect();
    let mut p_score_at_10: Vec<Vec<f64>> = weights.iter().map(|_| Vec::new()).collect();
    for &stage in stages {
        // Per weight, the sum over users of their top 10's mean P-score, and the users.
        let p_sums = Mutex::new((vec![0.0; weights.len()], 0usize));
        let reports = eval::evaluate_rankings(dataset, stage, weights.len(), |u, input, now| {
            let user = &dataset.users[u as usize];
            let exclude_history = decoding == Decoding::Constrained;
            let request = DecodeRequest { decoding, ..recommender.request(user, input, now, beam, exclude_history) };
            let generated = recommender.recommend_batch(&[request]).remove(0);
            // The whole beam is scored only where some weight re-ranks it.
            let beam_scores = match reward {
                Some(reward) if weights.iter().any(|&w| w != 0.0) => Some(beam_p_scores(&generated, input, reward)),
                _ => None,
            };
            let orders: Vec<Vec<(usize, f32)>> = weights
                .iter()
                .map(|&weight| match &beam_scores {
                    Some(p_scores) if weight != 0.0 => slate_order(&generated, p_scores, weight),
                    _ => generated.iter().map(|h| h.score).enumerate().collect(),
                })
                .collect();
            {
                let mut l = legality.lock().expect("no panic while holding the lock");
                l.generated += generated.len();
                l.legal += generated.iter().filter(|h| h.item.is_some()).count();
                for (at_10, order) in l.at_10.iter_mut().zip(&orders) {
                    at_10.0 += order.len().min(10);
                    at_10.1 += order.iter().take(10).filter(|&&(i, _)| generated[i].item.is_some()).count();
                }
            }
            if let Some(reward) = reward {
                let means: Vec<f64> = orders
                    .iter()
                    .map(|order| top_10_p_score(&generated, order, input, reward, beam_scores.as_deref()))
                    .collect();
                let mut sums = p_sums.lock().expect("no panic while holding the lock");
                sums.0.iter_mut().zip(means).for_each(|(sum, mean)| *sum += mean);
                sums.1 += 1;
            }
            orders
                .iter()
                .map(|order| {
                    let mut scores = vec![f32::NEG_INFINITY; dataset.n_items()];
                    for &(i, key) in order {
                        if let Some(item) = generated[i].item {
                            scores[item as usize] = scores[item as usize].max(key);
                        }
                    }
                    scores
                })
                .collect()
        });
        rankings.iter_mut().zip(reports).for_each(|(r, report)| r.push(report));
        if reward.is_some() {
            let (sums, users) = p_sums.into_inner().expect("no panic while holding the lock");
            p_score_at_10.iter_mut().zip(sums).for_each(|(p, sum)| p.push(sum / users.max(1) as f64));
        }
    }
    let l = legality.into_inner().expect("no panic while holding the lock");
    let ratio = |a: usize, b: usize| a as f64 / b.max(1) as f64;
    rankings
        .into_iter()
        .zip(p_score_at_10)
        .zip(l.at_10)
        .map(|((ranking, p_score_at_10), (generated_at_10, legal_at_10))| GeneratorReport {
            ranking,
            legality: ratio(l.legal, l.generated),
            legality_at_10: ratio(legal_at_10, generated_at_10),
            p_score_at_10,
        })
        .collect()
}

/// The mean P-score of the first 10 items of `order` that are not in the history, of those the
/// reward model knows: taken from `beam_scores` where the whole beam was scored, else scored here.
fn top_10_p_score(
    generated: &[Hypothesis],
    order: &[(usize, f32)],
    history: &[Event],
    reward: &dyn RewardFn,
    beam_scores: Option<&[f32]>,
) -> f64 {
    let top: Vec<(usize, ItemIdx)> = order
        .iter()
        .filter_map(|&(i, _)| Some((i, generated[i].item?)))
        .filter(|&(_, item)| history.iter().all(|e| e.item != item))
        .take(10)
        .filter(|&(_, item)| reward.knows(item))
        .collect();
    let p: Vec<f32> = match beam_scores {
        Some(scores) => top.iter().map(|&(i, _)| scores[i]).collect(),
        None => reward.p_scores(&top.iter().map(|&(_, item)| (history, item)).collect::<Vec<_>>()),
    };
    p.iter().map(|&x| x as f64).sum::<f64>() / p.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;
    use crate::test_fixtures::{RewardByIndex, tiny_setup};

    /// A reward that scores every pair the same.
    struct Constant(f32);

    impl RewardFn for Constant {
        fn p_scores(&self, pairs: &[(&[Event], ItemIdx)]) -> Vec<f32> {
            vec![self.0; pairs.len()]
        }
    }

    #[test]
    fn constrained_evaluation_is_the_beam_ranking_and_fully_legal() {
        let _rng = crate::test_fixtures::device_rng();
        // Ten events per user over 24 items: the beam has items left once the history is excluded.
        let (dataset, tokenizer, config) = tiny_setup(24, 6, 10, 4);
        let device = Device::flex();
        device.seed(3);
        let model = config.init(&device);
        let recommender = crate::test_fixtures::recommender(&model, &config, &tokenizer, &device, None);
        let stages = [Stage::Valid, Stage::Test];
        let reward = RewardRanking { model: &Constant(0.25), weight: 0.0 };
        let report = evaluate(&recommender, &dataset, &stages, 10, Decoding::Constrained, Some(reward));
        for (got, &stage) in report.ranking.iter().zip(&stages) {
            let direct = eval::evaluate(&dataset, stage, |u, input, now| {
                recommender.scores(&dataset.users[u as usize], input, now, 10)
            });
            assert_eq!(got.metrics, direct.metrics);
        }
        assert_eq!((report.legality, report.legality_at_10), (1.0, 1.0));
        assert_eq!(report.p_score_at_10, [0.25, 0.25]);
    }

    /// With a weight far larger than any probability, the beam's unseen items rank by P-score
    /// alone: the ranking and the top-10 P-score are those of sorting the beam by reward, computed
    /// here directly.
    #[test]
    fn a_large_reward_weight_ranks_the_beam_by_p_score() {
        let _rng = crate::test_fixtures::device_rng();
        let (dataset, tokenizer, config) = tiny_setup(24, 6, 10, 4);
        let device = Device::flex();
        device.seed(5);
        let model = config.init(&device);
        let recommender = crate::test_fixtures::recommender(&model, &config, &tokenizer, &device, None);
        let reward = RewardByIndex(dataset.n_items());
        let beam = 12;
        let weighted = evaluate(
            &recommender,
            &dataset,
            &[Stage::Test],
            beam,
            Decoding::Constrained,
            Some(RewardRanking { model: &reward, weight: 1e4 }),
        );
        let p_sum = Mutex::new((0.0, 0usize));
        let direct = eval::evaluate(&dataset, Stage::Test, |u, input, now| {
            let request = recommender.request(&dataset.users[u as usize], input, now, beam, true);
            let items: Vec<ItemIdx> =
                recommender.recommend_batch(&[request]).remove(0).iter().filter_map(|h| h.item).collect();
            let pairs: Vec<(&[Event], ItemIdx)> = items.iter().map(|&i| (input, i)).collect();
            let mut p = reward.p_scores(&pairs);
            let mut scores = vec![f32::NEG_INFINITY; dataset.n_items()];
            for (&i, &r) in items.iter().zip(&p) {
                scores[i as usize] = r;
            }
            p.sort_by(|a, b| b.total_cmp(a));
            p.truncate(10);
            let mut sum = p_sum.lock().unwrap();
            sum.0 += p.iter().map(|&x| x as f64).sum::<f64>() / p.len() as f64;
            sum.1 += 1;
            scores
        });
        assert_eq!(weighted.ranking[0].metrics, direct.metrics);
        let (sum, users) = p_sum.into_inner().unwrap();
        assert!((weighted.p_score_at_10[0] - sum / users as f64).abs() < 1e-9);
        let plain = evaluate(
            &recommender,
            &dataset,
            &[Stage::Test],
            beam,
            Decoding::Constrained,
            Some(RewardRanking { model: &reward, weight: 0.0 }),
        );
        assert!(plain.p_score_at_10[0] < weighted.p_score_at_10[0], "{plain:?} vs {weighted:?}");
    }

    /// One decode re-ranked at several weights reports what a run at each weight reports, on both
    /// stages, constrained (where the history is excluded and the beam is all unseen items) and
    /// free (IDs that name no item, and the history, in the beam).
    #[test]
    fn weights_evaluated_from_one_decode_match_a_run_at_each() {
        let _rng = crate::test_fixtures::device_rng();
        let stages = [Stage::Valid, Stage::Test];
        let weights = [0.0, 0.03, 1e4];
        let setups = [(Decoding::Constrained, (24, 10), 12), (Decoding::Free, (10, 30), 16)];
        for (decoding, (items, events), beam) in setups {
            let (dataset, tokenizer, config) = tiny_setup(items, 6, events, 4);
            let device = Device::flex();
            device.seed(6);
            let model = config.init(&device);
            let recommender = crate::test_fixtures::recommender(&model, &config, &tokenizer, &device, None);
            let reward = RewardByIndex(dataset.n_items());
            let together = evaluate_weights(&recommender, &dataset, &stages, beam, decoding, &reward, &weights);
            for (got, &weight) in together.iter().zip(&weights) {
                let ranking = Some(RewardRanking { model: &reward, weight });
                let alone = evaluate(&recommender, &dataset, &stages, beam, decoding, ranking);
                let metrics = |r: &GeneratorReport| r.ranking.iter().map(|s| s.metrics.clone()).collect::<Vec<_>>();
                assert_eq!(metrics(got), metrics(&alone), "{decoding:?} at {weight}");
                assert_eq!((got.legality, got.legality_at_10), (alone.legality, alone.legality_at_10));
                for (a, b) in got.p_score_at_10.iter().zip(&alone.p_score_at_10) {
                    assert!((a - b).abs() < 1e-6, "{decoding:?} at {weight}: {got:?} vs {alone:?}");
                }
            }
            if decoding == Decoding::Constrained {
                let p = |r: &GeneratorReport| r.p_score_at_10[0];
                assert!(p(&together[0]) < p(&together[2]), "the weights rank differently: {together:?}");
            }
        }
    }

    #[test]
    fn free_evaluation_counts_the_ids_that_name_no_item() {
        let _rng = crate::test_fixtures::device_rng();
        // More IDs than items: an untrained model strays.
        let (dataset, tokenizer, config) = tiny_setup(10, 6, 30, 4);
        let space: usize = tokenizer.semantic_ids.level_sizes.iter().product();
        assert!(space > 10);
        let device = Device::flex();
        device.seed(4);
        let model = config.init(&device);
        let recommender = crate::test_fixtures::recommender(&model, &config, &tokenizer, &device, None);
        let report = evaluate(&recommender, &dataset, &[Stage::Valid], space, Decoding::Free, None);
        let (mut legal, mut legal_at_10) = (0, 0);
        for u in 0..dataset.n_users() as u32 {
            let request = recommender.request(&dataset.users[u as usize], dataset.split(u).train, 0, space, false);
            let beam = recommender.recommend_batch(&[DecodeRequest { decoding: Decoding::Free, ..request }]).remove(0);
            assert_eq!(beam.len(), space, "a beam as wide as the ID space holds every ID");
            legal += beam.iter().filter(|h| h.item.is_some()).count();
            legal_at_10 += beam.iter().take(10).filter(|h| h.item.is_some()).count();
        }
        let users = dataset.n_users() as f64;
        assert!((report.legality - legal as f64 / (space as f64 * users)).abs() < 1e-12);
        assert!((report.legality - 10.0 / space as f64).abs() < 1e-12, "every item once among all IDs");
        assert!((report.legality_at_10 - legal_at_10 as f64 / (10.0 * users)).abs() < 1e-12);
        assert!(report.p_score_at_10.is_empty());
    }
}
