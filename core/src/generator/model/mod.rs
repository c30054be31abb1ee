//! The generative model: a causal encoder over the user context and a decoder with
//! mixture-of-experts feed-forward layers that generates an item's semantic ID code by code
//! (DESIGN.md §2 "Model").
//!
//! **One pass per window, not per target.** The first version encoded every prefix of every
//! sequence on its own, so a user with L events cost L encoder passes; SASRec gets all L
//! next-item losses from one causal pass, and trained 40× faster. OneRec-V2 (arXiv 2508.20900)
//! measured the same imbalance at scale (the encoder took 97.66% of compute) and moved to a lazy
//! decoder-only model whose context is keys and values computed once. We keep the encoder and the
//! cross-attention but make them lazy in the same sense:
//! - the encoder reads a window of recent events causally, after a prefix of static features,
//!   older positives and compressed lifelong history (see [`batch`] for who sees what), so its
//!   states are computed once per window;
//! - every target of the window is a decoder query that starts from the state of the last event
//!   before it (as SASRec predicts from that state) and cross-attends only to the prefix and the
//!   events before it. The decoder itself stays the short code-by-code generator OneRec needs for
//!   semantic IDs and the constrained beam.
//!
//! Against HSTU, which interleaves actions and items in one decoder-only stream: our events carry
//! their feedback and time gap as embeddings on the item's token, so the stream is half as long,
//! and the ID decoder stays separate, so serving decodes IDs for a prefilled context (one encoder
//! pass, then a KV-cached beam over the code levels; see [`IncrementalDecoder`]).

pub mod batch;
mod incremental;
mod moe;

use burn::module::Module;
use burn::nn::attention::{MhaInput, MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::generator::context::{ContextConfig, FEEDBACK_BUCKETS, GAP_BUCKETS};
pub use batch::{Batch, Query};
pub use incremental::IncrementalDecoder;
pub use moe::{ExpertLoad, MoeFfn, SwiGlu};

/// Sizes of the model. Stored in the snapshot, so a model is always rebuilt as it was trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub d_model: usize,
    pub heads: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    /// Hidden width of each SwiGLU (dense or expert).
    pub d_ff: usize,
    /// Experts E of each decoder MoE layer (1 = dense).
    pub experts: usize,
    /// Experts each token is routed to.
    pub top_k: usize,
    pub dropout: f64,
    /// Items in the catalogue (item-ID embeddings).
    pub items: usize,
    /// Vocabulary of each semantic-ID position.
    pub level_sizes: Vec<usize>,
    /// RQ levels whose codes describe a history item (the disambiguation code carries no meaning).
    pub semantic_levels: usize,
    /// Dimension of the item embeddings that lifelong tokens average.
    pub item_embedding_dim: usize,
    pub context: ContextConfig,
}

/// Named sizes: `tiny` for tests, `small` for MovieLens-100K, `base` for about 0.1B parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Preset {
    Tiny,
    Small,
    Base,
}

impl std::str::FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tiny" => Ok(Preset::Tiny),
            "small" => Ok(Preset::Small),
            "base" => Ok(Preset::Base),
            other => Err(Error::Config(format!("unknown preset {other:?}; use tiny, small or base"))),
        }
    }
}

impl ModelConfig {
    /// The preset's sizes for a catalogue described by a tokenizer's shape.
    pub fn preset(
        preset: Preset,
        items: usize,
        level_sizes: Vec<usize>,
        semantic_levels: usize,
        item_embedding_dim: usize,
    ) -> Self {
        let (d_model, heads, encoder_layers, decoder_layers, d_ff, experts, top_k, short_len, positive_len, lifelong) =
            match preset {
                Preset::Tiny => (32, 2, 1, 1, 64, 2, 1, 8, 8, 4),
                Preset::Small => (64, 4, 2, 2, 128, 4, 2, 50, 20, 16),
                Preset::Base => (512, 8, 4, 4, 768, 8, 2, 100, 256, 32),
            };
        ModelConfig {
            d_model,
            heads,
            encoder_layers,
            decoder_layers,
            d_ff,
            experts,
            top_k,
            dropout: if preset == Preset::Tiny { 0.0 } else { 0.1 },
            items,
            level_sizes,
            semantic_levels,
            item_embedding_dim,
            context: ContextConfig { short_len, positive_len, lifelong_tokens: lifelong, ..ContextConfig::default() },
        }
    }

    /// Encoder slots: the static token, positive, lifelong and recent tokens, in that order.
    pub fn encoder_len(&self) -> usize {
        1 + self.context.short_len + self.context.positive_len + self.context.lifelong_tokens
    }

