//! The offline evaluation protocol of DESIGN.md §3: leave-one-out, full ranking over the whole
//! catalogue, items in the user's input excluded, ties counted against the target.

use std::collections::BTreeMap;
use std::fmt;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Event, ItemIdx, SplitRule, UserIdx};

/// Cut-offs every report gives.
pub const CUTOFFS: [usize; 3] = [5, 10, 20];

/// Which held-out event is the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Target: the second-to-last event; input: the training events. For early stopping and tuning.
    Valid,
    /// Target: the last event; input: training plus the validation event. Reported, never tuned on.
    Test,
}

/// Ranking quality over the users that have a target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankingReport {
    pub stage: Stage,
    pub users: usize,
    /// `recall@k`, `ndcg@k` and `mrr@k` for every cut-off (recall equals hit rate with one target).
    pub metrics: BTreeMap<String, f64>,
    /// Share of the catalogue that appears in at least one user's top 10.
    pub coverage_at_10: f64,
    /// Each user's target and where it ranked, in user order. Not in the JSON report (943 rows on
    /// MovieLens-100K); [`ranks_csv`] writes them.
    #[serde(skip)]
    pub ranks: Vec<TargetRank>,
}

/// Where one user's held-out target ranked. A mean over a few hundred users moves by a standard
/// error of about 0.009 in NDCG@10, and it hides which users a change helped: two rankers' ranks
/// on the same users give a paired comparison, and show where they differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetRank {
    pub user: UserIdx,
    pub item: ItemIdx,
    /// 1 is the top; ties count against the target.
    pub rank: usize,
}

impl RankingReport {
    /// One metric by name, such as `ndcg@10`.
    pub fn get(&self, name: &str) -> f64 {
        self.metrics.get(name).copied().unwrap_or(f64::NAN)
    }
}

impl fmt::Display for RankingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({} users):", self.stage, self.users)?;
        for k in CUTOFFS {
            write!(
                f,
                "  @{k}: recall {:.4} ndcg {:.4} mrr {:.4}",
                self.get(&format!("recall@{k}")),
                self.get(&format!("ndcg@{k}")),
                self.get(&format!("mrr@{k}"))
            )?;
        }
        write!(f, "  coverage@10 {:.4}", self.coverage_at_10)
    }
}

/// 1-based rank of `target` among the items not excluded, counting every other item that scores at
/// least as high as the target before it (pessimistic ties).
pub fn pessimistic_rank(scores: &[f32], target: ItemIdx, excluded: &[bool]) -> usize {
    let t = scores[target as usize];
    1 + scores
        .iter()
        .enumerate()
        .filter(|&(j, &s)| j != target as usize && !excluded[j] && (s >= t || s.is_nan() || t.is_nan()))
        .count()
}

/// Scores every user's input with `score` (one score per catalogue item, higher is better) and
/// measures how high the held-out target ranks. The scorer also gets the moment it is asked at,
/// the target's timestamp, as a deployment knows the time of a request.
pub fn evaluate<F>(dataset: &Dataset, stage: Stage, score: F) -> RankingReport
where
    F: Fn(UserIdx, &[Event], i64) -> Vec<f32> + Sync,
{
    let mut reports = evaluate_rankings(dataset, stage, 1, |u, input, now| vec![score(u, input, now)]);
    reports.remove(0)
}

