use burn::tensor::{Device, Int, Tensor, TensorData};

use super::*;
use crate::generator::context::build_context;
use crate::test_fixtures::tiny_setup;

fn setup() -> (crate::data::Dataset, crate::tokenizer::Tokenizer, ModelConfig, Device) {
    let (dataset, tokenizer, config) = tiny_setup(24, 6, 30, 4);
    let device = Device::flex();
    device.seed(1);
    (dataset, tokenizer, config, device)
}

fn max_abs_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

#[test]
fn encoder_has_one_state_per_slot_and_ignores_padding() {
    let _rng = crate::test_fixtures::device_rng();
    let (dataset, tokenizer, config, device) = setup();
    let model = config.init(&device);
    // A short history leaves most slots as padding.
    let context = build_context(&dataset.users[0], &dataset.user_events(0)[..3], &tokenizer, &config.context);
    let batch = Batch::new(&[context], None, &tokenizer.semantic_ids, &config, &device);
    let memory = model.encode(&batch);
    let slots = config.encoder_len();
    assert_eq!(memory.states.dims(), [1, slots, config.d_model]);
    let hidden: Vec<bool> = memory.hidden.clone().into_data().iter::<bool>().collect();
    assert_eq!(hidden.len(), slots);
    let seen: Vec<usize> = (0..slots).filter(|&k| !hidden[k]).collect();
    let recent = slots - config.context.short_len;
    assert_eq!(seen, [0, recent, recent + 1, recent + 2], "the static token and 3 recent events");

    // Whatever sits in a padding slot does not reach the real tokens.
    let mut altered = batch.clone();
    let mut items: Vec<i64> = altered.history_items.clone().into_data().iter::<i64>().collect();
    items[config.context.positive_len + 5] = 17;
    altered.history_items = Tensor::<2, Int>::from_data(TensorData::new(items, altered.history_items.dims()), &device);
    let again = model.encode(&altered);
    for &k in &seen {
        let real = |m: &Memory| m.states.clone().narrow(1, k, 1);
        assert!(max_abs_diff(real(&memory), real(&again)) < 1e-5, "slot {k}");
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
            (0..=n).map(|sees| Query { sees, target: ids.id_of(dataset.user_events(2)[12 + sees % 3].item) }).collect();
        Batch::windows(&[context], &[queries], ids, &config, &device)
    };
    let mut changed = history.to_vec();
    let last = changed.len() - 1;
    changed[last].item = (changed[last].item + 5) % config.items as u32;
    changed[last].feedback = crate::data::Feedback::Skip;
    let (a, b) = (window(history), window(&changed));
    let (ma, mb) = (model.encode(&a), model.encode(&b));
    // Every real slot but the last recent event's is the same (padding slots are seen by none).
    let slots = config.encoder_len();
    let hidden: Vec<bool> = ma.hidden.clone().narrow(1, n, 1).into_data().iter::<bool>().collect();
    let slot = |m: &Memory, k| m.states.clone().narrow(1, k, 1);
    for k in (0..slots - 1).filter(|&k| !hidden[k]) {
        assert!(max_abs_diff(slot(&ma, k), slot(&mb, k)) < 1e-5, "slot {k} saw the last event");
    }
    assert!(max_abs_diff(slot(&ma, slots - 1), slot(&mb, slots - 1)) > 1e-4);
    let (targets, _, _) = a.targets.clone().unwrap();
    let codes = targets.narrow(2, 0, config.level_sizes.len() - 1);
    let (sa, _) = model.decode(codes.clone(), &ma);
    let (sb, _) = model.decode(codes, &mb);
    let query = |s: &Tensor<4>, q: usize| s.clone().narrow(1, q, 1).reshape([-1]);
    for q in 0..n {
        let diff = (query(&sa, q) - query(&sb, q)).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-5, "query {q}, which sees {q} recent events, saw the last one");
    }
    let diff = (query(&sa, n) - query(&sb, n)).abs().max().into_scalar::<f32>();
    assert!(diff > 1e-4, "the query that sees the whole window sees its last event");
}

