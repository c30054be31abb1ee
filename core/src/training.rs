//! Training mechanics shared by the generator, the reward model and alignment: a module's weights
//! to and from bytes (burnpack, inside the project's own checksummed containers), the AdamW
//! optimizer with gradient clipping, the learning-rate schedule, and resuming from a checkpoint.

use std::path::Path;

use burn::module::Module;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn::store::ModuleRecord;
use burn::tensor::Bytes;

use crate::error::{Error, Result};

/// The burnpack bytes of a module's parameters.
pub fn weights_to_bytes(model: &impl Module) -> Result<Vec<u8>> {
    let bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| Error::External(format!("cannot serialise the weights: {e:?}")))?;
    Ok(bytes.to_vec())
}

/// Loads burnpack bytes into a freshly initialised module; `what` names the weights in errors.
pub fn weights_from_bytes<M: Module>(model: M, bytes: &[u8], what: &str) -> Result<M> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| Error::External(format!("{what}: unreadable weights: {e:?}")))?;
    model
        .try_load_record(record)
        .map_err(|e| Error::External(format!("{what}: the weights do not fit the model: {e:?}")))
}

/// AdamW with decoupled weight decay and gradient-norm clipping: the optimizer of every trainer.
pub fn adamw(weight_decay: f32, grad_clip: f32) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_weight_decay(weight_decay)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(grad_clip)))
        .init()
}

/// Learning rate at `step`: linear warm-up to `peak`, then cosine decay to a tenth of it.
pub fn learning_rate(step: usize, total: usize, warmup: usize, peak: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    let floor = peak * 0.1;
    floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

/// Where a run writes its checkpoint after every epoch, and whether it continues from it.
#[derive(Clone, Copy, Debug)]
pub struct Checkpointing<'a> {
    pub path: &'a Path,
    pub resume: bool,
}

/// The optimizer's state as bytes, for a checkpoint.
pub fn optimizer_to_bytes(optimizer: &ModuleOptimizer) -> Result<Vec<u8>> {
    let bytes =
        optimizer.into_bytes().map_err(|e| Error::External(format!("cannot serialise the optimizer: {e:?}")))?;
    Ok(bytes.to_vec())
}

/// Loads a checkpoint's model weights and optimizer state (read from `path`) into fresh ones.
pub fn restore<M: Module>(
    model: M,
    optimizer: ModuleOptimizer,
    weights: &[u8],
    optimizer_state: Vec<u8>,
    path: &Path,
) -> Result<(M, ModuleOptimizer)> {
    let model = weights_from_bytes(model, weights, &path.display().to_string())?;
    let optimizer = optimizer
        .from_bytes(Bytes::from_bytes_vec(optimizer_state))
        .map_err(|e| Error::corrupt(path, format!("unreadable optimizer state: {e:?}")))?;
    Ok((model, optimizer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_rate_warms_up_then_decays_to_a_tenth() {
        assert!((learning_rate(0, 100, 10, 1.0) - 0.1).abs() < 1e-12);
        assert!((learning_rate(9, 100, 10, 1.0) - 1.0).abs() < 1e-12);
        assert!((learning_rate(10, 100, 10, 1.0) - 1.0).abs() < 1e-12);
        assert!((learning_rate(55, 100, 10, 1.0) - 0.55).abs() < 1e-12, "half way down the cosine");
        assert!((learning_rate(100, 100, 10, 1.0) - 0.1).abs() < 1e-12);
    }
}