/// [`evaluate`] for `rankings` rankers at once, from a scorer that gives each user's scores under
/// every one of them, so that they can share work such as one decode of the user's beam: one
/// report per ranker, in the scorer's order.
pub fn evaluate_rankings<F>(dataset: &Dataset, stage: Stage, rankings: usize, score: F) -> Vec<RankingReport>
where
    F: Fn(UserIdx, &[Event], i64) -> Vec<Vec<f32>> + Sync,
{
    let n = dataset.n_items();
    let per_user: Vec<Vec<(TargetRank, Vec<ItemIdx>)>> = (0..dataset.n_users() as UserIdx)
        .into_par_iter()
        .filter_map(|u| {
            let split = dataset.split(u);
            let (input, target) = match stage {
                Stage::Valid => (split.train, split.valid?),
                Stage::Test => (split.test_input, split.test?),
            };
            let all_scores = score(u, input, target.timestamp);
            assert_eq!(all_scores.len(), rankings, "a scorer must score under every ranking");
            let mut excluded = vec![false; n];
            input.iter().for_each(|e| excluded[e.item as usize] = true);
            excluded[target.item as usize] = false;
            let ranked = all_scores
                .iter()
                .map(|scores| {
                    assert_eq!(scores.len(), n, "a scorer must score every catalogue item");
                    let rank = pessimistic_rank(scores, target.item, &excluded);
                    (TargetRank { user: u, item: target.item, rank }, top_k(scores, &excluded, 10))
                })
                .collect();
            Some(ranked)
        })
        .collect();
    let mut by_ranking: Vec<Vec<(TargetRank, Vec<ItemIdx>)>> = (0..rankings).map(|_| Vec::new()).collect();
    for user in per_user {
        by_ranking.iter_mut().zip(user).for_each(|(ranking, ranked)| ranking.push(ranked));
    }
    by_ranking.into_iter().map(|per_user| report(stage, n, per_user)).collect()
}

/// The metrics of one ranker over its users' target ranks and top 10s.
fn report(stage: Stage, n: usize, per_user: Vec<(TargetRank, Vec<ItemIdx>)>) -> RankingReport {
    let users = per_user.len();
    let mut metrics = BTreeMap::new();
    for k in CUTOFFS {
        let hits = per_user.iter().map(|(r, _)| r.rank).filter(|&r| r <= k);
        let (recall, ndcg, mrr) = hits
            .fold((0.0, 0.0, 0.0), |(h, g, m), r| (h + 1.0, g + 1.0 / ((r as f64) + 1.0).log2(), m + 1.0 / r as f64));
        let denom = users.max(1) as f64;
        metrics.insert(format!("recall@{k}"), recall / denom);
        metrics.insert(format!("ndcg@{k}"), ndcg / denom);
        metrics.insert(format!("mrr@{k}"), mrr / denom);
    }
    let mut shown = vec![false; n];
    per_user.iter().flat_map(|(_, top)| top).for_each(|&i| shown[i as usize] = true);
    let coverage_at_10 = shown.iter().filter(|&&s| s).count() as f64 / n.max(1) as f64;
    let ranks = per_user.into_iter().map(|(rank, _)| rank).collect();
    RankingReport { stage, users, metrics, coverage_at_10, ranks }
}

/// Every report's per-user ranks as CSV, `ranker,stage,user,item,rank`, users and items by their
/// IDs in the data set: one row per user and stage for each named ranker, ready for a paired test.
pub fn ranks_csv(dataset: &Dataset, reports: &[(&str, &RankingReport)]) -> String {
    // Writing to memory cannot fail, and every record has the header's five fields.
    const IN_MEMORY: &str = "a CSV writer over a Vec does not fail";
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(["ranker", "stage", "user", "item", "rank"]).expect(IN_MEMORY);
    for (ranker, report) in reports {
        let stage = match report.stage {
            Stage::Valid => "valid",
            Stage::Test => "test",
        };
        for r in &report.ranks {
            let (user, item) = (&dataset.users[r.user as usize].id, &dataset.items[r.item as usize].id);
            out.write_record([ranker, stage, user, item, &r.rank.to_string()]).expect(IN_MEMORY);
        }
    }
    String::from_utf8(out.into_inner().expect(IN_MEMORY)).expect("CSV of UTF-8 fields is UTF-8")
}

/// The `k` best-scoring items that are not excluded, best first (ties by lower index).
pub fn top_k(scores: &[f32], excluded: &[bool], k: usize) -> Vec<ItemIdx> {
    let mut candidates: Vec<ItemIdx> = (0..scores.len() as ItemIdx).filter(|&i| !excluded[i as usize]).collect();
    let by_score = |a: &ItemIdx, b: &ItemIdx| scores[*b as usize].total_cmp(&scores[*a as usize]).then(a.cmp(b));
    if candidates.len() > k {
        candidates.select_nth_unstable_by(k, by_score);
        candidates.truncate(k);
    }
    candidates.sort_by(by_score);
    candidates
}

