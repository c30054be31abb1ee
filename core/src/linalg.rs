//! Small dense linear algebra on row-major `f32` matrices: the few kernels that item embeddings
//! and k-means need, kept here so the algorithms read as algorithms.

use rayon::prelude::*;

/// Rows per parallel block in products over tall matrices.
const BLOCK_ROWS: usize = 1024;
/// The most output values a block of a product holds (64 kB), so that a caller's `finish` reads
/// them from cache.
const BLOCK_OUTPUT: usize = 16 * 1024;

/// `out (m×n) = a (m×k) · bᵀ`, where `b` is `n×k` row-major. Parallel over blocks of rows of `a`.
pub fn matmul_transposed(a: &[f32], b: &[f32], k: usize, out: &mut [f32]) {
    matmul_transposed_then(a, b, k, out, |_| {});
}

/// [`matmul_transposed`], then `finish` on each block of whole rows of `out`, right after the
/// block is computed and while it is still in cache.
pub fn matmul_transposed_then(a: &[f32], b: &[f32], k: usize, out: &mut [f32], finish: impl Fn(&mut [f32]) + Sync) {
    let n = b.len() / k;
    gemm(a, b, k, n, (1, k as isize), out, &finish);
}

/// `out (m×n) = a (m×k) · b (k×n)`, all row-major. Parallel over blocks of rows of `a`.
pub fn matmul(a: &[f32], b: &[f32], k: usize, out: &mut [f32]) {
    let n = b.len() / k;
    gemm(a, b, k, n, (n as isize, 1), out, &|_| {});
}

/// Shared body of the products: `b_strides` are (row, column) strides of the k×n right operand.
fn gemm(
    a: &[f32],
    b: &[f32],
    k: usize,
    n: usize,
    b_strides: (isize, isize),
    out: &mut [f32],
    finish: &(dyn Fn(&mut [f32]) + Sync),
) {
    assert!(
        k > 0 && a.len().is_multiple_of(k) && b.len() == k * n && out.len() == a.len() / k * n,
        "matrix shapes do not match"
    );
    // Blocks for every thread (a beam step's products are a few hundred to a few thousand rows),
    // each small enough for `finish` to find its output in cache.
    let m = a.len() / k;
    let block = m.div_ceil(rayon::current_num_threads()).min(BLOCK_ROWS).min((BLOCK_OUTPUT / n.max(1)).max(8)).max(1);
    out.par_chunks_mut(block * n).zip(a.par_chunks(block * k)).for_each(|(c, a)| {
        let m = a.len() / k;
        // SAFETY: the assert above sizes a as m×k, b as k×n (under its strides) and c as m×n.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr(),
                k as isize,
                1,
                b.as_ptr(),
                b_strides.0,
                b_strides.1,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
        finish(c);
    });
}

/// Squared Euclidean norm of every row.
pub fn row_sq_norms(a: &[f32], k: usize) -> Vec<f32> {
    a.par_chunks(k).map(|r| r.iter().map(|x| x * x).sum()).collect()
}

/// Scales every row to unit length; all-zero rows stay zero.
pub fn l2_normalize_rows(a: &mut [f32], k: usize) {
    a.par_chunks_mut(k).for_each(|r| {
        let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            r.iter_mut().for_each(|x| *x /= norm);
        }
    });
}

/// Row-wise log-softmax of row-major `rows × width` values, in place, rows spread over the
/// threads.
pub fn log_softmax_rows(values: &mut [f32], width: usize) {
    let row_log_softmax = log_softmax_kernel();
    values.par_chunks_mut(width.max(1)).for_each(row_log_softmax);
}

/// Softmax cross-entropy of row-major `rows × width` logits against one target column per row:
/// returns `Σ_rows −ln softmax(row)[target]` and leaves in each row its gradient,
/// `softmax(row) − onehot(target)`. One sweep of exponentials, rows spread over the threads.
pub fn softmax_cross_entropy_rows(values: &mut [f32], width: usize, targets: &[usize]) -> f64 {
    let row_cross_entropy = softmax_cross_entropy_kernel();
    values.par_chunks_mut(width.max(1)).zip(targets).map(|(row, &target)| row_cross_entropy(row, target) as f64).sum()
}

