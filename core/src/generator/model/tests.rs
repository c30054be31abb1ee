use burn::tensor::{Device, Int, Tensor, TensorData};

use super::*;
use crate::data::ItemIdx;
use crate::generator::context::{build_context, context_at};
use crate::generator::trend::{TrendConfig, TrendIndex};
use crate::test_fixtures::tiny_setup;
use crate::tokenizer::Code;

fn setup() -> (crate::data::Dataset, crate::tokenizer::Tokenizer, ModelConfig, Device) {
    let (dataset, tokenizer, config) = tiny_setup(24, 6, 30, 4);
    let device = Device::flex();
    device.seed(1);
    (dataset, tokenizer, config, device)
}

fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

/// Serving's encode runs the last block at the query slots alone; there it must give the states
/// the whole stream gives.
#[test]
fn the_last_block_at_the_query_slots_gives_the_whole_streams_states() {
    let _rng = crate::test_fixtures::device_rng();
    let (dataset, tokenizer, config, device) = setup();
    let model = config.init(&device);
    let contexts: Vec<_> = [(0u32, 3), (1, 25), (2, 2), (3, 0), (4, 12)]
        .iter()
        .map(|&(u, len)| {
            build_context(&dataset.users[u as usize], &dataset.user_events(u)[..len], &tokenizer, &config.context)
        })
        .collect();
    let batch = Batch::new(&contexts, None, &tokenizer.semantic_ids, &config, &device);
    let [b, s, _] = batch.hidden.dims();
    assert!(4 * contexts.len() <= b * s, "few enough queries for the last block to run at them alone");
    let (got, _) = model.encode(&batch);
    let (stream, _) = model.stream(&batch);
    let d = stream.dims()[2];
    let want = stream.reshape([b * s, d]).select(0, batch.queries.clone());
    assert_eq!(got.dims(), [contexts.len(), d]);
    assert!(max_abs_diff(got, want) < 1e-5);
}

/// Packing puts several contexts in one row; none may see another's tokens.
#[test]
fn packed_contexts_are_encoded_as_if_alone() {
    let _rng = crate::test_fixtures::device_rng();
    let (dataset, tokenizer, config, device) = setup();
    let model = config.init(&device);
    let ids = &tokenizer.semantic_ids;
    let contexts: Vec<_> = [(0u32, 3), (1, 25), (2, 2), (3, 0)]
        .iter()
        .map(|&(u, len)| {
            build_context(&dataset.users[u as usize], &dataset.user_events(u)[..len], &tokenizer, &config.context)
        })
        .collect();
    let batch = Batch::new(&contexts, None, ids, &config, &device);
    assert!(batch.hidden.dims()[0] < contexts.len(), "the short contexts share a row");
    let real = batch.real_slots.iter().filter(|&&r| r).count();
    let tokens: usize = contexts.iter().map(|c| 1 + c.positive.len() + c.lifelong.len() + c.recent.len()).sum();
    assert_eq!(real, tokens, "one slot per token");
    let (together, _) = model.encode(&batch);
    for (i, context) in contexts.iter().enumerate() {
        let (alone, _) = model.encode(&Batch::new(std::slice::from_ref(context), None, ids, &config, &device));
        assert!(max_abs_diff(together.clone().narrow(0, i, 1), alone) < 1e-5, "context {i}");
    }
}

/// The leak test of the one-pass design: in a window, the state of a recent event and every
/// query's prediction depend only on what lies before its target.
#[test]
fn no_query_or_event_state_sees_its_future() {
    let _rng = crate::test_fixtures::device_rng();
    let (dataset, tokenizer, config, device) = setup();
    let model = config.init(&device);
    let ids = &tokenizer.semantic_ids;
    let history = &dataset.user_events(2)[..12];
    let n = config.context.short_len;
    let window = |events: &[crate::data::Event]| {
        let context = build_context(&dataset.users[2], events, &tokenizer, &config.context);
        let queries: Vec<Query> =
            (0..=n).map(|sees| Query { sees, item: Some(dataset.user_events(2)[12 + sees % 3].item) }).collect();
        Batch::windows(&[context], &[queries], ids, &config, &device)
    };
    let mut changed = history.to_vec();
    let last = changed.len() - 1;
    changed[last].item = (changed[last].item + 5) % config.items as u32;
    changed[last].feedback = crate::data::Feedback::Skip;
    let (a, b) = (window(history), window(&changed));
    let ((sa, _), (sb, _)) = (model.stream(&a), model.stream(&b));
    // One segment in one row, the last recent event last: every other slot is the same.
    let slots = sa.dims()[1];
    assert_eq!(a.real_slots, vec![true; slots]);
    let slot = |m: &Tensor<3>, k| m.clone().narrow(1, k, 1);
    for k in 0..slots - 1 {
        assert!(max_abs_diff(slot(&sa, k), slot(&sb, k)) < 1e-5, "slot {k} saw the last event");
    }
    assert!(max_abs_diff(slot(&sa, slots - 1), slot(&sb, slots - 1)) > 1e-4);
    // And so is every query's loss term but the one that sees the whole window.
    let ((qa, _), (qb, _)) = (model.encode(&a), model.encode(&b));
    let query = |s: &Tensor<2>, q: usize| s.clone().narrow(0, q, 1);
    for q in 0..n {
        assert!(
            max_abs_diff(query(&qa, q), query(&qb, q)) < 1e-5,
            "query {q}, which sees {q} recent events, saw the last one"
        );
    }
    assert!(
        max_abs_diff(query(&qa, n), query(&qb, n)) > 1e-4,
        "the query that sees the whole window sees its last event"
    );
}

