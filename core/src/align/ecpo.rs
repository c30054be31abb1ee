//! ECPO, Early-Clipped GRPO (OneRec Technical Report §2.4, DESIGN.md §2 "Alignment"): group-relative
//! advantages and a clipped ratio objective whose old policy is raised to at least
//! `sg(π_θ) / (1 + ε + δ)`, so that a sample with a negative advantage and a tiny old probability
//! cannot produce an exploding ratio (PPO's `min` leaves that side unclipped). No KL term.

use burn::tensor::Tensor;

/// Aᵢ = (rᵢ − mean r) / std r within one group (population std); all zeros when the rewards do not
/// differ, since such a group says nothing about which sample is better.
pub fn group_advantages(rewards: &[f32]) -> Vec<f32> {
    let n = rewards.len().max(1) as f32;
    let mean = rewards.iter().sum::<f32>() / n;
    let std = (rewards.iter().map(|r| (r - mean).powi(2)).sum::<f32>() / n).sqrt();
    if std < 1e-6 {
        return vec![0.0; rewards.len()];
    }
    rewards.iter().map(|r| (r - mean) / std).collect()
}

/// The ECPO loss −J for a batch of samples (each an item's whole semantic ID):
/// `log_probs` are log π_θ (with gradient), `old_log_probs` log π_old of the policy that sampled,
/// `advantages` Aᵢ. In log space, log π′_old = max(sg(log π_θ) − ln(1 + ε + δ), log π_old),
/// ρ = exp(log π_θ − log π′_old), J = mean min(ρA, clip(ρ, 1 − ε, 1 + ε)A).
pub fn ecpo_loss(
    log_probs: Tensor<1>,
    old_log_probs: Tensor<1>,
    advantages: Tensor<1>,
    epsilon: f32,
    delta: f32,
) -> Tensor<1> {
    let early = log_probs.clone().detach() - (1.0 + epsilon + delta).ln();
    let old = old_log_probs.max_pair(early);
    let ratio = (log_probs - old).exp();
    let unclipped = ratio.clone() * advantages.clone();
    let clipped = ratio.clamp(1.0 - epsilon, 1.0 + epsilon) * advantages;
    unclipped.min_pair(clipped).mean().neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn advantages_are_normalised_within_the_group() {
        let a = group_advantages(&[1.0, 2.0, 3.0, 4.0]);
        let s = 1.25f32.sqrt();
        for (got, want) in a.iter().zip([-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s]) {
            assert!((got - want).abs() < 1e-6, "{a:?}");
        }
        assert_eq!(group_advantages(&[0.7, 0.7, 0.7]), vec![0.0; 3]);
        assert_eq!(group_advantages(&[0.3]), vec![0.0]);
        assert!(group_advantages(&[]).is_empty());
    }

    /// ε = 0.2, δ = 0.1 (so the early clip caps ρ at 1.3), one sample per regime, by hand:
    /// 1. ρ = 1.1, A = +1: inside the clip, J = 1.1, ∂J/∂log π = ρA = 1.1.
    /// 2. ρ = 1.5, A = +1: π′_old = π_θ/1.3 → ρ = 1.3 → clipped to 1.2, J = 1.2, no gradient.
    /// 3. ρ = 0.5, A = −1: min(−0.5, −0.8) = −0.8, clipped, no gradient.
    /// 4. ρ = 3.0, A = −1: early clip, ρ = 1.3, J = −1.3, gradient 1.3A = −1.3 (PPO: −3.0 and −3.0).
    /// 5. ρ = 0.9, A = −0.5: inside, J = −0.45, gradient −0.45.
    ///
    /// Loss = −mean J = −(1.1 + 1.2 − 0.8 − 1.3 − 0.45)/5 = 0.05; ∂loss/∂log π = −∂J/5.
    #[test]
    fn ecpo_loss_matches_a_hand_computed_case() {
        let device = Device::flex().autodiff();
        let old = [0.1f32, 0.2, 0.05, 0.01, 0.3];
        let ratios = [1.1f32, 1.5, 0.5, 3.0, 0.9];
        let advantages = [1.0f32, 1.0, -1.0, -1.0, -0.5];
        let t = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [5]), &device);
        let new: Vec<f32> = old.iter().zip(ratios).map(|(o, r)| (o * r).ln()).collect();
        let log_probs = t(new).require_grad();
        let loss =
            ecpo_loss(log_probs.clone(), t(old.iter().map(|o| o.ln()).collect()), t(advantages.to_vec()), 0.2, 0.1);
        let value = loss.clone().into_scalar::<f32>();
        assert!((value - 0.05).abs() < 1e-5, "loss {value}");
        let grads = loss.backward();
        let grad = log_probs.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
        let want = [-1.1 / 5.0, 0.0, 0.0, 1.3 / 5.0, 0.45 / 5.0];
        for (g, w) in grad.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "gradient {grad:?}, want {want:?}");
        }
    }
}
