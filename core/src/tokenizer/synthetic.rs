//! A synthetic catalogue of any size with the shape of a real one: item embeddings scattered around
//! topic centres, tokenized like real items. The benchmarks use it to time decoding and
//! tokenizing at catalogue sizes no bundled data set reaches.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::embed::{EmbeddingConfig, ItemEmbeddings};
use crate::error::Result;
use crate::tokenizer::{RqConfig, Tokenizer, fit};

/// Unit vectors scattered around `topics` random centres, like embeddings of items on topics.
pub fn topic_mixture(items: usize, dim: usize, topics: usize, noise: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut normal = || -> f32 { StandardNormal.sample(&mut rng) };
    let centres: Vec<f32> = (0..topics * dim).map(|_| normal()).collect();
    let mut data = Vec::with_capacity(items * dim);
    for i in 0..items {
        let centre = &centres[(i % topics) * dim..][..dim];
        let start = data.len();
        data.extend(centre.iter().map(|&c| c + noise * normal()));
        let row = &mut data[start..];
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    }
    data
}

/// A tokenizer over `items` synthetic items (64 dimensions, 1000 topics, 3 levels of 256 codes),
/// named `"0"`, `"1"`, ….
pub fn synthetic_catalogue(items: usize, seed: u64) -> Result<Tokenizer> {
    let dim = 64;
    let data = topic_mixture(items, dim, 1000, 1.0, seed);
    let config = RqConfig { levels: 3, codes: 256, max_iters: 10, seed };
    let (codebooks, semantic_ids, report) = fit(&data, dim, &config)?;
    Ok(Tokenizer {
        dataset: "synthetic".into(),
        item_ids: (0..items).map(|i| i.to_string()).collect(),
        embeddings: ItemEmbeddings { dim, data },
        embedding: EmbeddingConfig { dim, ..EmbeddingConfig::default() },
        config,
        codebooks,
        semantic_ids,
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_unit_vectors_near_their_topic_and_every_item_gets_its_own_id() {
        let data = topic_mixture(40, 8, 4, 0.1, 3);
        let row = |i: usize| &data[i * 8..][..8];
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        assert!((0..40).all(|i| (dot(row(i), row(i)) - 1.0).abs() < 1e-5));
        // Items 0 and 4 share topic 0 and lie close; items 0 and 1 do not share one.
        assert!(dot(row(0), row(4)) > 0.9 && dot(row(0), row(4)) > dot(row(0), row(1)));

        let tokenizer = synthetic_catalogue(3000, 1).unwrap();
        let ids: std::collections::HashSet<&[u16]> = (0..3000).map(|i| tokenizer.semantic_ids.id_of(i)).collect();
        assert_eq!(ids.len(), 3000);
    }
}