#[test]
fn a_window_query_is_the_prefix_context_alone() {
    let _rng = crate::test_fixtures::device_rng();
    // Query `sees = v` of a window predicts exactly as a context built from the first v recent
    // events would, when nothing older is in the window's prefix.
    let (dataset, tokenizer, config, device) = setup();
    let model = config.init(&device);
    let ids = &tokenizer.semantic_ids;
    let events = &dataset.user_events(3)[..config.context.short_len];
    let user = &dataset.users[3];
    let target = dataset.user_events(3)[20].item;
    let context = build_context(user, events, &tokenizer, &config.context);
    let queries: Vec<Query> = (0..=events.len()).map(|sees| Query { sees, item: Some(target) }).collect();
    let window = Batch::windows(&[context], &[queries], ids, &config, &device);
    let (window_loss, _) = model.loss(&window);
    let alone: Vec<_> =
        (0..=events.len()).map(|v| build_context(user, &events[..v], &tokenizer, &config.context)).collect();
    let targets = vec![target; alone.len()];
    let (alone_loss, _) = model.loss(&Batch::new(&alone, Some(&targets), ids, &config, &device));
    let (w, a) = (window_loss.into_scalar::<f32>(), alone_loss.into_scalar::<f32>());
    assert!((w - a).abs() < 1e-4, "window {w}, separate contexts {a}");
}

/// Training and serving read the same trend: in a window, the query that sees `v` recent events
/// is asked at its target's moment, as a request for that prefix alone would be.
#[test]
fn a_window_query_reads_the_trend_its_prefix_is_served_with() {
    let _rng = crate::test_fixtures::device_rng();
    let (dataset, tokenizer, mut config, device) = setup();
    config.trend = Some(TrendConfig { window_seconds: 5, items: 4, resolution_seconds: 1 });
    let model = config.init(&device);
    let ids = &tokenizer.semantic_ids;
    let log = (0..dataset.n_users() as u32).flat_map(|u| dataset.user_events(u));
    let trend = TrendIndex::for_model(&config, log).expect("the config has a trend");
    let all = dataset.user_events(3);
    let n = config.context.short_len;
    let (events, user, target) = (&all[..n], &dataset.users[3], all[20].item);
    let at = |history: &[crate::data::Event], now: i64, trend: Option<&TrendIndex>| {
        context_at(user, history, Some(now), &tokenizer, &config.context, trend)
    };
    let context = at(events, all[n].timestamp, Some(&trend));
    let distinct: std::collections::HashSet<Vec<ItemIdx>> =
        context.moments.iter().map(|m| m.trending.iter().map(|e| e.0).collect()).collect();
    assert!(distinct.len() > 2, "the window's queries read different trends");
    let queries: Vec<Query> = (0..=n).map(|sees| Query { sees, item: Some(target) }).collect();
    let window = Batch::windows(std::slice::from_ref(&context), std::slice::from_ref(&queries), ids, &config, &device);
    let alone: Vec<_> = (0..=n).map(|v| at(&events[..v], all[v].timestamp, Some(&trend))).collect();
    let targets = vec![target; alone.len()];
    let loss = |b: &Batch| model.loss(b).0.into_scalar::<f32>();
    let (w, a) = (loss(&window), loss(&Batch::new(&alone, Some(&targets), ids, &config, &device)));
    assert!((w - a).abs() < 1e-4, "window {w}, served prefixes {a}");
    let blind = at(events, all[n].timestamp, None);
    let without = loss(&Batch::windows(&[blind], &[queries], ids, &config, &device));
    assert!((w - without).abs() > 1e-4, "the trend changes the predictions");
}

