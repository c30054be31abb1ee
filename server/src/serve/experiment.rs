//! Snapshots served side by side, to compare them on what users do (A/B).
//!
//! - **Arms.** `main` is the snapshot the server started with; `POST /admin/reload` with an `arm`
//!   and a `share` adds another. The other arms take their shares of users and `main` the rest.
//! - **Assignment.** A user's bucket is a stable hash of their id in [0, 1); the arms other than
//!   `main` hold consecutive intervals from 0, in the order they were added, so a user stays in
//!   their arm while its share grows and while later arms are added. Anonymous feeds go to `main`.
//! - **Attribution.** Each feed has a request id, `<arm>.<random hex>`, which names its arm
//!   without any server state; an event that carries it counts toward that arm's online metrics.
//!   Events without one count toward no arm.
//! - **Read-out.** `GET /admin/experiments` gives each arm's counts and rates, and each arm's
//!   difference from `main` with a 95% confidence interval (two independent proportions, Wald).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, RwLock};

use onerec_core::api::{EventKind, UserEvent};
use rand::Rng;
use serde::Serialize;
use utoipa::ToSchema;

use super::engine::Engine;

/// The arm of the snapshot the server started with.
pub const MAIN: &str = "main";

/// One snapshot and the share of users it serves.
struct Arm {
    name: String,
    /// For `main`, what the other arms leave.
    share: f64,
    engine: Arc<Engine>,
}

/// Every arm, `main` first.
pub struct Arms {
    arms: RwLock<Vec<Arm>>,
    max: usize,
}

impl Arms {
    /// `main` alone, serving `engine`; at most `max` arms in all.
    pub fn new(engine: Engine, max: usize) -> Arms {
        let main = Arm { name: MAIN.into(), share: 1.0, engine: Arc::new(engine) };
        Arms { arms: RwLock::new(vec![main]), max: max.max(1) }
    }

    /// The arm a user is in and its engine; a request keeps the engine it took even if a reload
    /// swaps it.
    pub fn assign(&self, user: Option<&str>) -> (String, Arc<Engine>) {
        let arms = self.arms.read().expect("arms lock");
        if let Some(user) = user {
            let at = bucket(user);
            let mut start = 0.0;
            for arm in &arms[1..] {
                if at < start + arm.share {
                    return (arm.name.clone(), arm.engine.clone());
                }
                start += arm.share;
            }
        }
        (MAIN.into(), arms[0].engine.clone())
    }

    /// The engine of `main`.
    pub fn main(&self) -> Arc<Engine> {
        self.arms.read().expect("arms lock")[0].engine.clone()
    }

    /// Checks a change before a snapshot is loaded for it (see [`Arms::set`]).
    pub fn check(&self, name: &str, share: Option<f64>) -> Result<(), String> {
        self.validate(&self.arms.read().expect("arms lock"), name, share)
    }

