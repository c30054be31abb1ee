//! `onerec train`: next-token training of the generative model, saved as a snapshot.

use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use onerec_core::codec;
use onerec_core::device::{self, DeviceChoice};
use onerec_core::generator::model::{ModelConfig, Preset};
use onerec_core::generator::snapshot::Snapshot;
use onerec_core::generator::train::{self, Progress, Recency, TrainConfig, TrainReport};
use onerec_core::generator::trend::TrendConfig;
use onerec_core::tokenizer::Tokenizer;
use onerec_core::training::Checkpointing;
use serde::Serialize;

use super::{CheckpointArgs, DataArgs, ServedArgs, print_report};

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub served: ServedArgs,
    /// The tokenizer written by `onerec tokenize` for this data set.
    #[arg(long, required_unless_present = "init_from")]
    pub tokenizer: Option<PathBuf>,
    /// Model size: tiny, small or base.
    #[arg(long, default_value = "small")]
    pub preset: Preset,
    /// Fine-tune this snapshot instead of starting cold: its model sizes, tokenizer and weights
    /// (`--tokenizer`, `--preset` and `--dropout` do not apply). Give a lower `--lr` than a cold
    /// start's, such as 5e-4.
    #[arg(long, conflicts_with_all = ["tokenizer", "preset", "dropout", "trend_days"])]
    pub init_from: Option<PathBuf>,
    /// Train on the windows whose newest event falls in the last this many days of the log
    /// (counted back from its newest event), plus `--replay` of the older ones.
    #[arg(long)]
    pub recent_days: Option<u32>,
    /// With `--recent-days`: the share of older windows replayed each epoch, drawn anew each
    /// time, so that the model keeps what it knew of the rest of the catalogue.
    #[arg(long, default_value_t = 0.2, requires = "recent_days")]
    pub replay: f64,
    /// Where to write the snapshot.
    #[arg(long, default_value = "model.snap")]
    pub out: PathBuf,
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    pub epochs: usize,
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    pub batch_size: usize,
    #[arg(long, default_value_t = TrainConfig::default().learning_rate)]
    pub lr: f64,
    /// Epochs without a better validation NDCG@10 before stopping early. The default is the default
    /// schedule's length, so that schedule runs whole: validation is noisy from epoch to epoch and
    /// rises until its end.
    #[arg(long, default_value_t = TrainConfig::default().patience)]
    pub patience: usize,
    /// Beam width of the validation decoding.
    #[arg(long, default_value_t = TrainConfig::default().valid_beam)]
    pub beam: usize,
    /// Dropout of the embeddings and residual branches (default: the preset's).
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Days of the "popular now" input: the model reads what everyone interacted with over this
    /// many days before each request; 0 leaves the input out (for logs without real time).
    #[arg(long, default_value_t = TrendConfig::default().window_seconds / 86_400)]
    pub trend_days: i64,
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    pub seed: u64,
    /// auto, cpu or gpu.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    dataset: &'a str,
    device: String,
    parameters: usize,
    seconds: f64,
    output: &'a PathBuf,
    training: &'a TrainReport,
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "trained on {} with {} parameters, {:.1} s on {}",
            self.dataset, self.parameters, self.seconds, self.device
        )?;
        for e in &self.training.epochs {
            writeln!(
                f,
                "epoch {:>3}: loss {:.4}  valid ndcg@10 {:.4} recall@10 {:.4}  {:.0} samples/s",
                e.epoch, e.train_loss, e.valid_ndcg_at_10, e.valid_recall_at_10, e.samples_per_second
            )?;
        }
        if let Some(best) = self.training.best() {
            for (layer, share) in best.expert_share.iter().enumerate() {
                let shares: Vec<String> = share.iter().map(|s| format!("{:.3}", s)).collect();
                writeln!(f, "MoE layer {} expert share: {}", layer + 1, shares.join(" "))?;
            }
        }
        write!(f, "kept epoch {}; wrote {}", self.training.best_epoch, self.output.display())
    }
}

/// Writes the per-epoch history next to the snapshot: `<out>.history.json`, `<out>.history.csv`
/// and the curve `<out>.curve.svg`, so that a run can be inspected without opening the snapshot.
fn write_history(out: &Path, report: &TrainReport) -> anyhow::Result<()> {
    let write = |suffix: &str, contents: String| {
        let mut path = out.as_os_str().to_owned();
        path.push(suffix);
        codec::write_atomic(Path::new(&path), contents.as_bytes())
    };
    write(".history.json", serde_json::to_string_pretty(report)?)?;
    write(".history.csv", report.to_csv())?;
    write(".curve.svg", report.curve_svg())?;
    Ok(())
}

