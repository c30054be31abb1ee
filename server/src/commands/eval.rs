//! `onerec eval`: the full-ranking protocol of DESIGN.md §3 on the validation and test splits,
//! for a trained snapshot and, always, the popularity baseline on the same split.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Args;
use onerec_core::device::{self, DeviceChoice};
use onerec_core::eval::{self, RankingReport, Stage};
use onerec_core::recommend::Recommender;
use onerec_core::snapshot::Snapshot;
use serde::Serialize;

use super::{DataArgs, print_report};

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// A snapshot written by `onerec train`; without it only the baseline is measured.
    #[arg(long)]
    pub snapshot: Option<PathBuf>,
    /// Beam width: the model's ranked list is the beam.
    #[arg(long, default_value_t = 100)]
    pub beam: usize,
    /// auto, cpu or gpu.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report {
    dataset: String,
    model: Vec<RankingReport>,
    /// Share of generated items that are real catalogue items.
    legality: Option<f64>,
    popularity: Vec<RankingReport>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "data set: {} (leave-one-out, full ranking, seen items excluded)", self.dataset)?;
        for r in &self.model {
            write!(f, "\nmodel       {r}")?;
        }
        if let Some(legality) = self.legality {
            write!(f, "\nlegal outputs: {:.2}%", 100.0 * legality)?;
        }
        for r in &self.popularity {
            write!(f, "\npopularity  {r}")?;
        }
        Ok(())
    }
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let dataset = args.data.load()?;
    let stages = [Stage::Valid, Stage::Test];
    let (model, legality) = match &args.snapshot {
        None => (Vec::new(), None),
        Some(path) => {
            let snapshot = Snapshot::load(path)?;
            snapshot.check_dataset(&dataset)?;
            let (device, description) = device::select(args.device)?;
            eprintln!("device: {description}");
            let model = snapshot.model(&device)?;
            let recommender =
                Recommender { model: &model, config: &snapshot.model, tokenizer: &snapshot.tokenizer, device: &device };
            let (generated, legal) = (AtomicUsize::new(0), AtomicUsize::new(0));
            let ids = &snapshot.tokenizer.semantic_ids;
            let reports = stages.map(|stage| {
                eval::evaluate(&dataset, stage, |u, input| {
                    let mut scores = vec![f32::NEG_INFINITY; dataset.n_items()];
                    for h in recommender.recommend(&dataset.users[u as usize], input, args.beam, true) {
                        generated.fetch_add(1, Ordering::Relaxed);
                        if ids.item_of(&h.id) == Some(h.item) {
                            legal.fetch_add(1, Ordering::Relaxed);
                            scores[h.item as usize] = h.log_prob;
                        }
                    }
                    scores
                })
            });
            let legality = legal.into_inner() as f64 / generated.into_inner().max(1) as f64;
            (reports.to_vec(), Some(legality))
        }
    };
    let popularity_scores = eval::popularity(&dataset);
    let popularity = stages.map(|stage| eval::evaluate(&dataset, stage, |_, _| popularity_scores.clone())).to_vec();
    print_report(&Report { dataset: dataset.name.clone(), model, legality, popularity }, args.json)
}