/// `$kernel` built for AVX2 with FMA where the CPU has them (checked at run time, as the
/// portable build targets SSE2 only), else the portable build, as a function pointer.
macro_rules! fastest_build {
    ($kernel:ident($($arg:ident: $ty:ty),*) -> $out:ty) => {{
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($arg: $ty),*) -> $out {
                $kernel($($arg),*)
            }
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return |$($arg),*| unsafe { avx2($($arg),*) };
        }
        $kernel
    }};
}

/// The fastest log-softmax of one row this CPU runs.
///
/// A beam step takes the log-softmax of every beam row, and with libm's scalar `expf` that was a
/// sixth of a batched decode (`perf` over `onerec bench decode`). `wide`'s `f32x8::exp` only
/// halved it: 2.4 ns an element against libm's 4.1, on this 2-core EPYC, 64 rows of 256 in cache.
/// [`exp_non_positive`] is written so that the compiler vectorises the whole row: 1.3 ns an
/// element on SSE2, 0.8 with AVX2 and FMA.
pub fn log_softmax_kernel() -> fn(&mut [f32]) {
    fastest_build!(log_softmax_row(row: &mut [f32]) -> ())
}

/// The fastest build of [`softmax_cross_entropy_row`] this CPU runs.
fn softmax_cross_entropy_kernel() -> fn(&mut [f32], usize) -> f32 {
    fastest_build!(softmax_cross_entropy_row(row: &mut [f32], target: usize) -> f32)
}

/// The largest value of a row, in eight independent lanes: one long chain of dependent
/// comparisons would not vectorise.
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let (lanes, tail) = row.as_chunks::<8>();
    let mut max = [f32::NEG_INFINITY; 8];
    for lane in lanes {
        for (m, &x) in max.iter_mut().zip(lane) {
            *m = if x > *m { x } else { *m };
        }
    }
    max.into_iter().chain(tail.iter().copied()).fold(f32::NEG_INFINITY, f32::max)
}

#[inline(always)]
fn log_softmax_row(row: &mut [f32]) {
    let max = row_max(row);
    let (lanes, tail) = row.as_chunks::<8>();
    let mut sum = [0f32; 8];
    for lane in lanes {
        for (s, &x) in sum.iter_mut().zip(lane) {
            *s += exp_non_positive(x - max);
        }
    }
    let sum = sum.iter().sum::<f32>() + tail.iter().map(|&x| exp_non_positive(x - max)).sum::<f32>();
    let log_z = max + sum.ln();
    row.iter_mut().for_each(|x| *x -= log_z);
}

/// `−ln softmax(row)[target]`, leaving `softmax(row) − onehot(target)` in the row.
#[inline(always)]
fn softmax_cross_entropy_row(row: &mut [f32], target: usize) -> f32 {
    let max = row_max(row);
    let target_logit = row[target];
    let (lanes, tail) = row.as_chunks_mut::<8>();
    let mut sum = [0f32; 8];
    for lane in lanes {
        for (s, x) in sum.iter_mut().zip(lane) {
            *x = exp_non_positive(*x - max);
            *s += *x;
        }
    }
    let mut sum = sum.iter().sum::<f32>();
    for x in tail {
        *x = exp_non_positive(*x - max);
        sum += *x;
    }
    let inverse = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= inverse);
    row[target] -= 1.0;
    sum.ln() - (target_logit - max)
}

/// `eˣ` for `x ≤ 0`, within about 2 ulp, from operations that vectorise on SSE2: `2ⁿ · p(r)` with
/// `n = round(x / ln 2)` (by the 1.5·2²³ rounding trick, not `round`, which SSE2 lacks),
/// `r = x − n ln 2` in two parts, `p` the degree-6 Taylor polynomial (its error at `|r| ≤ ln2/2`
/// is 1e-7), and `2ⁿ` built in the exponent bits (not by a float-to-int cast, which Rust
/// saturates one lane at a time). Below −87 the result is `e⁻⁸⁷`, about 1.6e-38.
#[inline(always)]
fn exp_non_positive(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // n + 127 + 2²³ holds n + 127 in its low mantissa bits; shifted, they are the exponent.
    f32::from_bits((n + 8_388_735.0).to_bits() << 23) * p
}

