//! `onerec eval`: the full-ranking protocol of DESIGN.md §3 on the validation and test splits.

use std::fmt;

use clap::Args;
use onerec_core::eval::{self, RankingReport, Stage};
use serde::Serialize;

use super::{DataArgs, print_report};

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The baseline every model is measured next to, on the same split.
#[derive(Serialize)]
struct Report {
    dataset: String,
    popularity: Vec<RankingReport>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "data set: {} (leave-one-out, full ranking, seen items excluded)", self.dataset)?;
        let lines: Vec<String> = self.popularity.iter().map(|r| format!("popularity  {r}")).collect();
        write!(f, "{}", lines.join("\n"))
    }
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let dataset = args.data.load()?;
    let popularity = eval::popularity(&dataset);
    let reports =
        [Stage::Valid, Stage::Test].into_iter().map(|stage| eval::evaluate(&dataset, stage, |_, _| popularity.clone()));
    print_report(&Report { dataset: dataset.name.clone(), popularity: reports.collect() }, args.json)
}