    /// A valid name, a share where one is needed, shares that fit, and room for a new arm.
    fn validate(&self, arms: &[Arm], name: &str, share: Option<f64>) -> Result<(), String> {
        let valid = !name.is_empty()
            && name.len() <= 32
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(format!("arm must be 1 to 32 letters, digits, '-' or '_', not {name:?}"));
        }
        if name == MAIN {
            return match share {
                Some(_) => Err("main's share is what the other arms leave; set theirs".into()),
                None => Ok(()),
            };
        }
        let exists = arms.iter().any(|a| a.name == name);
        let share = match share {
            Some(s) if (0.0..=1.0).contains(&s) => s,
            Some(s) => return Err(format!("share must be in [0, 1], not {s}")),
            None if exists => return Ok(()),
            None => return Err(format!("a new arm needs a share; {name:?} does not exist")),
        };
        let others: f64 = arms[1..].iter().filter(|a| a.name != name).map(|a| a.share).sum();
        if others + share > 1.0 + 1e-9 {
            return Err(format!("the other arms already take {others}; {share} more does not fit"));
        }
        if !exists && share > 0.0 && arms.len() >= self.max {
            return Err(format!("the server holds at most {} models (--max-models)", self.max));
        }
        Ok(())
    }

    /// Serves `engine` in arm `name`, with `share` of users when given; a share of 0 removes
    /// the arm, and its users go back to `main`. Validated again under the lock, since another
    /// change may have come while the snapshot loaded. Returns the id of the snapshot the arm
    /// served before, if it existed.
    pub fn set(&self, name: &str, share: Option<f64>, engine: Option<Engine>) -> Result<Option<String>, String> {
        let mut arms = self.arms.write().expect("arms lock");
        self.validate(&arms, name, share)?;
        let at = arms.iter().position(|a| a.name == name);
        if share == Some(0.0) {
            let previous = at.map(|i| arms.remove(i).engine.id.clone());
            Self::rebalance(&mut arms);
            return Ok(previous);
        }
        let previous = match (at, engine) {
            (Some(i), engine) => {
                let arm = &mut arms[i];
                let previous = arm.engine.id.clone();
                if let Some(engine) = engine {
                    arm.engine = Arc::new(engine);
                }
                arm.share = share.unwrap_or(arm.share);
                Some(previous)
            }
            (None, Some(engine)) => {
                arms.push(Arm { name: name.into(), share: share.unwrap_or(0.0), engine: Arc::new(engine) });
                None
            }
            (None, None) => None,
        };
        Self::rebalance(&mut arms);
        Ok(previous)
    }

    fn rebalance(arms: &mut [Arm]) {
        let others: f64 = arms[1..].iter().map(|a| a.share).sum();
        arms[0].share = (1.0 - others).max(0.0);
    }

    /// Every arm's name and engine, `main` first.
    pub fn engines(&self) -> Vec<(String, Arc<Engine>)> {
        let arms = self.arms.read().expect("arms lock");
        arms.iter().map(|a| (a.name.clone(), a.engine.clone())).collect()
    }

    /// Swaps in new engines for the named arms, at once, so that no feed sees some arms changed
    /// and others not.
    pub fn replace_engines(&self, engines: Vec<(String, Engine)>) {
        let mut arms = self.arms.write().expect("arms lock");
        for (name, engine) in engines {
            if let Some(arm) = arms.iter_mut().find(|a| a.name == name) {
                arm.engine = Arc::new(engine);
            }
        }
    }

    /// `(arm, share, model id)` of every arm, `main` first.
    pub fn list(&self) -> Vec<(String, f64, String)> {
        let arms = self.arms.read().expect("arms lock");
        arms.iter().map(|a| (a.name.clone(), a.share, a.engine.id.clone())).collect()
    }
}

/// Where a user falls in [0, 1): FNV-1a over the id, then SplitMix64's finaliser, whose top 53
/// bits make the fraction. FNV-1a alone leaves the top bits of short, similar ids ("u1", "u2", …)
/// unevenly spread: 1,110 of 10,000 such ids fell below 0.1.
fn bucket(user: &str) -> f64 {
    let mut h = user.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A fresh request id for a feed served by `arm`.
pub fn request_id(arm: &str) -> String {
    format!("{arm}.{:016x}", rand::rng().random::<u64>())
}

/// The arm a request id names.
fn arm_of(request_id: &str) -> Option<&str> {
    request_id.rsplit_once('.').map(|(arm, _)| arm)
}

/// What one arm's users did with the items it served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct ArmCounts {
    /// Feeds served since the server started (not kept across restarts).
    pub feeds: u64,
    pub impressions: u64,
    pub clicks: u64,
    pub likes: u64,
    pub skips: u64,
    pub watch_seconds: f64,
}

/// Online counts per arm, from the events that carry a request id. Events are counted as they
/// commit and, at start, from the whole store, so the counts survive a restart; feeds are counted
/// as they are served.
#[derive(Default)]
pub struct Online {
    counts: Mutex<BTreeMap<String, ArmCounts>>,
}

impl Online {
    pub fn feed(&self, arm: &str) {
        self.counts.lock().expect("online lock").entry(arm.into()).or_default().feeds += 1;
    }