    /// Number of parameters `init` creates, computed from the sizes alone (so that a preset can be
    /// sized without allocating it).
    pub fn parameter_count(&self) -> usize {
        let d = self.d_model;
        let embeddings = (self.context.feature_buckets
            + 1
            + self.items
            + 1
            + FEEDBACK_BUCKETS
            + GAP_BUCKETS
            + self.encoder_len()
            + 1)
            * d
            + self.level_sizes[..self.semantic_levels].iter().map(|v| (v + 1) * d).sum::<usize>()
            + self.level_sizes.iter().map(|v| v * d).sum::<usize>()
            + self.level_sizes.len() * d;
        let lifelong = (self.item_embedding_dim + 1) * d + d;
        let attention = 4 * (d * d + d);
        let swiglu = 3 * d * self.d_ff;
        let encoder = self.encoder_layers * (2 * d + attention + swiglu) + d;
        let moe = self.experts * swiglu + if self.experts > 1 { d * self.experts + self.experts } else { 0 };
        let decoder = self.decoder_layers * (3 * d + 2 * attention + moe) + d;
        let heads: usize = self.level_sizes.iter().map(|v| d * v + v).sum();
        embeddings + lifelong + encoder + decoder + heads
    }

    pub fn init(&self, device: &Device) -> OneRec {
        let emb = |n: usize| EmbeddingConfig::new(n, self.d_model).init(device);
        let norm = || RmsNormConfig::new(self.d_model).init(device);
        OneRec {
            feature_embedding: emb(self.context.feature_buckets + 1),
            item_embedding: emb(self.items + 1),
            history_code_embeddings: (0..self.semantic_levels).map(|l| emb(self.level_sizes[l] + 1)).collect(),
            feedback_embedding: emb(FEEDBACK_BUCKETS),
            gap_embedding: emb(GAP_BUCKETS),
            lifelong_projection: LinearConfig::new(self.item_embedding_dim + 1, self.d_model).init(device),
            encoder_positions: emb(self.encoder_len()),
            encoder: (0..self.encoder_layers).map(|_| EncoderBlock::new(self, device)).collect(),
            encoder_norm: norm(),
            bos: emb(1),
            decoder_code_embeddings: self.level_sizes.iter().map(|&v| emb(v)).collect(),
            decoder_positions: emb(self.level_sizes.len()),
            decoder: (0..self.decoder_layers).map(|_| DecoderBlock::new(self, device)).collect(),
            decoder_norm: norm(),
            heads: self.level_sizes.iter().map(|&v| LinearConfig::new(self.d_model, v).init(device)).collect(),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }

    /// Attention without dropout on its weights: masks of `[batch, heads, len, len]` random
    /// numbers cost a quarter of a CPU training step; the residual dropout regularises enough.
    fn attention(&self, device: &Device) -> MultiHeadAttention {
        MultiHeadAttentionConfig::new(self.d_model, self.heads).with_dropout(0.0).init(device)
    }
}

/// Pre-norm encoder block: self-attention, then SwiGLU.
#[derive(Module, Debug)]
pub struct EncoderBlock {
    attention_norm: RmsNorm,
    attention: MultiHeadAttention,
    ffn_norm: RmsNorm,
    ffn: SwiGlu,
    dropout: Dropout,
}

impl EncoderBlock {
    fn new(config: &ModelConfig, device: &Device) -> Self {
        EncoderBlock {
            attention_norm: RmsNormConfig::new(config.d_model).init(device),
            attention: config.attention(device),
            ffn_norm: RmsNormConfig::new(config.d_model).init(device),
            ffn: SwiGlu::new(config.d_model, config.d_ff, device),
            dropout: DropoutConfig::new(config.dropout).init(),
        }
    }

    /// `mask`: `[batch, slots, slots]`, true where a slot may not attend another.
    fn forward(&self, x: Tensor<3>, mask: Tensor<3, Bool>) -> Tensor<3> {
        let h = self.attention_norm.forward(x.clone());
        let h = self.attention.forward(MhaInput::self_attn(h).mask_attn(mask)).context;
        let x = x + self.dropout.forward(h);
        let h = self.ffn.forward(self.ffn_norm.forward(x.clone()));
        x + self.dropout.forward(h)
    }
}

/// Pre-norm decoder block: causal self-attention, cross-attention to the encoder, MoE SwiGLU.
#[derive(Module, Debug)]
pub struct DecoderBlock {
    self_norm: RmsNorm,
    self_attention: MultiHeadAttention,
    cross_norm: RmsNorm,
    cross_attention: MultiHeadAttention,
    ffn_norm: RmsNorm,
    ffn: MoeFfn,
    dropout: Dropout,
}

impl DecoderBlock {
    fn new(config: &ModelConfig, device: &Device) -> Self {
        DecoderBlock {
            self_norm: RmsNormConfig::new(config.d_model).init(device),
            self_attention: config.attention(device),
            cross_norm: RmsNormConfig::new(config.d_model).init(device),
            cross_attention: config.attention(device),
            ffn_norm: RmsNormConfig::new(config.d_model).init(device),
            ffn: MoeFfn::new(config.d_model, config.d_ff, config.experts, config.top_k, device),
            dropout: DropoutConfig::new(config.dropout).init(),
        }
    }

