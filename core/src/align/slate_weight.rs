//! Choosing μ, the weight of the reward model in the slate ([`crate::reward::slate`]), on
//! validation, by the rule that chooses alignment's kept step: the highest top-10 P-score whose
//! validation NDCG@10 stays within `max_ndcg_drop` of the starting model's, both at the beam the
//! slate will be served with.

use serde::Serialize;

use crate::data::Dataset;
use crate::decode::Decoding;
use crate::eval::Stage;
use crate::generator::evaluate::{evaluate, evaluate_weights};
use crate::generator::recommend::Recommender;
use crate::reward::RewardFn;

/// The weights tried. On MovieLens-100K's three ECPO models, μ from 0.01 to 0.03 moved validation
/// P-score@10 by +1 to +3 points at 1 to 2.6% of NDCG@10 (docs/alignment-history.md); the grid
/// brackets that range on both sides.
pub const WEIGHTS: [f32; 10] = [0.0, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1];

/// Validation figures of the aligned model's slate at one weight.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SlateTrial {
    pub weight: f32,
    pub ndcg_at_10: f64,
    pub p_score_at_10: f64,
}

/// The choice and what it was made from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SlateChoice {
    /// Validation NDCG@10 of the starting model, at the same beam.
    pub start_ndcg_at_10: f64,
    /// The least validation NDCG@10 a weight may keep.
    pub floor: f64,
    pub trials: Vec<SlateTrial>,
    /// 0 when no weight holds the band, or none raises P-score@10 over the aligned model's own
    /// ranking.
    pub weight: f32,
}

/// Tries each of [`WEIGHTS`] on `aligned`'s validation beams of width `beam`, each decoded once.
pub fn choose_slate_weight(
    start: &Recommender,
    aligned: &Recommender,
    dataset: &Dataset,
    reward: &dyn RewardFn,
    beam: usize,
    max_ndcg_drop: f64,
) -> SlateChoice {
    let valid = [Stage::Valid];
    let start_ndcg_at_10 =
        evaluate(start, dataset, &valid, beam, Decoding::Constrained, None).ranking[0].get("ndcg@10");
    let floor = start_ndcg_at_10 * (1.0 - max_ndcg_drop);
    let reports = evaluate_weights(aligned, dataset, &valid, beam, Decoding::Constrained, reward, &WEIGHTS);
    let trials: Vec<SlateTrial> = WEIGHTS
        .iter()
        .zip(reports)
        .map(|(&weight, report)| SlateTrial {
            weight,
            ndcg_at_10: report.ranking[0].get("ndcg@10"),
            p_score_at_10: report.p_score_at_10[0],
        })
        .collect();
    let weight = trials
        .iter()
        .filter(|t| t.ndcg_at_10 >= floor)
        .max_by(|a, b| a.p_score_at_10.total_cmp(&b.p_score_at_10))
        .map_or(0.0, |t| t.weight);
    SlateChoice { start_ndcg_at_10, floor, trials, weight }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;
    use crate::generator::evaluate::RewardRanking;
    use crate::test_fixtures::{RewardByIndex, recommender, tiny_setup};

    /// The trials are `onerec eval`'s figures at each weight, and the choice follows the band: with
    /// no NDCG to lose, μ = 0 (the model's own ranking) or none; with any, the best P-score.
    #[test]
    fn the_weight_is_the_best_p_score_within_the_band_of_the_start() {
        let _rng = crate::test_fixtures::device_rng();
        let (dataset, tokenizer, config) = tiny_setup(24, 6, 10, 4);
        let device = Device::flex();
        device.seed(7);
        let (start, aligned) = (config.init(&device), config.init(&device));
        let start = recommender(&start, &config, &tokenizer, &device, None);
        let aligned = recommender(&aligned, &config, &tokenizer, &device, None);
        let reward = RewardByIndex(dataset.n_items());
        let beam = 12;

        let anything = choose_slate_weight(&start, &aligned, &dataset, &reward, beam, 1.0);
        let plain = evaluate(&start, &dataset, &[Stage::Valid], beam, Decoding::Constrained, None);
        assert_eq!(anything.start_ndcg_at_10, plain.ranking[0].get("ndcg@10"));
        assert_eq!(anything.floor, 0.0);
        let ranking = Some(RewardRanking { model: &reward, weight: 0.03 });
        let direct = evaluate(&aligned, &dataset, &[Stage::Valid], beam, Decoding::Constrained, ranking);
        let trial = anything.trials.iter().find(|t| t.weight == 0.03).unwrap();
        // The users' P-scores are summed in the order the threads finish.
        assert!((trial.ndcg_at_10 - direct.ranking[0].get("ndcg@10")).abs() < 1e-12, "{trial:?} vs {direct:?}");
        assert!((trial.p_score_at_10 - direct.p_score_at_10[0]).abs() < 1e-12, "{trial:?} vs {direct:?}");
        let best = anything.trials.iter().map(|t| t.p_score_at_10).fold(f64::MIN, f64::max);
        let chosen = anything.trials.iter().find(|t| t.weight == anything.weight).unwrap();
        assert_eq!(chosen.p_score_at_10, best);
        assert!(best > anything.trials[0].p_score_at_10, "the reward raises P-score: {anything:?}");

        // A band no weight can hold: nothing is chosen.
        let none = choose_slate_weight(&start, &aligned, &dataset, &reward, beam, -1.0);
        assert!(none.trials.iter().all(|t| t.ndcg_at_10 < none.floor) && none.weight == 0.0, "{none:?}");
    }
}
