//! One module per subcommand, plus the arguments they share.

pub mod align;
pub mod bench;
pub mod data;
pub mod eval;
pub mod items;
pub mod reward;
pub mod serve;
pub mod store;
pub mod tokenize;
pub mod train;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use onerec_core::api::UserEvent;
use onerec_core::data::csv::{CsvOptions, ItemCsv};
use onerec_core::data::{DataFormat, DataSource, Dataset};

use crate::serve::store::read_events;

/// Where the interaction log is and how to read it.
#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    /// A MovieLens folder, a RecBole folder or `.inter` file, or a CSV file.
    #[arg(long)]
    pub data: PathBuf,
    /// Format of `--data`: auto, ml-100k, ml-1m, recbole or csv.
    #[arg(long, default_value = "auto")]
    pub format: DataFormat,
    /// CSV only: which columns hold what, e.g. `user=uid,item=movie,time=ts,rating=stars`.
    #[arg(long)]
    pub columns: Option<String>,
    /// CSV only: field delimiter.
    #[arg(long, default_value = ",")]
    pub delimiter: char,
    /// CSV only: an item catalogue CSV.
    #[arg(long)]
    pub item_file: Option<PathBuf>,
    /// CSV only: columns of the item catalogue, e.g. `id=movie,title=name,tags=genres`.
    #[arg(long, default_value = "id=item_id,title=title,tags=tags")]
    pub item_columns: String,
    /// Hold events out at one global moment, this quantile of all timestamps (e.g. 0.9), instead
    /// of leave-one-out: each user's first event after it is the test target. Train and evaluate
    /// with the same value.
    #[arg(long, value_parser = quantile)]
    pub time_cut: Option<f64>,
}

fn quantile(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(q) if q > 0.0 && q < 1.0 => Ok(q),
        _ => Err(format!("{s:?} is not a quantile strictly between 0 and 1")),
    }
}

/// Events a server stored, to add to the interaction log.
#[derive(Args, Clone, Debug)]
pub struct ServedArgs {
    /// Add the events a server stored since the data set, mapped as the server reads them
    /// (likes, skips, ratings, watch time; undos take back; new users join): a stopped server's
    /// `--data-dir`, or a file of the JSON Lines a running one answers at `GET /admin/events`.
    #[arg(long)]
    pub events: Option<PathBuf>,
}

impl ServedArgs {
    /// The stored events, if any were asked for.
    pub fn read(&self) -> anyhow::Result<Option<Vec<UserEvent>>> {
        let Some(path) = &self.events else { return Ok(None) };
        if path.is_dir() {
            return Ok(Some(read_events(path)?));
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let events = text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line).map_err(|e| {
                    anyhow::anyhow!("{}:{}: not an event of GET /admin/events: {e}", path.display(), i + 1)
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Some(events))
    }
}

impl DataArgs {
    /// Loads the data set, with the served events when given (before a time cut, so that the
    /// cut sees them), and prints what the loader had to assume and what the events added.
    pub fn load_with(&self, served: &ServedArgs) -> anyhow::Result<Dataset> {
        let dataset = self.load_log()?;
        let dataset = match served.read()? {
            None => dataset,
            Some(events) => {
                let (merged, merge) = dataset.with_served(&events);
                eprintln!(
                    "served events: {} read, {} added to the log, {} new users, {} of unknown items left out",
                    merge.read, merge.added, merge.new_users, merge.unknown_items
                );
                merged
            }
        };
        Ok(match self.time_cut {
            Some(q) => dataset.cut_at_time_quantile(q),
            None => dataset,
        })
    }

    /// Loads the data set alone.
    pub fn load(&self) -> anyhow::Result<Dataset> {
        self.load_with(&ServedArgs { events: None })
    }

    /// Reads the log and prints what the loader had to assume.
    fn load_log(&self) -> anyhow::Result<Dataset> {
        let delimiter = u8::try_from(self.delimiter)
            .map_err(|_| anyhow::anyhow!("--delimiter must be a single ASCII character"))?;
        let csv = CsvOptions {
            columns: self.columns.as_deref().map(str::parse).transpose()?,
            delimiter,
            items: match &self.item_file {
                Some(path) => Some(ItemCsv { path: path.clone(), columns: self.item_columns.parse()? }),
                None => None,
            },
        };
        let dataset = DataSource { path: self.data.clone(), format: self.format, csv }.load()?;
        for warning in &dataset.warnings {
            eprintln!("warning: {warning}");
        }
        Ok(dataset)
    }
}

/// Where a long run keeps its checkpoint, and whether it continues from it.
#[derive(Args, Clone, Debug)]
pub struct CheckpointArgs {
    /// Checkpoint written as the run goes (default: the output path with `.ckpt`).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Continue from the checkpoint instead of starting over (the run's length may change).
    #[arg(long)]
    pub resume: bool,
}

impl CheckpointArgs {
    /// The checkpoint path for a run that writes `out`.
    pub fn path(&self, out: &Path) -> PathBuf {
        self.checkpoint.clone().unwrap_or_else(|| out.with_extension("ckpt"))
    }
}

/// `onerec devices`: what wgpu sees, and what `--device auto` makes of it.
pub fn devices() -> anyhow::Result<()> {
    let adapters = onerec_core::device::adapters();
    if adapters.is_empty() {
        println!("wgpu sees no adapter");
    }
    for adapter in adapters {
        println!("adapter: {adapter}");
    }
    let (_, description) = onerec_core::device::select(onerec_core::device::DeviceChoice::Auto)?;
    println!("--device auto: {description}");
    Ok(())
}

/// Prints a report as one JSON object (for scripts) or as text (for people).
pub fn print_report<T: serde::Serialize + std::fmt::Display>(report: &T, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}