    /// `x`: `[batch · queries, t, d_model]`, one row of ID positions per query; `cross_mask`:
    /// `[batch, queries · t, slots]`, what each position's query may not see of the memory.
    fn forward(&self, x: Tensor<3>, memory: &Memory, cross_mask: Tensor<3, Bool>) -> (Tensor<3>, ExpertLoad) {
        let [rows, t, d] = x.dims();
        let b = memory.states.dims()[0];
        let causal = Tensor::<2, Bool>::tril_mask([t, t], 0, &x.device()).unsqueeze::<3>().expand([rows, t, t]);
        let h = self.self_norm.forward(x.clone());
        let h = self.self_attention.forward(MhaInput::self_attn(h).mask_attn(causal)).context;
        let x = x + self.dropout.forward(h);
        // All queries of a context attend to its memory as one block.
        let q = self.cross_norm.forward(x.clone()).reshape([b, rows / b * t, d]);
        let h = self
            .cross_attention
            .forward(MhaInput::new(q, memory.states.clone(), memory.states.clone()).mask_attn(cross_mask))
            .context;
        let x = x + self.dropout.forward(h.reshape([rows, t, d]));
        let (h, load) = self.ffn.forward(self.ffn_norm.forward(x.clone()));
        (x + self.dropout.forward(h), load)
    }
}

/// The encoded user contexts that the decoder's queries attend to.
#[derive(Clone, Debug)]
pub struct Memory {
    /// `[batch, encoder_len, d_model]`.
    pub states: Tensor<3>,
    /// `[batch, queries, encoder_len]`, true where query `q` may not attend a slot (padding, or
    /// an event after the query's target).
    pub hidden: Tensor<3, Bool>,
    /// `[batch, queries, d_model]`: the state of the last slot each query sees, added to its BOS.
    pub last: Tensor<3>,
}

impl Memory {
    /// Row `i` of the result is row `rows[i]` of this memory: how beams share one user's encoding.
    pub fn select(&self, rows: Tensor<1, Int>) -> Memory {
        Memory {
            states: self.states.clone().select(0, rows.clone()),
            hidden: self.hidden.clone().select(0, rows.clone()),
            last: self.last.clone().select(0, rows),
        }
    }
}

/// The whole model.
#[derive(Module, Debug)]
pub struct OneRec {
    feature_embedding: Embedding,
    item_embedding: Embedding,
    history_code_embeddings: Vec<Embedding>,
    feedback_embedding: Embedding,
    gap_embedding: Embedding,
    lifelong_projection: Linear,
    encoder_positions: Embedding,
    encoder: Vec<EncoderBlock>,
    encoder_norm: RmsNorm,
    bos: Embedding,
    decoder_code_embeddings: Vec<Embedding>,
    decoder_positions: Embedding,
    decoder: Vec<DecoderBlock>,
    decoder_norm: RmsNorm,
    heads: Vec<Linear>,
    dropout: Dropout,
}

impl OneRec {
    /// Encodes a batch of user contexts.
    pub fn encode(&self, batch: &Batch) -> Memory {
        let [b, s, _] = batch.encoder_mask.dims();
        let device = batch.encoder_mask.device();
        let positive_len = batch.positive_len;
        // Static token: the sum of the user's feature embeddings.
        let features = (self.feature_embedding.forward(batch.features.clone())
            * batch.feature_weights.clone().unsqueeze_dim::<3>(2))
        .sum_dim(1);
        // Event tokens: item ID + semantic codes + feedback + time since the previous event.
        let mut history = self.item_embedding.forward(batch.history_items.clone())
            + self.feedback_embedding.forward(batch.history_feedback.clone())
            + self.gap_embedding.forward(batch.history_gaps.clone());
        for (level, table) in self.history_code_embeddings.iter().enumerate() {
            history = history + table.forward(batch.history_codes[level].clone());
        }
        let history_len = history.dims()[1];
        // Lifelong tokens: mean embedding and log-size of a group, plus the group's first code.
        let lifelong = self.lifelong_projection.forward(batch.lifelong.clone())
            + self.history_code_embeddings[0].forward(batch.lifelong_codes.clone());
        let tokens = Tensor::cat(
            vec![
                features,
                history.clone().narrow(1, 0, positive_len),
                lifelong,
                history.narrow(1, positive_len, history_len - positive_len),
            ],
            1,
        );
        let positions = Tensor::<1, Int>::arange(0..s as i64, &device).reshape([1, s]);
        let d = tokens.dims()[2];
        let mut x = self.dropout.forward(tokens + self.encoder_positions.forward(positions).expand([b, s, d]));
        for block in &self.encoder {
            x = block.forward(x, batch.encoder_mask.clone());
        }
        let states = self.encoder_norm.forward(x);
        let [_, q] = batch.query_slots.dims();
        let last = states.clone().gather(1, batch.query_slots.clone().unsqueeze_dim::<3>(2).expand([b, q, d]));
        Memory { states, hidden: batch.query_mask.clone(), last }
    }