    /// Counts committed events toward the arms their request ids name.
    pub fn record(&self, events: &[UserEvent]) {
        let mut counts = self.counts.lock().expect("online lock");
        for e in events {
            let Some(arm) = e.event.request_id.as_deref().and_then(arm_of) else { continue };
            // A request id can name any arm, so only the ones that exist or existed are kept
            // apart: a client cannot grow this map without bound.
            let Some(c) = counts.get_mut(arm) else { continue };
            match e.event.kind {
                EventKind::Impression => c.impressions += 1,
                EventKind::Click => c.clicks += 1,
                EventKind::Like => c.likes += 1,
                EventKind::Skip => c.skips += 1,
                EventKind::WatchTime => c.watch_seconds += f64::from(e.event.value.unwrap_or(0.0)),
                EventKind::Rating | EventKind::Undo => {}
            }
        }
    }

    /// Makes room for an arm's counts, so that its events are kept.
    pub fn open(&self, arm: &str) {
        self.counts.lock().expect("online lock").entry(arm.into()).or_default();
    }

    pub fn counts(&self, arm: &str) -> ArmCounts {
        self.counts.lock().expect("online lock").get(arm).copied().unwrap_or_default()
    }

    /// The counts as Prometheus series, labelled by arm.
    pub fn render(&self, out: &mut String) {
        let counts = self.counts.lock().expect("online lock");
        type Read = fn(&ArmCounts) -> f64;
        let series: [(&str, Read); 6] = [
            ("onerec_online_feeds_total", |c| c.feeds as f64),
            ("onerec_online_impressions_total", |c| c.impressions as f64),
            ("onerec_online_clicks_total", |c| c.clicks as f64),
            ("onerec_online_likes_total", |c| c.likes as f64),
            ("onerec_online_skips_total", |c| c.skips as f64),
            ("onerec_online_watch_seconds_total", |c| c.watch_seconds),
        ];
        for (name, value) in series {
            let _ = writeln!(out, "# TYPE {name} counter");
            for (arm, c) in counts.iter() {
                let _ = writeln!(out, "{name}{{arm=\"{arm}\"}} {}", value(c));
            }
        }
        // The rates per impression, for dashboards that do not divide; none before an impression.
        type Part = fn(&ArmCounts) -> u64;
        let rates: [(&str, Part); 2] = [("onerec_online_ctr", |c| c.clicks), ("onerec_online_like_rate", |c| c.likes)];
        for (name, part) in rates {
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (arm, c) in counts.iter().filter(|(_, c)| c.impressions > 0) {
                let _ = writeln!(out, "{name}{{arm=\"{arm}\"}} {}", part(c) as f64 / c.impressions as f64);
            }
        }
    }
}

/// A rate per impression, and its difference from `main`'s.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, ToSchema)]
pub struct Rate {
    /// Events per impression; absent without impressions.
    pub rate: Option<f64>,
    /// This arm's rate minus `main`'s, with a 95% confidence interval; absent for `main` and
    /// where either arm has no impressions.
    pub difference: Option<[f64; 3]>,
}

/// One arm of `GET /admin/experiments`.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ArmSummary {
    pub arm: String,
    /// The id of the snapshot it serves.
    pub model: String,
    /// Share of users assigned to it.
    pub share: f64,
    pub counts: ArmCounts,
    /// Clicks per impression.
    pub ctr: Rate,
    /// Likes per impression.
    pub like_rate: Rate,
}

/// Answer of `GET /admin/experiments`.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Experiments {
    pub arms: Vec<ArmSummary>,
}

/// `successes / trials`, and the Wald 95% interval of its difference from `base`'s:
/// `[difference, low, high]`.
fn rate(successes: u64, trials: u64, base: Option<(u64, u64)>) -> Rate {
    let p = |s: u64, n: u64| (n > 0).then(|| s as f64 / n as f64);
    let rate = p(successes, trials);
    let difference = base.and_then(|(bs, bn)| {
        let (a, b) = (rate?, p(bs, bn)?);
        let variance = |q: f64, n: u64| q.clamp(0.0, 1.0) * (1.0 - q.clamp(0.0, 1.0)) / n as f64;
        let half = 1.96 * (variance(a, trials) + variance(b, bn)).sqrt();
        Some([a - b, a - b - half, a - b + half])
    });
    Rate { rate, difference }
}

