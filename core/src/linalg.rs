//! Small dense linear algebra on row-major `f32` matrices: the few kernels that item embeddings
//! and k-means need, kept here so the algorithms read as algorithms.

use rayon::prelude::*;

/// Rows per parallel block in products over tall matrices.
const BLOCK_ROWS: usize = 1024;

/// `out (m×n) = a (m×k) · bᵀ`, where `b` is `n×k` row-major. Parallel over blocks of rows of `a`.
pub fn matmul_transposed(a: &[f32], b: &[f32], k: usize, out: &mut [f32]) {
    let n = b.len() / k;
    gemm(a, b, k, n, (1, k as isize), out);
}

/// `out (m×n) = a (m×k) · b (k×n)`, all row-major. Parallel over blocks of rows of `a`.
pub fn matmul(a: &[f32], b: &[f32], k: usize, out: &mut [f32]) {
    let n = b.len() / k;
    gemm(a, b, k, n, (n as isize, 1), out);
}

/// Shared body of the products: `b_strides` are (row, column) strides of the k×n right operand.
fn gemm(a: &[f32], b: &[f32], k: usize, n: usize, b_strides: (isize, isize), out: &mut [f32]) {
    assert!(
        k > 0 && a.len().is_multiple_of(k) && b.len() == k * n && out.len() == a.len() / k * n,
        "matrix shapes do not match"
    );
    out.par_chunks_mut(BLOCK_ROWS * n).zip(a.par_chunks(BLOCK_ROWS * k)).for_each(|(c, a)| {
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
