//! The ID head: from the state of a stream position to a semantic ID, one level at a time.
//!
//! Level `l` reads `u_l = state + Σ_{j<l} E_j[c_j]`, the state plus the embeddings of the codes
//! chosen so far, refines it with a residual ReGLU of its own, and scores every code of level
//! `l` against `E_l`, the same table the stream uses for the codes of history items (tied, so a
//! code's meaning is learnt once), plus a per-code bias. So a whole ID costs `levels` small
//! products per target, and beam search keeps one running `u` per beam instead of a KV cache.

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, RmsNorm, RmsNormConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::{ModelConfig, ReGlu, cross_entropy_sum};
use crate::decode::CodeStepper;
#[cfg(feature = "wgpu")]
use crate::decode::{Candidate, Frontier, select_on_host};
use crate::tokenizer::Code;

mod host;
pub use host::{HostDecoder, HostHead};

/// One ID level's refinement and scoring.
#[derive(Module, Debug)]
struct Level {
    norm: RmsNorm,
    ffn: ReGlu,
    out_norm: RmsNorm,
    bias: Param<Tensor<1>>,
}

/// The code tables and the per-level scorers.
#[derive(Module, Debug)]
pub struct IdHead {
    /// `E_l`, `[vocabulary_l, d_model]` per ID level: input embedding of codes and output table.
    codes: Vec<Embedding>,
    levels: Vec<Level>,
}

impl IdHead {
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        let d = config.d_model;
        // Unit-variance logits at initialisation: a unit-RMS state against rows of norm about 1.
        let std = 1.0 / (d as f64).sqrt();
        let table =
            |v: usize| EmbeddingConfig::new(v, d).with_initializer(Initializer::Normal { mean: 0.0, std }).init(device);
        IdHead {
            codes: config.level_sizes.iter().map(|&v| table(v)).collect(),
            levels: config
                .level_sizes
                .iter()
                .map(|&v| Level {
                    norm: RmsNormConfig::new(d).init(device),
                    ffn: ReGlu::new(d, config.head_d_ff, device),
                    out_norm: RmsNormConfig::new(d).init(device),
                    bias: Param::from_tensor(Tensor::zeros([v], device)),
                })
                .collect(),
        }
    }

    /// ID positions.
    pub fn levels(&self) -> usize {
        self.levels.len()
    }

    /// The code tables, which the stream also reads.
    pub fn code_tables(&self) -> &[Embedding] {
        &self.codes
    }

    /// Logits of level `level`'s codes for the running states `u` (`[rows, d_model]`).
    pub fn logits(&self, level: usize, u: Tensor<2>) -> Tensor<2> {
        let head = &self.levels[level];
        let g = u.clone() + head.ffn.forward(head.norm.forward(u));
        let table = self.codes[level].weight.val();
        let v = table.dims()[0];
        head.out_norm.forward(g).matmul(table.transpose()) + head.bias.val().reshape([1, v])
    }

    /// The running states after code `codes[r]` of level `level` was chosen for row `r`.
    pub fn follow(&self, level: usize, u: Tensor<2>, codes: Tensor<1, Int>) -> Tensor<2> {
        u + self.codes[level].weight.val().select(0, codes)
    }

    /// Teacher-forced log π(ID) per row, the sum of its codes' log-probabilities, for states
    /// `[rows, d_model]` and IDs `[rows, levels]`.
    pub fn sequence_log_probs(&self, states: Tensor<2>, ids: Tensor<2, Int>) -> Tensor<1> {
        let [rows, _] = ids.dims();
        let mut total = Tensor::<1>::zeros([rows], &states.device());
        for (logits, codes) in self.teacher_forced(states, ids) {
            total = total + log_softmax(logits, 1).gather(1, codes.reshape([rows, 1])).reshape([rows]);
        }
        total
    }

    /// `Σ_rows −log π(ID)`, `[1]`: the training loss's sum, with the gradient of each level's
    /// softmax written out ([`cross_entropy_sum`]).
    pub fn cross_entropy_sum(&self, states: Tensor<2>, ids: Tensor<2, Int>) -> Tensor<1> {
        let levels =
            self.teacher_forced(states, ids).into_iter().map(|(logits, codes)| cross_entropy_sum(logits, codes));
        levels.reduce(|a, b| a + b).expect("an ID has at least one level")
    }

    /// Each level's logits for rows that chose the IDs' earlier codes, with the codes they chose.
    fn teacher_forced(&self, states: Tensor<2>, ids: Tensor<2, Int>) -> Vec<(Tensor<2>, Tensor<1, Int>)> {
        let [rows, _] = ids.dims();
        let mut u = states;
        let mut levels = Vec::with_capacity(self.levels());
        for level in 0..self.levels() {
            let codes = ids.clone().narrow(1, level, 1).reshape([rows]);
            levels.push((self.logits(level, u.clone()), codes.clone()));
            if level + 1 < self.levels() {
                u = self.follow(level, u, codes);
            }
        }
        levels
    }

    /// Log-probabilities of the next code after each prefix (all of one length), `[rows, vocabulary]`.
    pub fn next_log_probs(&self, states: Tensor<2>, prefixes: &[Vec<Code>]) -> Tensor<2> {
        let device = states.device();
        let t = prefixes.first().map_or(0, Vec::len);
        let mut u = states;
        for level in 0..t {
            let codes: Vec<i64> = prefixes.iter().map(|p| p[level] as i64).collect();
            u = self.follow(level, u, Tensor::from_data(TensorData::new(codes, [prefixes.len()]), &device));
        }
        log_softmax(self.logits(t, u), 1)
    }
}

