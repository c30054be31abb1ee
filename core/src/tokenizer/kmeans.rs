//! k-means over the rows of a matrix: plain Lloyd, and OneRec's balanced variant whose clusters
//! all hold |V|/K points, so every code of a level is used and none is crowded.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::linalg;

/// Points per parallel block when scoring against centroids.
const BLOCK_ROWS: usize = 512;
/// Nearest centroids kept per point for the balanced assignment; the rest are scanned only when all are full.
const CANDIDATES: usize = 16;
/// k-means++ seeds from at most this many points per cluster (a uniform sample), as full passes add nothing.
const SEED_SAMPLE_PER_CLUSTER: usize = 64;

/// Settings of one k-means run.
#[derive(Clone, Debug)]
pub struct KMeansConfig {
    pub clusters: usize,
    pub max_iters: usize,
    /// Stop once fewer than this fraction of points change cluster in an iteration.
    pub tolerance: f64,
    /// Hold every cluster to ⌊n/K⌋ or ⌈n/K⌉ points.
    pub balanced: bool,
    /// Fit centroids on at most this many points per cluster (a uniform sample), then assign all.
    pub sample_per_cluster: Option<usize>,
    pub seed: u64,
}

/// Result of a k-means run.
#[derive(Clone, Debug)]
pub struct Clustering {
    /// `clusters × dim`, row-major.
    pub centroids: Vec<f32>,
    pub assignment: Vec<u32>,
    /// Sum of squared distances from each point to its centroid.
    pub inertia: f64,
    pub iterations: usize,
}

