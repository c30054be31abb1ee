//! Dropout whose masks come from a generator seeded for one forward pass, rather than from burn's
//! `Dropout`, which samples each mask element through burn's one process-wide RNG:
//! - that sampling took about a tenth of a CPU training step (a generic per-element sampler);
//!   xoshiro256++ bits compared with a threshold cost about a nanosecond an element;
//! - training shards that run on several threads at once would draw from the shared RNG in
//!   whatever order the threads reach it, and a run would no longer be reproducible from its seed.

use burn::tensor::{Tensor, TensorData};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

/// The dropout of one forward pass: rate and generator.
pub struct Dropout {
    rate: f64,
    rng: SmallRng,
}

impl Dropout {
    /// Dropout at `rate` with masks drawn from `seed`; `None` (inference) or a zero rate drops nothing.
    pub fn new(rate: f64, seed: Option<u64>) -> Option<Dropout> {
        seed.filter(|_| rate > 0.0).map(|seed| Dropout { rate, rng: SmallRng::seed_from_u64(seed) })
    }

    /// Zeroes each element with probability `rate` and scales the rest by `1 / (1 - rate)`.
    pub fn apply<const D: usize>(&mut self, x: Tensor<D>) -> Tensor<D> {
        let shape = x.shape();
        let keep = (1.0 / (1.0 - self.rate)) as f32;
        let threshold = (self.rate * 4_294_967_296.0).min(u32::MAX as f64) as u32;
        let mask: Vec<f32> =
            (0..shape.num_elements()).map(|_| if self.rng.next_u32() >= threshold { keep } else { 0.0 }).collect();
        let device = x.device();
        x * Tensor::from_data(TensorData::new(mask, shape), &device)
    }
}

/// Applies `dropout` when there is one.
pub fn maybe<const D: usize>(dropout: &mut Option<Dropout>, x: Tensor<D>) -> Tensor<D> {
    match dropout {
        Some(d) => d.apply(x),
        None => x,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn drops_the_rate_scales_the_rest_and_repeats_from_its_seed() {
        let device = Device::flex();
        let x = Tensor::<2>::ones([200, 500], &device);
        let draw = |seed| {
            let mut d = Dropout::new(0.3, Some(seed)).unwrap();
            d.apply(x.clone()).into_data().try_to_vec::<f32>().unwrap()
        };
        let y = draw(7);
        let dropped = y.iter().filter(|&&v| v == 0.0).count() as f64 / y.len() as f64;
        assert!((dropped - 0.3).abs() < 0.01, "dropped {dropped}");
        assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
        assert_eq!(y, draw(7));
        assert_ne!(y, draw(8));
        assert!(Dropout::new(0.3, None).is_none() && Dropout::new(0.0, Some(1)).is_none());
    }
}
