//! The generative model: a causal stack with mixture-of-experts feed-forward layers over the
//! user's stream, and a short code-by-code head that turns the state of any position into the
//! semantic ID of the item that comes next (DESIGN.md §2 "Model").
//!
//! **One pass per window, every position a target.** The first generator encoded every prefix of
//! every sequence on its own, so a user with L events cost L encoder passes; SASRec gets all L
//! next-item losses from one causal pass and trained 40× faster. OneRec-V2 (arXiv 2508.20900)
//! measured the same imbalance at scale (the encoder took 97.66% of compute) and moved to a lazy
//! decoder-only model: the context becomes keys and values computed once, and only the target's
//! few ID tokens run through the heavy layers. That still costs one decoder pass per target.
//! HSTU goes further: one causal pass over the whole stream yields a prediction at every position.
//! We take HSTU's shape and keep OneRec's parts:
//! - the stream is `[static | positives | lifelong | recent events]` (see [`batch`]). The prefix
//!   holds only events older than the recent window, and the recent events are causal, so the
//!   state of recent event `i` has seen exactly what precedes target `i + 1`, and one pass over a
//!   window of `short_len` events trains `short_len + 1` targets;
//! - every event token carries its item, its semantic codes, its feedback and the time gap before
//!   it (HSTU interleaves separate action tokens; summing them keeps the stream half as long);
//! - the token whose state answers a query also carries the query's [`Moment`]: how long the
//!   user has been away (to the hour, at the finest), and (with [`ModelConfig::trend`]) a projection of what everyone was
//!   interacting with then. Both are known when a request arrives, and both are in the query's
//!   past, so the window stays leak-free;
//! - the causal blocks' feed-forward layers are mixtures of experts with loss-free balancing, as
//!   in OneRec's decoder, computed for the routed experts only;
//! - the **ID head** generates the semantic ID level by level from a position's state: level `l`
//!   reads the state plus the embeddings of the codes chosen before it, through a small ReGLU,
//!   and scores level `l`'s codes against the same code embeddings the stream reads (tied, as
//!   SASRec ties its item table). It costs a few `d × codes` products per target, not a decoder
//!   pass with cross-attention, so training cost is the stream's, amortised over the window;
//! - an **item score** `⟨norm(state), e_item⟩` against the item-ID embeddings the stream reads
//!   (SASRec's tied output), trained with full-softmax cross-entropy beside the ID loss. The codes
//!   generalise across items that share a prefix, but they factorise an item's probability into
//!   per-level softmaxes over code tables shared by every prefix, which on MovieLens-100K ranked
//!   worse than a flat item softmax from the same state (validation NDCG@10 0.114 against 0.131;
//!   training both heads also lifted the codes' own ranking to 0.118). Generation stays the
//!   codes' job: the beam proposes IDs, and the final order of its items is the product of the
//!   two experts, `log π(ID) + score(item)` (see [`crate::generator::recommend`]).
//!
//! Serving prefills the user's stream once and takes the last state (the last block runs at that
//! slot alone, see [`OneRec::encode`]); the constrained beam then steps the head alone (see
//! [`IdDecoder`], and [`HostDecoder`] on the CPU): no cache is needed, because the head's only
//! memory is the running state of each beam.

pub mod batch;
mod cross_entropy;
mod dropout;
mod head;
mod moe;

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
#[cfg(doc)]
use crate::generator::context::Moment;
use crate::generator::context::{AWAY_BUCKETS, ContextConfig, FEEDBACK_BUCKETS, GAP_BUCKETS};
use crate::generator::trend::TrendConfig;
pub use batch::{Batch, Query, Targets};
use cross_entropy::cross_entropy_sum;
use dropout::Dropout;
pub use head::{HostDecoder, HostHead, IdDecoder, IdHead};
pub use moe::{ExpertLoad, MoeFfn, ReGlu};

