//! Softmax cross-entropy over a large vocabulary, with its gradient written out.
//!
//! The gradient of `−ln softmax(z)[t]` with respect to `z` is `softmax(z) − onehot(t)`. Through
//! autodiff, `log_softmax` over the whole catalogue keeps every intermediate of
//! `z − max − ln Σ exp(z − max)` (each a `[targets, items]` tensor) and takes the exponentials a
//! second time in the backward pass. Here they are taken once, off the graph, and the graph sees
//! only `Σ z ⊙ g` with the constant `g = softmax(z) − onehot(t)`, whose backward is one product.
//! PyTorch's `cross_entropy` fuses the same way.
//!
//! On the CPU, `g` and the loss come from one sweep over the logits on the host
//! ([`softmax_cross_entropy_rows`]). Written as tensor operations, the same sum was eight passes
//! over `[targets, items]`, each into a fresh buffer whose pages the kernel zeroed, with burn's
//! exponential one libm call at a time: `perf` over `onerec bench train` put them at a quarter of
//! a training step on MovieLens-100K. On a GPU the tensor form stays, so the logits stay there.

use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};

use crate::linalg::softmax_cross_entropy_rows;

/// `Σ_rows −ln softmax(logits)[row, targets[row]]`, `[1]`, differentiable in `logits`.
pub fn cross_entropy_sum(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let form = if crate::device::is_host(&logits.device()) { on_host } else { as_tensors };
    with_gradient_from(logits, targets, form)
}

/// Loss and gradient, each from `form`.
type Form = fn(Tensor<2>, Tensor<1, Int>) -> (Tensor<1>, Tensor<2>);

fn with_gradient_from(logits: Tensor<2>, targets: Tensor<1, Int>, form: Form) -> Tensor<1> {
    let (value, gradient) = form(logits.clone().detach(), targets);
    let surrogate = (logits * gradient).sum();
    // The surrogate's value cancels exactly; its gradient is the cross-entropy's.
    surrogate.clone() - surrogate.detach() + value
}

/// The loss and `g` from one sweep over the logits, on the host.
fn on_host(logits: Tensor<2>, targets: Tensor<1, Int>) -> (Tensor<1>, Tensor<2>) {
    let (shape, device) = (logits.dims(), logits.device());
    let targets: Vec<usize> = targets.into_data().iter::<i64>().map(|t| t as usize).collect();
    let mut values = logits.into_data().try_into_vec::<f32>().expect("f32 logits");
    let value = softmax_cross_entropy_rows(&mut values, shape[1], &targets);
    (Tensor::from_floats([value as f32], &device), Tensor::from_data(TensorData::new(values, shape), &device))
}

/// The loss and `g` as tensor operations, on the logits' device.
fn as_tensors(z: Tensor<2>, targets: Tensor<1, Int>) -> (Tensor<1>, Tensor<2>) {
    let ([rows, _], device) = (z.dims(), z.device());
    let targets = targets.reshape([rows, 1]);
    let shifted = z.clone() - z.max_dim(1);
    let exp = shifted.clone().exp();
    let total = exp.clone().sum_dim(1);
    let value = (total.clone().log() - shifted.gather(1, targets.clone())).sum();
    let minus_one = Tensor::full([rows, 1], -1.0, &device);
    (value, (exp / total).scatter(1, targets, minus_one, IndexingUpdateOp::Add))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::log_softmax;
    use burn::tensor::{Device, Distribution};

    /// Value and gradient of both forms against autodiff through `log_softmax`, on logits large
    /// enough that a missing max shift would overflow.
    #[test]
    fn matches_autodiff_through_log_softmax() {
        let _rng = crate::test_fixtures::device_rng();
        let device = Device::flex().autodiff();
        device.seed(5);
        let logits = Tensor::<2>::random([7, 300], Distribution::Normal(0.0, 30.0), &device);
        let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 299, 5, 5, 17, 150, 298], [7]), &device);
        let reference = logits.clone().require_grad();
        let want = log_softmax(reference.clone(), 1).gather(1, targets.clone().reshape([7, 1])).sum().neg();
        let w = want.clone().into_scalar::<f32>();
        let want = reference.grad(&want.backward()).unwrap();
        for form in [on_host as Form, as_tensors] {
            let ours = logits.clone().require_grad();
            let value = with_gradient_from(ours.clone(), targets.clone(), form);
            let v = value.clone().into_scalar::<f32>();
            assert!(v.is_finite() && (v - w).abs() <= 1e-4 * w.abs().max(1.0), "{v} against {w}");
            let grad = ours.grad(&value.backward()).unwrap();
            let diff = (grad - want.clone()).abs().max().into_scalar::<f32>();
            assert!(diff < 1e-5, "gradients differ by {diff}");
        }
    }
}
