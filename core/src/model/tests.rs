use burn::tensor::{Device, Int, Tensor, TensorData};

use super::*;
use crate::context::build_context;
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
    let (dataset, tokenizer, config, device) = setup();
    let model = config.init(&device);
    // A short history leaves most slots as padding.
    let context = build_context(&dataset.users[0], &dataset.user_events(0)[..3], &tokenizer, &config.context);
    let batch = Batch::new(&[context], None, &tokenizer.semantic_ids, &config, &device);
    let memory = model.encode(&batch);
    assert_eq!(memory.states.dims(), [1, config.encoder_len(), config.d_model]);
    let padded: Vec<bool> = memory.padding.clone().into_data().iter::<bool>().collect();
    assert_eq!(padded.iter().filter(|&&p| !p).count(), 1 + 3 + 3, "static + 3 short-term + 3 positive");

    // Whatever sits in a padding slot does not reach the real tokens.
    let mut altered = batch.clone();
    let mut items: Vec<i64> = altered.history_items.clone().into_data().iter::<i64>().collect();
    let last = items.len() - 1;
    items[last] = 17;
    altered.history_items = Tensor::<2, Int>::from_data(TensorData::new(items, altered.history_items.dims()), &device);
    let again = model.encode(&altered);
    let real = |m: &Memory| m.states.clone().narrow(1, 0, 4);
    assert!(max_abs_diff(real(&memory), real(&again)) < 1e-5);
}

#[test]
fn decoder_self_attention_is_causal() {
    let (dataset, tokenizer, config, device) = setup();
    let model = config.init(&device);
    let context = build_context(&dataset.users[1], dataset.user_events(1), &tokenizer, &config.context);
    let memory = model.encode(&Batch::new(&[context], None, &tokenizer.semantic_ids, &config, &device));
    let codes = |second: i64| Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, second], [1, 2]), &device);
    let (a, _) = model.decode(codes(0), &memory);
    let (b, _) = model.decode(codes(3), &memory);
    assert_eq!(a.dims(), [1, 3, config.d_model]);
    // Positions 0 (BOS) and 1 cannot see the second code; position 2 can.
    assert!(max_abs_diff(a.clone().narrow(1, 0, 2), b.clone().narrow(1, 0, 2)) < 1e-5);
    assert!(max_abs_diff(a.narrow(1, 2, 1), b.narrow(1, 2, 1)) > 1e-4);
}

#[test]
fn loss_is_finite_and_expert_loads_are_shares() {
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