/// Sizes of the model. Stored in the snapshot, so a model is always rebuilt as it was trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub d_model: usize,
    pub heads: usize,
    /// Causal blocks over the stream.
    pub layers: usize,
    /// Hidden width of each expert's ReGLU.
    pub d_ff: usize,
    /// Hidden width of each ID-head level's ReGLU.
    pub head_d_ff: usize,
    /// Experts E of each block's MoE layer (1 = dense).
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
    /// The "popular now" input (see [`crate::generator::trend`]); `None` leaves it out.
    pub trend: Option<TrendConfig>,
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
        // Small: the ID head at half the experts' width, and 10 positives and 8 lifelong groups
        // before the recent window, for training speed; see the README's quality table.
        let (d_model, heads, layers, d_ff, head_d_ff, experts, top_k, short_len, positive_len, lifelong, dropout) =
            match preset {
                Preset::Tiny => (32, 2, 2, 64, 64, 2, 1, 8, 8, 4, 0.0),
                Preset::Small => (64, 2, 2, 128, 64, 4, 1, 50, 10, 8, 0.5),
                Preset::Base => (512, 8, 4, 1024, 1024, 8, 2, 200, 256, 32, 0.1),
            };
        ModelConfig {
            d_model,
            heads,
            layers,
            d_ff,
            head_d_ff,
            experts,
            top_k,
            dropout,
            items,
            level_sizes,
            semantic_levels,
            item_embedding_dim,
            context: ContextConfig { short_len, positive_len, lifelong_tokens: lifelong, ..ContextConfig::default() },
            trend: Some(TrendConfig::default()),
        }
    }

    /// Slots of a stream: the static token, positive, lifelong and recent tokens, in that order.
    pub fn stream_len(&self) -> usize {
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
            + AWAY_BUCKETS
            + self.stream_len())
            * d
            + self.level_sizes.iter().map(|v| v * d).sum::<usize>();
        let lifelong = (self.item_embedding_dim + 1) * d + d;
        let attention = 3 * d * d + d * d;
        let glu = 3 * d * self.d_ff;
        let moe = self.experts * glu + if self.experts > 1 { d * self.experts + self.experts } else { 0 };
        let blocks = self.layers * (2 * d + attention + moe) + d;
        let head: usize = self.level_sizes.iter().map(|v| 2 * d + 3 * d * self.head_d_ff + v).sum();
        let item_score = d;
        let trend = if self.trend.is_some() { d * d } else { 0 };
        embeddings + lifelong + blocks + head + item_score + trend
    }

    /// Floating-point operations of one request's decode, counted from the sizes (a multiply-add
    /// is two): the stream's full pass (every slot computed, with its routed experts only), then
    /// the ID head on one row at level 0 and `beam` rows at every later level, and the item score
    /// of the `beam` IDs found. Element-wise work, the softmaxes and the selection are left out:
    /// they are small beside the products, and this is the count an MFU is quoted against. It is
    /// the model's count: the decode skips some of it (the last block at slots no query reads,
    /// and on the CPU the head's first layer, which it looks up), so a rate over it is of model
    /// FLOPs, not of arithmetic done.
    pub fn decode_flops(&self, beam: usize) -> f64 {
        let (d, t) = (self.d_model as f64, self.stream_len() as f64);
        let glu = 2.0 * 3.0 * d * self.d_ff as f64;
        let head_glu = 2.0 * 3.0 * d * self.head_d_ff as f64;
        let router = if self.experts > 1 { 2.0 * d * self.experts as f64 } else { 0.0 };
        let block = 2.0 * 4.0 * t * d * d + 2.0 * 2.0 * t * t * d + t * (self.top_k as f64 * glu + router);
        let head: f64 = self
            .level_sizes
            .iter()
            .enumerate()
            .map(|(level, &v)| if level == 0 { 1.0 } else { beam as f64 } * (head_glu + 2.0 * d * v as f64))
            .sum();
        self.layers as f64 * block + head + beam as f64 * 2.0 * d
    }

    pub fn init(&self, device: &Device) -> OneRec {
        // Embeddings at a tenth of burn's unit default: a token sums up to eight of them, and at
        // unit scale the residual stream started too large for the blocks to move it (validation
        // NDCG@10 0.100 against 0.112 on MovieLens-100K; 0.02, GPT-2's choice, gave 0.104).
        let init = Initializer::Normal { mean: 0.0, std: 0.1 };
        let emb = |n: usize| EmbeddingConfig::new(n, self.d_model).with_initializer(init.clone()).init(device);
        OneRec {
            feature_embedding: emb(self.context.feature_buckets + 1),
            item_embedding: emb(self.items + 1),
            feedback_embedding: emb(FEEDBACK_BUCKETS),
            gap_embedding: emb(GAP_BUCKETS),
            away_embedding: emb(AWAY_BUCKETS),
            lifelong_projection: LinearConfig::new(self.item_embedding_dim + 1, self.d_model).init(device),
            // No bias: a token without a trend gets exactly nothing added.
            trend_projection: self
                .trend
                .as_ref()
                .map(|_| LinearConfig::new(self.d_model, self.d_model).with_bias(false).init(device)),
            positions: emb(self.stream_len()),
            blocks: (0..self.layers).map(|_| Block::new(self, device)).collect(),
            norm: RmsNormConfig::new(self.d_model).init(device),
            head: IdHead::new(self, device),
            item_norm: RmsNormConfig::new(self.d_model).init(device),
            dropout: self.dropout,
        }
    }
}

