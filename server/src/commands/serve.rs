//! `onerec serve`: the HTTP server over a trained snapshot.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use onerec_core::device::{self, DeviceChoice};

use super::DataArgs;
use crate::serve::{self, BatchConfig, Limits, ServeConfig};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A snapshot written by `onerec train`.
    #[arg(long)]
    pub snapshot: PathBuf,
    /// The interaction log the snapshot was trained on: its users and their histories.
    #[command(flatten)]
    pub data: DataArgs,
    /// Where the server keeps its state (the event store).
    #[arg(long, default_value = "data/serve")]
    pub data_dir: PathBuf,
    /// The built web app (`trunk build`), served at `/`.
    #[arg(long, default_value = "dist")]
    pub web_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port (the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// auto, cpu or gpu.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Bearer token for `/admin/*`; without it admin routes answer 403.
    #[arg(long, env = "ONEREC_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Decoding threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Most requests decoded together.
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// Milliseconds a request waits for others to batch with.
    #[arg(long, default_value_t = 2)]
    pub batch_window_ms: u64,
    /// Decodes admitted at once; beyond it feeds answer 503.
    #[arg(long, default_value_t = 64)]
    pub max_decodes: usize,
    /// Per-request time limit in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let (device, description) = device::select(args.device)?;
    tracing::info!("device: {description}");
    let dataset = args.data.load()?;
    let config = ServeConfig {
        snapshot: args.snapshot,
        dataset,
        data_dir: args.data_dir,
        web_dir: args.web_dir,
        device,
        addr: args.addr,
        admin_token: args.admin_token.filter(|t| !t.is_empty()),
        limits: Limits {
            max_decodes: args.max_decodes,
            timeout: Duration::from_millis(args.timeout_ms),
            ..Limits::default()
        },
        batching: BatchConfig {
            window: Duration::from_millis(args.batch_window_ms),
            max_batch: args.max_batch.max(1),
            workers: args.workers.max(1),
        },
    };
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(serve::run(config))
}
