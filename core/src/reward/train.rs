//! Training of the reward model: per-objective binary cross-entropy over every training event,
//! with the events before it as the user's history; validation AUC and gAUC per objective, next
//! to a popularity scorer, pick the epoch that is kept.
//!
//! Validation needs several events per user for gAUC, so it takes the last `holdout` events of each
//! user's validation input plus the validation event itself; the test event is never seen.

use std::ops::ControlFlow;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::metrics::{auc, gauc};
use super::{Objective, RewardBatch, RewardModel, RewardNetConfig, RewardSnapshot};
use crate::data::{Dataset, Event, UserIdx};
use crate::error::{Error, Result};
use crate::training::{adamw, weights_to_bytes};

/// Settings of a reward-model run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RewardTrainConfig {
    pub dim: usize,
    pub hidden: usize,
    pub history_len: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f32,
    /// Events per user held out for validation, counting the validation event.
    pub holdout: usize,
    /// Epochs without a better mean validation AUC before stopping.
    pub patience: usize,
    pub seed: u64,
}

impl Default for RewardTrainConfig {
    fn default() -> Self {
        RewardTrainConfig {
            dim: 32,
            hidden: 64,
            history_len: 50,
            epochs: 8,
            batch_size: 256,
            learning_rate: 2e-3,
            weight_decay: 0.01,
            holdout: 5,
            patience: 2,
            seed: 7,
        }
    }
}

/// Validation quality of one objective, for the model and for the popularity scorer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectiveReport {
    pub name: String,
    /// Share of validation events that are positive.
    pub positive_rate: f64,
    pub auc: f64,
    pub gauc: f64,
    pub popularity_auc: f64,
    pub popularity_gauc: f64,
}

/// The history of a reward run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RewardReport {
    pub train_events: usize,
    pub valid_events: usize,
    /// Training loss and mean validation AUC of each epoch.
    pub epochs: Vec<(f64, f64)>,
    /// 1-based epoch whose weights were kept.
    pub best_epoch: usize,
    /// Validation figures of the kept epoch.
    pub objectives: Vec<ObjectiveReport>,
}

/// One labelled (history, item) event.
struct Sample<'a> {
    user: UserIdx,
    history: &'a [Event],
    event: &'a Event,
}

/// Training and validation events of every user (see the module note).
fn samples(dataset: &Dataset, holdout: usize) -> (Vec<Sample<'_>>, Vec<Sample<'_>>) {
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for user in 0..dataset.n_users() as UserIdx {
        let split = dataset.split(user);
        let (events, held) = match split.test {
            Some(_) => (split.test_input, holdout.min(split.test_input.len().saturating_sub(1))),
            None => (split.train, 0),
        };
        for (j, event) in events.iter().enumerate() {
            let sample = Sample { user, history: &events[..j], event };
            if j + held >= events.len() { valid.push(sample) } else { train.push(sample) }
        }
    }
    (train, valid)
}

/// Labels and their mask, `rows × objectives`.
fn labels(samples: &[&Sample], objectives: &[Objective], device: &Device) -> (Tensor<2>, Tensor<2>) {
    let t = objectives.len();
    let (mut y, mut m) = (vec![0f32; samples.len() * t], vec![0f32; samples.len() * t]);
    for (row, s) in samples.iter().enumerate() {
        for (k, o) in objectives.iter().enumerate() {
            if let Some(label) = o.label(s.event.feedback) {
                y[row * t + k] = label as u8 as f32;
                m[row * t + k] = 1.0;
            }
        }
    }
    let shape = [samples.len(), t];
    (Tensor::from_data(TensorData::new(y, shape), device), Tensor::from_data(TensorData::new(m, shape), device))
}

/// Mean binary cross-entropy over the labels present, from logits (numerically stable form).
pub fn masked_bce(logits: Tensor<2>, labels: Tensor<2>, mask: Tensor<2>) -> Tensor<1> {
    let loss = logits.clone().clamp_min(0.0) - logits.clone() * labels + logits.abs().neg().exp().log1p();
    (loss * mask.clone()).sum() / mask.sum().clamp_min(1.0)
}