/// Multi-head self-attention with one fused projection for queries, keys and values: one matmul
/// instead of three, which matters at the small widths a CPU trains.
#[derive(Module, Debug)]
pub struct SelfAttention {
    qkv: Linear,
    output: Linear,
    heads: usize,
}

impl SelfAttention {
    fn new(d_model: usize, heads: usize, device: &Device) -> Self {
        SelfAttention {
            qkv: LinearConfig::new(d_model, 3 * d_model).with_bias(false).init(device),
            output: LinearConfig::new(d_model, d_model).with_bias(false).init(device),
            heads,
        }
    }

    /// `x`: `[batch, slots, d_model]`; `hidden`: `[batch, 1, slots, slots]`, true where slot `q`
    /// may not attend slot `k`. Every slot must see at least one (padding sees itself).
    fn forward(&self, x: Tensor<3>, hidden: Tensor<4, Bool>) -> Tensor<3> {
        let [b, s, d] = x.dims();
        let h = self.heads;
        let qkv = self.qkv.forward(x).reshape([b, s, 3, h, d / h]).permute([2, 0, 3, 1, 4]);
        let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([b, h, s, d / h]);
        let (q, k, v) = (part(0), part(1), part(2));
        let scores = q.matmul(k.transpose()).div_scalar(((d / h) as f32).sqrt());
        // -inf rather than a large negative number: exp(-inf) takes libm's fast path.
        let scores = scores.mask_fill(hidden.expand([b, h, s, s]), f32::NEG_INFINITY);
        let weights = softmax(scores, 3);
        let context = weights.matmul(v).swap_dims(1, 2).reshape([b, s, d]);
        self.output.forward(context)
    }
}

impl SelfAttention {
    /// [`SelfAttention::forward`]'s output at the slots `queries` (indices into `batch · slots`,
    /// in batch `rows[i]`) alone, `[queries, d_model]`: every slot's keys and values, the
    /// queries' scores only. `hidden`: `[batch, slots, slots]`.
    fn forward_at(
        &self,
        x: Tensor<3>,
        hidden: Tensor<3, Bool>,
        queries: Tensor<1, Int>,
        rows: Tensor<1, Int>,
    ) -> Tensor<2> {
        let [b, s, d] = x.dims();
        let (h, n) = (self.heads, queries.dims()[0]);
        let qkv = self.qkv.forward(x).reshape([b, s, 3, h, d / h]);
        let part = |i: usize| qkv.clone().narrow(2, i, 1).reshape([b, s, h, d / h]);
        let q = part(0).reshape([b * s, h, d / h]).select(0, queries.clone()).reshape([n, h, 1, d / h]);
        let k = part(1).swap_dims(1, 2).select(0, rows.clone());
        let v = part(2).swap_dims(1, 2).select(0, rows);
        let scores = q.matmul(k.transpose()).div_scalar(((d / h) as f32).sqrt());
        let hidden = hidden.reshape([b * s, s]).select(0, queries).reshape([n, 1, 1, s]).expand([n, h, 1, s]);
        let weights = softmax(scores.mask_fill(hidden, f32::NEG_INFINITY), 3);
        self.output.forward(weights.matmul(v).reshape([n, d]))
    }
}