/// Each arm's counts and rates, and its difference from `main`.
pub fn summarise(arms: &Arms, online: &Online) -> Experiments {
    let main = online.counts(MAIN);
    let arms = arms
        .list()
        .into_iter()
        .map(|(arm, share, model)| {
            let c = online.counts(&arm);
            let base = |s: u64| (arm != MAIN).then_some((s, main.impressions));
            ArmSummary {
                ctr: rate(c.clicks, c.impressions, base(main.clicks)),
                like_rate: rate(c.likes, c.impressions, base(main.likes)),
                arm,
                model,
                share,
                counts: c,
            }
        })
        .collect();
    Experiments { arms }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread_evenly() {
        assert_eq!(bucket("user-1"), bucket("user-1"));
        let buckets: Vec<f64> = (0..10_000).map(|u| bucket(&format!("u{u}"))).collect();
        assert!(buckets.iter().all(|b| (0.0..1.0).contains(b)));
        // Binomial: 1,000 ± 30 expected in each tenth.
        for tenth in 0..10 {
            let (low, high) = (tenth as f64 / 10.0, (tenth + 1) as f64 / 10.0);
            let count = buckets.iter().filter(|&&b| (low..high).contains(&b)).count();
            assert!((910..1090).contains(&count), "{count} of 10,000 in [{low}, {high})");
        }
    }

    #[test]
    fn request_ids_name_their_arm() {
        let id = request_id("treat-1");
        assert_eq!(arm_of(&id), Some("treat-1"));
        assert_ne!(request_id("main"), request_id("main"));
    }

    /// The interval is the textbook one: p = 0.1 on 1000 trials against 0.05 on 1000 gives a
    /// difference of 0.05 ± 1.96 · √(0.09/1000 + 0.0475/1000) = 0.05 ± 0.0230.
    #[test]
    fn differences_carry_a_wald_interval() {
        let r = rate(100, 1000, Some((50, 1000)));
        assert_eq!(r.rate, Some(0.1));
        let [d, lo, hi] = r.difference.unwrap();
        let half = 1.96 * (0.1f64 * 0.9 / 1000.0 + 0.05 * 0.95 / 1000.0).sqrt();
        assert!((d - 0.05).abs() < 1e-12 && (lo - (0.05 - half)).abs() < 1e-12 && (hi - (0.05 + half)).abs() < 1e-12);
        assert!((half - 0.0230).abs() < 1e-4);
        assert_eq!(rate(1, 0, Some((1, 10))), Rate { rate: None, difference: None });
        assert_eq!(rate(1, 10, None).difference, None);
    }

    #[test]
    fn events_count_toward_the_arm_their_request_names() {
        let online = Online::default();
        online.open(MAIN);
        online.open("b");
        let event = |kind, value, request_id: Option<&str>| UserEvent {
            user: "u".into(),
            event: onerec_core::api::StoredEvent {
                event_id: "e".into(),
                item: "i".into(),
                kind,
                value,
                timestamp: 0,
                request_id: request_id.map(String::from),
            },
        };
        online.record(&[
            event(EventKind::Impression, None, Some("b.00ff")),
            event(EventKind::Impression, None, Some("main.01")),
            event(EventKind::Click, None, Some("b.02")),
            event(EventKind::WatchTime, Some(12.5), Some("b.03")),
            event(EventKind::Like, None, None),
            event(EventKind::Like, None, Some("forged.04")),
        ]);
        let b = online.counts("b");
        assert_eq!((b.impressions, b.clicks, b.likes, b.watch_seconds), (1, 1, 0, 12.5));
        assert_eq!(online.counts(MAIN).impressions, 1);
        assert_eq!(online.counts("forged"), ArmCounts::default(), "an unknown arm is not kept");
        let mut text = String::new();
        online.render(&mut text);
        assert!(text.contains("onerec_online_clicks_total{arm=\"b\"} 1"), "{text}");
        assert!(text.contains("onerec_online_ctr{arm=\"b\"} 1\n"), "{text}");
        assert!(text.contains("onerec_online_like_rate{arm=\"main\"} 0\n"), "{text}");
    }
}