/// Gram matrix `aᵀa` (k×k) of a tall `m×k` matrix, accumulated in f64 for the factorisations.
pub fn gram(a: &[f32], k: usize) -> Vec<f64> {
    transpose_product(a, k, a, k)
}

/// `aᵀb` (ka×kb, f64) of two tall matrices with the same rows: `a` is m×ka, `b` is m×kb.
pub fn transpose_product(a: &[f32], ka: usize, b: &[f32], kb: usize) -> Vec<f64> {
    assert_eq!(a.len() / ka, b.len() / kb, "both matrices need the same rows");
    a.par_chunks(BLOCK_ROWS * ka)
        .zip(b.par_chunks(BLOCK_ROWS * kb))
        .map(|(a, b)| {
            let mut g = vec![0f64; ka * kb];
            for (ra, rb) in a.chunks_exact(ka).zip(b.chunks_exact(kb)) {
                for i in 0..ka {
                    let x = ra[i] as f64;
                    g[i * kb..][..kb].iter_mut().zip(rb).for_each(|(g, &y)| *g += x * y as f64);
                }
            }
            g
        })
        .reduce(|| vec![0f64; ka * kb], add_into)
}

fn add_into(mut x: Vec<f64>, y: Vec<f64>) -> Vec<f64> {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
    x
}

/// Lower Cholesky factor `L` of a symmetric positive-definite k×k matrix (`a = L·Lᵀ`).
/// A tiny ridge is added to the diagonal where a pivot is not positive, so rank-deficient input
/// still yields a usable factor.
pub fn cholesky(a: &[f64], k: usize) -> Vec<f64> {
    let scale = (0..k).map(|i| a[i * k + i].abs()).fold(0.0, f64::max).max(f64::MIN_POSITIVE);
    let mut l = vec![0f64; k * k];
    for i in 0..k {
        for j in 0..=i {
            let s: f64 = (0..j).map(|p| l[i * k + p] * l[j * k + p]).sum();
            if i == j {
                let pivot = a[i * k + i] - s;
                l[i * k + i] = pivot.max(scale * 1e-10).sqrt();
            } else {
                l[i * k + j] = (a[i * k + j] - s) / l[j * k + j];
            }
        }
    }
    l
}

/// Inverse of a lower-triangular k×k matrix.
fn invert_lower(l: &[f64], k: usize) -> Vec<f64> {
    let mut inv = vec![0f64; k * k];
    for col in 0..k {
        inv[col * k + col] = 1.0 / l[col * k + col];
        for i in col + 1..k {
            let s: f64 = (col..i).map(|p| l[i * k + p] * inv[p * k + col]).sum();
            inv[i * k + col] = -s / l[i * k + i];
        }
    }
    inv
}

/// Solves `a · x = b` for a symmetric positive-definite k×k `a` and a k×cols right side `b`.
pub fn solve_spd(a: &[f64], b: &[f64], k: usize) -> Vec<f64> {
    let cols = b.len() / k;
    let l = cholesky(a, k);
    let mut x = b.to_vec();
    for c in 0..cols {
        // Forward: L y = b, then back: Lᵀ x = y.
        for i in 0..k {
            let s: f64 = (0..i).map(|p| l[i * k + p] * x[p * cols + c]).sum();
            x[i * cols + c] = (x[i * cols + c] - s) / l[i * k + i];
        }
        for i in (0..k).rev() {
            let s: f64 = (i + 1..k).map(|p| l[p * k + i] * x[p * cols + c]).sum();
            x[i * cols + c] = (x[i * cols + c] - s) / l[i * k + i];
        }
    }
    x
}

/// Makes the k columns of a tall `m×k` matrix orthonormal in place (CholeskyQR2: two passes keep
/// it accurate in f32 while every pass is one parallel product).
pub fn orthonormalize_columns(a: &mut [f32], k: usize) {
    for _ in 0..2 {
        let l = cholesky(&gram(a, k), k);
        let linv = invert_lower(&l, k);
        // Q = A · L⁻ᵀ; as a row-major k×k right operand, L⁻ᵀ[p][j] = L⁻¹[j][p].
        let rinv: Vec<f32> = (0..k * k).map(|idx| linv[(idx % k) * k + idx / k] as f32).collect();
        let mut q = vec![0f32; a.len()];
        matmul(a, &rinv, k, &mut q);
        a.copy_from_slice(&q);
    }
}

