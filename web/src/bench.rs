//! `/#bench`: times the re-ranker as shipped (release WebAssembly) on 500 candidates × 64 dims, and
//! shows the median so that a headless browser can read it.

use leptos::prelude::*;
use onerec_core::api::{EventKind, FeedItem, quantise_embedding};
use onerec_core::rescore::{LocalPreferences, RerankConfig, rerank};

const CANDIDATES: usize = 500;
const DIM: usize = 64;
const RUNS: usize = 101;
/// Re-ranks per timed sample: the browser's clock is coarse (about 0.1 ms), so each sample times
/// several and divides.
const PER_SAMPLE: usize = 10;

/// A deterministic pseudo-random stream, so every run times the same work.
struct Lcg(u64);
impl Lcg {
    fn unit(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn candidates() -> Vec<FeedItem> {
    let mut rng = Lcg(42);
    (0..CANDIDATES)
        .map(|i| {
            let v: Vec<f32> = (0..DIM).map(|_| rng.unit() * 2.0 - 1.0).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            FeedItem {
                id: i.to_string(),
                title: format!("item {i}"),
                tags: vec![format!("t{}", i % 17), format!("g{}", i % 5)],
                score: -10.0 * rng.unit(),
                semantic_id: vec![],
                embedding: quantise_embedding(&v.iter().map(|x| x / norm).collect::<Vec<_>>()),
                fresh: false,
            }
        })
        .collect()
}

/// Median milliseconds of one full re-rank with a slate of `slate` MMR positions.
fn median_ms(items: &[FeedItem], prefs: &LocalPreferences, slate: usize) -> f64 {
    let perf = web_sys::window().and_then(|w| w.performance()).expect("performance.now");
    let config = RerankConfig { slate, ..RerankConfig::default() };
    let mut checksum = 0usize;
    let mut times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = perf.now();
            for _ in 0..PER_SAMPLE {
                let ranked = rerank(prefs, 1_000.0, items, &config);
                checksum = checksum.wrapping_add(ranked[0].index);
            }
            (perf.now() - start) / PER_SAMPLE as f64
        })
        .collect();
    assert!(checksum < usize::MAX); // keeps the work observable
    times.sort_by(f64::total_cmp);
    times[RUNS / 2]
}

#[component]
pub fn Bench() -> impl IntoView {
    let items = candidates();
    let mut prefs = LocalPreferences::default();
    for (i, item) in items.iter().take(20).enumerate() {
        prefs.observe(item, if i % 3 == 0 { EventKind::Skip } else { EventKind::Like }, None, i as f64);
    }
    // One untimed pass to warm the code up.
    let _ = rerank(&prefs, 1_000.0, &items, &RerankConfig::default());
    let page = median_ms(&items, &prefs, PAGE_SLATE);
    let full = median_ms(&items, &prefs, CANDIDATES);
    // serde_json writes the floats: `format!` would link core's float formatting (about 15 kB of
    // wasm) for this page alone.
    let report = serde_json::json!({
        "candidates": CANDIDATES, "dim": DIM, "samples": RUNS, "reranks_per_sample": PER_SAMPLE,
        format!("median_ms_slate_{PAGE_SLATE}"): page, "median_ms_full_mmr": full,
    })
    .to_string();
    view! { <pre id="bench">{report}</pre> }
}

/// The slate of the first page, as the feed uses it.
const PAGE_SLATE: usize = 10;
