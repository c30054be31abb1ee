//! `onerec tokenize`: item embeddings, then RQ-KMeans semantic IDs, saved as one tokenizer file.

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use onerec_core::embed::{self, EmbeddingConfig};
use onerec_core::tokenizer::{self, RqConfig, Tokenizer, TokenizerReport};
use serde::Serialize;

use super::{DataArgs, print_report};

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Where to write the tokenizer.
    #[arg(long, default_value = "tokenizer.bin")]
    pub out: PathBuf,
    /// Levels of the residual quantiser (codes per semantic ID).
    #[arg(long, default_value_t = 3)]
    pub levels: usize,
    /// Codes per level (default: sized to the catalogue, see `RqConfig::codes_for`).
    #[arg(long)]
    pub codes: Option<usize>,
    /// Item embedding dimension.
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// Of those, dimensions given to the collaborative signal.
    #[arg(long, default_value_t = 32)]
    pub collab_dims: usize,
    /// Co-occurrence window, in positions of a user's sequence.
    #[arg(long, default_value_t = 20)]
    pub window: usize,
    /// Iteration cap of each level's k-means.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Everything `onerec tokenize` reports.
#[derive(Serialize)]
struct Report {
    dataset: String,
    output: PathBuf,
    embedding_seconds: f64,
    tokenizer: TokenizerReport,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "data set: {}", self.dataset)?;
        writeln!(f, "item embeddings: {:.2} s", self.embedding_seconds)?;
        writeln!(f, "{}", self.tokenizer)?;
        write!(f, "wrote {}", self.output.display())
    }
}

pub fn run(args: TokenizeArgs) -> anyhow::Result<()> {
    let dataset = args.data.load()?;
    let started = Instant::now();
    let embed_config = EmbeddingConfig {
        dim: args.dim,
        collab_dims: args.collab_dims,
        cooccurrence: embed::CooccurrenceConfig { window: args.window, ..Default::default() },
        seed: args.seed,
        ..EmbeddingConfig::default()
    };
    let embeddings = embed::item_embeddings(&dataset, &embed_config)?;
    let embedding_seconds = started.elapsed().as_secs_f64();
    let codes = args.codes.unwrap_or_else(|| RqConfig::codes_for(dataset.items.len(), args.levels));
    let config = RqConfig { levels: args.levels, codes, max_iters: args.iters, seed: args.seed };
    let (codebooks, semantic_ids, report) = tokenizer::fit(&embeddings.data, embeddings.dim, &config)?;
    let tokenizer = Tokenizer {
        dataset: dataset.name.clone(),
        item_ids: dataset.items.iter().map(|i| i.id.clone()).collect(),
        embeddings,
        embedding: embed_config,
        config,
        codebooks,
        semantic_ids,
        report: report.clone(),
    };
    tokenizer.save(&args.out)?;
    let report = Report { dataset: dataset.name, output: args.out, embedding_seconds, tokenizer: report };
    print_report(&report, args.json)
}
