//! `onerec eval`: the full-ranking protocol of DESIGN.md §3 on the validation and test splits,
//! for a trained snapshot and, always, the popularity baseline on the same split.

use std::fmt;
use std::path::PathBuf;

use clap::Args;
use onerec_core::codec;
use onerec_core::data::SplitRule;
use onerec_core::decode::Decoding;
use onerec_core::device::{self, DeviceChoice};
use onerec_core::eval::{self, RankingReport, Stage};
use onerec_core::generator::evaluate::{GeneratorReport, RewardRanking, evaluate};
use onerec_core::generator::recommend::Recommender;
use onerec_core::generator::snapshot::Snapshot;
use onerec_core::generator::trend::TrendIndex;
use onerec_core::reward::RewardSnapshot;
use serde::Serialize;

use super::{DataArgs, ServedArgs, print_report};

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub served: ServedArgs,
    /// A snapshot written by `onerec train`; without it only the baseline is measured.
    #[arg(long)]
    pub snapshot: Option<PathBuf>,
    /// Beam width: the model's ranked list is the beam.
    #[arg(long, default_value_t = 100)]
    pub beam: usize,
    /// auto, cpu or gpu.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// A reward model (`onerec reward train`): also report the mean P-score of each user's top 10.
    /// Without it, an aligned snapshot's slate gives the reward model, and ranks as it was chosen.
    #[arg(long)]
    pub reward: Option<PathBuf>,
    /// Rank each beam by its probability within the beam + this μ·P-score, the slate that buys
    /// P-score at the least expected NDCG (0: the generator's own ranking). Default: the
    /// snapshot's slate weight without `--reward`, 0 with it.
    #[arg(long)]
    pub reward_weight: Option<f32>,
    /// Decode without the trie (the free policy), to measure how legal it is.
    #[arg(long)]
    pub unconstrained: bool,
    /// Also write each user's target and its rank, per ranker and stage, to this CSV file
    /// (`ranker,stage,user,item,rank`): what a paired comparison of two models needs.
    #[arg(long)]
    pub ranks: Option<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report {
    dataset: String,
    /// The snapshot's ranking, legality and P-score, when one was given.
    #[serde(flatten)]
    generator: Option<GeneratorReport>,
    /// μ of the slate the beams were ranked by (0: the generator's order).
    reward_weight: f32,
    popularity: Vec<RankingReport>,
    /// Under a time cut: popularity over the 30 days before the cut.
    recent_popularity: Vec<RankingReport>,
    split: SplitRule,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let split = match self.split {
            SplitRule::LeaveOneOut => "leave-one-out".to_string(),
            SplitRule::TimeCut { cut } => format!("time cut at {cut}"),
        };
        write!(f, "data set: {} ({split}, full ranking, seen items excluded)", self.dataset)?;
        if let Some(g) = &self.generator {
            for r in &g.ranking {
                write!(f, "\nmodel       {r}")?;
            }
            write!(f, "\nlegal outputs: {:.2}% (top 10: {:.2}%)", 100.0 * g.legality, 100.0 * g.legality_at_10)?;
            for (r, p) in g.ranking.iter().zip(&g.p_score_at_10) {
                write!(f, "\np-score@10  {:?}: {p:.4}", r.stage)?;
            }
            if self.reward_weight != 0.0 {
                write!(f, "\nranked by probability within the beam + {}·P-score", self.reward_weight)?;
            }
        }
        for r in &self.popularity {
            write!(f, "\npopularity  {r}")?;
        }
        for r in &self.recent_popularity {
            write!(f, "\npopular 30d {r}")?;
        }
        Ok(())
    }
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    if let Some(w) = args.reward_weight
        && !w.is_finite()
    {
        anyhow::bail!("--reward-weight must be a finite number, not {w}");
    }
    let dataset = args.data.load_with(&args.served)?;
    let stages = [Stage::Valid, Stage::Test];
    let mut reward_weight = 0.0;
    let generator = match &args.snapshot {
        None => None,
        Some(path) => {
            let snapshot = Snapshot::load(path)?;
            snapshot.check_dataset(&dataset)?;
            let (device, description) = device::select(args.device)?;
            eprintln!("device: {description}");
            let reward = match (&args.reward, &snapshot.slate) {
                (Some(path), _) => Some(RewardSnapshot::load(path)?),
                (None, Some(slate)) => {
                    reward_weight = slate.weight;
                    Some(slate.reward.clone())
                }
                (None, None) if args.reward_weight.is_some() => {
                    anyhow::bail!("--reward-weight needs --reward, or a snapshot aligned with a slate")
                }
                (None, None) => None,
            };
            reward_weight = args.reward_weight.unwrap_or(reward_weight);
            let reward = reward.map(|r| r.scorer(&dataset, &device)).transpose()?;
            let model = snapshot.model(&device)?;
            let trend = TrendIndex::for_training_log(&snapshot.model, &dataset);
            let host_head = model.host_head();
            let recommender = Recommender {
                model: &model,
                config: &snapshot.model,
                tokenizer: &snapshot.tokenizer,
                device: &device,
                trend: trend.as_ref(),
                host_head: host_head.as_ref(),
            };
            let decoding = if args.unconstrained { Decoding::Free } else { Decoding::Constrained };
            let reward = reward.as_ref().map(|r| RewardRanking { model: r, weight: reward_weight });
            Some(evaluate(&recommender, &dataset, &stages, args.beam, decoding, reward))
        }
    };
    let popularity_scores = eval::popularity(&dataset);
    let popularity = stages.map(|stage| eval::evaluate(&dataset, stage, |_, _, _| popularity_scores.clone())).to_vec();
    const THIRTY_DAYS: i64 = 30 * 24 * 3600;
    let recent_popularity = match dataset.split_rule {
        SplitRule::LeaveOneOut => Vec::new(),
        SplitRule::TimeCut { .. } => stages
            .map(|stage| {
                let scores = eval::recent_popularity(&dataset, stage, THIRTY_DAYS);
                eval::evaluate(&dataset, stage, |_, _, _| scores.clone())
            })
            .to_vec(),
    };
    if let Some(path) = &args.ranks {
        let model = generator.iter().flat_map(|g| &g.ranking).map(|r| ("model", r));
        let baselines = popularity
            .iter()
            .map(|r| ("popularity", r))
            .chain(recent_popularity.iter().map(|r| ("recent_popularity", r)));
        let csv = eval::ranks_csv(&dataset, &model.chain(baselines).collect::<Vec<_>>());
        codec::write_atomic(path, csv.as_bytes())?;
    }
    let report = Report {
        dataset: dataset.name.clone(),
        generator,
        reward_weight,
        popularity,
        recent_popularity,
        split: dataset.split_rule,
    };
    print_report(&report, args.json)
}
