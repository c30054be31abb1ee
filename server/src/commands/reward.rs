//! `onerec reward train`: the multi-task reward model that alignment maximises (its P-score).

use std::fmt;
use std::ops::ControlFlow;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use onerec_core::device::{self, DeviceChoice};
use onerec_core::generator::snapshot::check_catalogue;
use onerec_core::reward::{Objective, RewardReport, RewardTrainConfig, train_reward};
use onerec_core::tokenizer::Tokenizer;
use serde::Serialize;

use super::{DataArgs, print_report};

#[derive(Subcommand, Debug)]
pub enum RewardCommand {
    /// Train the reward model on the training split; report AUC and gAUC per objective on validation.
    Train(RewardTrainArgs),
}

#[derive(Args, Debug)]
pub struct RewardTrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The tokenizer of the generator this reward model will align (checked to share the catalogue).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[arg(long, default_value = "reward.snap")]
    pub out: PathBuf,
    /// P-score weight of each objective, comma-separated, in the order the report lists them
    /// (MovieLens: rating>=4, rating<=2; event data: click, like, skip, watch as present).
    #[arg(long, value_delimiter = ',')]
    pub weights: Option<Vec<f32>>,
    #[arg(long, default_value_t = RewardTrainConfig::default().epochs)]
    pub epochs: usize,
    #[arg(long, default_value_t = RewardTrainConfig::default().learning_rate)]
    pub lr: f64,
    #[arg(long, default_value_t = RewardTrainConfig::default().dim)]
    pub dim: usize,
    #[arg(long, default_value_t = RewardTrainConfig::default().seed)]
    pub seed: u64,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    dataset: &'a str,
    weights: &'a [f32],
    output: &'a PathBuf,
    reward: &'a RewardReport,
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.reward;
        writeln!(
            f,
            "reward model on {}: {} training events, {} validation events",
            self.dataset, r.train_events, r.valid_events
        )?;
        for (i, (loss, auc)) in r.epochs.iter().enumerate() {
            writeln!(f, "epoch {:>2}: loss {loss:.4}  mean valid AUC {auc:.4}", i + 1)?;
        }
        for (o, w) in r.objectives.iter().zip(self.weights) {
            writeln!(
                f,
                "{:<10} weight {w}: positive rate {:.3}  AUC {:.4} gAUC {:.4}  (popularity: AUC {:.4} gAUC {:.4})",
                o.name, o.positive_rate, o.auc, o.gauc, o.popularity_auc, o.popularity_gauc
            )?;
        }
        write!(f, "kept epoch {}; wrote {}", r.best_epoch, self.output.display())
    }
}

pub fn run(command: RewardCommand) -> anyhow::Result<()> {
    let RewardCommand::Train(args) = command;
    let dataset = args.data.load()?;
    if let Some(path) = &args.tokenizer {
        check_catalogue(&Tokenizer::load(path)?, &dataset)?;
    }
    let objectives = Objective::for_dataset(&dataset);
    if objectives.is_empty() {
        anyhow::bail!("{} has neither ratings nor both positive and negative event kinds", dataset.name);
    }
    let weights = args.weights.clone().unwrap_or_else(|| vec![1.0; objectives.len()]);
    if weights.len() != objectives.len() {
        let names: Vec<String> = objectives.iter().map(|o| o.name()).collect();
        anyhow::bail!("--weights has {} values but the objectives are {}", weights.len(), names.join(", "));
    }
    let (device, description) = device::select(args.device)?;
    eprintln!("device: {description}");
    let config = RewardTrainConfig {
        epochs: args.epochs,
        learning_rate: args.lr,
        dim: args.dim,
        seed: args.seed,
        ..Default::default()
    };
    let snapshot = train_reward(&dataset, &objectives, &weights, &config, &device, &mut |epoch, loss, auc| {
        eprintln!("epoch {epoch}: loss {loss:.4} mean valid AUC {auc:.4}");
        ControlFlow::Continue(())
    })?;
    snapshot.save(&args.out)?;
    print_report(
        &Report { dataset: &dataset.name, weights: &weights, output: &args.out, reward: &snapshot.report },
        args.json,
    )
}
