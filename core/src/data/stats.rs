//! A summary of a data set: the figures to check before training on it (size, sparsity, sequence
//! lengths, feedback mix, time span) and what the loader had to assume.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::{Dataset, Feedback};

/// Summary figures of a [`Dataset`], printable with `Display` and serialisable for reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DataStats {
    pub name: String,
    pub users: usize,
    pub items: usize,
    pub events: usize,
    /// 1 − events / (users · items): the share of the user–item matrix left empty.
    pub sparsity: f64,
    /// Items no event names; only content features can place them.
    pub cold_items: usize,
    /// Events per user, over every user (including those with none).
    pub sequence_length: Percentiles,
    /// Share of events that say the user enjoyed the item ([`Feedback::is_positive`]).
    pub positive_share: f64,
    /// Earliest and latest timestamps; `None` without events.
    pub first_timestamp: Option<i64>,
    pub last_timestamp: Option<i64>,
    /// Events per feedback kind (`rating`, `click`, …); kinds that never occur are left out.
    pub feedback: BTreeMap<&'static str, usize>,
    pub warnings: Vec<String>,
}

/// Nearest-rank percentiles: the p-th is the smallest value with at least p% of values at or below it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub min: usize,
    pub p25: usize,
    pub p50: usize,
    pub p75: usize,
    pub p90: usize,
    pub p99: usize,
    pub max: usize,
}

impl Percentiles {
    /// Percentiles of `values`, which this sorts; all zero when there are none.
    pub fn of(values: &mut [usize]) -> Percentiles {
        values.sort_unstable();
        let Some((&min, &max)) = values.first().zip(values.last()) else {
            return Percentiles::default();
        };
        // Rank ⌈p·n/100⌉, 1-based, in integers so that no rounding can shift it.
        let at = |p: usize| values[(p * values.len()).div_ceil(100).max(1) - 1];
        Percentiles { min, p25: at(25), p50: at(50), p75: at(75), p90: at(90), p99: at(99), max }
    }
}

impl DataStats {
    pub fn compute(ds: &Dataset) -> DataStats {
        let events = ds.events.len();
        let cells = ds.n_users() as f64 * ds.n_items() as f64;
        let mut lengths: Vec<usize> = ds.user_start.windows(2).map(|w| w[1] - w[0]).collect();
        let mut rated = vec![false; ds.n_items()];
        let mut feedback = BTreeMap::new();
        let (mut positive, mut first, mut last) = (0usize, None::<i64>, None::<i64>);
        for e in &ds.events {
            rated[e.item as usize] = true;
            positive += usize::from(e.feedback.is_positive());
            *feedback.entry(kind(e.feedback)).or_insert(0) += 1;
            first = Some(first.map_or(e.timestamp, |t| t.min(e.timestamp)));
            last = Some(last.map_or(e.timestamp, |t| t.max(e.timestamp)));
        }
        DataStats {
            name: ds.name.clone(),
            users: ds.n_users(),
            items: ds.n_items(),
            events,
            sparsity: if cells > 0.0 { 1.0 - events as f64 / cells } else { 0.0 },
            cold_items: rated.iter().filter(|&&r| !r).count(),
            sequence_length: Percentiles::of(&mut lengths),
            positive_share: if events > 0 { positive as f64 / events as f64 } else { 0.0 },
            first_timestamp: first,
            last_timestamp: last,
            feedback,
            warnings: ds.warnings.clone(),
        }
    }
}

/// The name of a feedback kind, as [`Feedback::from_kind`] reads it.
fn kind(feedback: Feedback) -> &'static str {
    match feedback {
        Feedback::Rating(_) => "rating",
        Feedback::Impression => "impression",
        Feedback::Click => "click",
        Feedback::Like => "like",
        Feedback::Skip => "skip",
        Feedback::WatchTime(_) => "watch_time",
    }
}

impl fmt::Display for DataStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} users, {} items, {} events (sparsity {:.2}%)",
            self.name,
            self.users,
            self.items,
            self.events,
            100.0 * self.sparsity
        )?;
        let p = &self.sequence_length;
        writeln!(
            f,
            "events per user: min {} p25 {} p50 {} p75 {} p90 {} p99 {} max {}",
            p.min, p.p25, p.p50, p.p75, p.p90, p.p99, p.max
        )?;
        writeln!(f, "cold items: {}", self.cold_items)?;
        let kinds: Vec<String> = self.feedback.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
        writeln!(f, "feedback: {} ({:.1}% positive)", kinds.join(", "), 100.0 * self.positive_share)?;
        if let (Some(first), Some(last)) = (self.first_timestamp, self.last_timestamp) {
            let days = (last - first) as f64 / 86_400.0;
            writeln!(f, "time: {first} to {last} ({days:.1} days)")?;
        }
        for warning in &self.warnings {
            writeln!(f, "warning: {warning}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DatasetBuilder, Item, Origin};

    /// Users with 1, 2 and 5 events over items a–d and a never-rated item e.
    fn dataset() -> Dataset {
        let mut b = DatasetBuilder::new();
        let o = Origin::new("t", 1);
        for id in ["a", "b", "c", "d", "e"] {
            b.add_item(Item { id: id.into(), ..Item::default() }, &o).unwrap();
        }
        b.add_event("u1", "a", 100, Feedback::Rating(5.0), &o);
        b.add_event("u2", "a", 50, Feedback::Rating(2.0), &o);
        b.add_event("u2", "b", 60, Feedback::Like, &o);
        for (t, item) in ["a", "b", "c", "d", "a"].iter().enumerate() {
            b.add_event("u3", item, 200 + t as i64, Feedback::Click, &o);
        }
        b.warn("something was assumed");
        b.finish("hand").unwrap()
    }

    #[test]
    fn hand_computed_figures() {
        let s = DataStats::compute(&dataset());
        assert_eq!((s.users, s.items, s.events, s.cold_items), (3, 5, 8, 1));
        assert!((s.sparsity - (1.0 - 8.0 / 15.0)).abs() < 1e-12);
        // Lengths 1, 2, 5: ranks ⌈0.75⌉=1, ⌈1.5⌉=2, ⌈2.25⌉=3, ⌈2.7⌉=3, ⌈2.97⌉=3.
        assert_eq!(s.sequence_length, Percentiles { min: 1, p25: 1, p50: 2, p75: 5, p90: 5, p99: 5, max: 5 });
        assert_eq!(s.positive_share, 2.0 / 8.0);
        assert_eq!((s.first_timestamp, s.last_timestamp), (Some(50), Some(204)));
        assert_eq!(s.feedback, BTreeMap::from([("click", 5), ("like", 1), ("rating", 2)]));
        let report = s.to_string();
        assert!(report.starts_with("hand: 3 users, 5 items, 8 events (sparsity 46.67%)\n"), "{report}");
        assert!(report.contains("events per user: min 1 p25 1 p50 2 p75 5 p90 5 p99 5 max 5\n"), "{report}");
        assert!(report.contains("feedback: click 5, like 1, rating 2 (25.0% positive)\n"), "{report}");
        assert!(report.ends_with("warning: something was assumed\n"), "{report}");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["sequence_length"]["p50"], 2);
        assert_eq!(json["feedback"]["click"], 5);
    }

    #[test]
    fn percentiles_of_a_hundred_values_and_of_none() {
        let mut values: Vec<usize> = (1..=100).rev().collect();
        let p = Percentiles::of(&mut values);
        assert_eq!((p.min, p.p25, p.p50, p.p90, p.p99, p.max), (1, 25, 50, 90, 99, 100));
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
    }
}
