//! The wgpu backend computes what Flex computes. In CI it runs on Mesa's software Vulkan, so the
//! sizes stay tiny: every new kernel is compiled on first use.

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::store::ModuleRecord;
use burn::tensor::{Device, Tensor};

use super::*;
use crate::generator::context::build_context;
use crate::generator::recommend::{DecodeRequest, Recommender};
use crate::test_fixtures::{test_gpu, tiny_setup};

fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    let b = Tensor::<D>::from_data(b.into_data(), &a.device());
    (a - b).abs().max().into_scalar::<f32>()
}

#[test]
fn wgpu_matches_flex_on_a_forward_pass_and_a_training_step() {
    let _rng = crate::test_fixtures::device_rng();
    let Some(gpu_device) = test_gpu() else { return };
    let (dataset, tokenizer, config) = tiny_setup(12, 3, 8, 3);
    let ids = &tokenizer.semantic_ids;
    let cpu = Device::flex();
    // The same weights on both devices, as a snapshot would carry them.
    let flex_model = config.init(&cpu.clone().autodiff());
    let weights = flex_model.clone().into_record().into_bytes().unwrap();
    let gpu_model = config.init(&gpu_device.clone().autodiff()).load_record(ModuleRecord::from_bytes(weights).unwrap());
    let contexts: Vec<_> = (0..3u32)
        .map(|u| build_context(&dataset.users[u as usize], &dataset.user_events(u)[..4], &tokenizer, &config.context))
        .collect();
    let targets: Vec<crate::data::ItemIdx> = (0..3u32).map(|u| dataset.user_events(u)[4].item).collect();

    let on = |device: &Device| Batch::new(&contexts, Some(&targets), ids, &config, device);
    let ((flex_states, _), (gpu_states, _)) =
        (flex_model.valid().encode(&on(&cpu)), gpu_model.valid().encode(&on(&gpu_device)));
    assert!(max_abs_diff(flex_states, gpu_states) < 1e-4, "query states differ");

    let step = |model: OneRec, device: &Device| {
        let ad = device.clone().autodiff();
        let (loss, _) = model.loss(&on(&ad));
        let loss_value = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let model = AdamWConfig::new().init().step(1e-2, model, grads);
        (loss_value, model.valid())
    };
    let (flex_loss, flex_trained) = step(flex_model, &cpu);
    let (gpu_loss, gpu_trained) = step(gpu_model, &gpu_device);
    assert!((flex_loss - gpu_loss).abs() < 1e-4, "loss {flex_loss} vs {gpu_loss}");
    let (after_flex, _) = flex_trained.encode(&on(&cpu));
    let (after_gpu, _) = gpu_trained.encode(&on(&gpu_device));
    assert!(max_abs_diff(after_flex, after_gpu) < 1e-3, "weights after one AdamW step differ");
}

/// GPU decoding (the head on wgpu, the selection in `shaders/beam_select.wgsl`) gives what CPU
/// decoding gives: the same items in the same order, with log-probabilities within 1e-4.
#[test]
fn gpu_decoding_equals_cpu_decoding() {
    let _rng = crate::test_fixtures::device_rng();
    let Some(gpu_device) = test_gpu() else { return };
    let (dataset, tokenizer, config) = tiny_setup(24, 6, 30, 4);
    let cpu = Device::flex();
    cpu.seed(8);
    let cpu_model = config.init(&cpu);
    let weights = cpu_model.clone().into_record().into_bytes().unwrap();
    let gpu_model = config.init(&gpu_device).load_record(ModuleRecord::from_bytes(weights).unwrap());
    let on = |model, device| Recommender {
        model,
        config: &config,
        tokenizer: &tokenizer,
        device,
        trend: None,
        host_head: None,
    };
    let (cpu_recommender, gpu_recommender) = (on(&cpu_model, &cpu), on(&gpu_model, &gpu_device));
    // Histories of several lengths, with and without exclusion, beams from 1 to the catalogue.
    let cases = [(0u32, 12, 5, true), (1, 3, 24, false), (2, 0, 7, true), (3, 20, 1, true), (4, 29, 16, true)];
    let requests = |r: &Recommender| -> Vec<DecodeRequest> {
        cases
            .iter()
            .map(|&(user, len, beam, exclude)| {
                r.request(&dataset.users[user as usize], &dataset.user_events(user)[..len], 0, beam, exclude)
            })
            .collect()
    };
    let want = cpu_recommender.recommend_batch(&requests(&cpu_recommender));
    let got = gpu_recommender.recommend_batch(&requests(&gpu_recommender));
    for (user, (got, want)) in got.iter().zip(&want).enumerate() {
        assert_eq!(got.len(), want.len(), "user {user}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.item, &g.id), (w.item, &w.id), "user {user}");
            assert!((g.log_prob - w.log_prob).abs() < 1e-4, "user {user}: {} vs {}", g.log_prob, w.log_prob);
            assert!((g.score - w.score).abs() < 1e-3, "user {user}: {} vs {}", g.score, w.score);
        }
    }
}
