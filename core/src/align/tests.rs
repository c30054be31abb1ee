//! Alignment on a tiny synthetic task: the reward prefers one item family (first semantic code 0),
//! and alignment must move the policy there; the format reward must make free sampling legal.

use super::*;
use crate::decode::Decoding;
use crate::generator::recommend::DecodeRequest;
use crate::test_fixtures::tiny_setup;

/// Rewards items whose first code is 0.
struct FamilyReward<'a>(&'a Tokenizer);

impl RewardFn for FamilyReward<'_> {
    fn p_scores(&self, pairs: &[(&[Event], ItemIdx)]) -> Vec<f32> {
        pairs.iter().map(|&(_, i)| (self.0.semantic_ids.id_of(i)[0] == 0) as u8 as f32).collect()
    }
}

/// Samples 32 IDs per user; returns (share in the family, share legal).
fn measure(policy: &Policy, model: &OneRec, constrained: bool, device: &Device) -> (f64, f64) {
    let ids = &policy.tokenizer.semantic_ids;
    let users: Vec<UserIdx> = (0..policy.dataset.n_users() as UserIdx).collect();
    let contexts = policy.contexts(&users);
    let recommender = policy.recommender(model, device);
    let states = recommender.states(&contexts);
    let rows: Vec<usize> = (0..users.len()).flat_map(|u| std::iter::repeat_n(u, 32)).collect();
    let states = policy::repeat_rows(&states, &rows, device);
    let trie = constrained.then(|| ids.trie());
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let codes = policy::sample(model, &states, ids.id_len(), 1.0, trie, &mut rng);
    let n = codes.len() as f64;
    let family = codes.iter().filter(|c| c[0] == 0 && ids.item_of(c).is_some()).count() as f64 / n;
    let legal = codes.iter().filter(|c| ids.item_of(c).is_some()).count() as f64 / n;
    (family, legal)
}

fn run(method: Method, source: Source, steps: usize) -> ((f64, f64), (f64, f64)) {
    let (dataset, tokenizer, model_config) = tiny_setup(48, 8, 6, 8);
    let device = Device::flex();
    device.seed(3);
    let weights = weights_to_bytes(&model_config.init(&device)).unwrap();
    let policy =
        Policy { dataset: &dataset, tokenizer: &tokenizer, config: &model_config, device: &device, trend: None };
    let constrained = source != (Source::Sample { constrained: false });
    let before = measure(
        &policy,
        &weights_from_bytes(model_config.init(&device), &weights, "test").unwrap(),
        constrained,
        &device,
    );
    let config = AlignConfig {
        method,
        source,
        steps,
        users_per_step: 8,
        group: 8,
        format_k: 8,
        learning_rate: 1e-2,
        next_token_weight: 0.0,
        dpo_fraction: 1.0,
        dpo_beta: 1.0,
        eval_every: 0,
        ..AlignConfig::default()
    };
    let reward = FamilyReward(&tokenizer);
    let (aligned, report) =
        align(&policy, &weights, &reward, &config, None, &mut |_| ControlFlow::Continue(())).unwrap();
    assert_eq!(report.steps.len(), steps);
    let after = measure(&policy, &aligned, constrained, &device);
    eprintln!("{method:?} {source:?}: {before:?} → {after:?}");
    (before, after)
}

#[test]
fn ecpo_moves_the_policy_to_the_rewarded_family() {
    let _rng = crate::test_fixtures::device_rng();
    let ((family_before, _), (family_after, legal)) = run(Method::Ecpo, Source::Sample { constrained: true }, 25);
    assert_eq!(legal, 1.0, "constrained sampling is always legal");
    assert!(family_before < 0.5 && family_after > 0.8, "family share {family_before:.2} → {family_after:.2}");
}

#[test]
fn dpo_moves_the_policy_to_the_rewarded_family() {
    let _rng = crate::test_fixtures::device_rng();
    let ((family_before, _), (family_after, _)) = run(Method::Dpo, Source::Sample { constrained: true }, 25);
    assert!(family_before < 0.5 && family_after > 0.7, "family share {family_before:.2} → {family_after:.2}");
}

/// Unconstrained sampling from a random model is often illegal; the format reward (here on every
/// sample, K = G) must make most free samples real items.
#[test]
fn format_reward_makes_free_sampling_legal() {
    let _rng = crate::test_fixtures::device_rng();
    let ((_, legal_before), (_, legal_after)) = run(Method::Ecpo, Source::Sample { constrained: false }, 25);
    assert!(legal_before < 0.8 && legal_after > 0.95, "legality {legal_before:.2} → {legal_after:.2}");
}

