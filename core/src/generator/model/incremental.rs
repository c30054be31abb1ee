//! Incremental decoding for serving (DESIGN.md §2, Decoding). The decoder advances one ID position
//! at a time for the beams of many users at once:
//! - cross-attention keys and values are projected once per user and shared by all of its beams,
//!   which attend to them as a block of queries (no per-beam copy of the user's memory);
//! - self-attention keeps a KV cache per beam, reordered when beams are re-selected, so a step
//!   costs one position, not the whole prefix.
//!
//! Rows are laid out as `[users, width]`: every user has `width` beam slots at a step. The
//! arithmetic is that of [`OneRec::decode`] (burn's attention: scaled dot product, masked with
//! `min_float`, softmax), which a test checks position by position.

use burn::nn::attention::MultiHeadAttention;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Bool, Int, Tensor, TensorData};

use super::{Memory, OneRec};
use crate::tokenizer::Code;

/// The decoder's state while it generates the IDs of a batch of users.
pub struct IncrementalDecoder<'m> {
    model: &'m OneRec,
    users: usize,
    /// Beam slots per user at the last step.
    width: usize,
    /// Per decoder layer: each user's cross-attention keys and values, `[users, heads, slots, d_k]`.
    cross: Vec<(Tensor<4>, Tensor<4>)>,
    /// `[users, 1, d_model]`: the state the first ID position starts from.
    last: Tensor<3>,
    /// `[users, heads, 1, slots]`, true on the slots a user's query may not see (padding).
    padding: Tensor<4, Bool>,
    /// Per decoder layer: self-attention keys and values so far, `[users · width, heads, t, d_k]`.
    cache: Vec<(Tensor<4>, Tensor<4>)>,
    /// Decoder positions consumed so far (BOS is position 0).
    position: usize,
}

impl<'m> IncrementalDecoder<'m> {
    /// Projects every user's memory into each layer's cross-attention keys and values.
    pub fn new(model: &'m OneRec, memory: &Memory) -> Self {
        let [users, slots, _] = memory.states.dims();
        let cross = model
            .decoder
            .iter()
            .map(|block| {
                let attention = &block.cross_attention;
                (
                    split_heads(attention, attention.key.forward(memory.states.clone())),
                    split_heads(attention, attention.value.forward(memory.states.clone())),
                )
            })
            .collect::<Vec<_>>();
        let heads = model.decoder.first().map_or(1, |b| b.cross_attention.n_heads);
        let padding = memory.hidden.clone().reshape([users, 1, 1, slots]).expand([users, heads, 1, slots]);
        let last = memory.last.clone();
        IncrementalDecoder { model, users, width: 1, cross, last, padding, cache: Vec::new(), position: 0 }
    }

    /// Log-probabilities of the first code for each user, `[users, vocabulary₀]`.
    pub fn start(&mut self) -> Tensor<2> {
        let device = self.padding.device();
        let bos = self.model.bos.forward(Tensor::<2, Int>::zeros([self.users, 1], &device)) + self.last.clone();
        self.cache.clear();
        self.position = 0;
        self.width = 1;
        self.advance(bos, 1)
    }

