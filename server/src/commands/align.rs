//! `onerec align`: preference alignment of a trained snapshot with a reward model (ECPO or DPO).

use std::fmt;
use std::ops::ControlFlow;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use onerec_core::align::slate_weight::{SlateChoice, choose_slate_weight};
use onerec_core::align::{self, AlignConfig, AlignReport, Method, Policy, Progress, Source};
use onerec_core::device::{self, DeviceChoice};
use onerec_core::generator::recommend::Recommender;
use onerec_core::generator::snapshot::Snapshot;
use onerec_core::generator::trend::TrendIndex;
use onerec_core::reward::RewardSnapshot;
use onerec_core::reward::slate::Slate;
use onerec_core::training::Checkpointing;
use serde::Serialize;

use super::{CheckpointArgs, DataArgs, print_report};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MethodArg {
    Ecpo,
    Dpo,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SamplingArg {
    /// Sample code by code at the temperature.
    Sample,
    /// The constrained beam search.
    Beam,
}

#[derive(Args, Debug)]
pub struct AlignArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The trained generator.
    #[arg(long)]
    pub snapshot: PathBuf,
    /// The reward model written by `onerec reward train`.
    #[arg(long)]
    pub reward: PathBuf,
    #[arg(long, default_value = "aligned.snap")]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "ecpo")]
    pub method: MethodArg,
    #[arg(long, value_enum, default_value = "beam")]
    pub sampling: SamplingArg,
    /// Mask sampling to the trie of legal IDs (otherwise the format reward applies).
    #[arg(long)]
    pub constrained: bool,
    #[arg(long, default_value_t = AlignConfig::default().steps)]
    pub steps: usize,
    #[arg(long, default_value_t = AlignConfig::default().users_per_step)]
    pub users: usize,
    /// G: items per user.
    #[arg(long, default_value_t = AlignConfig::default().group)]
    pub group: usize,
    /// K: samples per group given the format reward.
    #[arg(long, default_value_t = AlignConfig::default().format_k)]
    pub k: usize,
    #[arg(long, default_value_t = AlignConfig::default().epsilon)]
    pub epsilon: f32,
    #[arg(long, default_value_t = AlignConfig::default().delta)]
    pub delta: f32,
    #[arg(long, default_value_t = AlignConfig::default().temperature)]
    pub temperature: f32,
    #[arg(long, default_value_t = AlignConfig::default().learning_rate)]
    pub lr: f64,
    #[arg(long, default_value_t = AlignConfig::default().inner_steps)]
    pub inner_steps: usize,
    /// Weight of the next-token loss trained alongside.
    #[arg(long, default_value_t = AlignConfig::default().next_token_weight)]
    pub next_token_weight: f32,
    #[arg(long, default_value_t = AlignConfig::default().next_token_batch)]
    pub next_token_batch: usize,
    #[arg(long, default_value_t = AlignConfig::default().dpo_beta)]
    pub dpo_beta: f32,
    #[arg(long, default_value_t = AlignConfig::default().dpo_fraction)]
    pub dpo_fraction: f32,
    /// Validate (NDCG@10 and top-10 P-score) every this many steps; 0 keeps the last weights.
    #[arg(long, default_value_t = AlignConfig::default().eval_every)]
    pub eval_every: usize,
    /// Validation users per check (0: all).
    #[arg(long, default_value_t = AlignConfig::default().eval_users)]
    pub eval_users: usize,
    /// The beam validation decodes; the slate's weight is chosen with it, and a feed of the
    /// aligned snapshot decodes it by default.
    #[arg(long, default_value_t = AlignConfig::default().valid_beam)]
    pub beam: usize,
    /// The slate's weight μ: each beam ranks by probability within the beam + μ·P-score. By
    /// default it is chosen on validation, within the same NDCG band as the kept step; 0 stores
    /// no slate.
    #[arg(long)]
    pub slate_weight: Option<f32>,
    #[arg(long, default_value_t = AlignConfig::default().seed)]
    pub seed: u64,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    config: &'a AlignConfig,
    output: &'a PathBuf,
    alignment: &'a AlignReport,
    /// How μ was chosen on validation, unless it was given.
    slate_choice: Option<SlateChoice>,
    slate_weight: f32,
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.alignment.evals {
            writeln!(f, "step {:>4}: valid ndcg@10 {:.4}  p-score@10 {:.4}", e.step, e.ndcg_at_10, e.p_score_at_10)?;
        }
        let steps = &self.alignment.steps;
        for chunk in steps.chunks(steps.len().div_ceil(10).max(1)) {
            let n = chunk.len() as f64;
            let mean = |f: fn(&align::StepReport) -> f64| chunk.iter().map(f).sum::<f64>() / n;
            writeln!(
                f,
                "steps {:>4}-{:<4}: reward {:.4}  legality {:.3}  policy loss {:.4}  next-token loss {:.4}",
                chunk[0].step,
                chunk[chunk.len() - 1].step,
                mean(|s| s.mean_reward),
                mean(|s| s.legality),
                mean(|s| s.policy_loss),
                mean(|s| s.next_token_loss)
            )?;
        }
        writeln!(f, "kept step {}", self.alignment.best_step)?;
        if let Some(c) = &self.slate_choice {
            writeln!(f, "slate: the start's valid ndcg@10 {:.4}, floor {:.4}", c.start_ndcg_at_10, c.floor)?;
            for t in &c.trials {
                writeln!(
                    f,
                    "  μ {:<6}: valid ndcg@10 {:.4}  p-score@10 {:.4}",
                    t.weight, t.ndcg_at_10, t.p_score_at_10
                )?;
            }
        }
        write!(f, "slate weight μ = {}; wrote {}", self.slate_weight, self.output.display())
    }
}

