//! Small data sets with a known answer, shared by the tests of the model, training and decoding.

use crate::data::{Dataset, DatasetBuilder, Feedback, Item, Origin};
use crate::embed::{self, EmbeddingConfig};
use crate::tokenizer::{self, RqConfig, Tokenizer};

/// Users walk the catalogue in order: after item `i` always comes item `i + 1` (mod `items`),
/// so the next item is fully determined by the last one.
pub(crate) fn cyclic_dataset(items: usize, users: usize, len: usize) -> Dataset {
    let mut b = DatasetBuilder::new();
    let origin = Origin::new("cyclic", 1);
    for i in 0..items {
        let item = Item { id: format!("i{i}"), title: format!("item {i}"), tags: vec![format!("g{}", i / 4)] };
        b.add_item(item, &origin).expect("distinct ids");
    }
    for u in 0..users {
        for t in 0..len {
            let item = (u * 7 + t) % items;
            b.add_event(&format!("u{u}"), &format!("i{item}"), t as i64, Feedback::Rating(5.0), &origin);
        }
    }
    b.finish("cyclic").expect("events")
}

/// A small tokenizer over the data set's items.
pub(crate) fn tokenizer_for(dataset: &Dataset, levels: usize, codes: usize) -> Tokenizer {
    let config = EmbeddingConfig { dim: 8, collab_dims: 4, ..EmbeddingConfig::default() };
    let embeddings = embed::item_embeddings(dataset, &config).expect("embeddings");
    let rq = RqConfig { levels, codes, max_iters: 10, seed: 3 };
    let (codebooks, semantic_ids, report) = tokenizer::fit(&embeddings.data, embeddings.dim, &rq).expect("fit");
    Tokenizer {
        dataset: dataset.name.clone(),
        item_ids: dataset.items.iter().map(|i| i.id.clone()).collect(),
        embeddings,
        embedding: config,
        config: rq,
        codebooks,
        semantic_ids,
        report,
    }
}

/// A cyclic data set, its tokenizer (2 levels of `codes`) and the `tiny` model configuration for it.
pub(crate) fn tiny_setup(
    items: usize,
    users: usize,
    len: usize,
    codes: usize,
) -> (Dataset, Tokenizer, crate::generator::model::ModelConfig) {
    let dataset = cyclic_dataset(items, users, len);
    let tokenizer = tokenizer_for(&dataset, 2, codes);
    let config = crate::generator::model::ModelConfig::preset(
        crate::generator::model::Preset::Tiny,
        items,
        tokenizer.semantic_ids.level_sizes.clone(),
        2,
        tokenizer.embeddings.dim,
    );
    (dataset, tokenizer, config)
}

/// Held by every test that draws from burn's device RNG (initialisation, dropout), which is one
/// per process: tests run in parallel, and a draw by one between another's seeding and its use
/// would make that test's numbers depend on timing.
pub(crate) fn device_rng() -> std::sync::MutexGuard<'static, ()> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RNG.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The wgpu device for the GPU tests: Mesa's lavapipe where there is no GPU. Without any adapter
/// the tests say so and pass, unless `ONEREC_REQUIRE_GPU` is set (CI sets it), where they fail.
#[cfg(feature = "wgpu")]
pub(crate) fn test_gpu() -> Option<burn::tensor::Device> {
    match crate::device::gpu(true) {
        Ok((device, description)) => {
            eprintln!("wgpu adapter: {description}");
            Some(device)
        }
        Err(why) if std::env::var_os("ONEREC_REQUIRE_GPU").is_some() => {
            panic!("ONEREC_REQUIRE_GPU is set: {why} (mesa-vulkan-drivers gives lavapipe)")
        }
        Err(why) => {
            eprintln!("skipped: {why} (mesa-vulkan-drivers gives lavapipe; ONEREC_REQUIRE_GPU makes this fail)");
            None
        }
    }
}

/// A reward model that prefers items by index: item i scores (i + 1) / n.
pub(crate) struct RewardByIndex(pub usize);

impl crate::reward::RewardFn for RewardByIndex {
    fn p_scores(&self, pairs: &[(&[crate::data::Event], crate::data::ItemIdx)]) -> Vec<f32> {
        pairs.iter().map(|&(_, i)| (i as f32 + 1.0) / self.0 as f32).collect()
    }
}

/// A recommender over `model` without the trend input, stepping `host_head` when one is given.
#[cfg(feature = "model")]
pub(crate) fn recommender<'a>(
    model: &'a crate::generator::model::OneRec,
    config: &'a crate::generator::model::ModelConfig,
    tokenizer: &'a Tokenizer,
    device: &'a burn::tensor::Device,
    host_head: Option<&'a crate::generator::model::HostHead>,
) -> crate::generator::recommend::Recommender<'a> {
    crate::generator::recommend::Recommender { model, config, tokenizer, device, trend: None, host_head }
}
