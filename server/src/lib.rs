//! The onerec command line and HTTP server, as a library: `main.rs` only parses and dispatches,
//! so that the commands and routes ([`serve::router`]) are testable in-process.

pub mod commands;
pub mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "onerec", version, about = "An end-to-end generative recommender in the manner of OneRec")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Get, inspect and synthesise interaction data.
    #[command(subcommand)]
    Data(commands::data::DataCommand),
    /// Embed items and give each a semantic ID (RQ-KMeans).
    Tokenize(commands::tokenize::TokenizeArgs),
    /// Train the generative model on semantic IDs (next-token loss); writes a snapshot.
    Train(commands::train::TrainArgs),
    /// Train the reward model (per-objective towers fused into a P-score).
    #[command(subcommand)]
    Reward(commands::reward::RewardCommand),
    /// Align a trained snapshot with a reward model (ECPO or DPO).
    Align(commands::align::AlignArgs),
    /// Measure ranking quality on the held-out splits (DESIGN.md §3).
    Eval(commands::eval::EvalArgs),
    /// Add items to a trained snapshot, or retire them, without retraining.
    #[command(subcommand)]
    Items(commands::items::ItemsCommand),
    /// Serve feeds and collect events over HTTP.
    Serve(commands::serve::ServeArgs),
    /// Check or repair the server's event store.
    #[command(subcommand)]
    Store(commands::store::StoreCommand),
    /// Measure the speed of a stage.
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
    /// List the GPU adapters wgpu sees, and the device `--device auto` picks.
    Devices,
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Data(c) => commands::data::run(c),
        Command::Tokenize(a) => commands::tokenize::run(a),
        Command::Train(a) => commands::train::run(a),
        Command::Reward(c) => commands::reward::run(c),
        Command::Align(a) => commands::align::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Items(c) => commands::items::run(c),
        Command::Serve(a) => commands::serve::run(a),
        Command::Store(c) => commands::store::run(c),
        Command::Bench(c) => commands::bench::run(c),
        Command::Devices => commands::devices(),
    }
}