    /// Moves to the next position. `parents` and `codes` are `[users, width]` row-major: slot `j`
    /// of user `u` continues slot `parents[u · width + j]` of that user at the last step with
    /// `codes[u · width + j]`. Returns log-probabilities `[users · width, vocabulary]`.
    pub fn step(&mut self, parents: &[usize], codes: &[Code], width: usize) -> Tensor<2> {
        assert_eq!(parents.len(), self.users * width, "one parent per beam slot");
        assert_eq!(codes.len(), parents.len(), "one code per beam slot");
        let device = self.padding.device();
        let rows: Vec<i64> = parents
            .iter()
            .enumerate()
            .map(|(slot, &p)| {
                debug_assert!(p < self.width, "a parent is one of its user's slots");
                ((slot / width) * self.width + p) as i64
            })
            .collect();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [parents.len()]), &device);
        for (keys, values) in &mut self.cache {
            *keys = keys.clone().select(0, rows.clone());
            *values = values.clone().select(0, rows.clone());
        }
        let codes: Vec<i64> = codes.iter().map(|&c| c as i64).collect();
        let codes = Tensor::<2, Int>::from_data(TensorData::new(codes, [parents.len(), 1]), &device);
        let input = self.model.decoder_code_embeddings[self.position - 1].forward(codes);
        self.width = width;
        self.advance(input, width)
    }

    /// Runs one position through every layer and the head of the next ID position.
    fn advance(&mut self, input: Tensor<3>, width: usize) -> Tensor<2> {
        let model = self.model;
        let device = input.device();
        let [rows, _, d] = input.dims();
        let position = Tensor::<2, Int>::from_data(TensorData::new(vec![self.position as i64], [1, 1]), &device);
        let mut x = input + model.decoder_positions.forward(position).expand([rows, 1, d]);
        for (layer, block) in model.decoder.iter().enumerate() {
            // Causal self-attention: this position attends to the cached ones and itself.
            let attention = &block.self_attention;
            let h = block.self_norm.forward(x.clone());
            let keys = split_heads(attention, attention.key.forward(h.clone()));
            let values = split_heads(attention, attention.value.forward(h.clone()));
            let (keys, values) = match self.cache.get(layer) {
                Some((k, v)) => (Tensor::cat(vec![k.clone(), keys], 2), Tensor::cat(vec![v.clone(), values], 2)),
                None => (keys, values),
            };
            if layer < self.cache.len() {
                self.cache[layer] = (keys.clone(), values.clone());
            } else {
                self.cache.push((keys.clone(), values.clone()));
            }
            let query = split_heads(attention, attention.query.forward(h));
            x = x + merge_heads(attention, attend(attention, query, keys, values, None));

            // Cross-attention: a user's beams are one block of queries against its memory.
            let attention = &block.cross_attention;
            let h = block.cross_norm.forward(x.clone());
            let heads = attention.n_heads;
            let query = attention.query.forward(h).reshape([self.users, width, heads, attention.d_k]).swap_dims(1, 2);
            let (keys, values) = &self.cross[layer];
            let slots = keys.dims()[2];
            let mask = self.padding.clone().expand([self.users, heads, width, slots]);
            let context = attend(attention, query, keys.clone(), values.clone(), Some(mask));
            let context = context.swap_dims(1, 2).reshape([rows, 1, d]);
            x = x + attention.output.forward(context);

            x = x.clone() + block.ffn.forward(block.ffn_norm.forward(x)).0;
        }
        let state = model.decoder_norm.forward(x).reshape([rows, d]);
        let logits = model.head(self.position, state);
        self.position += 1;
        log_softmax(logits, 1)
    }
}

/// `[batch, seq, d_model]` → `[batch, heads, seq, d_k]`.
fn split_heads(attention: &MultiHeadAttention, x: Tensor<3>) -> Tensor<4> {
    let [b, s, _] = x.dims();
    x.reshape([b, s, attention.n_heads, attention.d_k]).swap_dims(1, 2)
}

/// `[batch, heads, seq, d_k]` → the output projection of `[batch, seq, d_model]`.
fn merge_heads(attention: &MultiHeadAttention, x: Tensor<4>) -> Tensor<3> {
    let [b, _, s, _] = x.dims();
    attention.output.forward(x.swap_dims(1, 2).reshape([b, s, attention.d_model]))
}

/// Scaled dot-product attention as burn's `MultiHeadAttention` computes it.
fn attend(
    attention: &MultiHeadAttention,
    query: Tensor<4>,
    keys: Tensor<4>,
    values: Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
) -> Tensor<4> {
    let mut scores = query.matmul(keys.transpose()).div_scalar((attention.d_k as f32).sqrt());
    if let Some(mask) = mask {
        scores = scores.mask_fill(mask, attention.min_float);
    }
    softmax(scores, 3).matmul(values)
}