#[test]
fn alignment_resumes_as_if_uninterrupted_and_refuses_other_settings() {
    let _rng = crate::test_fixtures::device_rng();
    let (dataset, tokenizer, model_config) = tiny_setup(24, 4, 6, 4);
    let device = Device::flex();
    let weights = weights_to_bytes(&model_config.init(&device)).unwrap();
    let policy =
        Policy { dataset: &dataset, tokenizer: &tokenizer, config: &model_config, device: &device, trend: None };
    let reward = FamilyReward(&tokenizer);
    let config =
        AlignConfig { steps: 2, users_per_step: 2, group: 4, eval_every: 1, valid_beam: 5, ..AlignConfig::default() };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("align.ckpt");
    let go = |config: &AlignConfig, resume| {
        align(&policy, &weights, &reward, config, Some(Checkpointing { path: &path, resume }), &mut |_| {
            ControlFlow::Continue(())
        })
    };
    let (_, first) = go(&AlignConfig { steps: 1, ..config.clone() }, false).unwrap();
    assert_eq!((first.steps.len(), first.evals.len()), (1, 2));
    let (_, resumed) = go(&config, true).unwrap();
    assert_eq!(resumed.steps.len(), 2);
    assert_eq!(resumed.steps[0], first.steps[0], "the first step is not redone");
    assert_eq!(resumed.evals.len(), 3);
    let (_, whole) = align(&policy, &weights, &reward, &config, None, &mut |_| ControlFlow::Continue(())).unwrap();
    assert_eq!(resumed.steps, whole.steps, "a resumed run is the uninterrupted run");
    assert_eq!(resumed.evals, whole.evals);
    let other = AlignConfig { group: 5, ..config };
    assert!(go(&other, true).unwrap_err().to_string().contains("other alignment settings"));
}

/// Free decoding through the ID decoder scores each ID with the teacher-forced log π(ID)
/// that alignment differentiates; its IDs are distinct and best first, and a beam as wide as the
/// ID space enumerates it.
#[test]
fn free_decoding_agrees_with_teacher_forced_log_probs() {
    let _rng = crate::test_fixtures::device_rng();
    let (dataset, tokenizer, model_config) = tiny_setup(24, 4, 6, 4);
    let device = Device::flex();
    device.seed(8);
    let model = model_config.init(&device);
    let ids = &tokenizer.semantic_ids;
    let recommender = crate::test_fixtures::recommender(&model, &model_config, &tokenizer, &device, None);
    let free = |beam| {
        let request = recommender.request(&dataset.users[0], dataset.user_events(0), 0, beam, false);
        recommender.recommend_batch(&[DecodeRequest { decoding: Decoding::Free, ..request }]).remove(0)
    };
    let space: usize = ids.level_sizes.iter().product();
    let all = free(space);
    assert_eq!(all.len(), space);
    let codes: Vec<Vec<Code>> = all.iter().map(|h| h.id.clone()).collect();
    let context = recommender.context(&dataset.users[0], dataset.user_events(0), 0);
    let rows = policy::repeat_rows(&recommender.states(std::slice::from_ref(&context)), &vec![0; codes.len()], &device);
    let log_probs = |items: &[Option<ItemIdx>]| {
        policy::log_probs(&model, rows.clone(), &codes, items, &device).into_data().try_to_vec::<f32>().unwrap()
    };
    let forced = log_probs(&vec![None; codes.len()]);
    for (h, f) in all.iter().zip(&forced) {
        assert!((h.log_prob - f).abs() < 1e-4, "{:?}: beam {} vs teacher-forced {f}", h.id, h.log_prob);
        assert_eq!(h.item, ids.item_of(&h.id));
    }
    // With the items named, the policy adds each item's log-softmax under the item expert.
    let scores = model.item_scores(recommender.states(&[context])).into_data().try_to_vec::<f32>().unwrap();
    let log_z = scores.iter().map(|&s| (s as f64).exp()).sum::<f64>().ln();
    let items: Vec<Option<ItemIdx>> = all.iter().map(|h| h.item).collect();
    for ((h, f), whole) in all.iter().zip(&forced).zip(log_probs(&items)) {
        let item_term = h.item.map_or(0.0, |i| scores[i as usize] as f64 - log_z);
        assert!((whole as f64 - (*f as f64 + item_term)).abs() < 1e-4, "{:?}: {whole} vs {f} + {item_term}", h.id);
    }
    assert!(all.windows(2).all(|w| w[0].log_prob >= w[1].log_prob), "best first");
    let distinct: std::collections::HashSet<_> = codes.iter().collect();
    assert_eq!(distinct.len(), space);
    let narrow = free(3);
    assert!(narrow.len() == 3 && narrow.iter().all(|n| all.iter().any(|a| a.id == n.id)));
    assert!(free(0).is_empty());
}