/// Pre-norm causal block: self-attention, then the MoE ReGLU.
#[derive(Module, Debug)]
pub struct Block {
    attention_norm: RmsNorm,
    attention: SelfAttention,
    ffn_norm: RmsNorm,
    ffn: MoeFfn,
}

impl Block {
    fn new(config: &ModelConfig, device: &Device) -> Self {
        Block {
            attention_norm: RmsNormConfig::new(config.d_model).init(device),
            attention: SelfAttention::new(config.d_model, config.heads, device),
            ffn_norm: RmsNormConfig::new(config.d_model).init(device),
            ffn: MoeFfn::new(config.d_model, config.d_ff, config.experts, config.top_k, device),
        }
    }

    /// `real`: which of the `batch · slots` rows hold a token; only those go through the experts.
    fn forward(
        &self,
        x: Tensor<3>,
        hidden: Tensor<4, Bool>,
        real: &[bool],
        dropout: &mut Option<Dropout>,
    ) -> (Tensor<3>, ExpertLoad) {
        let h = self.attention.forward(self.attention_norm.forward(x.clone()), hidden);
        let x = x + dropout::maybe(dropout, h);
        let (h, load) = self.ffn.forward(self.ffn_norm.forward(x.clone()), real);
        (x + dropout::maybe(dropout, h), load)
    }

    /// [`Block::forward`]'s output at the slots `queries` alone (see
    /// [`SelfAttention::forward_at`]), without dropout: `[queries, d_model]`.
    fn forward_at(
        &self,
        x: Tensor<3>,
        hidden: Tensor<3, Bool>,
        queries: Tensor<1, Int>,
        rows: Tensor<1, Int>,
    ) -> (Tensor<2>, ExpertLoad) {
        let [b, s, d] = x.dims();
        let n = queries.dims()[0];
        let h = self.attention.forward_at(self.attention_norm.forward(x.clone()), hidden, queries.clone(), rows);
        let x = x.reshape([b * s, d]).select(0, queries) + h;
        let (h, load) = self.ffn.forward(self.ffn_norm.forward(x.clone()).reshape([n, 1, d]), &vec![true; n]);
        (x + h.reshape([n, d]), load)
    }
}

/// The whole model.
#[derive(Module, Debug)]
pub struct OneRec {
    feature_embedding: Embedding,
    item_embedding: Embedding,
    feedback_embedding: Embedding,
    gap_embedding: Embedding,
    lifelong_projection: Linear,
    /// How long the user has been away when a query is asked, on the token that answers it.
    away_embedding: Embedding,
    /// Maps the share-weighted mean embedding of the trending items into a token's input.
    trend_projection: Option<Linear>,
    positions: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    head: IdHead,
    item_norm: RmsNorm,
    /// Dropout rate of the embeddings and residual branches, in passes with a noise seed.
    dropout: f64,
}

impl OneRec {
    /// The item ID embeddings, `(items + 1) × d_model` row-major (row 0 is padding, item `i` is
    /// row `i + 1`).
    pub fn item_table(&self) -> Vec<f32> {
        self.item_embedding.weight.val().into_data().try_to_vec::<f32>().expect("the item table is f32")
    }

    /// The same model with `rows` (`n × d_model`) appended to the item ID embeddings: the
    /// embeddings of `n` items added to the catalogue, as items `items .. items + n`.
    pub fn with_items(mut self, rows: Vec<f32>) -> OneRec {
        let table = self.item_embedding.weight.val();
        let [_, d] = table.dims();
        let n = rows.len() / d;
        let added = Tensor::<2>::from_data(TensorData::new(rows, [n, d]), &table.device());
        self.item_embedding.weight = Param::from_tensor(Tensor::cat(vec![table, added], 0));
        self
    }