    /// Decoder states after `[BOS, codes…]` for every query: `codes` is `[batch, queries, t]` (t
    /// may be 0), the result is `[batch, queries, t + 1, d_model]`, with the expert loads of each
    /// MoE layer.
    pub fn decode(&self, codes: Tensor<3, Int>, memory: &Memory) -> (Tensor<4>, Vec<ExpertLoad>) {
        let [b, q, t] = codes.dims();
        let device = codes.device();
        let bos = self.bos.forward(Tensor::<2, Int>::zeros([b * q, 1], &device));
        let mut inputs = vec![bos + memory.last.clone().reshape([b * q, 1, memory.last.dims()[2]])];
        for (pos, table) in self.decoder_code_embeddings.iter().take(t).enumerate() {
            inputs.push(table.forward(codes.clone().narrow(2, pos, 1).reshape([b * q, 1])));
        }
        let positions = Tensor::<1, Int>::arange(0..(t + 1) as i64, &device).reshape([1, t + 1]);
        let x = Tensor::cat(inputs, 1);
        let d = x.dims()[2];
        let mut x = x + self.decoder_positions.forward(positions).expand([b * q, t + 1, d]);
        x = self.dropout.forward(x);
        let slots = memory.states.dims()[1];
        let cross_mask =
            memory.hidden.clone().unsqueeze_dim::<4>(2).expand([b, q, t + 1, slots]).reshape([b, q * (t + 1), slots]);
        let mut loads = Vec::with_capacity(self.decoder.len());
        for block in &self.decoder {
            let (next, load) = block.forward(x, memory, cross_mask.clone());
            x = next;
            loads.push(load);
        }
        (self.decoder_norm.forward(x).reshape([b, q, t + 1, d]), loads)
    }

    /// Logits of ID position `level` from the decoder state that precedes it (`[batch, d_model]`).
    pub fn head(&self, level: usize, state: Tensor<2>) -> Tensor<2> {
        self.heads[level].forward(state)
    }

    /// Teacher-forced next-token loss over every position of the target IDs of every real query
    /// (mean cross-entropy), with the expert loads of the decoder.
    pub fn loss(&self, batch: &Batch) -> (Tensor<1>, Vec<ExpertLoad>) {
        let (targets, weights, count) = batch.targets.clone().expect("a training batch has targets");
        let levels = self.heads.len();
        let [b, q, _] = targets.dims();
        let memory = self.encode(batch);
        let (states, loads) = self.decode(targets.clone().narrow(2, 0, levels - 1), &memory);
        let d = states.dims()[3];
        let weights = weights.reshape([b * q]);
        let mut total = Tensor::<1>::zeros([1], &states.device());
        for level in 0..levels {
            let state = states.clone().narrow(2, level, 1).reshape([b * q, d]);
            let log_probs = log_softmax(self.head(level, state), 1);
            let target = targets.clone().narrow(2, level, 1).reshape([b * q, 1]);
            let nll = log_probs.gather(1, target).reshape([b * q]).neg();
            total = total + (nll * weights.clone()).sum();
        }
        (total / (count.max(1) * levels) as f32, loads)
    }

    /// Applies loss-free balancing to every MoE layer from the loads of a step.
    pub fn rebalance(self, loads: &[ExpertLoad], rate: f32) -> Self {
        let mut model = self;
        model.decoder = std::mem::take(&mut model.decoder)
            .into_iter()
            .zip(loads)
            .map(|(block, load)| DecoderBlock { ffn: block.ffn.rebalance(load, rate), ..block })
            .collect();
        model
    }
}

#[cfg(test)]
mod tests;

#[cfg(all(test, feature = "wgpu"))]
mod wgpu_tests;