/// Trains the reward model for `objectives` fused with `weights`. `on_epoch` gets each epoch's
/// (epoch, loss, mean validation AUC) and may stop the run.
pub fn train_reward(
    dataset: &Dataset,
    objectives: &[Objective],
    weights: &[f32],
    config: &RewardTrainConfig,
    device: &Device,
    on_epoch: &mut dyn FnMut(usize, f64, f64) -> ControlFlow<()>,
) -> Result<RewardSnapshot> {
    if objectives.is_empty() || objectives.len() != weights.len() {
        return Err(Error::Config(format!("{} objectives but {} weights", objectives.len(), weights.len())));
    }
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || weights.iter().sum::<f32>() <= 0.0 {
        return Err(Error::Config(format!("P-score weights must be non-negative, not all zero: {weights:?}")));
    }
    if config.batch_size == 0 || config.epochs == 0 || config.dim == 0 || config.hidden == 0 {
        return Err(Error::Config("batch size, epochs and sizes of the reward model must be positive".into()));
    }
    let (train, valid) = samples(dataset, config.holdout);
    let has_labels = |s: &[Sample]| objectives.iter().all(|o| s.iter().any(|x| o.label(x.event.feedback).is_some()));
    if !has_labels(&train) || !has_labels(&valid) {
        return Err(Error::Config(format!("{} has no labelled events for some objective", dataset.name)));
    }
    let net = RewardNetConfig {
        items: dataset.n_items(),
        dim: config.dim,
        hidden: config.hidden,
        history_len: config.history_len,
        towers: objectives.len(),
    };
    device.seed(config.seed);
    let ad = device.clone().autodiff();
    let mut model = net.init(&ad);
    let mut optimizer = adamw(config.weight_decay, 1.0);
    let mut popularity = vec![0f32; dataset.n_items()];
    train.iter().for_each(|s| popularity[s.event.item as usize] += 1.0);
    let mut report = RewardReport { train_events: train.len(), valid_events: valid.len(), ..RewardReport::default() };
    let mut best: Option<(f64, RewardModel, Vec<ObjectiveReport>)> = None;
    let mut order: Vec<&Sample> = train.iter().collect();
    for epoch in 1..=config.epochs {
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(config.seed.wrapping_add(epoch as u64)));
        let mut loss_sum = 0.0;
        for chunk in order.chunks(config.batch_size) {
            let pairs: Vec<_> = chunk.iter().map(|s| (s.history, s.event.item)).collect();
            let batch = RewardBatch::new(&pairs, config.history_len, dataset.n_items(), &ad);
            let (y, m) = labels(chunk, objectives, &ad);
            let loss = masked_bce(model.forward(&batch), y, m);
            loss_sum += loss.clone().into_scalar::<f32>() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(config.learning_rate, model, grads);
        }
        let loss = loss_sum / order.len().div_ceil(config.batch_size) as f64;
        let figures = validate(&model.valid(), &net, objectives, &valid, &popularity, device);
        let mean_auc = figures.iter().map(|f| f.auc).sum::<f64>() / figures.len() as f64;
        report.epochs.push((loss, mean_auc));
        let flow = on_epoch(epoch, loss, mean_auc);
        if best.as_ref().is_none_or(|(b, _, _)| mean_auc > *b) {
            report.best_epoch = epoch;
            best = Some((mean_auc, model.valid(), figures));
        }
        if flow.is_break() || epoch - report.best_epoch >= config.patience {
            break;
        }
    }
    let (_, model, figures) = best.expect("at least one epoch ran");
    report.objectives = figures;
    let parameters = weights_to_bytes(&model)?;
    Ok(RewardSnapshot {
        net,
        objectives: objectives.to_vec(),
        weights: weights.to_vec(),
        item_ids: dataset.items.iter().map(|i| i.id.clone()).collect(),
        parameters,
        report,
    })
}