/// Eigen-decomposition of a symmetric k×k matrix by cyclic Jacobi rotations.
/// Returns eigenvalues in descending order and the matching eigenvectors as columns (row-major k×k).
pub fn symmetric_eigen(a: &[f64], k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut m = a.to_vec();
    let mut v = vec![0f64; k * k];
    (0..k).for_each(|i| v[i * k + i] = 1.0);
    for _sweep in 0..100 {
        let off: f64 = (0..k)
            .flat_map(|i| (0..k).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * k + j].powi(2))
            .sum();
        let total: f64 = m.iter().map(|x| x * x).sum();
        if off <= 1e-22 * total.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..k {
            for q in p + 1..k {
                let apq = m[p * k + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (m[q * k + q] - m[p * k + p]) / (2.0 * apq);
                let sign = if theta >= 0.0 { 1.0 } else { -1.0 };
                let t = sign / (theta.abs() + (theta * theta + 1.0).sqrt());
                let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                for r in 0..k {
                    let (mrp, mrq) = (m[r * k + p], m[r * k + q]);
                    m[r * k + p] = c * mrp - s * mrq;
                    m[r * k + q] = s * mrp + c * mrq;
                }
                for r in 0..k {
                    let (mpr, mqr) = (m[p * k + r], m[q * k + r]);
                    m[p * k + r] = c * mpr - s * mqr;
                    m[q * k + r] = s * mpr + c * mqr;
                }
                for r in 0..k {
                    let (vrp, vrq) = (v[r * k + p], v[r * k + q]);
                    v[r * k + p] = c * vrp - s * vrq;
                    v[r * k + q] = s * vrp + c * vrq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&i, &j| m[j * k + j].total_cmp(&m[i * k + i]));
    let values = order.iter().map(|&i| m[i * k + i]).collect();
    let vectors = (0..k * k).map(|idx| v[(idx / k) * k + order[idx % k]]).collect();
    (values, vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_rows_matches_the_scalar_formula() {
        // Widths below, at and off a multiple of the 8 lanes; a wide spread of logits, so that
        // some exponentials underflow.
        for width in [1usize, 5, 8, 13, 256] {
            let values: Vec<f32> = (0..3 * width).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.9).collect();
            // The kernel this CPU picks (AVX2 where it has it) and the portable one.
            let mut picked = values.clone();
            log_softmax_rows(&mut picked, width);
            let mut portable = values.clone();
            portable.chunks_mut(width).for_each(log_softmax_row);
            for (row, got) in values.chunks(width).zip(picked.chunks(width).chain(portable.chunks(width))) {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let log_z = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
                for (&x, &g) in row.iter().zip(got) {
                    assert!((g as f64 - (x as f64 - log_z)).abs() < 1e-5, "width {width}: {g} vs {}", x as f64 - log_z);
                }
            }
        }
    }

    #[test]
    fn softmax_cross_entropy_rows_matches_the_scalar_formula() {
        for width in [1usize, 5, 8, 13, 256] {
            let values: Vec<f32> = (0..3 * width).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.9).collect();
            let targets: Vec<usize> = (0..3).map(|r| (r * 7) % width).collect();
            let mut picked = values.clone();
            let picked_loss = softmax_cross_entropy_rows(&mut picked, width, &targets);
            let mut portable = values.clone();
            let portable_loss: f64 = portable
                .chunks_mut(width)
                .zip(&targets)
                .map(|(row, &t)| softmax_cross_entropy_row(row, t) as f64)
                .sum();
            let mut want_loss = 0.0;
            for (r, row) in values.chunks(width).enumerate() {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let log_z = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
                want_loss += log_z - row[targets[r]] as f64;
                for (c, &x) in row.iter().enumerate() {
                    let want = (x as f64 - log_z).exp() - if c == targets[r] { 1.0 } else { 0.0 };
                    for got in [picked[r * width + c], portable[r * width + c]] {
                        assert!((got as f64 - want).abs() < 1e-6, "width {width}: {got} vs {want}");
                    }
                }
            }
            for loss in [picked_loss, portable_loss] {
                assert!((loss - want_loss).abs() < 1e-4 * want_loss.max(1.0), "width {width}: {loss} vs {want_loss}");
            }
        }
    }

    fn naive_matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    fn pseudo_random(len: usize, seed: u32) -> Vec<f32> {
        (0..len).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    #[test]
    fn products_match_a_naive_loop() {
        let (m, k, n) = (2100, 7, 5);
        let a = pseudo_random(m * k, 1);
        let b = pseudo_random(k * n, 2);
        let bt: Vec<f32> = (0..n * k).map(|idx| b[(idx % k) * n + idx / k]).collect();
        let want = naive_matmul(&a, &b, m, k, n);
        let mut got = vec![0f32; m * n];
        matmul(&a, &b, k, &mut got);
        assert!(want.iter().zip(&got).all(|(x, y)| (x - y).abs() < 1e-4));
        matmul_transposed(&a, &bt, k, &mut got);
        assert!(want.iter().zip(&got).all(|(x, y)| (x - y).abs() < 1e-4));
    }

    #[test]
    fn orthonormalized_columns_are_orthonormal_and_span_the_input() {
        let (m, k) = (3000, 6);
        let orig = pseudo_random(m * k, 9);
        let mut q = orig.clone();
        orthonormalize_columns(&mut q, k);
        let g = gram(&q, k);
        for i in 0..k {
            for j in 0..k {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((g[i * k + j] - want).abs() < 1e-4, "g[{i}][{j}] = {}", g[i * k + j]);
            }
        }
        // The first input column lies in the span: its projection onto Q keeps its norm.
        let col: Vec<f32> = (0..m).map(|r| orig[r * k]).collect();
        let coeffs: Vec<f32> = (0..k).map(|j| (0..m).map(|r| q[r * k + j] * col[r]).sum()).collect();
        let proj_norm: f32 = coeffs.iter().map(|c| c * c).sum();
        let norm: f32 = col.iter().map(|c| c * c).sum();
        assert!((proj_norm / norm - 1.0).abs() < 1e-3);
    }

    #[test]
    fn jacobi_recovers_a_hand_made_decomposition() {
        // A = [[2,1],[1,2]] has eigenvalues 3 and 1 with eigenvectors (1,1)/√2 and (1,-1)/√2.
        let (values, vectors) = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((values[0] - 3.0).abs() < 1e-12 && (values[1] - 1.0).abs() < 1e-12);
        assert!((vectors[0].abs() - 0.5f64.sqrt()).abs() < 1e-12);
        assert!((vectors[0] - vectors[2]).abs() < 1e-12, "first eigenvector is (1,1)/√2");
        // A larger case: reconstruct V Λ Vᵀ.
        let k = 5;
        let b: Vec<f64> = pseudo_random(k * k, 4).iter().map(|&x| x as f64).collect();
        let a: Vec<f64> = (0..k * k).map(|idx| b[idx] + b[(idx % k) * k + idx / k]).collect();
        let (values, v) = symmetric_eigen(&a, k);
        for i in 0..k {
            for j in 0..k {
                let r: f64 = (0..k).map(|p| v[i * k + p] * values[p] * v[j * k + p]).sum();
                assert!((r - a[i * k + j]).abs() < 1e-9);
            }
        }
        assert!(values.windows(2).all(|w| w[0] >= w[1]));
    }

    #[test]
    fn solve_spd_solves_a_hand_made_system() {
        // [[4,1],[1,3]] x = [[1,2],[2,1]] has x = [[1/11, 5/11], [7/11, 2/11]].
        let x = solve_spd(&[4.0, 1.0, 1.0, 3.0], &[1.0, 2.0, 2.0, 1.0], 2);
        let want = [1.0 / 11.0, 5.0 / 11.0, 7.0 / 11.0, 2.0 / 11.0];
        assert!(x.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12), "{x:?}");
    }

    #[test]
    fn cholesky_factors_reproduce_the_matrix() {
        let a = [4.0, 2.0, 0.4, 2.0, 5.0, 1.0, 0.4, 1.0, 3.0];
        let l = cholesky(&a, 3);
        for i in 0..3 {
            for j in 0..3 {
                let r: f64 = (0..3).map(|p| l[i * 3 + p] * l[j * 3 + p]).sum();
                assert!((r - a[i * 3 + j]).abs() < 1e-12);
            }
        }
    }
}
