//! Collaborative embeddings: items that the same users take close together in time are similar.
//! Windowed co-occurrence counts → smoothed positive PMI → truncated randomized SVD
//! (Halko, Martinsson & Tropp), which costs a few sparse products instead of a dense factorisation.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::Result;
use crate::linalg;

/// Settings of the co-occurrence statistics and their factorisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CooccurrenceConfig {
    /// Two events of a user co-occur when at most this many positions apart.
    pub window: usize,
    /// Exponent that smooths item frequencies in PMI (0.75, as in word2vec), so rare items do not dominate.
    pub smoothing: f64,
    /// Extra random directions of the randomized SVD.
    pub oversample: usize,
    /// Power iterations of the randomized SVD; each sharpens the leading directions.
    pub power_iters: usize,
}

impl Default for CooccurrenceConfig {
    fn default() -> Self {
        CooccurrenceConfig { window: 20, smoothing: 0.75, oversample: 10, power_iters: 3 }
    }
}

/// A symmetric sparse matrix in compressed rows.
struct SparseRows {
    start: Vec<usize>,
    col: Vec<u32>,
    value: Vec<f32>,
}

impl SparseRows {
    /// `self · x` for a dense `n × k` matrix.
    fn times(&self, x: &[f32], k: usize) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(k).enumerate().for_each(|(i, row)| {
            for p in self.start[i]..self.start[i + 1] {
                let v = self.value[p];
                row.iter_mut().zip(&x[self.col[p] as usize * k..][..k]).for_each(|(r, &y)| *r += v * y);
            }
        });
        out
    }
}

/// `items × dims` unit rows from the training sequences, and whether each item had any signal.
pub(super) fn embed(
    dataset: &Dataset,
    dims: usize,
    config: &CooccurrenceConfig,
    seed: u64,
) -> Result<(Vec<f32>, Vec<bool>)> {
    let n = dataset.n_items();
    if dims == 0 {
        return Ok((Vec::new(), vec![false; n]));
    }
    let ppmi = positive_pmi(dataset, config);
    let warm: Vec<bool> = (0..n).map(|i| ppmi.start[i + 1] > ppmi.start[i]).collect();
    if ppmi.col.is_empty() {
        return Ok((vec![0f32; n * dims], warm));
    }
    let mut out = factorise(&ppmi, n, dims, config, seed);
    linalg::l2_normalize_rows(&mut out, dims);
    Ok((out, warm))
}

/// Counts item pairs within the window of each training sequence and turns the counts into
/// smoothed positive PMI: max(0, ln(P(i,j) / (Pα(i) Pα(j)))), with Pα(i) ∝ count(i)^α.
fn positive_pmi(dataset: &Dataset, config: &CooccurrenceConfig) -> SparseRows {
    let n = dataset.n_items();
    let window = config.window.max(1);
    let sequences: Vec<_> = dataset.train_sequences().collect();
    let mut pairs: Vec<u64> = sequences
        .par_iter()
        .flat_map_iter(|seq| {
            (0..seq.len()).flat_map(move |i| {
                seq[i + 1..seq.len().min(i + 1 + window)].iter().filter_map(move |e| {
                    let (a, b) = (seq[i].item, e.item);
                    (a != b).then(|| ((a.min(b) as u64) << 32) | a.max(b) as u64)
                })
            })
        })
        .collect();
    pairs.par_sort_unstable();
    // Unique pairs with their counts, then both directions of each.
    let mut triples: Vec<(u32, u32, f32)> = Vec::new();
    for run in pairs.chunk_by(|a, b| a == b) {
        let (a, b) = ((run[0] >> 32) as u32, run[0] as u32);
        triples.push((a, b, run.len() as f32));
        triples.push((b, a, run.len() as f32));
    }
    drop(pairs);
    triples.par_sort_unstable_by_key(|&(a, b, _)| (a, b));
    let mut marginal = vec![0f64; n];
    triples.iter().for_each(|&(a, _, c)| marginal[a as usize] += c as f64);
    let total: f64 = marginal.iter().sum();
    let smoothed: Vec<f64> = marginal.iter().map(|&c| c.powf(config.smoothing)).collect();
    let smoothed_total: f64 = smoothed.iter().sum();
    let mut start = vec![0usize; n + 1];
    let (mut col, mut value) = (Vec::new(), Vec::new());
    for &(a, b, c) in &triples {
        let p_ab = c as f64 / total;
        let pmi = (p_ab / (smoothed[a as usize] / smoothed_total * smoothed[b as usize] / smoothed_total)).ln();
        if pmi > 0.0 {
            start[a as usize + 1] += 1;
            col.push(b);
            value.push(pmi as f32);
        }
    }
    (0..n).for_each(|i| start[i + 1] += start[i]);
    SparseRows { start, col, value }
}