/// The popularity baseline: how often each item occurs in the training part of the sequences.
pub fn popularity(dataset: &Dataset) -> Vec<f32> {
    let mut counts = vec![0f32; dataset.n_items()];
    dataset.train_sequences().flatten().for_each(|e| counts[e.item as usize] += 1.0);
    counts
}

/// The recent-popularity baseline: how often each item occurred in the inputs of `stage` during
/// the `window_seconds` before the time cut (before the latest input event, under leave-one-out).
/// What a "trending now" shelf shows, and the bar a model that follows time must clear.
pub fn recent_popularity(dataset: &Dataset, stage: Stage, window_seconds: i64) -> Vec<f32> {
    let inputs = || {
        (0..dataset.n_users() as UserIdx).flat_map(move |u| {
            let split = dataset.split(u);
            match stage {
                Stage::Valid => split.train,
                Stage::Test => split.test_input,
            }
        })
    };
    let end = match dataset.split_rule {
        SplitRule::TimeCut { cut } => cut,
        SplitRule::LeaveOneOut => inputs().map(|e| e.timestamp).max().map_or(0, |t| t + 1),
    };
    let mut counts = vec![0f32; dataset.n_items()];
    inputs().filter(|e| e.timestamp >= end - window_seconds).for_each(|e| counts[e.item as usize] += 1.0);
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DatasetBuilder, Feedback, Origin};

    #[test]
    fn ties_count_against_the_target_and_excluded_items_do_not() {
        let scores = [0.5, 0.9, 0.5, 0.1, 0.7];
        let none = [false; 5];
        assert_eq!(pessimistic_rank(&scores, 0, &none), 4, "0.9, 0.7 and the tie at 0.5 rank first");
        assert_eq!(pessimistic_rank(&scores, 1, &none), 1);
        let excluded = [false, true, false, false, true];
        assert_eq!(pessimistic_rank(&scores, 0, &excluded), 2);
        assert_eq!(top_k(&scores, &excluded, 2), vec![0, 2]);
    }

    /// Three users of five items, metrics computed by hand.
    #[test]
    fn metrics_match_a_hand_computed_case() {
        let mut b = DatasetBuilder::new();
        let o = Origin::new("t", 1);
        let logs = [("a", ["i0", "i1", "i2", "i3"]), ("b", ["i1", "i0", "i4", "i2"]), ("c", ["i2", "i1", "i3", "i4"])];
        for (user, items) in logs {
            for (t, item) in items.iter().enumerate() {
                b.add_event(user, item, t as i64, Feedback::Click, &o);
            }
        }
        let ds = b.finish("t").unwrap();
        let idx = |id: &str| ds.items.iter().position(|i| i.id == id).unwrap();
        // Fixed scores i4 > i3 > i2 > i1 > i0 for everyone.
        let fixed: Vec<f32> =
            (0..5).map(|i| [0.0, 1.0, 2.0, 3.0, 4.0][ds.items[i].id[1..].parse::<usize>().unwrap()]).collect();
        assert_eq!(idx("i4"), 4);
        let report = evaluate(&ds, Stage::Test, |_, _, _| fixed.clone());
        // a: input {i0,i1,i2}, target i3: i4 ranks above → rank 2.
        // b: input {i1,i0,i4}, target i2: i3 above → rank 2.
        // c: input {i2,i1,i3}, target i4 → rank 1.
        assert_eq!(report.users, 3);
        assert!((report.get("recall@5") - 1.0).abs() < 1e-12);
        let ndcg = (1.0 / 3f64.log2() * 2.0 + 1.0) / 3.0;
        assert!((report.get("ndcg@5") - ndcg).abs() < 1e-12);
        assert!((report.get("mrr@5") - (0.5 + 0.5 + 1.0) / 3.0).abs() < 1e-12);
        // Valid: a: input {i0,i1}, target i2: i4, i3 above → rank 3. b: input {i1,i0}, target i4 → 1.
        // c: input {i2,i1}, target i3: i4 above → 2.
        let valid = evaluate(&ds, Stage::Valid, |_, _, _| fixed.clone());
        assert!((valid.get("mrr@10") - (1.0 / 3.0 + 1.0 + 0.5) / 3.0).abs() < 1e-12);
        // Top 10 lists cover every item not in some input.
        assert!(valid.coverage_at_10 > 0.5);
        // The per-user ranks behind those means, named by the data set's IDs.
        let ranks: Vec<(usize, usize)> = report.ranks.iter().map(|r| (r.item as usize, r.rank)).collect();
        assert_eq!(ranks, vec![(idx("i3"), 2), (idx("i2"), 2), (idx("i4"), 1)]);
        let csv = ranks_csv(&ds, &[("fixed", &report), ("fixed", &valid)]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 1 + 3 + 3);
        assert_eq!(lines[..2], ["ranker,stage,user,item,rank", "fixed,test,a,i3,2"]);
        assert_eq!(lines[4], "fixed,valid,a,i2,3");
    }

    /// Several rankers evaluated together report what each reports alone.
    #[test]
    fn rankings_evaluated_together_match_each_alone() {
        let mut b = DatasetBuilder::new();
        let o = Origin::new("t", 1);
        for (user, items) in [("a", ["i0", "i1", "i2"]), ("b", ["i5", "i4", "i3"])] {
            for (t, item) in items.iter().enumerate() {
                b.add_event(user, item, t as i64, Feedback::Click, &o);
            }
        }
        let ds = b.finish("t").unwrap();
        let up = |u: UserIdx| (0..6).map(|i| (i as f32) * (u as f32 + 1.0)).collect::<Vec<f32>>();
        let down = |u: UserIdx| up(u).iter().map(|s| -s).collect::<Vec<f32>>();
        let together = evaluate_rankings(&ds, Stage::Test, 2, |u, _, _| vec![up(u), down(u)]);
        let alone = [evaluate(&ds, Stage::Test, |u, _, _| up(u)), evaluate(&ds, Stage::Test, |u, _, _| down(u))];
        assert_eq!(together, alone);
        assert_ne!(together[0].ranks, together[1].ranks, "the rankers differ");
    }

    #[test]
    fn popularity_counts_only_training_events() {
        let mut b = DatasetBuilder::new();
        let o = Origin::new("t", 1);
        for (t, item) in ["x", "x", "y", "z"].iter().enumerate() {
            b.add_event("u", item, t as i64, Feedback::Click, &o);
        }
        let ds = b.finish("t").unwrap();
        assert_eq!(popularity(&ds), vec![2.0, 0.0, 0.0]);
    }

    #[test]
    fn recent_popularity_counts_the_window_before_the_cut() {
        let mut b = DatasetBuilder::new();
        let o = Origin::new("t", 1);
        // Before the cut at 100: x at 10 and 95, y at 90 and 99, z at 97 (a later user); after: z, z.
        for (user, item, t) in [("u", "x", 10), ("u", "y", 90), ("u", "x", 95), ("u", "z", 100), ("v", "y", 99)] {
            b.add_event(user, item, t, Feedback::Click, &o);
        }
        b.add_event("v", "z", 97, Feedback::Click, &o);
        b.add_event("v", "z", 120, Feedback::Click, &o);
        let ds = b.finish("t").unwrap();
        let ds = Dataset { split_rule: SplitRule::TimeCut { cut: 100 }, ..ds };
        let [x, y, z] = ["x", "y", "z"].map(|id| ds.items.iter().position(|i| i.id == id).unwrap());
        let scores = recent_popularity(&ds, Stage::Test, 10);
        assert_eq!((scores[x], scores[y], scores[z]), (1.0, 2.0, 1.0), "x at 10 is too old, nothing after the cut");
        // Validation inputs leave out each user's last event before the cut (x at 95, y at 99).
        let valid = recent_popularity(&ds, Stage::Valid, 10);
        assert_eq!((valid[x], valid[y], valid[z]), (0.0, 1.0, 1.0));
    }
}
