//! RQ-KMeans tokenizer: each item's embedding becomes a short sequence of codes (its semantic ID),
//! one per level, each level a balanced k-means over the residual the levels before left.

pub mod kmeans;
mod semantic_ids;
pub mod synthetic;
pub mod trie;

use std::fmt;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::codec::{self, Format};
use crate::embed::{EmbeddingConfig, ItemEmbeddings};
use crate::error::{Error, Result};
use kmeans::KMeansConfig;
pub use semantic_ids::{Collisions, SemanticIds};
pub use trie::PrefixTrie;

/// One code of a semantic ID.
pub type Code = u16;

/// Items per code that each level's centroids are fitted on; all items are then assigned once.
const SAMPLE_PER_CODE: usize = 256;

/// Settings of the residual quantiser.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RqConfig {
    /// Levels L: codes per ID before disambiguation.
    pub levels: usize,
    /// Codes K per level. 256 suits catalogues up to about 100k items; OneRec uses 8192.
    pub codes: usize,
    /// Iteration cap of each level's k-means.
    pub max_iters: usize,
    pub seed: u64,
}

impl RqConfig {
    /// Codes per level for a catalogue of `items`: the smallest power of two whose first
    /// `levels - 1` levels can name every item (K^(L-1) ≥ items), kept within 16..=256. Fewer codes
    /// mean more items per code, so a code's embedding learns from more events; the last level is
    /// left to separate the few items that still share a prefix. On MovieLens-100K (1,682 items) this
    /// gives 64, which ranked better than 256 and made training steps faster.
    pub fn codes_for(items: usize, levels: usize) -> usize {
        let mut codes = 16;
        while codes < 256 && (codes as f64).powi(levels.saturating_sub(1).max(1) as i32) < items as f64 {
            codes *= 2;
        }
        codes
    }
}

impl Default for RqConfig {
    fn default() -> Self {
        RqConfig { levels: 3, codes: 256, max_iters: 20, seed: 42 }
    }
}

/// The centroids of every level, to encode new embeddings the same way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Codebooks {
    pub dim: usize,
    /// `levels × (codes × dim)`.
    pub centroids: Vec<Vec<f32>>,
}

impl Codebooks {
    /// Up to `keep` residual code sequences for `embedding`, least reconstruction error first: a
    /// beam over the levels that keeps the `keep` best prefixes at each, so the first is the
    /// greedy encoding and the rest are its nearest alternatives.
    pub fn encode(&self, embedding: &[f32], keep: usize) -> Vec<Vec<Code>> {
        let dim = self.dim;
        let mut beam: Vec<(f64, Vec<Code>, Vec<f32>)> = vec![(0.0, Vec::new(), embedding.to_vec())];
        for level in &self.centroids {
            let mut scored: Vec<(f64, usize, Code)> = Vec::new();
            for (b, (_, _, residual)) in beam.iter().enumerate() {
                for (code, centroid) in level.chunks_exact(dim).enumerate() {
                    let error = residual.iter().zip(centroid).map(|(r, c)| ((r - c) * (r - c)) as f64).sum();
                    scored.push((error, b, code as Code));
                }
            }
            scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            beam = scored
                .into_iter()
                .take(keep.max(1))
                .map(|(error, b, code)| {
                    let (_, prefix, residual) = &beam[b];
                    let centroid = &level[code as usize * dim..][..dim];
                    let residual = residual.iter().zip(centroid).map(|(r, c)| r - c).collect();
                    (error, [prefix.as_slice(), &[code]].concat(), residual)
                })
                .collect();
        }
        beam.into_iter().map(|(_, codes, _)| codes).collect()
    }

    /// The squared error of reconstructing `embedding` as the sum of `codes`' centroids.
    pub fn error(&self, embedding: &[f32], codes: &[Code]) -> f64 {
        let mut residual = embedding.to_vec();
        for (level, &code) in self.centroids.iter().zip(codes) {
            let centroid = &level[code as usize * self.dim..][..self.dim];
            residual.iter_mut().zip(centroid).for_each(|(r, c)| *r -= c);
        }
        residual.iter().map(|r| (r * r) as f64).sum()
    }
}

/// What one level of the quantiser achieved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LevelReport {
    /// Mean squared norm of the residual left after this level.
    pub reconstruction_mse: f64,
    /// Share of the level's codes used by at least one item.
    pub utilisation: f64,
    /// Shannon entropy of the code distribution, in bits.
    pub entropy_bits: f64,
    /// Entropy over its maximum, log2(K): 1.0 means perfectly even use.
    pub normalised_entropy: f64,
    pub kmeans_iterations: usize,
}

