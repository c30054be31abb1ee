//! DPO (OneRec v1's iterative preference alignment): for a user, the beam's best item by reward is
//! chosen and its worst rejected; the policy is pushed to prefer the chosen one more than the
//! reference (the policy that produced the beam) did.

use burn::tensor::Tensor;
use burn::tensor::activation::softplus;

/// Mean −log σ(β[(log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))]) over the pairs.
pub fn dpo_loss(
    chosen: Tensor<1>,
    rejected: Tensor<1>,
    chosen_ref: Tensor<1>,
    rejected_ref: Tensor<1>,
    beta: f32,
) -> Tensor<1> {
    let margin = ((chosen - chosen_ref) - (rejected - rejected_ref)) * beta;
    // −log σ(x) = softplus(−x).
    softplus(margin.neg(), 1.0).mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn dpo_loss_matches_a_hand_computed_case() {
        let device = Device::flex();
        let t = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [2]), &device);
        // Pair 1: chosen gains 1 over the reference, rejected loses 1 → margin β·2 = 1.
        // Pair 2: no change → margin 0 → ln 2.
        let loss = dpo_loss(t(vec![-1.0, -2.0]), t(vec![-3.0, -2.0]), t(vec![-2.0, -2.0]), t(vec![-2.0, -2.0]), 0.5);
        let want = ((1.0 + (-1f32).exp()).ln() + 2f32.ln()) / 2.0;
        assert!((loss.into_scalar::<f32>() - want).abs() < 1e-5);
    }
}
