//! The ID head prepared for beam search on the CPU: the function of [`IdHead::logits`], on plain
//! row-major `f32` buffers, with the first layer of each level's ReGLU read from tables.
//!
//! Why a second form of the head: in a batched decode on the CPU the head runs on every beam row
//! of every level, and through burn's tensors each of its dozen small operations allocates,
//! zeroes and copies its output; with the log-softmax that was about half of a batch's time
//! (`perf` over `onerec bench decode`, batches of 16 at beam 64). The tensor head stays for
//! training, for alignment's sampling and on a GPU; the tests hold the two to the same logits.
//!
//! **The first layer is a lookup.** Level `l` reads `u = state + Σ_{j<l} E_j[c_j]` through
//! `RmsNorm`, which is `γ ⊙ u` scaled by one number per row, `1 / rms(u)`. So its first product
//! splits: `(γ ⊙ u)·W = (γ ⊙ state)·W + Σ_{j<l} T_{l,j}[c_j]`, with `T_{l,j} = (γ ⊙ E_j)·W` a
//! table computed once per model. A search's state goes through `W` once per level, and a beam
//! row's first layer is `l` row lookups instead of a `d × 2·d_ff` product: two fifths of the
//! head's multiply-adds. The matrix products left (the ReGLU's down projection and the code
//! scores) run through `matrixmultiply` over all rows of all searches at once.

use super::IdHead;
use crate::decode::CodeStepper;
use crate::linalg::{log_softmax_kernel, matmul, matmul_transposed_then};
use crate::tokenizer::Code;
use burn::tensor::Tensor;
use rayon::prelude::*;

/// Row-major host copy of a 2-D tensor.
fn host(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().expect("the head's weights are f32")
}

/// One ID level, prepared.
struct HostLevel {
    /// `diag(γ)·[W_gate | W_up]`, `d × 2·d_ff`: what a search's state goes through.
    first: Vec<f32>,
    /// `T_{l,j} = (γ ⊙ E_j)·[W_gate | W_up]`, `V_j × 2·d_ff`, for every earlier level `j`.
    tables: Vec<Vec<f32>>,
    epsilon: f32,
    /// `W_down`, `d_ff × d`.
    down: Vec<f32>,
    /// `E_l` with column `k` scaled by the output norm's `γ'_k`, `V_l × d`.
    scorer: Vec<f32>,
    out_epsilon: f32,
    bias: Vec<f32>,
}

/// An [`IdHead`] prepared for decoding on the host ([`IdHead::prepare`]): built once per model,
/// read by every decode.
pub struct HostHead {
    d_model: usize,
    d_ff: usize,
    /// `E_j`, `V_j × d`: what a row adds to its running `u` when it takes a code of level `j`.
    codes: Vec<Vec<f32>>,
    levels: Vec<HostLevel>,
}

impl IdHead {
    /// The head prepared for [`HostDecoder`]: weights on the host and the first-layer tables.
    pub fn prepare(&self) -> HostHead {
        let codes: Vec<Vec<f32>> = self.codes.iter().map(|e| host(e.weight.val())).collect();
        let d_model = self.codes[0].weight.dims()[1];
        let d_ff = self.levels[0].ffn.weights().2.dims()[0];
        let levels = self
            .levels
            .iter()
            .enumerate()
            .map(|(l, level)| {
                let gamma = host(level.norm.gamma.val().unsqueeze());
                let (gate, up, down) = level.ffn.weights();
                let (gate, up) = (host(gate), host(up));
                // [W_gate | W_up] with row k scaled by γ_k.
                let first: Vec<f32> = (0..d_model)
                    .flat_map(|k| {
                        let row = gate[k * d_ff..][..d_ff].iter().chain(&up[k * d_ff..][..d_ff]);
                        let gamma = gamma[k];
                        row.map(move |w| w * gamma)
                    })
                    .collect();
                let tables = codes[..l]
                    .iter()
                    .map(|table| {
                        let mut out = vec![0.0; table.len() / d_model * 2 * d_ff];
                        matmul(table, &first, d_model, &mut out);
                        out
                    })
                    .collect();
                let out_gamma = host(level.out_norm.gamma.val().unsqueeze());
                let scorer = codes[l].chunks(d_model).flat_map(|row| row.iter().zip(&out_gamma).map(|(e, g)| e * g));
                HostLevel {
                    first,
                    tables,
                    epsilon: level.norm.epsilon as f32,
                    down: host(down),
                    scorer: scorer.collect(),
                    out_epsilon: level.out_norm.epsilon as f32,
                    bias: host(level.bias.val().unsqueeze()),
                }
            })
            .collect();
        HostHead { d_model, d_ff, codes, levels }
    }
}

