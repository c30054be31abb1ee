//! The format reward (OneRec Technical Report §2.4): when sampling without the trie constraint, a
//! random K of the G samples of a group get advantage 1 if their ID is a real item, and illegal
//! samples are dropped. Raising legal IDs drains probability from illegal ones, so the policy learns
//! the legal ID space without a constraint at serving time.

use rand::Rng;
use rand::seq::index;

use super::ecpo::group_advantages;

/// K distinct sample indices out of G (all of them when K ≥ G).
pub fn pick(k: usize, g: usize, rng: &mut impl Rng) -> Vec<usize> {
    index::sample(rng, g, k.min(g)).into_vec()
}

/// Advantages of one group under the format reward. `rewards[i]` is `None` for an illegal ID.
/// Legal samples get their reward advantage, normalised over the legal samples; the legal ones in
/// `chosen` get 1 instead; illegal samples get `None` (dropped from the loss).
pub fn format_advantages(rewards: &[Option<f32>], chosen: &[usize]) -> Vec<Option<f32>> {
    let legal: Vec<f32> = rewards.iter().flatten().copied().collect();
    let mut normalised = group_advantages(&legal).into_iter();
    let mut out: Vec<Option<f32>> = rewards.iter().map(|r| r.and_then(|_| normalised.next())).collect();
    for &i in chosen {
        if out[i].is_some() {
            out[i] = Some(1.0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn chosen_legal_samples_get_one_illegal_ones_are_dropped() {
        // Legal rewards 0.2, 0.8, 0.5: mean 0.5, std √0.06; sample 3 is chosen (→ 1), sample 1 is
        // chosen but illegal (dropped), sample 4 illegal (dropped).
        let rewards = [Some(0.2), None, Some(0.8), Some(0.5), None];
        let got = format_advantages(&rewards, &[1, 3]);
        let s = 0.06f32.sqrt();
        let want = [Some(-0.3 / s), None, Some(0.3 / s), Some(1.0), None];
        for (g, w) in got.iter().zip(want) {
            match (g, w) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-5, "{got:?}"),
                (g, w) => assert_eq!(*g, w, "{got:?}"),
            }
        }
        // With every sample chosen, every legal one gets exactly 1.
        assert_eq!(format_advantages(&rewards, &[0, 1, 2, 3, 4]), [Some(1.0), None, Some(1.0), Some(1.0), None]);
        assert_eq!(format_advantages(&[None, None], &[0]), [None, None]);
    }

    #[test]
    fn pick_draws_k_distinct_indices() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut p = pick(3, 8, &mut rng);
        p.sort_unstable();
        p.dedup();
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|&i| i < 8));
        assert_eq!(pick(10, 4, &mut rng).len(), 4);
    }
}