    /// The state of every query of the batch, `[queries, d_model]`: the stream's state at the
    /// last slot the query sees. With the expert loads of each block.
    ///
    /// When the queries are a small share of the slots and nothing is dropped out (serving: one
    /// query per context), the last block runs at the query slots alone: the states of the other
    /// slots feed no later block, so only their keys and values are needed. That skips most of
    /// the last block's attention and all of its feed-forward work for them, about two fifths of
    /// a decode's stream at two blocks.
    pub fn encode(&self, batch: &Batch) -> (Tensor<2>, Vec<ExpertLoad>) {
        let [b, s, _] = batch.hidden.dims();
        let queries = batch.queries.dims()[0];
        match self.blocks.split_last() {
            Some((last, blocks)) if batch.noise_seed.is_none() && 4 * queries <= b * s => {
                let (x, mut loads) = self.blocks_over(self.tokens(batch), blocks, batch, &mut None);
                let rows = batch.queries.clone().div_scalar(s as i64);
                let (x, load) = last.forward_at(x, batch.hidden.clone(), batch.queries.clone(), rows);
                loads.push(load);
                (self.norm.forward(x), loads)
            }
            _ => {
                let (states, loads) = self.stream(batch);
                let d = states.dims()[2];
                (states.reshape([b * s, d]).select(0, batch.queries.clone()), loads)
            }
        }
    }

    /// The stream's states, `[rows, len, d_model]`.
    fn stream(&self, batch: &Batch) -> (Tensor<3>, Vec<ExpertLoad>) {
        let mut dropout = Dropout::new(self.dropout, batch.noise_seed);
        let x = dropout::maybe(&mut dropout, self.tokens(batch));
        let (x, loads) = self.blocks_over(x, &self.blocks, batch, &mut dropout);
        (self.norm.forward(x), loads)
    }

    /// `x` through `blocks`, with their expert loads.
    fn blocks_over(
        &self,
        mut x: Tensor<3>,
        blocks: &[Block],
        batch: &Batch,
        dropout: &mut Option<Dropout>,
    ) -> (Tensor<3>, Vec<ExpertLoad>) {
        let hidden = batch.hidden.clone().unsqueeze_dim::<4>(1);
        let mut loads = Vec::with_capacity(self.blocks.len());
        for block in blocks {
            let (next, load) = block.forward(x, hidden.clone(), &batch.real_slots, dropout);
            x = next;
            loads.push(load);
        }
        (x, loads)
    }

    /// The stream's input, `[rows, len, d_model]`: each slot's token plus its position.
    fn tokens(&self, batch: &Batch) -> Tensor<3> {
        let [b, s, _] = batch.hidden.dims();
        let device = batch.hidden.device();
        let codes = self.head.code_tables();
        let d = self.positions.weight.dims()[1];
        let lookup = |table: &Embedding, index: &Tensor<1, Int>| table.weight.val().select(0, index.clone());
        // Static tokens: the sum of each context's feature embeddings.
        let contexts = batch.features.dims()[0];
        let features = (self.feature_embedding.forward(batch.features.clone())
            * batch.feature_weights.clone().unsqueeze_dim::<3>(2))
        .sum_dim(1)
        .reshape([contexts, d]);
        let events = batch.event_items.dims()[0];
        // What the static and event tokens carry of the moment of the query that reads them.
        let mut moments = lookup(&self.away_embedding, &batch.moment_away);
        if let Some(projection) = &self.trend_projection {
            let [lists, k] = batch.trend_items.dims();
            let entries = lookup(&self.item_embedding, &batch.trend_items.clone().reshape([lists * k]));
            let mixed = (entries.reshape([lists, k, d]) * batch.trend_shares.clone().unsqueeze_dim::<3>(2))
                .sum_dim(1)
                .reshape([lists, d]);
            moments = moments + projection.forward(mixed).select(0, batch.trend_of.clone());
        }
        let with_moment = |x: Tensor<2>, from: usize, len: usize| x + moments.clone().narrow(0, from, len);
        let mut tokens = vec![with_moment(features, 0, contexts)];
        // Event tokens: item ID + semantic codes + feedback + time since the previous event
        // (+ the moment of the query that reads it).
        if events > 0 {
            let mut x = lookup(&self.item_embedding, &batch.event_items)
                + lookup(&self.feedback_embedding, &batch.event_feedback)
                + lookup(&self.gap_embedding, &batch.event_gaps);
            for (table, level) in codes.iter().zip(&batch.event_codes) {
                x = x + lookup(table, level);
            }
            tokens.push(with_moment(x, contexts, events));
        }
        // Lifelong tokens: mean embedding and log-size of a group, plus the group's first code.
        if batch.lifelong_codes.dims()[0] > 0 {
            tokens.push(
                self.lifelong_projection.forward(batch.lifelong.clone()) + lookup(&codes[0], &batch.lifelong_codes),
            );
        }
        tokens.push(Tensor::zeros([1, d], &device));
        Tensor::cat(tokens, 0).select(0, batch.slots.clone()).reshape([b, s, d])
            + self.positions.forward(batch.positions.clone())
    }

