//! `onerec_core::rescore` compiled to WebAssembly and run in a real browser: the same behaviour as
//! the native unit tests, checked where it ships. Run with
//! `CHROMEDRIVER=/usr/bin/chromedriver cargo test -p onerec-web --target wasm32-unknown-unknown`.
#![cfg(target_arch = "wasm32")]

use onerec_core::api::{EventKind, FeedItem, quantise_embedding};
use onerec_core::rescore::{LocalPreferences, Reason, RerankConfig, rerank};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// An item whose embedding is ±1 on one axis (`axis`, negated when `opposite`).
fn item_on(id: usize, score: f32, tag: &str, axis: usize, opposite: bool) -> FeedItem {
    let mut v = vec![0.0f32; 8];
    v[axis] = if opposite { -1.0 } else { 1.0 };
    FeedItem {
        id: id.to_string(),
        title: format!("item {id}"),
        tags: vec![tag.to_string()],
        score,
        semantic_id: vec![],
        embedding: quantise_embedding(&v),
        fresh: false,
    }
}

fn item(id: usize, score: f32, tag: &str, axis: usize) -> FeedItem {
    item_on(id, score, tag, axis, false)
}

/// Kinds "a" and "b" point in opposite directions; the server prefers "b" throughout.
fn two_kinds() -> Vec<FeedItem> {
    let kind = |i: usize| {
        if i.is_multiple_of(2) {
            item_on(i, -2.0 - i as f32 * 0.01, "a", 0, false)
        } else {
            item_on(i, -1.0 - i as f32 * 0.01, "b", 0, true)
        }
    };
    (0..20).map(kind).collect()
}

#[wasm_bindgen_test]
fn likes_move_a_kind_up_in_the_browser() {
    let candidates = two_kinds();
    let cfg = RerankConfig { diversity: 0.0, ..RerankConfig::default() };
    let count_a = |prefs: &LocalPreferences| {
        rerank(prefs, 100.0, &candidates, &cfg)[..10].iter().filter(|r| candidates[r.index].tags[0] == "a").count()
    };
    let mut prefs = LocalPreferences::default();
    assert_eq!(count_a(&prefs), 0);
    prefs.observe(&candidates[0], EventKind::Like, None, 10.0);
    prefs.observe(&candidates[2], EventKind::Like, None, 20.0);
    // Three likes, so that even the weakest "a" clearly beats the strongest "b" (two would tie).
    prefs.observe(&candidates[4], EventKind::Like, None, 30.0);
    assert_eq!(count_a(&prefs), 10);
    assert_eq!(rerank(&prefs, 100.0, &candidates, &cfg)[0].reason, Reason::LikedTag("a".into()));
}

#[wasm_bindgen_test]
fn affinity_matches_the_closed_form_in_the_browser() {
    // One like of an identical item: embedding part 1/(1+1), tag part 1/(1+1); after one
    // half-life both halve their evidence: 0.5/(1+0.5) = 1/3 each.
    let it = item(0, 0.0, "x", 3);
    let mut prefs = LocalPreferences::new(100.0);
    prefs.observe(&it, EventKind::Like, None, 0.0);
    assert!((prefs.affinity(&it, 0.0) - 0.5).abs() < 1e-6);
    assert!((prefs.affinity(&it, 100.0) - 1.0 / 3.0).abs() < 1e-6);
}

#[wasm_bindgen_test]
fn diversity_and_json_state_work_in_the_browser() {
    let mut candidates: Vec<FeedItem> = (0..5).map(|i| item(i, 1.0 - i as f32 * 0.01, "a", 0)).collect();
    candidates.extend((5..10).map(|i| item(i, 1.0 - i as f32 * 0.01, "b", 1)));
    let cfg = RerankConfig { diversity: 0.5, affinity_weight: 0.0, slate: 10, ..RerankConfig::default() };
    let prefs = LocalPreferences::default();
    let kinds: String =
        rerank(&prefs, 0.0, &candidates, &cfg).iter().map(|r| candidates[r.index].tags[0].clone()).collect();
    assert_eq!(kinds, "abaaaabbbb");

    let mut prefs = LocalPreferences::new(600.0);
    prefs.observe(&candidates[6], EventKind::Like, None, 5.0);
    let back: LocalPreferences = serde_json::from_str(&serde_json::to_string(&prefs).unwrap()).unwrap();
    assert_eq!(back, prefs);
}
