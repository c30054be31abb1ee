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
use crate::decode::Decoding;
use crate::eval::{self, RankingReport, Stage};
use crate::generator::recommend::{DecodeRequest, Recommender};
use crate::reward::RewardFn;
use crate::reward::slate::rank_by_reward;

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
    /// generator ranks them); see [`rank_by_reward`].
    pub weight: f32,
}

/// Generated and legal IDs, overall and among each beam's first 10.
#[derive(Default)]
struct Legality {
    generated: usize,
    legal: usize,
    generated_at_10: usize,
    legal_at_10: usize,
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
    let legality = Mutex::new(Legality::default());
    let mut p_score_at_10 = Vec::new();
    let ranking = stages
        .iter()
        .map(|&stage| {
            let p_sum = Mutex::new((0.0, 0usize));
            let report = eval::evaluate(dataset, stage, |u, input, now| {
                let user = &dataset.users[u as usize];
                let exclude_history = decoding == Decoding::Constrained;
                let request =
                    DecodeRequest { decoding, ..recommender.request(user, input, now, beam, exclude_history) };
                let mut generated = recommender.recommend_batch(&[request]).remove(0);
                if let Some(RewardRanking { model, weight }) = reward
                    && weight != 0.0
                {
                    rank_by_reward(&mut generated, input, model, weight);
                }
                let legal = generated.iter().filter(|h| h.item.is_some()).count();
                let legal_at_10 = generated.iter().take(10).filter(|h| h.item.is_some()).count();
                {
                    let mut l = legality.lock().expect("no panic while holding the lock");
                    l.generated += generated.len();
                    l.legal += legal;
                    l.generated_at_10 += generated.len().min(10);
                    l.legal_at_10 += legal_at_10;
                }
                let mut scores = vec![f32::NEG_INFINITY; dataset.n_items()];
                for h in &generated {
                    if let Some(i) = h.item {
                        scores[i as usize] = scores[i as usize].max(h.score);
                    }
                }
                if let Some(RewardRanking { model: reward, .. }) = reward {
                    let top: Vec<(&[Event], ItemIdx)> = generated
                        .iter()
                        .filter_map(|h| h.item)
                        .filter(|&i| input.iter().all(|e| e.item != i))
                        .take(10)
                        .filter(|&i| reward.knows(i))
                        .map(|i| (input, i))
                        .collect();
                    let p = reward.p_scores(&top);
                    let mut sum = p_sum.lock().expect("no panic while holding the lock");
                    sum.0 += p.iter().map(|&x| x as f64).sum::<f64>() / p.len().max(1) as f64;
                    sum.1 += 1;
                }
                scores
            });
            if reward.is_some() {
                let (sum, users) = p_sum.into_inner().expect("no panic while holding the lock");
                p_score_at_10.push(sum / users.max(1) as f64);
            }
            report
        })
        .collect();
    let l = legality.into_inner().expect("no panic while holding the lock");
    let ratio = |a: usize, b: usize| a as f64 / b.max(1) as f64;
    GeneratorReport {
        ranking,
        legality: ratio(l.legal, l.generated),
        legality_at_10: ratio(l.legal_at_10, l.generated_at_10),
        p_score_at_10,
    }
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