    /// The ID head, which turns query states into codes.
    pub fn head(&self) -> &IdHead {
        &self.head
    }

    /// On the CPU, the ID head prepared for decoding on host buffers ([`IdHead::prepare`]);
    /// `None` on a GPU, where the beam's selection runs on the device.
    pub fn host_head(&self) -> Option<HostHead> {
        crate::device::is_host(&self.positions.weight.device()).then(|| self.head.prepare())
    }

    /// Scores of every catalogue item for query states `[rows, d_model]`: `[rows, items]`.
    pub fn item_scores(&self, states: Tensor<2>) -> Tensor<2> {
        let table = self.item_embedding.weight.val();
        let items = table.dims()[0] - 1;
        // Row 0 of the table is the "no item" input; item i is row i + 1.
        self.item_norm.forward(states).matmul(table.narrow(0, 1, items).transpose())
    }

    /// Scores of one item per pair: `items[p]` for the state `states[rows[p]]`. Each state is
    /// normalised once, however many of its items are scored (a beam scores many).
    pub fn item_score(&self, states: Tensor<2>, rows: Tensor<1, Int>, items: Tensor<1, Int>) -> Tensor<1> {
        let pairs = items.dims()[0];
        let embeddings = self.item_embedding.weight.val().select(0, items.add_scalar(1));
        (self.item_norm.forward(states).select(0, rows) * embeddings).sum_dim(1).reshape([pairs])
    }

    /// The training loss, with the expert loads of the stream: the teacher-forced next-token
    /// cross-entropy of the target IDs (mean over targets and ID positions) plus the full-softmax
    /// cross-entropy of the target items under [`OneRec::item_scores`] (mean over targets).
    pub fn loss(&self, batch: &Batch) -> (Tensor<1>, Vec<ExpertLoad>) {
        let targets = batch.targets.clone().expect("a training batch has targets");
        let (states, loads) = self.encode(batch);
        let [count, levels] = targets.codes.dims();
        let ids = self.head.cross_entropy_sum(states.clone(), targets.codes) / (count.max(1) * levels) as f32;
        let items = cross_entropy_sum(self.item_scores(states), targets.items);
        (ids + items / count.max(1) as f32, loads)
    }

    /// Applies loss-free balancing to every MoE layer from the loads of a step.
    pub fn rebalance(self, loads: &[ExpertLoad], rate: f32) -> Self {
        let mut model = self;
        model.blocks = std::mem::take(&mut model.blocks)
            .into_iter()
            .zip(loads)
            .map(|(block, load)| Block { ffn: block.ffn.rebalance(load, rate), ..block })
            .collect();
        model
    }
}

#[cfg(test)]
mod tests;

#[cfg(all(test, feature = "wgpu"))]
mod wgpu_tests;
