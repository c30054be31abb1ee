//! `onerec data`: fetch MovieLens-100K, print statistics, write synthetic data.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use onerec_core::data::fetch::fetch_ml100k;
use onerec_core::data::stats::DataStats;
use onerec_core::data::synth::{SynthConfig, write_synth};

use super::{DataArgs, ServedArgs, print_report};

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Download a public data set into a folder (MovieLens-100K, from the RecBole wheel on PyPI).
    Fetch(FetchArgs),
    /// Print users, items, events, sparsity and sequence-length percentiles.
    Stats(StatsArgs),
    /// Write a seeded synthetic data set (items with topics and tags, users with drifting interests).
    Synth(SynthArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PublicDataset {
    #[value(name = "ml-100k")]
    Ml100k,
}

#[derive(Args, Debug)]
pub struct FetchArgs {
    pub dataset: PublicDataset,
    /// Folder the data set's own folder is created in.
    #[arg(long, default_value = "data")]
    pub dir: PathBuf,
    /// Use this local recbole-1.2.1 wheel instead of downloading it.
    #[arg(long)]
    pub wheel: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub served: ServedArgs,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    #[arg(long, default_value_t = 1000)]
    pub items: usize,
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Mean events per user.
    #[arg(long, default_value_t = 30)]
    pub events_per_user: usize,
    #[arg(long, default_value_t = 10)]
    pub topics: usize,
    /// Probability, per event, that one of a user's interests is replaced.
    #[arg(long, default_value_t = 0.02)]
    pub drift: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Folder to write the RecBole atomic files into.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(command: DataCommand) -> anyhow::Result<()> {
    match command {
        DataCommand::Fetch(args) => {
            let PublicDataset::Ml100k = args.dataset;
            let path = fetch_ml100k(&args.dir, args.wheel.as_deref())?;
            println!("MovieLens-100K is ready in {}", path.display());
            Ok(())
        }
        DataCommand::Stats(args) => print_report(&DataStats::compute(&args.data.load_with(&args.served)?), args.json),
        DataCommand::Synth(args) => {
            let config = SynthConfig {
                items: args.items,
                users: args.users,
                events_per_user: args.events_per_user,
                topics: args.topics,
                drift: args.drift,
                seed: args.seed,
                ..SynthConfig::default()
            };
            let summary = write_synth(&config, &args.out)?;
            println!(
                "wrote {} items, {} users and {} events to {}",
                summary.items,
                summary.users,
                summary.events,
                args.out.display()
            );
            Ok(())
        }
    }
}
