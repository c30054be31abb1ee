//! `onerec bench`: speed of a stage on synthetic data of a chosen size, as medians over runs.

use std::fmt;
use std::time::Instant;

use clap::{Args, Subcommand};
use onerec_core::tokenizer::{self, RqConfig, TokenizerReport};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use super::print_report;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// RQ-KMeans on synthetic item embeddings (a mixture of topics), e.g. 1M items × 64 dims.
    Tokenize(TokenizeBenchArgs),
}

#[derive(Args, Debug)]
pub struct TokenizeBenchArgs {
    #[arg(long, default_value_t = 1_000_000)]
    pub items: usize,
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    #[arg(long, default_value_t = 3)]
    pub levels: usize,
    #[arg(long, default_value_t = 256)]
    pub codes: usize,
    /// Iteration cap of each level's k-means.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Latent topics of the synthetic embeddings.
    #[arg(long, default_value_t = 1000)]
    pub topics: usize,
    /// Spread of items around their topic centre (the centres have unit spread per dimension).
    #[arg(long, default_value_t = 1.0)]
    pub noise: f32,
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct TokenizeBench {
    items: usize,
    dim: usize,
    levels: usize,
    codes: usize,
    threads: usize,
    seconds: Vec<f64>,
    median_seconds: f64,
    last_report: TokenizerReport,
}

impl fmt::Display for TokenizeBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bench tokenize: {} items × {} dims, {} × {} codes, {} threads",
            self.items, self.dim, self.levels, self.codes, self.threads
        )?;
        let runs: Vec<String> = self.seconds.iter().map(|s| format!("{s:.2}")).collect();
        writeln!(f, "runs (s): {}", runs.join(", "))?;
        writeln!(f, "median: {:.2} s", self.median_seconds)?;
        write!(f, "{}", self.last_report)
    }
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Tokenize(args) => bench_tokenize(args),
    }
}

fn bench_tokenize(args: TokenizeBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let embeddings = topic_mixture(args.items, args.dim, args.topics.max(1), args.noise, args.seed);
    let config = RqConfig { levels: args.levels, codes: args.codes, max_iters: args.iters, seed: args.seed };
    let mut seconds = Vec::with_capacity(args.runs);
    let mut last_report = None;
    for run in 0..args.runs {
        let started = Instant::now();
        let (_, _, report) = tokenizer::fit(&embeddings, args.dim, &config)?;
        seconds.push(started.elapsed().as_secs_f64());
        if !args.json {
            eprintln!("run {}: {:.2} s", run + 1, seconds[run]);
        }
        last_report = Some(report);
    }
    let mut sorted = seconds.clone();
    sorted.sort_by(f64::total_cmp);
    let bench = TokenizeBench {
        items: args.items,
        dim: args.dim,
        levels: args.levels,
        codes: args.codes,
        threads: rayon::current_num_threads(),
        median_seconds: sorted[sorted.len() / 2],
        seconds,
        last_report: last_report.expect("at least one run"),
    };
    print_report(&bench, args.json)
}

/// Unit vectors scattered around `topics` random centres, like embeddings of items on topics.
fn topic_mixture(items: usize, dim: usize, topics: usize, noise: f32, seed: u64) -> Vec<f32> {
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
