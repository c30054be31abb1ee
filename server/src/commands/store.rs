//! `onerec store check` and `onerec store repair`: what an operator runs when `onerec serve`
//! refuses its event store; `onerec store migrate`: a PostgreSQL store's schema brought up to date
//! before the replicas are.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};

use super::print_report;
use crate::serve::store;

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Verify every event and the store's counters; exits non-zero when anything is damaged.
    Check(StoreArgs),
    /// Rewrite the store without its damaged events, keeping the original as a backup beside it.
    Repair(StoreArgs),
    /// Bring a PostgreSQL store's schema up to this onerec's version (every replica also does so
    /// at start).
    Migrate(MigrateArgs),
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The `postgres://` URL the replicas are given as `--store`.
    #[arg(long, env = "ONEREC_STORE", hide_env_values = true)]
    pub store: String,
}

#[derive(Args, Debug)]
pub struct StoreArgs {
    /// The server's `--data-dir`. The server must not be running.
    #[arg(long, default_value = "data/serve")]
    pub data_dir: PathBuf,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Check(args) => {
            let report = store::check(&args.data_dir)?;
            print_report(&report, args.json)?;
            if !report.is_clean() {
                bail!("{} is damaged; `onerec store repair` drops what is damaged", report.file.display());
            }
            Ok(())
        }
        StoreCommand::Repair(args) => print_report(&store::repair(&args.data_dir)?, args.json),
        StoreCommand::Migrate(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (from, to) = runtime.block_on(store::migrate(&args.store))?;
            match from == to {
                true => println!("the schema is at version {to}, this onerec's; nothing to do"),
                false => println!("migrated the schema from version {from} to {to}"),
            }
            Ok(())
        }
    }
}
