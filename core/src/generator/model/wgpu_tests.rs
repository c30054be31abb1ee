//! The wgpu backend computes what Flex computes. In CI it runs on Mesa's software Vulkan, so the
//! sizes stay tiny: every new kernel is compiled on first use.

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::store::ModuleRecord;
use burn::tensor::{Device, Tensor};

use super::*;
use crate::device::gpu;
use crate::generator::context::build_context;
use crate::test_fixtures::tiny_setup;

fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    let b = Tensor::<D>::from_data(b.into_data(), &a.device());
    (a - b).abs().max().into_scalar::<f32>()
}

#[test]
fn wgpu_matches_flex_on_a_forward_pass_and_a_training_step() {
    let _rng = crate::test_fixtures::device_rng();
    let (gpu_device, description) = gpu(true).expect("a wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
    eprintln!("wgpu adapter: {description}");
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