/// AUC and gAUC of every objective on the validation events, for the model and for popularity.
fn validate(
    model: &RewardModel,
    net: &RewardNetConfig,
    objectives: &[Objective],
    valid: &[Sample],
    popularity: &[f32],
    device: &Device,
) -> Vec<ObjectiveReport> {
    let t = objectives.len();
    let mut probabilities = Vec::with_capacity(valid.len() * t);
    for chunk in valid.chunks(1024) {
        let pairs: Vec<_> = chunk.iter().map(|s| (s.history, s.event.item)).collect();
        let batch = RewardBatch::new(&pairs, net.history_len, net.items, device);
        probabilities.extend(sigmoid(model.forward(&batch)).into_data().try_to_vec::<f32>().expect("f32"));
    }
    objectives
        .iter()
        .enumerate()
        .map(|(k, o)| {
            let (mut users, mut scores, mut pop, mut ys) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (row, s) in valid.iter().enumerate() {
                if let Some(label) = o.label(s.event.feedback) {
                    users.push(s.user);
                    scores.push(probabilities[row * t + k]);
                    pop.push(popularity[s.event.item as usize]);
                    ys.push(label);
                }
            }
            let nan = f64::NAN;
            ObjectiveReport {
                name: o.name(),
                positive_rate: ys.iter().filter(|&&y| y).count() as f64 / ys.len().max(1) as f64,
                auc: auc(&scores, &ys).unwrap_or(nan),
                gauc: gauc(&users, &scores, &ys).unwrap_or(nan),
                popularity_auc: auc(&pop, &ys).unwrap_or(nan),
                popularity_gauc: gauc(&users, &pop, &ys).unwrap_or(nan),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DatasetBuilder, Feedback, Origin};
    use crate::reward::RewardFn;

    #[test]
    fn masked_bce_matches_the_formula_and_skips_missing_labels() {
        let _rng = crate::test_fixtures::device_rng();
        let device = Device::flex();
        let t = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [1, 3]), &device);
        let loss = masked_bce(t(vec![2.0, -1.0, 50.0]), t(vec![1.0, 0.0, 0.0]), t(vec![1.0, 1.0, 0.0]));
        let want = ((1.0 + (-2f64).exp()).ln() + (1.0 + (-1f64).exp()).ln()) / 2.0;
        assert!((loss.into_scalar::<f32>() as f64 - want).abs() < 1e-6);
    }

    /// Users love the even items and hate the odd ones: the reward model must learn it and beat
    /// popularity, which cannot tell them apart (every item is equally popular).
    #[test]
    fn reward_model_learns_which_items_users_like() {
        let _rng = crate::test_fixtures::device_rng();
        let mut b = DatasetBuilder::new();
        let origin = Origin::new("t", 1);
        for u in 0..60 {
            for t in 0..12 {
                let item = (u * 5 + t * 7) % 20;
                let rating = if item % 2 == 0 { 5.0 } else { 1.0 };
                b.add_event(&format!("u{u}"), &format!("i{item}"), t as i64, Feedback::Rating(rating), &origin);
            }
        }
        let dataset = b.finish("parity").unwrap();
        let objectives = Objective::for_dataset(&dataset);
        let config =
            RewardTrainConfig { epochs: 15, patience: 15, batch_size: 64, learning_rate: 1e-2, ..Default::default() };
        let device = Device::flex();
        let snapshot =
            train_reward(
                &dataset,
                &objectives,
                &[1.0, 1.0],
                &config,
                &device,
                &mut |_, _, _| ControlFlow::Continue(()),
            )
            .unwrap();
        let like = &snapshot.report.objectives[0];
        assert!(like.auc > 0.95 && like.gauc > 0.95, "{like:?}");
        assert!(like.popularity_auc < 0.7, "{like:?}");
        let reward = snapshot.scorer(&dataset, &device).unwrap();
        let even = dataset.items.iter().position(|i| i.id == "i4").unwrap() as u32;
        let odd = dataset.items.iter().position(|i| i.id == "i5").unwrap() as u32;
        let history = dataset.user_events(0);
        let p = reward.p_scores(&[(history, even), (history, odd)]);
        assert!(p[0] > 0.8 && p[1] < 0.2, "{p:?}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reward.snap");
        snapshot.save(&path).unwrap();
        assert_eq!(RewardSnapshot::load(&path).unwrap().report, snapshot.report);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(RewardSnapshot::load(&path).unwrap_err().to_string().contains("truncated"));
    }
}