pub fn run(args: AlignArgs) -> anyhow::Result<()> {
    if let Some(w) = args.slate_weight
        && !(w.is_finite() && w >= 0.0)
    {
        anyhow::bail!("--slate-weight must be a finite number ≥ 0, not {w}");
    }
    let dataset = args.data.load()?;
    let snapshot = Snapshot::load(&args.snapshot)?;
    snapshot.check_dataset(&dataset)?;
    let (device, description) = device::select(args.device)?;
    eprintln!("device: {description}");
    let reward_snapshot = RewardSnapshot::load(&args.reward)?;
    let reward = reward_snapshot.scorer(&dataset, &device)?;
    if reward.net.items != dataset.n_items() {
        anyhow::bail!(
            "the reward model knows {} of the {} items of {}: train it again on this data set",
            reward.net.items,
            dataset.n_items(),
            dataset.name
        );
    }
    let config = AlignConfig {
        method: match args.method {
            MethodArg::Ecpo => Method::Ecpo,
            MethodArg::Dpo => Method::Dpo,
        },
        source: match args.sampling {
            SamplingArg::Sample => Source::Sample { constrained: args.constrained },
            SamplingArg::Beam => Source::Beam,
        },
        steps: args.steps,
        users_per_step: args.users,
        group: args.group,
        format_k: args.k,
        epsilon: args.epsilon,
        delta: args.delta,
        temperature: args.temperature,
        learning_rate: args.lr,
        inner_steps: args.inner_steps,
        next_token_weight: args.next_token_weight,
        next_token_batch: args.next_token_batch,
        dpo_beta: args.dpo_beta,
        dpo_fraction: args.dpo_fraction,
        eval_every: args.eval_every,
        eval_users: args.eval_users,
        valid_beam: args.beam,
        seed: args.seed,
        ..AlignConfig::default()
    };
    let trend = TrendIndex::for_training_log(&snapshot.model, &dataset);
    let policy = Policy {
        dataset: &dataset,
        tokenizer: &snapshot.tokenizer,
        config: &snapshot.model,
        device: &device,
        trend: trend.as_ref(),
    };
    let checkpoint = args.checkpoint.path(&args.out);
    let bar = ProgressBar::new(config.steps as u64).with_style(
        ProgressStyle::with_template("align [{bar:30}] {pos}/{len} {msg} eta {eta}").expect("valid template"),
    );
    let (model, report) = align::align(
        &policy,
        &snapshot.weights,
        &reward,
        &config,
        Some(Checkpointing { path: &checkpoint, resume: args.checkpoint.resume }),
        &mut |progress| {
            match progress {
                Progress::Step { report: s, .. } => {
                    bar.set_position(s.step as u64);
                    if bar.is_hidden() && s.step % 10 == 0 {
                        eprintln!(
                            "step {}: reward {:.4} legality {:.3} policy loss {:.4} next-token loss {:.4}",
                            s.step, s.mean_reward, s.legality, s.policy_loss, s.next_token_loss
                        );
                    }
                    bar.set_message(format!(
                        "reward {:.4} legal {:.3} loss {:.4} nt {:.4}",
                        s.mean_reward, s.legality, s.policy_loss, s.next_token_loss
                    ));
                }
                Progress::Eval(e) => {
                    let line =
                        format!("step {}: valid ndcg@10 {:.4} p-score@10 {:.4}", e.step, e.ndcg_at_10, e.p_score_at_10);
                    if bar.is_hidden() { eprintln!("{line}") } else { bar.println(line) }
                }
            }
            ControlFlow::Continue(())
        },
    )?;
    bar.finish_and_clear();
    let slate_choice = match args.slate_weight {
        Some(_) => None,
        None => {
            eprintln!("choosing the slate's weight on validation at beam {}", config.valid_beam);
            let start = snapshot.model(&device)?;
            let (start_head, aligned_head) = (start.host_head(), model.host_head());
            let recommender = |model, host_head| Recommender {
                model,
                config: &snapshot.model,
                tokenizer: &snapshot.tokenizer,
                device: &device,
                trend: trend.as_ref(),
                host_head,
            };
            Some(choose_slate_weight(
                &recommender(&start, start_head.as_ref()),
                &recommender(&model, aligned_head.as_ref()),
                &dataset,
                &reward,
                config.valid_beam,
                config.max_ndcg_drop,
            ))
        }
    };
    let slate_weight = args.slate_weight.or(slate_choice.as_ref().map(|c| c.weight)).unwrap_or(0.0);
    let slate = (slate_weight > 0.0).then_some(Slate {
        reward: reward_snapshot,
        weight: slate_weight,
        beam: config.valid_beam,
    });
    let aligned = Snapshot::new(model, snapshot.model.clone(), snapshot.tokenizer.clone(), snapshot.training.clone())?;
    Snapshot { slate, ..aligned }.save(&args.out)?;
    let report = Report { config: &config, output: &args.out, alignment: &report, slate_choice, slate_weight };
    print_report(&report, args.json)
}
