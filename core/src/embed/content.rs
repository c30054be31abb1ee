//! Content embeddings: hashed TF-IDF over title words and tags, reduced by a seeded Gaussian
//! random projection (which preserves cosine similarity in expectation, with no fitting).

use std::collections::HashMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use crate::data::Item;
use crate::linalg;

/// Tags weigh more than a single title word: they are curated and few.
const TAG_WEIGHT: f32 = 2.0;

/// `items × dims` unit rows; an item without text gets a zero row.
pub(super) fn embed(items: &[Item], dims: usize, buckets: usize, seed: u64) -> Vec<f32> {
    if dims == 0 {
        return Vec::new();
    }
    let buckets = buckets.max(1) as u64;
    let tokens: Vec<Vec<(u32, f32)>> = items.par_iter().map(|item| term_counts(item, buckets)).collect();
    let mut df: HashMap<u32, u32> = HashMap::new();
    for doc in &tokens {
        for &(b, _) in doc {
            *df.entry(b).or_default() += 1;
        }
    }
    let n = items.len() as f32;
    let idf: HashMap<u32, f32> = df.iter().map(|(&b, &d)| (b, ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0)).collect();
    let projection: HashMap<u32, Vec<f32>> = df.keys().map(|&b| (b, projection_row(b, dims, seed))).collect();
    let mut out = vec![0f32; items.len() * dims];
    out.par_chunks_mut(dims).zip(&tokens).for_each(|(row, doc)| {
        for &(b, tf) in doc {
            let w = tf * idf[&b];
            row.iter_mut().zip(&projection[&b]).for_each(|(r, p)| *r += w * p);
        }
    });
    linalg::l2_normalize_rows(&mut out, dims);
    out
}

/// Weighted counts of the hashed tokens of one item: lower-cased title words and whole tags.
fn term_counts(item: &Item, buckets: u64) -> Vec<(u32, f32)> {
    let mut counts: HashMap<u32, f32> = HashMap::new();
    let words = item.title.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty());
    for word in words {
        *counts.entry(bucket("w", &word.to_lowercase(), buckets)).or_default() += 1.0;
    }
    for tag in &item.tags {
        *counts.entry(bucket("t", &tag.to_lowercase(), buckets)).or_default() += TAG_WEIGHT;
    }
    let mut v: Vec<(u32, f32)> = counts.into_iter().collect();
    v.sort_by_key(|&(b, _)| b);
    v
}

/// The bucket of a token of one kind (title word or tag), so that a word and a tag never share it.
fn bucket(kind: &str, token: &str, buckets: u64) -> u32 {
    (fnv1a(kind.bytes().chain([0]).chain(token.bytes())) % buckets) as u32
}

/// 64-bit FNV-1a: a stable hash, so that the same token lands in the same bucket on every machine
/// and in every saved model.
pub(crate) fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, byte| (h ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

fn projection_row(bucket: u32, dims: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ bucket as u64);
    (0..dims).map(|_| StandardNormal.sample(&mut rng)).collect()
}