/// `1 / rms(x)` under `RmsNorm`'s epsilon. The squares are summed in eight lanes: a single
/// running sum is a chain of dependent additions that does not vectorise.
fn inverse_rms(x: &[f32], epsilon: f32) -> f32 {
    let (lanes, tail) = x.as_chunks::<8>();
    let mut sums = [0f32; 8];
    for lane in lanes {
        sums.iter_mut().zip(lane).for_each(|(s, v)| *s += v * v);
    }
    let sum = sums.iter().sum::<f32>() + tail.iter().map(|v| v * v).sum::<f32>();
    1.0 / (sum / x.len() as f32 + epsilon).sqrt()
}

/// Beam search's stepper over a [`HostHead`]: the same rows, parents and codes as the tensor
/// head's [`super::IdDecoder`], on host buffers.
pub struct HostDecoder<'h> {
    head: &'h HostHead,
    /// `(γ_l ⊙ state)·W_l` of every search for every level `l`, `searches × 2·d_ff` each.
    projected: Vec<Vec<f32>>,
    states: Vec<f32>,
    /// The search each row belongs to.
    search_of: Vec<usize>,
    /// Each row's running `u`, `rows × d`.
    u: Vec<f32>,
    /// The codes each row has taken, `rows × level`.
    taken: Vec<Code>,
    level: usize,
    /// The current rows' log-probabilities of the current level's codes, `rows × V_l`.
    log_probs: Vec<f32>,
}

impl<'h> HostDecoder<'h> {
    /// A decoder from query states, `searches × d` row-major.
    pub fn new(head: &'h HostHead, states: Vec<f32>) -> Self {
        let two_ff = 2 * head.d_ff;
        let projected = head
            .levels
            .iter()
            .map(|level| {
                let mut out = vec![0.0; states.len() / head.d_model * two_ff];
                matmul(&states, &level.first, head.d_model, &mut out);
                out
            })
            .collect();
        HostDecoder {
            head,
            projected,
            states,
            search_of: Vec::new(),
            u: Vec::new(),
            taken: Vec::new(),
            level: 0,
            log_probs: Vec::new(),
        }
    }

    /// The current rows' log-probabilities of the current level's codes.
    fn score(&mut self) {
        let (d, ff) = (self.head.d_model, self.head.d_ff);
        let level = &self.head.levels[self.level];
        let rows = self.search_of.len();
        let l = self.level;
        // The ReGLU's hidden layer: relu(gate) ⊙ up of the normalised u, from the tables.
        let mut hidden = vec![0.0; rows * ff];
        let first_of_row = || vec![0.0; 2 * ff];
        hidden.par_chunks_mut(ff).enumerate().for_each_init(first_of_row, |first, (r, hidden)| {
            let scale = inverse_rms(&self.u[r * d..][..d], level.epsilon);
            first.copy_from_slice(&self.projected[l][self.search_of[r] * 2 * ff..][..2 * ff]);
            for (j, table) in level.tables.iter().enumerate() {
                let row = &table[self.taken[r * l + j] as usize * 2 * ff..][..2 * ff];
                first.iter_mut().zip(row).for_each(|(f, t)| *f += t);
            }
            let (gate, up) = first.split_at(ff);
            for ((h, &g), &u) in hidden.iter_mut().zip(gate).zip(up) {
                *h = (g * scale).max(0.0) * (u * scale);
            }
        });
        // g = u + down(hidden), then the output norm (its γ is folded into the scorer).
        let mut g = vec![0.0; rows * d];
        matmul(&hidden, &level.down, ff, &mut g);
        g.par_chunks_mut(d).zip(self.u.par_chunks(d)).for_each(|(g, u)| {
            g.iter_mut().zip(u).for_each(|(g, u)| *g += u);
            let scale = inverse_rms(g, level.out_epsilon);
            g.iter_mut().for_each(|g| *g *= scale);
        });
        // The code scores plus their bias, then their log-softmax, block by block while each
        // block is in cache: at beam 256 a level's scores are 4 MB.
        let vocabulary = level.bias.len();
        let row_log_softmax = log_softmax_kernel();
        self.log_probs.resize(rows * vocabulary, 0.0);
        matmul_transposed_then(&g, &level.scorer, d, &mut self.log_probs, |block| {
            for row in block.chunks_mut(vocabulary) {
                row.iter_mut().zip(&level.bias).for_each(|(x, b)| *x += b);
                row_log_softmax(row);
            }
        });
    }
}