#[test]
fn a_window_query_is_the_prefix_context_alone() {
    let _rng = crate::test_fixtures::device_rng();
    // Query `sees = v` of a window decodes exactly as a context built from the first v recent
    // events would, when nothing older is in the window's prefix.
    let (dataset, tokenizer, config, device) = setup();
    let model = config.init(&device);
    let ids = &tokenizer.semantic_ids;
    let events = &dataset.user_events(3)[..config.context.short_len];
    let user = &dataset.users[3];
    let target = ids.id_of(dataset.user_events(3)[20].item);
    let context = build_context(user, events, &tokenizer, &config.context);
    let queries: Vec<Query> = (0..=events.len()).map(|sees| Query { sees, target }).collect();
    let window = Batch::windows(&[context], &[queries], ids, &config, &device);
    let (window_loss, _) = model.loss(&window);
    let alone: Vec<_> =
        (0..=events.len()).map(|v| build_context(user, &events[..v], &tokenizer, &config.context)).collect();
    let targets = vec![target; alone.len()];
    let (alone_loss, _) = model.loss(&Batch::new(&alone, Some(&targets), ids, &config, &device));
    let (w, a) = (window_loss.into_scalar::<f32>(), alone_loss.into_scalar::<f32>());
    assert!((w - a).abs() < 1e-4, "window {w}, separate contexts {a}");
}

#[test]
fn decoder_self_attention_is_causal() {
    let _rng = crate::test_fixtures::device_rng();
    let (dataset, tokenizer, config, device) = setup();
    let model = config.init(&device);
    let context = build_context(&dataset.users[1], dataset.user_events(1), &tokenizer, &config.context);
    let memory = model.encode(&Batch::new(&[context], None, &tokenizer.semantic_ids, &config, &device));
    let codes = |second: i64| Tensor::<3, Int>::from_data(TensorData::new(vec![1i64, second], [1, 1, 2]), &device);
    let (a, _) = model.decode(codes(0), &memory);
    let (b, _) = model.decode(codes(3), &memory);
    assert_eq!(a.dims(), [1, 1, 3, config.d_model]);
    // Positions 0 (BOS) and 1 cannot see the second code; position 2 can.
    let diff = |a: &Tensor<4>, b: &Tensor<4>, from, len| {
        (a.clone().narrow(2, from, len) - b.clone().narrow(2, from, len)).abs().max().into_scalar::<f32>()
    };
    assert!(diff(&a, &b, 0, 2) < 1e-5);
    assert!(diff(&a, &b, 2, 1) > 1e-4);
}

#[test]
fn loss_is_finite_and_expert_loads_are_shares() {
    let _rng = crate::test_fixtures::device_rng();
    let (dataset, tokenizer, config, device) = setup();
    let model = config.init(&device);
    let contexts: Vec<_> = (0..4u32)
        .map(|u| build_context(&dataset.users[u as usize], &dataset.user_events(u)[..5], &tokenizer, &config.context))
        .collect();
    let targets: Vec<&[u16]> =
        (0..4u32).map(|u| tokenizer.semantic_ids.id_of(dataset.user_events(u)[5].item)).collect();
    let batch = Batch::new(&contexts, Some(&targets), &tokenizer.semantic_ids, &config, &device);
    let (loss, loads) = model.loss(&batch);
    let loss = loss.into_scalar::<f32>();
    // An untrained model is near the uniform guess: mean of ln(vocabulary) over the positions.
    let uniform: f32 =
        config.level_sizes.iter().map(|&v| (v as f32).ln()).sum::<f32>() / config.level_sizes.len() as f32;
    assert!(loss.is_finite() && (loss - uniform).abs() < 1.0, "loss {loss}, uniform {uniform}");
    assert_eq!(loads.len(), config.decoder_layers);
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