/// The tokenizer report printed by `onerec tokenize`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenizerReport {
    pub items: usize,
    pub dim: usize,
    pub codes_per_level: usize,
    /// Mean squared norm of the embeddings, the scale the reconstruction errors compare to.
    pub embedding_energy: f64,
    pub levels: Vec<LevelReport>,
    /// Share of items whose residual codes are shared with another item.
    pub collision_rate_before: f64,
    /// Share of items whose final ID is shared: 0 once resolved.
    pub collision_rate_after: f64,
    pub largest_collision_group: usize,
    /// Codes per final ID (levels, plus one when collisions needed disambiguation).
    pub id_length: usize,
    pub seconds: f64,
}

/// Quantises `n × dim` embeddings into semantic IDs.
pub fn fit(embeddings: &[f32], dim: usize, config: &RqConfig) -> Result<(Codebooks, SemanticIds, TokenizerReport)> {
    let started = Instant::now();
    if config.levels == 0 || config.codes < 2 || config.codes > Code::MAX as usize + 1 {
        return Err(Error::Config(format!(
            "need at least one level and 2..=65536 codes per level, got {} × {}",
            config.levels, config.codes
        )));
    }
    let n = embeddings.len() / dim.max(1);
    if n < config.codes {
        return Err(Error::Config(format!(
            "{n} items cannot fill {} codes per level; pass fewer codes (--codes)",
            config.codes
        )));
    }
    let energy = mean_sq_norm(embeddings, dim);
    let mut residual = embeddings.to_vec();
    let mut codes = vec![0 as Code; n * config.levels];
    let mut centroids = Vec::with_capacity(config.levels);
    let mut levels = Vec::with_capacity(config.levels);
    for level in 0..config.levels {
        let clustering = kmeans::kmeans(
            &residual,
            dim,
            &KMeansConfig {
                clusters: config.codes,
                max_iters: config.max_iters,
                tolerance: 1e-3,
                balanced: true,
                sample_per_cluster: Some(SAMPLE_PER_CODE),
                seed: config.seed.wrapping_add(level as u64),
            },
        )?;
        for (item, (row, &code)) in residual.chunks_exact_mut(dim).zip(&clustering.assignment).enumerate() {
            let centroid = &clustering.centroids[code as usize * dim..][..dim];
            row.iter_mut().zip(centroid).for_each(|(r, c)| *r -= c);
            codes[item * config.levels + level] = code as Code;
        }
        levels.push(level_report(
            &clustering.assignment,
            config.codes,
            mean_sq_norm(&residual, dim),
            clustering.iterations,
        ));
        centroids.push(clustering.centroids);
    }
    let (ids, collisions) = SemanticIds::resolve(codes, &vec![config.codes; config.levels])?;
    let report = TokenizerReport {
        items: n,
        dim,
        codes_per_level: config.codes,
        embedding_energy: energy,
        levels,
        collision_rate_before: collisions.colliding_items as f64 / n as f64,
        collision_rate_after: 0.0,
        largest_collision_group: collisions.largest_group,
        id_length: ids.id_len(),
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((Codebooks { dim, centroids }, ids, report))
}

fn mean_sq_norm(rows: &[f32], dim: usize) -> f64 {
    let n = rows.len() / dim;
    crate::linalg::row_sq_norms(rows, dim).iter().map(|&x| x as f64).sum::<f64>() / n as f64
}

fn level_report(assignment: &[u32], codes: usize, reconstruction_mse: f64, kmeans_iterations: usize) -> LevelReport {
    let mut counts = vec![0usize; codes];
    assignment.iter().for_each(|&c| counts[c as usize] += 1);
    let n = assignment.len() as f64;
    let entropy_bits: f64 = counts.iter().filter(|&&c| c > 0).map(|&c| c as f64 / n).map(|p| -p * p.log2()).sum();
    LevelReport {
        reconstruction_mse,
        utilisation: counts.iter().filter(|&&c| c > 0).count() as f64 / codes as f64,
        entropy_bits,
        normalised_entropy: entropy_bits / (codes as f64).log2(),
        kmeans_iterations,
    }
}

impl fmt::Display for TokenizerReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "RQ-KMeans: {} items × {} dims, {} levels × {} codes, {:.2} s",
            self.items,
            self.dim,
            self.levels.len(),
            self.codes_per_level,
            self.seconds
        )?;
        writeln!(f, "embedding energy (mean ‖x‖²): {:.4}", self.embedding_energy)?;
        writeln!(f, "level  recon-mse  relative  utilisation  entropy(bits)  norm-entropy  iters")?;
        for (l, r) in self.levels.iter().enumerate() {
            writeln!(
                f,
                "{:>5}  {:>9.5}  {:>8.4}  {:>11.4}  {:>13.3}  {:>12.4}  {:>5}",
                l + 1,
                r.reconstruction_mse,
                r.reconstruction_mse / self.embedding_energy,
                r.utilisation,
                r.entropy_bits,
                r.normalised_entropy,
                r.kmeans_iterations
            )?;
        }
        writeln!(
            f,
            "collisions: {:.4}% of items before resolution (largest group {}), {:.4}% after",
            100.0 * self.collision_rate_before,
            self.largest_collision_group,
            100.0 * self.collision_rate_after
        )?;
        write!(f, "semantic ID length: {}", self.id_length)
    }
}