/// The head stepped by beam search for many rows at once: one running `u` per row. Rows start
/// from query states (one per search) and follow their parents. On a wgpu device the selection
/// runs there too ([`crate::gpu::beam_select`]), so the logits never come to the host.
pub struct IdDecoder<'m> {
    head: &'m IdHead,
    states: Tensor<2>,
    u: Tensor<2>,
    /// The level whose codes `logits` score.
    level: usize,
    logits: Tensor<2>,
}

impl<'m> IdDecoder<'m> {
    /// A decoder over query states `[searches, d_model]`.
    pub fn new(head: &'m IdHead, states: Tensor<2>) -> Self {
        IdDecoder { head, u: states.clone(), logits: states.clone(), states, level: 0 }
    }
}

impl CodeStepper for IdDecoder<'_> {
    fn start(&mut self) {
        self.u = self.states.clone();
        self.level = 0;
        self.logits = self.head.logits(0, self.u.clone());
    }

    fn step(&mut self, parents: &[usize], codes: &[Code]) {
        let device = self.u.device();
        let index = |v: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(v, [parents.len()]), &device);
        let parents = index(parents.iter().map(|&p| p as i64).collect());
        let codes = index(codes.iter().map(|&c| c as i64).collect());
        self.u = self.head.follow(self.level, self.u.clone().select(0, parents), codes);
        self.level += 1;
        self.logits = self.head.logits(self.level, self.u.clone());
    }

    fn log_probs(&mut self) -> Vec<f32> {
        log_probs(self.logits.clone())
    }

    #[cfg(feature = "wgpu")]
    fn select(&mut self, frontier: &Frontier) -> Vec<Vec<Candidate>> {
        crate::gpu::beam_select(self.logits.clone(), frontier)
            .unwrap_or_else(|| select_on_host(frontier, &self.log_probs()))
    }
}

/// Row-wise log-softmax of `[rows, vocabulary]` logits, taken on the host: the search reads them
/// there anyway, and one sweep per row replaces five tensor passes (max, subtract, exp, sum, log)
/// with their buffers.
fn log_probs(logits: Tensor<2>) -> Vec<f32> {
    let vocabulary = logits.dims()[1];
    let mut rows = logits.into_data().try_into_vec::<f32>().expect("f32 logits");
    crate::linalg::log_softmax_rows(&mut rows, vocabulary);
    rows
}
