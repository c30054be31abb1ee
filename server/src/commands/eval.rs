//! `onerec eval`: the full-ranking protocol of DESIGN.md §3 on the validation and test splits,
//! for a trained snapshot and, always, the popularity baseline on the same split.

use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Args;
use onerec_core::align::policy::recommend_unconstrained;
use onerec_core::data::{Event, ItemIdx, SplitRule};
use onerec_core::device::{self, DeviceChoice};
use onerec_core::eval::{self, RankingReport, Stage};
use onerec_core::recommend::Recommender;
use onerec_core::reward::{RewardFn, RewardSnapshot};
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
    /// A reward model (`onerec reward train`): also report the mean P-score of each user's top 10.
    #[arg(long)]
    pub reward: Option<PathBuf>,
    /// Decode without the trie (the free policy), to measure how legal it is.
    #[arg(long)]
    pub unconstrained: bool,
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
    /// The same among the first 10 generated.
    legality_at_10: Option<f64>,
    /// Mean over users of the mean P-score of their top 10 (legal, unseen), per stage.
    p_score_at_10: Vec<f64>,
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
        for r in &self.model {
            write!(f, "\nmodel       {r}")?;
        }
        if let (Some(legality), Some(at_10)) = (self.legality, self.legality_at_10) {
            write!(f, "\nlegal outputs: {:.2}% (top 10: {:.2}%)", 100.0 * legality, 100.0 * at_10)?;
        }
        for (r, p) in self.model.iter().zip(&self.p_score_at_10) {
            write!(f, "\np-score@10  {:?}: {p:.4}", r.stage)?;
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
    let dataset = args.data.load()?;
    let stages = [Stage::Valid, Stage::Test];
    let (model, legality, legality_at_10, p_score_at_10) = match &args.snapshot {
        None => (Vec::new(), None, None, Vec::new()),
        Some(path) => {
            let snapshot = Snapshot::load(path)?;
            snapshot.check_dataset(&dataset)?;
            let (device, description) = device::select(args.device)?;
            eprintln!("device: {description}");
            let reward = match &args.reward {
                Some(path) => Some(RewardSnapshot::load(path)?.scorer(&dataset, &device)?),
                None => None,
            };
            let model = snapshot.model(&device)?;
            let recommender =
                Recommender { model: &model, config: &snapshot.model, tokenizer: &snapshot.tokenizer, device: &device };
            let counts: [AtomicUsize; 4] = Default::default();
            let ids = &snapshot.tokenizer.semantic_ids;
            let mut p_scores = Vec::new();
            let reports = stages.map(|stage| {
                let p_sum = Mutex::new((0.0, 0usize));
                let report = eval::evaluate(&dataset, stage, |u, input| {
                    let user = &dataset.users[u as usize];
                    let generated: Vec<(Option<ItemIdx>, f32)> = if args.unconstrained {
                        recommend_unconstrained(&recommender, user, input, args.beam)
                    } else {
                        let beam = recommender.recommend(user, input, args.beam, true);
                        beam.into_iter().map(|h| (ids.item_of(&h.id).filter(|&i| i == h.item), h.log_prob)).collect()
                    };
                    let mut scores = vec![f32::NEG_INFINITY; dataset.n_items()];
                    for (rank, &(item, log_prob)) in generated.iter().enumerate() {
                        let legal = item.is_some() as usize;
                        counts[0].fetch_add(1, Ordering::Relaxed);
                        counts[1].fetch_add(legal, Ordering::Relaxed);
                        if rank < 10 {
                            counts[2].fetch_add(1, Ordering::Relaxed);
                            counts[3].fetch_add(legal, Ordering::Relaxed);
                        }
                        if let Some(i) = item {
                            scores[i as usize] = scores[i as usize].max(log_prob);
                        }
                    }
                    if let Some(reward) = &reward {
                        let top: Vec<(&[Event], ItemIdx)> = generated
                            .iter()
                            .filter_map(|g| g.0)
                            .filter(|&i| input.iter().all(|e| e.item != i))
                            .take(10)
                            .map(|i| (input, i))
                            .collect();
                        let p = reward.p_scores(&top);
                        let mut sum = p_sum.lock().expect("no panic while holding the lock");
                        sum.0 += p.iter().map(|&x| x as f64).sum::<f64>() / p.len().max(1) as f64;
                        sum.1 += 1;
                    }
                    scores
                });
                let (sum, users) = p_sum.into_inner().expect("no panic while holding the lock");
                if reward.is_some() {
                    p_scores.push(sum / users.max(1) as f64);
                }
                report
            });
            let ratio = |a: usize, b: usize| {
                counts[a].load(Ordering::Relaxed) as f64 / counts[b].load(Ordering::Relaxed).max(1) as f64
            };
            (reports.to_vec(), Some(ratio(1, 0)), Some(ratio(3, 2)), p_scores)
        }
    };
    let popularity_scores = eval::popularity(&dataset);
    let popularity = stages.map(|stage| eval::evaluate(&dataset, stage, |_, _| popularity_scores.clone())).to_vec();
    const THIRTY_DAYS: i64 = 30 * 24 * 3600;
    let recent_popularity = match dataset.split_rule {
        SplitRule::LeaveOneOut => Vec::new(),
        SplitRule::TimeCut { .. } => stages
            .map(|stage| {
                let scores = eval::recent_popularity(&dataset, stage, THIRTY_DAYS);
                eval::evaluate(&dataset, stage, |_, _| scores.clone())
            })
            .to_vec(),
    };
    let report = Report {
        dataset: dataset.name.clone(),
        model,
        legality,
        legality_at_10,
        p_score_at_10,
        popularity,
        recent_popularity,
        split: dataset.split_rule,
    };
    print_report(&report, args.json)
}