/// Clusters the `n × dim` row-major `points`.
///
/// With `sample_per_cluster` set and more points than that per cluster, the centroids are fitted
/// on a uniform sample and every point is then assigned once (as faiss does): past a few hundred
/// points per cluster, more points move the centroids little and cost time in proportion.
pub fn kmeans(points: &[f32], dim: usize, config: &KMeansConfig) -> Result<Clustering> {
    let k = config.clusters;
    if dim == 0 || !points.len().is_multiple_of(dim) {
        return Err(Error::Config(format!("{} values do not form rows of {dim}", points.len())));
    }
    let n = points.len() / dim;
    if k == 0 || n < k {
        return Err(Error::Config(format!("cannot make {k} clusters from {n} points")));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let centroids = kmeans_plus_plus(points, dim, k, &mut rng);
    let sample_rows = config.sample_per_cluster.map(|per| per.saturating_mul(k)).filter(|&rows| rows < n);
    let (centroids, assignment, iterations) = match sample_rows {
        None => lloyd(points, dim, centroids, config.max_iters, config, &mut rng),
        Some(rows) => {
            let mut chosen = rand::seq::index::sample(&mut rng, n, rows).into_vec();
            chosen.sort_unstable();
            let sample: Vec<f32> = chosen.iter().flat_map(|&i| &points[i * dim..][..dim]).copied().collect();
            let (centroids, _, iterations) = lloyd(&sample, dim, centroids, config.max_iters, config, &mut rng);
            let (centroids, assignment, _) = lloyd(points, dim, centroids, 1, config, &mut rng);
            (centroids, assignment, iterations + 1)
        }
    };
    let inertia = inertia(points, dim, &centroids, &assignment);
    Ok(Clustering { centroids, assignment, inertia, iterations })
}

/// Lloyd iterations from the given centroids: assign (balanced or nearest), then move every
/// centroid to the mean of its points, until few points change or `max_iters` is reached.
fn lloyd(
    points: &[f32],
    dim: usize,
    mut centroids: Vec<f32>,
    max_iters: usize,
    config: &KMeansConfig,
    rng: &mut ChaCha8Rng,
) -> (Vec<f32>, Vec<u32>, usize) {
    let (n, k) = (points.len() / dim, config.clusters);
    let point_norms = linalg::row_sq_norms(points, dim);
    let mut assignment = vec![u32::MAX; n];
    let mut iterations = 0;
    while iterations < max_iters.max(1) {
        iterations += 1;
        let candidates = nearest_centroids(points, &point_norms, &centroids, dim, CANDIDATES.min(k));
        let next = if config.balanced {
            assign_balanced(&candidates, points, &centroids, dim, k)
        } else {
            candidates.idx.chunks(candidates.per_point).map(|c| c[0]).collect()
        };
        let changed = next.iter().zip(&assignment).filter(|(a, b)| a != b).count();
        assignment = next;
        centroids = update_centroids(points, dim, k, &assignment, &centroids, rng);
        if (changed as f64) < config.tolerance * n as f64 {
            break;
        }
    }
    (centroids, assignment, iterations)
}

/// Sum of squared distances of points to their assigned centroids.
pub fn inertia(points: &[f32], dim: usize, centroids: &[f32], assignment: &[u32]) -> f64 {
    points
        .par_chunks(dim)
        .zip(assignment.par_iter())
        .map(|(p, &a)| sq_dist(p, &centroids[a as usize * dim..][..dim]) as f64)
        .sum()
}

fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// k-means++ seeding (Arthur & Vassilvitskii) on a uniform sample of the points.
fn kmeans_plus_plus(points: &[f32], dim: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n = points.len() / dim;
    let sample_size = n.min(k * SEED_SAMPLE_PER_CLUSTER);
    let sample: Vec<usize> =
        if sample_size == n { (0..n).collect() } else { rand::seq::index::sample(rng, n, sample_size).into_vec() };
    let row = |i: usize| &points[sample[i] * dim..][..dim];
    let mut centroids = Vec::with_capacity(k * dim);
    centroids.extend_from_slice(row(rng.random_range(0..sample.len())));
    let mut nearest: Vec<f32> = (0..sample.len()).into_par_iter().map(|i| sq_dist(row(i), &centroids[..dim])).collect();
    for _ in 1..k {
        let total: f64 = nearest.iter().map(|&d| d as f64).sum();
        let chosen = if total > 0.0 {
            let mut target = rng.random::<f64>() * total;
            nearest
                .iter()
                .position(|&d| {
                    target -= d as f64;
                    target <= 0.0
                })
                .unwrap_or(sample.len() - 1)
        } else {
            rng.random_range(0..sample.len())
        };
        let start = centroids.len();
        centroids.extend_from_slice(row(chosen));
        let newest = &centroids[start..];
        nearest.par_iter_mut().enumerate().for_each(|(i, d)| *d = d.min(sq_dist(row(i), newest)));
    }
    centroids
}

/// The nearest centroids of every point, `per_point` of them each, nearest first.
struct Candidates {
    per_point: usize,
    idx: Vec<u32>,
    dist: Vec<f32>,
}

/// Scores all points against all centroids with one matrix product per block
/// (‖x − c‖² = ‖x‖² − 2x·c + ‖c‖²) and keeps the `m` nearest of each.
fn nearest_centroids(points: &[f32], point_norms: &[f32], centroids: &[f32], dim: usize, m: usize) -> Candidates {
    let k = centroids.len() / dim;
    let n = points.len() / dim;
    let centroid_norms = linalg::row_sq_norms(centroids, dim);
    let mut idx = vec![0u32; n * m];
    let mut dist = vec![0f32; n * m];
    points
        .par_chunks(BLOCK_ROWS * dim)
        .zip(point_norms.par_chunks(BLOCK_ROWS))
        .zip(idx.par_chunks_mut(BLOCK_ROWS * m).zip(dist.par_chunks_mut(BLOCK_ROWS * m)))
        .for_each(|((block, norms), (idx, dist))| {
            let mut dots = vec![0f32; norms.len() * k];
            linalg::matmul_transposed(block, centroids, dim, &mut dots);
            for (r, row) in dots.chunks_exact(k).enumerate() {
                let (best_idx, best_dist) = (&mut idx[r * m..][..m], &mut dist[r * m..][..m]);
                best_dist.fill(f32::INFINITY);
                for (c, &dot) in row.iter().enumerate() {
                    let d = (norms[r] - 2.0 * dot + centroid_norms[c]).max(0.0);
                    if d < best_dist[m - 1] {
                        let mut pos = m - 1;
                        while pos > 0 && best_dist[pos - 1] > d {
                            best_dist[pos] = best_dist[pos - 1];
                            best_idx[pos] = best_idx[pos - 1];
                            pos -= 1;
                        }
                        best_dist[pos] = d;
                        best_idx[pos] = c as u32;
                    }
                }
            }
        });
    Candidates { per_point: m, idx, dist }
}

/// Cluster sizes allowed by the balance: every cluster takes ⌊n/K⌋, and the first n mod K
/// clusters to fill up may take one more, so sizes end exactly at ⌊n/K⌋ or ⌈n/K⌉.
struct Capacity {
    base: usize,
    extra_left: usize,
    sizes: Vec<usize>,
}

impl Capacity {
    fn new(n: usize, k: usize) -> Self {
        Capacity { base: n / k, extra_left: n % k, sizes: vec![0; k] }
    }

    fn has_room(&self, c: usize) -> bool {
        self.sizes[c] < self.base || (self.sizes[c] == self.base && self.extra_left > 0)
    }

    fn take(&mut self, c: usize) {
        if self.sizes[c] == self.base {
            self.extra_left -= 1;
        }
        self.sizes[c] += 1;
    }
}

/// Greedy balanced assignment: points that would lose most by not getting their nearest centroid
/// (largest regret) choose first; a point whose candidates are all full scans every open cluster.
fn assign_balanced(candidates: &Candidates, points: &[f32], centroids: &[f32], dim: usize, k: usize) -> Vec<u32> {
    let m = candidates.per_point;
    let n = points.len() / dim;
    let regret = |p: usize| if m > 1 { candidates.dist[p * m + 1] - candidates.dist[p * m] } else { 0.0 };
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.par_sort_unstable_by(|&a, &b| regret(b as usize).total_cmp(&regret(a as usize)).then(a.cmp(&b)));
    let mut capacity = Capacity::new(n, k);
    let mut assignment = vec![0u32; n];
    let mut overflow = Vec::new();
    for &p in &order {
        let p = p as usize;
        match candidates.idx[p * m..][..m].iter().find(|&&c| capacity.has_room(c as usize)) {
            Some(&c) => {
                capacity.take(c as usize);
                assignment[p] = c;
            }
            None => overflow.push(p),
        }
    }
    for p in overflow {
        let point = &points[p * dim..][..dim];
        let best = (0..k)
            .filter(|&c| capacity.has_room(c))
            .min_by(|&a, &b| {
                sq_dist(point, &centroids[a * dim..][..dim]).total_cmp(&sq_dist(point, &centroids[b * dim..][..dim]))
            })
            .expect("total capacity equals the number of points");
        capacity.take(best);
        assignment[p] = best as u32;
    }
    assignment
}

/// New centroids as the means of their points. An empty cluster (plain k-means only) is re-seeded
/// at a random point so that no code is wasted.
fn update_centroids(
    points: &[f32],
    dim: usize,
    k: usize,
    assignment: &[u32],
    previous: &[f32],
    rng: &mut ChaCha8Rng,
) -> Vec<f32> {
    let (sums, counts) = points
        .par_chunks(dim)
        .zip(assignment.par_iter())
        .fold(
            || (vec![0f64; k * dim], vec![0usize; k]),
            |(mut sums, mut counts), (p, &a)| {
                let a = a as usize;
                sums[a * dim..][..dim].iter_mut().zip(p).for_each(|(s, &x)| *s += x as f64);
                counts[a] += 1;
                (sums, counts)
            },
        )
        .reduce(
            || (vec![0f64; k * dim], vec![0usize; k]),
            |(mut s1, mut c1), (s2, c2)| {
                s1.iter_mut().zip(s2).for_each(|(a, b)| *a += b);
                c1.iter_mut().zip(c2).for_each(|(a, b)| *a += b);
                (s1, c1)
            },
        );
    let n = points.len() / dim;
    let mut centroids = previous.to_vec();
    for c in 0..k {
        let target = &mut centroids[c * dim..][..dim];
        if counts[c] > 0 {
            target.iter_mut().zip(&sums[c * dim..][..dim]).for_each(|(t, &s)| *t = (s / counts[c] as f64) as f32);
        } else {
            target.copy_from_slice(&points[rng.random_range(0..n) * dim..][..dim]);
        }
    }
    centroids
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, StandardNormal};

    fn config(clusters: usize, balanced: bool) -> KMeansConfig {
        KMeansConfig { clusters, max_iters: 50, tolerance: 0.0, balanced, sample_per_cluster: None, seed: 7 }
    }

    fn gaussian(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n * dim).map(|_| StandardNormal.sample(&mut rng)).collect()
    }

    /// Equal-sized, well separated blobs around the corners of a simplex.
    fn blobs(per_blob: usize, blobs: usize, dim: usize) -> (Vec<f32>, Vec<usize>) {
        let noise = gaussian(per_blob * blobs, dim, 3);
        let mut points = Vec::new();
        let mut truth = Vec::new();
        for b in 0..blobs {
            for i in 0..per_blob {
                let row = &noise[(b * per_blob + i) * dim..][..dim];
                points.extend(row.iter().enumerate().map(|(d, &x)| 0.1 * x + if d == b { 10.0 } else { 0.0 }));
                truth.push(b);
            }
        }
        (points, truth)
    }

    #[test]
    fn candidates_match_a_naive_distance_loop() {
        let dim = 5;
        let points = gaussian(1100, dim, 1);
        let centroids = gaussian(20, dim, 2);
        let c = nearest_centroids(&points, &linalg::row_sq_norms(&points, dim), &centroids, dim, 4);
        for p in 0..1100 {
            let mut naive: Vec<(f32, u32)> =
                (0..20).map(|j| (sq_dist(&points[p * dim..][..dim], &centroids[j * dim..][..dim]), j as u32)).collect();
            naive.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (r, (want_dist, want_idx)) in naive.iter().take(4).enumerate() {
                assert_eq!(c.idx[p * 4 + r], *want_idx);
                assert!((c.dist[p * 4 + r] - want_dist).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn balanced_sizes_are_held_to_n_over_k() {
        let dim = 8;
        // Skewed data: most points in one blob, which plain k-means would give most clusters to.
        let mut points = gaussian(1003, dim, 5);
        points[..800 * dim].iter_mut().for_each(|x| *x = *x * 0.01 + 3.0);
        let clusters = 10;
        let result = kmeans(&points, dim, &config(clusters, true)).unwrap();
        let mut sizes = vec![0usize; clusters];
        result.assignment.iter().for_each(|&a| sizes[a as usize] += 1);
        assert!(sizes.iter().all(|&s| s == 100 || s == 101), "{sizes:?}");
        assert_eq!(sizes.iter().filter(|&&s| s == 101).count(), 3);
        let recomputed = inertia(&points, dim, &result.centroids, &result.assignment);
        assert!((recomputed - result.inertia).abs() < 1e-6 * recomputed);
    }

    #[test]
    fn balanced_recovers_equal_blobs_exactly() {
        let (points, truth) = blobs(50, 6, 6);
        let balanced = kmeans(&points, 6, &config(6, true)).unwrap();
        // Same partition as the truth, up to renaming clusters.
        for (i, j) in (0..truth.len()).flat_map(|i| (0..truth.len()).map(move |j| (i, j))).step_by(7) {
            assert_eq!(truth[i] == truth[j], balanced.assignment[i] == balanced.assignment[j]);
        }
        let plain = kmeans(&points, 6, &config(6, false)).unwrap();
        assert!(balanced.inertia <= plain.inertia * 1.0001, "{} vs {}", balanced.inertia, plain.inertia);
    }

    #[test]
    fn fitting_on_a_sample_still_recovers_the_blobs_and_assigns_every_point() {
        let (points, truth) = blobs(200, 5, 5);
        let sampled = kmeans(&points, 5, &KMeansConfig { sample_per_cluster: Some(20), ..config(5, true) }).unwrap();
        let mut sizes = [0usize; 5];
        sampled.assignment.iter().for_each(|&a| sizes[a as usize] += 1);
        assert_eq!(sizes, [200; 5]);
        for i in (0..truth.len()).step_by(13) {
            for j in (0..truth.len()).step_by(17) {
                assert_eq!(truth[i] == truth[j], sampled.assignment[i] == sampled.assignment[j]);
            }
        }
        let full = kmeans(&points, 5, &config(5, true)).unwrap();
        assert!(sampled.inertia <= full.inertia * 1.01, "{} vs {}", sampled.inertia, full.inertia);
    }

    /// The price of balance on structureless data is small: within 15% of plain k-means.
    #[test]
    fn balanced_objective_is_close_to_plain_kmeans() {
        let dim = 16;
        let points = gaussian(4000, dim, 11);
        let balanced = kmeans(&points, dim, &config(32, true)).unwrap();
        let plain = kmeans(&points, dim, &config(32, false)).unwrap();
        assert!(balanced.inertia <= plain.inertia * 1.15, "balanced {} vs plain {}", balanced.inertia, plain.inertia);
    }

    /// Against the exhaustive optimum over every balanced partition of a tiny set.
    #[test]
    fn balanced_is_near_the_exhaustive_optimum() {
        let dim = 2;
        let points = gaussian(9, dim, 21);
        let mut best = f64::INFINITY;
        let mut labels = [0u32; 9];
        // Every labelling with three points per cluster, via base-3 counting.
        for code in 0..3usize.pow(9) {
            let mut c = code;
            for l in labels.iter_mut() {
                *l = (c % 3) as u32;
                c /= 3;
            }
            if (0..3).all(|k| labels.iter().filter(|&&l| l == k).count() == 3) {
                let mut centroids = vec![0f32; 3 * dim];
                for (p, &l) in labels.iter().enumerate() {
                    for d in 0..dim {
                        centroids[l as usize * dim + d] += points[p * dim + d] / 3.0;
                    }
                }
                best = best.min(inertia(&points, dim, &centroids, &labels));
            }
        }
        let found = (0..5)
            .map(|seed| kmeans(&points, dim, &KMeansConfig { seed, ..config(3, true) }).unwrap().inertia)
            .fold(f64::INFINITY, f64::min);
        assert!(found <= best * 1.10 + 1e-9, "found {found}, optimum {best}");
    }

    #[test]
    fn plain_kmeans_uses_every_cluster_and_refuses_too_few_points() {
        let points = gaussian(300, 4, 9);
        let result = kmeans(&points, 4, &config(12, false)).unwrap();
        let used: std::collections::HashSet<u32> = result.assignment.iter().copied().collect();
        assert_eq!(used.len(), 12);
        assert!(kmeans(&points[..8], 4, &config(3, true)).is_err());
    }
}