/// The teacher-forced log π(ID) that training and alignment differentiate is the sum of the
/// step-by-step log-probabilities beam search reads, code by code, and the training loss is its
/// negative sum.
#[test]
fn teacher_forced_id_log_probs_are_the_sum_of_stepwise_ones() {
    let _rng = crate::test_fixtures::device_rng();
    let (dataset, tokenizer, config, device) = setup();
    let model = config.init(&device);
    let ids = &tokenizer.semantic_ids;
    let contexts: Vec<_> = (0..3u32)
        .map(|u| build_context(&dataset.users[u as usize], &dataset.user_events(u)[..7], &tokenizer, &config.context))
        .collect();
    let (states, _) = model.encode(&Batch::new(&contexts, None, ids, &config, &device));
    let chosen: Vec<Vec<Code>> = (0..3u32).map(|u| ids.id_of(dataset.user_events(u)[9].item).to_vec()).collect();
    let flat: Vec<i64> = chosen.iter().flatten().map(|&c| c as i64).collect();
    let levels = ids.id_len();
    let codes = Tensor::<2, Int>::from_data(TensorData::new(flat, [3, levels]), &device);
    let forced: Vec<f32> =
        model.head().sequence_log_probs(states.clone(), codes.clone()).into_data().try_to_vec().unwrap();
    // The training loss's sum is the same quantity, with its gradients written out.
    let loss = model.head().cross_entropy_sum(states.clone(), codes).into_scalar::<f32>();
    assert!((loss + forced.iter().sum::<f32>()).abs() < 1e-4, "loss {loss}, log-probs {forced:?}");
    for (row, id) in chosen.iter().enumerate() {
        let state = states.clone().narrow(0, row, 1);
        let stepwise: f32 = (0..levels)
            .map(|l| {
                let lp: Vec<f32> =
                    model.head().next_log_probs(state.clone(), &[id[..l].to_vec()]).into_data().try_to_vec().unwrap();
                assert!((lp.iter().map(|x| x.exp()).sum::<f32>() - 1.0).abs() < 1e-4, "a distribution");
                lp[id[l] as usize]
            })
            .sum();
        assert!((forced[row] - stepwise).abs() < 1e-4, "row {row}: {} vs {stepwise}", forced[row]);
    }
}

#[test]
fn loss_is_finite_and_expert_loads_are_shares() {
    let _rng = crate::test_fixtures::device_rng();
    let (dataset, tokenizer, config, device) = setup();
    let model = config.init(&device);
    let contexts: Vec<_> = (0..4u32)
        .map(|u| build_context(&dataset.users[u as usize], &dataset.user_events(u)[..5], &tokenizer, &config.context))
        .collect();
    let targets: Vec<ItemIdx> = (0..4u32).map(|u| dataset.user_events(u)[5].item).collect();
    let batch = Batch::new(&contexts, Some(&targets), &tokenizer.semantic_ids, &config, &device);
    let (loss, loads) = model.loss(&batch);
    let loss = loss.into_scalar::<f32>();
    // An untrained model is near the uniform guess: the mean of ln(vocabulary) over the ID
    // positions, plus ln(items) for the item score.
    let uniform: f32 = config.level_sizes.iter().map(|&v| (v as f32).ln()).sum::<f32>()
        / config.level_sizes.len() as f32
        + (config.items as f32).ln();
    assert!(loss.is_finite() && (loss - uniform).abs() < 1.5, "loss {loss}, uniform {uniform}");
    assert_eq!(loads.len(), config.layers);
    for load in loads {
        assert_eq!(load.len(), config.experts);
        assert!((load.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn presets_parse_and_parameters_are_counted_exactly() {
    let _rng = crate::test_fixtures::device_rng();
    assert_eq!("small".parse::<Preset>().unwrap(), Preset::Small);
    assert!("huge".parse::<Preset>().is_err());
    let (_, tokenizer, config, device) = setup();
    assert_eq!(config.parameter_count(), config.init(&device).num_params());
    let small = ModelConfig::preset(Preset::Small, 24, tokenizer.semantic_ids.level_sizes.clone(), 2, 8);
    assert_eq!(small.parameter_count(), small.init(&device).num_params());
    // The base preset is about 0.1B parameters for a 100k-item catalogue at 3 × 256 codes.
    let base = ModelConfig::preset(Preset::Base, 100_000, vec![256, 256, 256], 3, 64);
    let count = base.parameter_count();
    assert!((80_000_000..150_000_000).contains(&count), "{count}");
}

#[test]
fn scoring_item_pairs_agrees_with_the_full_item_scores() {
    let _rng = crate::test_fixtures::device_rng();
    let (dataset, tokenizer, config, device) = setup();
    let model = config.init(&device);
    let contexts: Vec<_> = (0..3u32)
        .map(|u| build_context(&dataset.users[u as usize], &dataset.user_events(u)[..6], &tokenizer, &config.context))
        .collect();
    let (states, _) = model.encode(&Batch::new(&contexts, None, &tokenizer.semantic_ids, &config, &device));
    let all: Vec<f32> = model.item_scores(states.clone()).into_data().try_to_vec().unwrap();
    let pairs: [(i64, i64); 5] = [(0, 3), (2, 0), (0, 7), (1, 1), (2, 5)];
    let index = |v: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(v, [pairs.len()]), &device);
    let rows = index(pairs.iter().map(|p| p.0).collect());
    let items = index(pairs.iter().map(|p| p.1).collect());
    let scored: Vec<f32> = model.item_score(states, rows, items).into_data().try_to_vec().unwrap();
    for ((row, item), score) in pairs.iter().zip(scored) {
        let expected = all[*row as usize * config.items + *item as usize];
        assert!((score - expected).abs() < 1e-5, "state {row}, item {item}: {score} against {expected}");
    }
}
