//! `onerec serve`: the HTTP server over a trained snapshot.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use onerec_core::device::{self, DeviceChoice};

use super::DataArgs;
use crate::serve::store::StoreLocation;
use crate::serve::{self, BatchConfig, FreshSlots, Limits, Quotas, ServeConfig};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A snapshot written by `onerec train`.
    #[arg(long)]
    pub snapshot: PathBuf,
    /// The interaction log the snapshot was trained on: its users and their histories.
    #[command(flatten)]
    pub data: DataArgs,
    /// Where the server keeps its state: the event store (unless `--store` names PostgreSQL), the
    /// token secret, the items added while serving.
    #[arg(long, default_value = "data/serve")]
    pub data_dir: PathBuf,
    /// Where events are kept: `redb`, a file in `--data-dir` that one server owns, or a
    /// `postgres://user@host/db` URL that several replicas share (see the README's "Scaling out").
    #[arg(long, env = "ONEREC_STORE", hide_env_values = true, default_value = "redb")]
    pub store: StoreLocation,
    /// The built web app (`trunk build`), served at `/`.
    #[arg(long, default_value = "dist")]
    pub web_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port (the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// auto, cpu or gpu.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Where to serve `/metrics` without a token (e.g. 127.0.0.1:9090); without it `/metrics`
    /// is served on `--addr` behind the admin token.
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Bearer token for `/admin/*` and `/metrics`; without it they answer 403.
    #[arg(long, env = "ONEREC_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// An API key for events and user-scoped reads (repeatable; the environment variable takes
    /// a comma-separated list). Without any, a key is made for this run and logged.
    #[arg(long = "api-key", env = "ONEREC_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,
    /// Secret that signs user tokens; without it one is kept in `--data-dir`/token-secret.
    #[arg(long, env = "ONEREC_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Requests per second per API key (bursts of twice as many).
    #[arg(long, default_value_t = Quotas::default().key_per_second)]
    pub key_rate: u32,
    /// Requests per second per user token (bursts of twice as many).
    #[arg(long, default_value_t = Quotas::default().user_per_second)]
    pub user_rate: u32,
    /// Events one user may add per hour; 0 for no cap.
    #[arg(long, default_value_t = Quotas::default().user_events_per_hour)]
    pub user_events_per_hour: u32,
    /// Connections served at once; by default three quarters of the open-file limit.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Milliseconds a connection may take to send a request's headers; the same bound closes a
    /// keep-alive connection idle that long.
    #[arg(long, default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// Milliseconds a whole request may take, receiving its body included.
    #[arg(long, default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Decoding threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Most requests decoded together.
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// Milliseconds a request waits for others to batch with; 0 batches only what is already
    /// queued, so that no request waits for company.
    #[arg(long, default_value_t = 0)]
    pub batch_window_ms: u64,
    /// Decodes admitted at once; beyond it feeds answer 503.
    #[arg(long, default_value_t = 64)]
    pub max_decodes: usize,
    /// Snapshots held at once: `main` and the A/B arms added by `POST /admin/reload`.
    #[arg(long, default_value_t = 4)]
    pub max_models: usize,
    /// The share of each slate kept for fresh items, those added by `POST /admin/items` in the
    /// last `--fresh-days` (rounded to whole positions: 0.1 keeps 1 of 10); 0 keeps none.
    #[arg(long, default_value_t = 0.1, value_parser = share)]
    pub fresh_share: f64,
    /// How many days an added item counts as fresh.
    #[arg(long, default_value_t = 7.0)]
    pub fresh_days: f64,
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
        data_dir: args.data_dir,
        store: args.store,
        web_dir: args.web_dir,
        device,
        addr: args.addr,
        metrics_addr: args.metrics_addr,
        admin_token: args.admin_token.filter(|t| !t.is_empty()),
        api_keys: args.api_keys.into_iter().filter(|k| !k.is_empty()).collect(),
        token_secret: args.token_secret,
        limits: Limits {
            max_decodes: args.max_decodes,
            timeout: Duration::from_millis(args.timeout_ms),
            request_timeout: Duration::from_millis(args.request_timeout_ms),
            ..Limits::default()
        },
        quotas: Quotas {
            key_per_second: args.key_rate,
            user_per_second: args.user_rate,
            user_events_per_hour: args.user_events_per_hour,
        },
        max_connections: args.max_connections,
        header_timeout: Duration::from_millis(args.header_timeout_ms),
        max_models: args.max_models.max(1),
        fresh: FreshSlots {
            share: args.fresh_share,
            max_age: Duration::try_from_secs_f64(args.fresh_days * 86_400.0)
                .map_err(|_| anyhow::anyhow!("--fresh-days must be a number of days ≥ 0, not {}", args.fresh_days))?,
        },
        batching: BatchConfig {
            window: Duration::from_millis(args.batch_window_ms),
            max_batch: args.max_batch.max(1),
            workers: args.workers.max(1),
        },
    };
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(serve::run(config, dataset))
}

/// A share in [0, 1].
fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("a share is a number in [0, 1], not {text:?}")),
    }
}