/// The model a cold start trains: the preset, sized for the tokenizer, with the flags' changes.
fn model_config(args: &TrainArgs, tokenizer: &Tokenizer) -> anyhow::Result<ModelConfig> {
    let ids = &tokenizer.semantic_ids;
    let mut model_config = ModelConfig::preset(
        args.preset,
        tokenizer.item_ids.len(),
        ids.level_sizes.clone(),
        tokenizer.config.levels,
        tokenizer.embeddings.dim,
    );
    if let Some(dropout) = args.dropout {
        anyhow::ensure!((0.0..1.0).contains(&dropout), "--dropout must be in [0, 1), not {dropout}");
        model_config.dropout = dropout;
    }
    let trend_seconds = args.trend_days.checked_mul(86_400).filter(|&s| s >= 0);
    let trend_seconds = trend_seconds
        .ok_or_else(|| anyhow::anyhow!("--trend-days must be 0 (off) or a number of days, not {}", args.trend_days))?;
    model_config.trend = model_config
        .trend
        .filter(|_| trend_seconds > 0)
        .map(|trend| TrendConfig { window_seconds: trend_seconds, ..trend });
    Ok(model_config)
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let dataset = args.data.load_with(&args.served)?;
    let (device, description) = device::select(args.device)?;
    eprintln!("device: {description}");
    let (tokenizer, model_config, init) = match &args.init_from {
        Some(path) => {
            let snapshot = Snapshot::load(path)?;
            eprintln!("fine-tuning {} (epoch {} of its run)", path.display(), snapshot.training.best_epoch);
            if let Some(slate) = &snapshot.slate {
                // μ was chosen for the aligned weights, not for what fine-tuning makes of them.
                eprintln!(
                    "its slate (reward weight {}) is not carried over: `onerec align` chooses one for the result",
                    slate.weight
                );
            }
            (snapshot.tokenizer, snapshot.model, Some(snapshot.weights))
        }
        None => {
            let path = args.tokenizer.as_ref().expect("clap requires --tokenizer without --init-from");
            let tokenizer = Tokenizer::load(path)?;
            let model_config = model_config(&args, &tokenizer)?;
            eprintln!("cold start: {:?} preset", args.preset);
            (tokenizer, model_config, None)
        }
    };
    anyhow::ensure!((0.0..=1.0).contains(&args.replay), "--replay must be in [0, 1], not {}", args.replay);
    let recency = args.recent_days.map(|days| {
        let newest = dataset.events.iter().map(|e| e.timestamp).max().unwrap_or(0);
        Recency { since: newest - i64::from(days) * 86_400, replay: args.replay }
    });
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.lr,
        patience: args.patience,
        valid_beam: args.beam,
        seed: args.seed,
        recency,
        ..TrainConfig::default()
    };
    eprintln!("model: {} parameters", model_config.parameter_count());
    let checkpoint = args.checkpoint.path(&args.out);
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}").expect("valid template"),
    );
    let started = Instant::now();
    let (model, report) = train::train(
        &dataset,
        &tokenizer,
        &model_config,
        init.as_deref(),
        &config,
        &device,
        Some(Checkpointing { path: &checkpoint, resume: args.checkpoint.resume }),
        &mut |progress| match progress {
            Progress::Step { epoch, step, steps, loss, samples_per_second } => {
                bar.set_length(steps as u64);
                bar.set_prefix(epoch.to_string());
                bar.set_position(step as u64);
                bar.set_message(format!("loss {loss:.4} {samples_per_second:.0} samples/s"));
                ControlFlow::Continue(())
            }
            Progress::Epoch(e) => {
                let line = format!(
                    "epoch {}: loss {:.4} valid ndcg@10 {:.4} recall@10 {:.4} ({:.0} samples/s, {:.1} s)",
                    e.epoch, e.train_loss, e.valid_ndcg_at_10, e.valid_recall_at_10, e.samples_per_second, e.seconds
                );
                // A hidden bar (stderr is not a terminal) drops println; logs still want the line.
                if bar.is_hidden() {
                    eprintln!("{line}")
                } else {
                    bar.println(line)
                }
                ControlFlow::Continue(())
            }
        },
    )?;
    bar.finish_and_clear();
    let parameters = report.parameters;
    Snapshot::new(model, model_config, tokenizer, report.clone())?.save(&args.out)?;
    write_history(&args.out, &report)?;
    let report = Report {
        dataset: &dataset.name,
        device: description,
        parameters,
        seconds: started.elapsed().as_secs_f64(),
        output: &args.out,
        training: &report,
    };
    print_report(&report, args.json)
}