/// Leading eigenvectors of the symmetric PPMI matrix, scaled by √λ, by randomized range finding.
fn factorise(m: &SparseRows, n: usize, dims: usize, config: &CooccurrenceConfig, seed: u64) -> Vec<f32> {
    let k = (dims + config.oversample).min(n);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let omega: Vec<f32> = (0..n * k).map(|_| StandardNormal.sample(&mut rng)).collect();
    let mut y = m.times(&omega, k);
    for _ in 0..config.power_iters {
        linalg::orthonormalize_columns(&mut y, k);
        y = m.times(&y, k);
    }
    linalg::orthonormalize_columns(&mut y, k);
    let b = linalg::transpose_product(&y, k, &m.times(&y, k), k);
    let (values, vectors) = linalg::symmetric_eigen(&b, k);
    // Scaled top eigenvectors as a k × dims right operand: Q · (V_dims · diag(√λ)).
    let keep = dims.min(k);
    let mut right = vec![0f32; k * dims];
    for r in 0..k {
        for c in 0..keep {
            right[r * dims + c] = (vectors[r * k + c] * values[c].max(0.0).sqrt()) as f32;
        }
    }
    let mut out = vec![0f32; n * dims];
    linalg::matmul(&y, &right, k, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a small dense PSD matrix with a clear spectral gap, the randomized factor reproduces
    /// the best rank-d approximation that a full Jacobi eigen-decomposition gives.
    #[test]
    fn randomized_factor_matches_the_full_decomposition() {
        let (n, d) = (40, 3);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let basis: Vec<f64> = (0..n * d).map(|_| StandardNormal.sample(&mut rng)).collect();
        let strengths = [9.0, 5.0, 3.0];
        let dense: Vec<f64> = (0..n * n)
            .map(|idx| {
                let (i, j) = (idx / n, idx % n);
                (0..d).map(|c| strengths[c] * basis[i * d + c] * basis[j * d + c]).sum::<f64>()
                    + if i == j { 0.01 } else { 0.0 }
            })
            .collect();
        let mut m = SparseRows { start: vec![0], col: Vec::new(), value: Vec::new() };
        for i in 0..n {
            for j in 0..n {
                m.col.push(j as u32);
                m.value.push(dense[i * n + j] as f32);
            }
            m.start.push(m.col.len());
        }
        let config = CooccurrenceConfig { oversample: 5, power_iters: 3, ..CooccurrenceConfig::default() };
        let factor = factorise(&m, n, d, &config, 1);
        let (values, vectors) = linalg::symmetric_eigen(&dense, n);
        for i in 0..n {
            for j in 0..n {
                let best: f64 = (0..d).map(|c| values[c] * vectors[i * n + c] * vectors[j * n + c]).sum();
                let got: f64 = (0..d).map(|c| factor[i * d + c] as f64 * factor[j * d + c] as f64).sum();
                assert!((best - got).abs() < 1e-3 * values[0], "({i},{j}): {best} vs {got}");
            }
        }
    }
}
