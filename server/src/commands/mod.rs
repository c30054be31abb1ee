//! One module per subcommand, plus the arguments they share.

pub mod align;
pub mod bench;
pub mod data;
pub mod eval;
pub mod reward;
pub mod serve;
pub mod store;
pub mod tokenize;
pub mod train;

use std::path::{Path, PathBuf};

use clap::Args;
use onerec_core::data::csv::{CsvOptions, ItemCsv};
use onerec_core::data::{DataFormat, DataSource, Dataset};

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

impl DataArgs {
    /// Loads the data set and prints what the loader had to assume.
    pub fn load(&self) -> anyhow::Result<Dataset> {
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
        Ok(match self.time_cut {
            Some(q) => dataset.cut_at_time_quantile(q),
            None => dataset,
        })
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
