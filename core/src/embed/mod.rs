//! Item embeddings: what the tokenizer quantises. Content (title and tags) and collaborative
//! (co-occurrence) signals are embedded apart, aligned, concatenated and L2-normalised.

mod collab;
mod content;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Item};
use crate::error::{Error, Result};
use crate::linalg;

pub use collab::CooccurrenceConfig;
/// The generator hashes static features with the same function as content tokens.
#[cfg(feature = "model")]
pub(crate) use content::fnv1a;

/// Settings of the item embeddings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingConfig {
    /// Output dimension.
    pub dim: usize,
    /// Dimensions given to the collaborative part; the rest go to content. When the data has no
    /// text (or no interactions) the other part takes every dimension.
    pub collab_dims: usize,
    /// Hash buckets for content tokens.
    pub hash_buckets: usize,
    pub cooccurrence: CooccurrenceConfig,
    /// Ridge penalty of the content → collaborative map used for items with no interactions.
    pub ridge: f64,
    pub seed: u64,
}

impl Default for EmbeddingConfig {
    fn default() -> Self {
        EmbeddingConfig {
            dim: 64,
            collab_dims: 32,
            hash_buckets: 1 << 20,
            cooccurrence: CooccurrenceConfig::default(),
            ridge: 1.0,
            seed: 42,
        }
    }
}

/// One unit-length row per item, in item-index order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemEmbeddings {
    pub dim: usize,
    /// `items × dim`, row-major.
    pub data: Vec<f32>,
}

impl ItemEmbeddings {
    pub fn len(&self) -> usize {
        self.data.len() / self.dim.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn row(&self, item: usize) -> &[f32] {
        &self.data[item * self.dim..][..self.dim]
    }
}

/// Embeds every item of the catalogue. Co-occurrence uses only the training part of each
/// sequence, so that the held-out validation and test events never shape the semantic IDs.
pub fn item_embeddings(dataset: &Dataset, config: &EmbeddingConfig) -> Result<ItemEmbeddings> {
    if config.dim == 0 || config.collab_dims > config.dim {
        return Err(Error::Config(format!(
            "embedding dimension {} must be positive and hold the {} collaborative dimensions",
            config.dim, config.collab_dims
        )));
    }
    let n = dataset.n_items();
    let has_text = dataset.items.iter().any(|i| !i.title.is_empty() || !i.tags.is_empty());
    let (content_dims, collab_dims) = match (has_text, config.collab_dims) {
        (false, _) => (0, config.dim),
        (true, c) => (config.dim - c, c),
    };
    let content = content::embed(&dataset.items, content_dims, config.hash_buckets, config.seed);
    let (mut collab, warm) = collab::embed(dataset, collab_dims, &config.cooccurrence, config.seed)?;
    if content_dims > 0 {
        fill_cold_from_content(&content, content_dims, &mut collab, collab_dims, &warm, config.ridge);
    }
    let mut data = vec![0f32; n * config.dim];
    for (i, row) in data.chunks_exact_mut(config.dim).enumerate() {
        row[..content_dims].copy_from_slice(&content[i * content_dims..][..content_dims]);
        row[content_dims..content_dims + collab_dims].copy_from_slice(&collab[i * collab_dims..][..collab_dims]);
    }
    fill_empty_rows(&mut data, config.dim, config.seed);
    linalg::l2_normalize_rows(&mut data, config.dim);
    Ok(ItemEmbeddings { dim: config.dim, data })
}

/// Embeddings of items added to a catalogue after its tokenizer was fitted (`items × dim`), made
/// as [`item_embeddings`] makes a cold item's: content from the item's text (IDF over the whole
/// catalogue, old items and new), and the collaborative part that content predicts, by a ridge
/// regression fitted on the existing items' embeddings. Nobody has interacted with a new item, so
/// there is nothing else to go on; an item without text gets a random direction.
pub fn embed_new_items(
    existing: &ItemEmbeddings,
    catalogue: &[Item],
    new: &[Item],
    config: &EmbeddingConfig,
) -> Vec<f32> {
    let dim = config.dim;
    let has_text = catalogue.iter().any(|i| !i.title.is_empty() || !i.tags.is_empty());
    let (dc, df) = if has_text { (dim - config.collab_dims, config.collab_dims) } else { (0, dim) };
    let (old, added) = (catalogue.len(), new.len());
    let mut data = vec![0f32; added * dim];
    if dc > 0 {
        let all: Vec<Item> = catalogue.iter().chain(new).cloned().collect();
        let fresh = content::embed(&all, dc, config.hash_buckets, config.seed);
        // The stored rows hold both parts, scaled by the row's normalisation; the fit's output is
        // normalised again, so the scale does not matter.
        let mut content: Vec<f32> = (0..old).flat_map(|i| existing.row(i)[..dc].to_vec()).collect();
        content.extend_from_slice(&fresh[old * dc..]);
        let mut collab: Vec<f32> = (0..old).flat_map(|i| existing.row(i)[dc..].to_vec()).collect();
        collab.resize((old + added) * df, 0.0);
        let warm: Vec<bool> = (0..old + added).map(|i| i < old).collect();
        fill_cold_from_content(&content, dc, &mut collab, df, &warm, config.ridge);
        for (i, row) in data.chunks_exact_mut(dim).enumerate() {
            row[..dc].copy_from_slice(&content[(old + i) * dc..][..dc]);
            row[dc..].copy_from_slice(&collab[(old + i) * df..][..df]);
        }
    }
    fill_empty_rows(&mut data, dim, config.seed ^ old as u64);
    linalg::l2_normalize_rows(&mut data, dim);
    data
}

/// Items nobody interacted with get the collaborative vector their content predicts, by a ridge
/// regression fitted on items that have both: content aligned to collaborative space, as OneRec
/// aligns its multimodal embeddings with collaborative pairs.
fn fill_cold_from_content(content: &[f32], dc: usize, collab: &mut [f32], df: usize, warm: &[bool], ridge: f64) {
    let has_content = |i: usize| content[i * dc..][..dc].iter().any(|&x| x != 0.0);
    let train: Vec<usize> = (0..warm.len()).filter(|&i| warm[i] && has_content(i)).collect();
    if train.is_empty() || df == 0 {
        return;
    }
    let c: Vec<f32> = train.iter().flat_map(|&i| content[i * dc..][..dc].iter().copied()).collect();
    let f: Vec<f32> = train.iter().flat_map(|&i| collab[i * df..][..df].iter().copied()).collect();
    let mut ctc = linalg::gram(&c, dc);
    (0..dc).for_each(|i| ctc[i * dc + i] += ridge);
    let w = linalg::solve_spd(&ctc, &linalg::transpose_product(&c, dc, &f, df), dc);
    for i in (0..warm.len()).filter(|&i| !warm[i] && has_content(i)) {
        let row = &content[i * dc..][..dc];
        for (j, out) in collab[i * df..][..df].iter_mut().enumerate() {
            *out = (0..dc).map(|p| row[p] as f64 * w[p * df + j]).sum::<f64>() as f32;
        }
    }
    linalg::l2_normalize_rows(collab, df);
}

/// An item with neither text nor interactions gets a random direction, so it still gets an ID.
fn fill_empty_rows(data: &mut [f32], dim: usize, seed: u64) {
    for (i, row) in data.chunks_exact_mut(dim).enumerate() {
        if row.iter().all(|&x| x == 0.0) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            row.iter_mut().for_each(|x| *x = StandardNormal.sample(&mut rng));
        }
    }
}

#[cfg(test)]
mod tests;