/// The artefact of `onerec tokenize`: item embeddings, codebooks and semantic IDs, tied to the
/// catalogue they were built from by the items' source ids.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tokenizer {
    /// Name of the data set it was built from.
    pub dataset: String,
    /// Source id of each item, in item-index order.
    pub item_ids: Vec<String>,
    pub embeddings: ItemEmbeddings,
    /// How the embeddings were made, so that items added later are embedded the same way.
    pub embedding: EmbeddingConfig,
    pub config: RqConfig,
    pub codebooks: Codebooks,
    pub semantic_ids: SemanticIds,
    pub report: TokenizerReport,
}

const FORMAT: Format = Format { magic: b"ONRECTOK", version: 2, kind: "tokenizer" };

/// Residual code sequences tried, nearest first, for an added item whose nearest ID is taken.
const ADDED_ITEM_CANDIDATES: usize = 64;

impl Tokenizer {
    /// Gives items added after fitting their semantic IDs under the existing codebooks, so that
    /// the model's vocabularies and every other item's ID stay as they are: among the nearest
    /// residual code sequences, the first that trained items already hold and that has a free
    /// disambiguation code, else the nearest free one. The items join the trie, so decoding can
    /// produce them. `embeddings` holds one row per id.
    pub fn add_items(&mut self, ids: &[String], embeddings: &[f32]) -> Result<()> {
        let dim = self.embeddings.dim;
        if embeddings.len() != ids.len() * dim {
            return Err(Error::Config(format!("{} ids but {} embedding values", ids.len(), embeddings.len())));
        }
        let levels = self.config.levels;
        let sizes = &self.semantic_ids.level_sizes;
        let disambiguation = sizes.get(levels).copied();
        let mut known: std::collections::HashSet<&str> = self.item_ids.iter().map(String::as_str).collect();
        let mut taken: std::collections::HashMap<Vec<Code>, Vec<Code>> = std::collections::HashMap::new();
        for item in 0..self.item_ids.len() as crate::data::ItemIdx {
            let id = self.semantic_ids.id_of(item);
            taken.entry(id[..levels].to_vec()).or_default().push(id.get(levels).copied().unwrap_or(0));
        }
        let mut codes = Vec::with_capacity(ids.len() * sizes.len());
        for (id, row) in ids.iter().zip(embeddings.chunks_exact(dim.max(1))) {
            if !known.insert(id) {
                return Err(Error::Config(format!("item {id:?} is already in the catalogue")));
            }
            // A prefix that trained items already hold first, the nearest of them all: the model
            // has learnt its path, while it gives a path no item took almost no probability, so
            // the beam would never reach it. Else the nearest free code sequence.
            let held = disambiguation.and_then(|size| {
                taken
                    .iter()
                    .filter(|(_, used)| !used.is_empty() && used.len() < size)
                    .map(|(prefix, _)| (self.codebooks.error(row, prefix), prefix))
                    .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)))
                    .map(|(_, prefix)| prefix.clone())
            });
            let nearest = std::iter::once_with(|| self.codebooks.encode(row, ADDED_ITEM_CANDIDATES)).flatten();
            let chosen = held.into_iter().chain(nearest).find_map(|prefix| {
                let used = taken.entry(prefix.clone()).or_default();
                let last = match disambiguation {
                    Some(size) => (0..size as Code).find(|c| !used.contains(c))?,
                    None if used.is_empty() => 0,
                    None => return None,
                };
                used.push(last);
                Some(if disambiguation.is_some() { [prefix, vec![last]].concat() } else { prefix })
            });
            let chosen = chosen.ok_or_else(|| {
                Error::Config(format!(
                    "no free semantic ID among the {ADDED_ITEM_CANDIDATES} nearest to item {id:?}; tokenize the \
                     catalogue again"
                ))
            })?;
            codes.extend(chosen);
        }
        self.semantic_ids = self.semantic_ids.extended(&codes)?;
        self.item_ids.extend(ids.iter().cloned());
        self.embeddings.data.extend_from_slice(embeddings);
        Ok(())
    }

    /// Writes the tokenizer by atomic rename.
    pub fn save(&self, path: &Path) -> Result<()> {
        codec::save(FORMAT, self, path)
    }

    /// Reads a tokenizer, refusing a truncated, corrupt or inconsistent file.
    pub fn load(path: &Path) -> Result<Tokenizer> {
        let t: Tokenizer = codec::load(FORMAT, path)?;
        let n = t.item_ids.len();
        if t.semantic_ids.len() != n || t.embeddings.len() != n {
            return Err(Error::corrupt(
                path,
                format!("{n} item ids but {} semantic IDs and {} embeddings", t.semantic_ids.len(), t.embeddings.len()),
            ));
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    #[test]
    fn codes_per_level_grow_with_the_catalogue_within_bounds() {
        assert_eq!(RqConfig::codes_for(100, 3), 16);
        assert_eq!(RqConfig::codes_for(1682, 3), 64); // 32² = 1024 < 1682 ≤ 64²
        assert_eq!(RqConfig::codes_for(4096, 3), 64);
        assert_eq!(RqConfig::codes_for(4097, 3), 128);
        assert_eq!(RqConfig::codes_for(10_000_000, 3), 256);
        assert_eq!(RqConfig::codes_for(1682, 2), 256); // one naming level would need 1,682 codes
        assert_eq!(RqConfig::codes_for(1682, 4), 16);
    }

    fn gaussian(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n * dim).map(|_| StandardNormal.sample(&mut rng)).collect()
    }

    #[test]
    fn every_level_is_fully_used_and_ids_are_unique() {
        let dim = 8;
        let x = gaussian(2000, dim, 1);
        let (books, ids, report) = fit(&x, dim, &RqConfig { levels: 3, codes: 16, max_iters: 15, seed: 1 }).unwrap();
        assert_eq!(books.centroids.len(), 3);
        assert!(report.levels.iter().all(|l| l.utilisation == 1.0), "{report}");
        // Balanced sizes: 2000/16 = 125 per code exactly, so entropy is maximal.
        assert!(report.levels.iter().all(|l| (l.normalised_entropy - 1.0).abs() < 1e-9));
        // Residuals shrink level after level.
        let mse: Vec<f64> = report.levels.iter().map(|l| l.reconstruction_mse).collect();
        assert!(mse[0] < report.embedding_energy && mse[1] < mse[0] && mse[2] < mse[1], "{mse:?}");
        let unique: std::collections::HashSet<&[Code]> = (0..2000).map(|i| ids.id_of(i)).collect();
        assert_eq!(unique.len(), 2000);
        assert_eq!(report.collision_rate_after, 0.0);
    }

    #[test]
    fn codes_reconstruct_the_embedding_up_to_the_reported_error() {
        let dim = 4;
        let x = gaussian(300, dim, 2);
        let (books, ids, report) = fit(&x, dim, &RqConfig { levels: 2, codes: 8, max_iters: 10, seed: 3 }).unwrap();
        let mut total = 0.0;
        for item in 0..300u32 {
            let id = ids.id_of(item);
            let mut rec = vec![0f32; dim];
            for (level, &c) in id.iter().take(2).enumerate() {
                rec.iter_mut().zip(&books.centroids[level][c as usize * dim..][..dim]).for_each(|(r, v)| *r += v);
            }
            total +=
                x[item as usize * dim..][..dim].iter().zip(&rec).map(|(a, b)| ((a - b) * (a - b)) as f64).sum::<f64>();
        }
        assert!((total / 300.0 - report.levels[1].reconstruction_mse).abs() < 1e-4);
    }

    #[test]
    fn tokenizer_file_round_trips_and_refuses_damage() {
        let dim = 4;
        let x = gaussian(64, dim, 5);
        let config = RqConfig { levels: 2, codes: 4, max_iters: 5, seed: 2 };
        let (codebooks, semantic_ids, report) = fit(&x, dim, &config).unwrap();
        let tokenizer = Tokenizer {
            dataset: "gauss".into(),
            item_ids: (0..64).map(|i| format!("item{i}")).collect(),
            embeddings: ItemEmbeddings { dim, data: x },
            embedding: EmbeddingConfig { dim, ..EmbeddingConfig::default() },
            config,
            codebooks,
            semantic_ids,
            report,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tok.bin");
        tokenizer.save(&path).unwrap();
        assert_eq!(Tokenizer::load(&path).unwrap(), tokenizer);

        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(Tokenizer::load(&path).unwrap_err().to_string().contains("truncated"));
        let mut flipped = bytes.clone();
        flipped[bytes.len() - 3] ^= 0x40;
        std::fs::write(&path, &flipped).unwrap();
        assert!(Tokenizer::load(&path).unwrap_err().to_string().contains("checksum"));
        let mut inconsistent = tokenizer.clone();
        inconsistent.item_ids.pop();
        inconsistent.save(&path).unwrap();
        assert!(Tokenizer::load(&path).unwrap_err().to_string().contains("63 item ids but 64 semantic IDs"));
    }

    /// Added items get free IDs under the same codebooks and join the trie; nobody else's ID
    /// moves. Copies of one embedding fill its prefix's free disambiguation codes, then move to
    /// the next nearest prefix.
    #[test]
    fn added_items_get_free_ids_nearest_their_embedding() {
        let dim = 4;
        let x = gaussian(64, dim, 5);
        let config = RqConfig { levels: 2, codes: 4, max_iters: 5, seed: 2 };
        let (codebooks, semantic_ids, report) = fit(&x, dim, &config).unwrap();
        let mut tokenizer = Tokenizer {
            dataset: "gauss".into(),
            item_ids: (0..64).map(|i| format!("item{i}")).collect(),
            embeddings: ItemEmbeddings { dim, data: x.clone() },
            embedding: EmbeddingConfig { dim, ..EmbeddingConfig::default() },
            config,
            codebooks,
            semantic_ids,
            report,
        };
        let before = tokenizer.clone();
        let sizes = before.semantic_ids.level_sizes.clone();
        assert_eq!(sizes.len(), 3, "64 items in 16 prefixes collide, so IDs have a disambiguation code");
        let copies = sizes[2] + 2;
        let ids: Vec<String> = (0..copies).map(|i| format!("new{i}")).collect();
        let row = &x[..dim];
        tokenizer.add_items(&ids, &row.repeat(copies)).unwrap();
        // The nearest prefix that trained items hold and that still has a free disambiguation code.
        let candidates = before.codebooks.encode(row, 64);
        let holds = |prefix: &[Code]| (0..64).filter(|&i| &before.semantic_ids.id_of(i)[..2] == prefix).count();
        let held: Vec<Vec<Code>> = (0..64).map(|i| before.semantic_ids.id_of(i)[..2].to_vec()).collect();
        let error = |p: &Vec<Code>| before.codebooks.error(row, p);
        let nearest = held.iter().filter(|p| holds(p) < sizes[2]).min_by(|a, b| error(a).total_cmp(&error(b))).unwrap();
        let mut seen = std::collections::HashSet::new();
        for item in 0..64 + copies as u32 {
            let id = tokenizer.semantic_ids.id_of(item).to_vec();
            assert_eq!(tokenizer.semantic_ids.item_of(&id), Some(item), "in the trie");
            assert!(seen.insert(id.clone()), "IDs stay unique");
            if item < 64 {
                assert_eq!(id, before.semantic_ids.id_of(item), "old IDs do not move");
            }
        }
        let prefixes: Vec<Vec<Code>> =
            (64..64 + copies as u32).map(|i| tokenizer.semantic_ids.id_of(i)[..2].to_vec()).collect();
        assert_eq!(&prefixes[0], nearest, "the first copy takes the nearest held prefix with room");
        assert!(prefixes.iter().all(|p| candidates.contains(p) || held.contains(p)));
        assert!(prefixes.iter().any(|p| p != nearest), "a full prefix sends copies to the next nearest");
        assert_eq!(tokenizer.item_ids.len(), tokenizer.embeddings.len());
        let again = tokenizer.add_items(&ids[..1], row).unwrap_err();
        assert!(again.to_string().contains("already in the catalogue"), "{again}");
    }

    #[test]
    fn too_many_codes_is_a_clear_error() {
        let err = fit(&gaussian(10, 2, 1), 2, &RqConfig { codes: 16, ..RqConfig::default() }).unwrap_err();
        assert!(err.to_string().contains("10 items cannot fill 16 codes"), "{err}");
    }
}