impl CodeStepper for HostDecoder<'_> {
    fn start(&mut self) {
        let searches = self.states.len() / self.head.d_model;
        self.search_of = (0..searches).collect();
        self.u = self.states.clone();
        self.taken.clear();
        self.level = 0;
        self.score();
    }

    fn step(&mut self, parents: &[usize], codes: &[Code]) {
        let d = self.head.d_model;
        let (level, table) = (self.level, &self.head.codes[self.level]);
        let mut u = Vec::with_capacity(parents.len() * d);
        let mut taken = Vec::with_capacity(parents.len() * (level + 1));
        for (&parent, &code) in parents.iter().zip(codes) {
            let embedding = &table[code as usize * d..][..d];
            u.extend(self.u[parent * d..][..d].iter().zip(embedding).map(|(u, e)| u + e));
            taken.extend_from_slice(&self.taken[parent * level..][..level]);
            taken.push(code);
        }
        self.search_of = parents.iter().map(|&p| self.search_of[p]).collect();
        (self.u, self.taken) = (u, taken);
        self.level += 1;
        self.score();
    }

    fn log_probs(&mut self) -> Vec<f32> {
        std::mem::take(&mut self.log_probs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::model::IdDecoder;
    use crate::test_fixtures::{device_rng, tiny_setup};
    use burn::module::Param;
    use burn::tensor::{Device, Distribution};

    /// The host decoder against the tensor head, level by level, over rows that branch and end
    /// as a beam's do, with norm gains and biases away from their initial 1 and 0 (so that the
    /// tables and the folded gains are what is tested).
    #[test]
    fn host_decoder_steps_give_the_tensor_heads_log_probs() {
        let _rng = device_rng();
        let (_, _, config) = tiny_setup(24, 6, 30, 4);
        let device = Device::flex();
        device.seed(3);
        let mut head = IdHead::new(&config, &device);
        let d = config.d_model;
        let random = |shape: usize, low: f64, high: f64| {
            Param::from_tensor(Tensor::<1>::random([shape], Distribution::Uniform(low, high), &device))
        };
        for (level, &v) in head.levels.iter_mut().zip(&config.level_sizes) {
            level.norm.gamma = random(d, 0.5, 1.5);
            level.out_norm.gamma = random(d, 0.5, 1.5);
            level.bias = random(v, -1.0, 1.0);
        }
        let states = Tensor::<2>::random([3, d], Distribution::Normal(0.0, 1.0), &device);
        let prepared = head.prepare();
        let mut on_host = HostDecoder::new(&prepared, host(states.clone()));
        let mut tensors = IdDecoder::new(&head, states);
        let compare = |on_host: &mut HostDecoder, tensors: &mut IdDecoder, level: usize| {
            let (got, want) = (on_host.log_probs(), tensors.log_probs());
            assert_eq!(got.len(), want.len(), "level {level}");
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(worst < 1e-4, "level {level}: log-probs differ by {worst}");
        };
        on_host.start();
        tensors.start();
        compare(&mut on_host, &mut tensors, 0);
        let mut rows = 3;
        for (level, &v) in config.level_sizes.iter().enumerate().take(config.level_sizes.len() - 1) {
            // Rows in parent order (a search's rows stay together); some parents have several
            // children, and at the last step the first row has none.
            let next = if level == 0 { 7 } else { rows - 1 };
            let parents: Vec<usize> =
                (0..next).map(|i| (i * rows / next + usize::from(level > 0)).min(rows - 1)).collect();
            let codes: Vec<Code> = (0..next).map(|i| ((i * 7 + level * 3) % v) as Code).collect();
            on_host.step(&parents, &codes);
            tensors.step(&parents, &codes);
            compare(&mut on_host, &mut tensors, level + 1);
            rows = next;
        }
    }
}
