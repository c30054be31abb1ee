//! Reading the whole store and verifying it: what the server does at start, and what
//! `onerec store check` and `onerec store repair` report and fix.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use redb::{ReadableDatabase, ReadableTable};
use serde::Serialize;

use super::format::{
    self, AckRecord, Db, EVENT_COUNT, EVENT_IDS, EVENTS, META, Meta, NEXT_SEQ, frame, guarded, lost_acknowledged,
    unframe,
};
use onerec_core::api::UserEvent;

/// An event whose stored bytes fail their checksum or do not parse.
#[derive(Clone, Debug, Serialize)]
pub struct Damaged {
    /// The user as the key spells it (lossily, if the key itself is damaged).
    pub user: String,
    pub seq: u64,
    pub reason: String,
}

/// Every event read back, and what was wrong.
pub(super) struct Scan {
    /// Intact events with their sequence numbers, user by user in write order.
    pub events: Vec<(u64, UserEvent)>,
    pub damaged: Vec<Damaged>,
    /// Damage to the store as a whole: vanished rows, a wrong index.
    pub problems: Vec<String>,
    pub meta: Meta,
}

impl Scan {
    /// The events, if nothing was found damaged; otherwise what is damaged, and the advice.
    pub(super) fn verified(self, path: &Path) -> anyhow::Result<Vec<UserEvent>> {
        if self.damaged.is_empty() && self.problems.is_empty() {
            return Ok(self.events.into_iter().map(|(_, e)| e).collect());
        }
        const SHOWN: usize = 5;
        let mut found: Vec<String> = self.problems;
        found.extend(
            self.damaged
                .iter()
                .take(SHOWN)
                .map(|d| format!("user {:?} seq {} is damaged ({})", d.user, d.seq, d.reason)),
        );
        if self.damaged.len() > SHOWN {
            found.push(format!("{} more damaged events", self.damaged.len() - SHOWN));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        bail!(
            "{} is damaged: {}; {}",
            path.display(),
            found.join("; "),
            super::local::advice(dir, "drops what is damaged")
        )
    }
}

/// Reads every event, verifying each one's checksum, the row count against META, and the
/// `event_ids` index against the events.
pub(super) fn scan(db: &Db, path: &Path) -> anyhow::Result<Scan> {
    guarded(path, "cannot read the event store", || {
        let read = db.begin_read()?;
        let meta = format::read_meta(&read)?;
        let mut scan = Scan { events: Vec::new(), damaged: Vec::new(), problems: Vec::new(), meta };
        let mut rows = 0u64;
        for row in read.open_table(EVENTS)?.iter()? {
            let (key, value) = row?;
            let (user, seq) = key.value();
            rows += 1;
            let event = unframe(user, seq, value.value()).and_then(|event| match std::str::from_utf8(user) {
                Ok(user) => Ok((seq, UserEvent { user: user.to_string(), event })),
                Err(_) => Err("the user is not UTF-8".to_string()),
            });
            match event {
                Ok(event) => scan.events.push(event),
                Err(reason) => {
                    scan.damaged.push(Damaged { user: String::from_utf8_lossy(user).into_owned(), seq, reason })
                }
            }
        }
        if rows != meta.events {
            scan.problems.push(format!("the events table holds {rows} rows, but {} were written", meta.events));
        }
        // The first seq of each event id. An id stored twice (possible only after damage to the
        // index) is reported as damaged, so that a repaired index agrees with the events.
        let mut first: HashMap<&[u8], u64> = HashMap::with_capacity(scan.events.len());
        let mut repeated = Vec::new();
        for (i, (seq, e)) in scan.events.iter().enumerate() {
            if let Some(&earlier) = first.get(e.event.event_id.as_bytes()) {
                repeated.push((i, earlier));
            } else {
                first.insert(e.event.event_id.as_bytes(), *seq);
            }
        }
        let unchecked: HashSet<u64> =
            scan.damaged.iter().map(|d| d.seq).chain(repeated.iter().map(|&(i, _)| scan.events[i].0)).collect();
        let (mut matched, mut wrong) = (0usize, 0usize);
        for row in read.open_table(EVENT_IDS)?.iter()? {
            let (id, seq) = row?;
            let seq = seq.value();
            if first.get(id.value()) == Some(&seq) {
                matched += 1;
            } else if !unchecked.contains(&seq) {
                wrong += 1;
            }
        }
        let missing = first.len() - matched;
        if missing + wrong > 0 {
            scan.problems.push(format!(
                "the event_ids index disagrees with the events: {missing} entries missing, {wrong} wrong"
            ));
        }
        for &(i, earlier) in repeated.iter().rev() {
            let (seq, e) = scan.events.remove(i);
            let reason = format!("its event id {:?} is stored already, at seq {earlier}", e.event.event_id);
            scan.damaged.push(Damaged { user: e.user, seq, reason });
        }
        Ok(scan)
    })
}

/// What `onerec store check` found.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub file: PathBuf,
    /// Users with at least one intact event.
    pub users: usize,
    /// Intact events.
    pub events: usize,
    pub damaged: Vec<Damaged>,
    /// Damage to the store as a whole, including acknowledged events that are gone.
    pub problems: Vec<String>,
    /// redb recovered the file after an unclean shutdown while opening it.
    pub recovered: bool,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty() && self.problems.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} users, {} intact events", self.file.display(), self.users, self.events)?;
        if self.recovered {
            write!(f, "\nrecovered after an unclean shutdown")?;
        }
        if !self.damaged.is_empty() {
            write!(f, "\ndamaged events ({}):", self.damaged.len())?;
            for d in &self.damaged {
                write!(f, "\n  user {:?} seq {}: {}", d.user, d.seq, d.reason)?;
            }
        }
        for p in &self.problems {
            write!(f, "\nproblem: {p}")?;
        }
        if self.is_clean() {
            write!(f, "\nno damage found")?;
        }
        Ok(())
    }
}

/// The store of a data dir.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join("events.redb")
}

/// Opens and verifies the store in `data_dir`; changes nothing but what redb's own crash recovery
/// does, as any open would.
pub fn check(data_dir: &Path) -> anyhow::Result<CheckReport> {
    Ok(inspect(data_dir)?.0)
}

/// Every event of the store in `data_dir`, verified, user by user in write order: what training on
/// served events reads when no server holds the store (a running one answers `GET /admin/events`).
pub fn read_events(data_dir: &Path) -> anyhow::Result<Vec<UserEvent>> {
    let (_, scan, _) =
        inspect(data_dir).map_err(|e| anyhow::anyhow!("{e:#}; a running server exports them at GET /admin/events"))?;
    scan.verified(&store_path(data_dir))
}

/// Opens, scans, compares with the acknowledgement record (returned too), and closes.
fn inspect(data_dir: &Path) -> anyhow::Result<(CheckReport, Scan, Option<u64>)> {
    let path = store_path(data_dir);
    if !path.exists() {
        bail!("there is no event store at {}", path.display());
    }
    let opened = format::open_existing(&path)?;
    let mut scan = scan(&opened.db, &path)?;
    let ack_path = AckRecord::path(&path);
    let acked = match AckRecord::read(&ack_path) {
        Ok(Some(acked)) => {
            scan.problems.extend(lost_acknowledged(acked, scan.meta));
            Some(acked)
        }
        Ok(None) => {
            scan.problems.push(format!("{} is missing", ack_path.display()));
            None
        }
        Err(e) => {
            scan.problems.push(format!("{e:#}"));
            None
        }
    };
    let report = CheckReport {
        file: path,
        users: scan.events.iter().map(|(_, e)| e.user.as_str()).collect::<BTreeSet<_>>().len(),
        events: scan.events.len(),
        damaged: scan.damaged.clone(),
        problems: scan.problems.clone(),
        recovered: opened.recovered,
    };
    Ok((report, scan, acked))
}

/// What `onerec store repair` did.
#[derive(Debug, Serialize)]
pub struct RepairReport {
    /// What was found, before the repair.
    pub found: CheckReport,
    /// Where the original file now is; `None` when there was nothing to repair.
    pub backup: Option<PathBuf>,
}

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.found)?;
        match &self.backup {
            None => write!(f, "\nnothing to repair"),
            Some(backup) => write!(
                f,
                "\nrepaired: kept {} events, dropped {} damaged ones; the original is kept as {}",
                self.found.events,
                self.found.damaged.len(),
                backup.display()
            ),
        }
    }
}

/// Rewrites the store in `data_dir` with its intact events only, a fresh index and counters, and
/// an acknowledgement record that accepts any loss; the original is renamed to
/// `events.redb.bak-<unix seconds>` (`-2`, `-3`… if that is taken). A dropped event's id is
/// forgotten, so a client that sends it again has it stored.
pub fn repair(data_dir: &Path) -> anyhow::Result<RepairReport> {
    let (found, scan, acked) = inspect(data_dir)?;
    if found.is_clean() {
        return Ok(RepairReport { found, backup: None });
    }
    let path = found.file.clone();
    // Sequence numbers never go back, not even over events that were lost.
    let next_seq =
        scan.events.iter().map(|(seq, _)| seq + 1).chain([scan.meta.next_seq, acked.unwrap_or(0)]).max().unwrap_or(0);
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let backup = (1..)
        .map(|n| match n {
            1 => path.with_extension(format!("redb.bak-{seconds}")),
            n => path.with_extension(format!("redb.bak-{seconds}-{n}")),
        })
        .find(|backup| !backup.exists())
        .expect("a free name");
    let rebuilt = path.with_extension("redb.repair");
    write_store(&rebuilt, &scan.events, next_seq)
        .with_context(|| format!("cannot write the repaired store {}", rebuilt.display()))?;
    fs::rename(&path, &backup).with_context(|| format!("cannot move {} to {}", path.display(), backup.display()))?;
    fs::rename(&rebuilt, &path).with_context(|| format!("cannot move {} to {}", rebuilt.display(), path.display()))?;
    format::sync_dir(&path)?;
    AckRecord::write(&AckRecord::path(&path), next_seq)?;
    Ok(RepairReport { found, backup: Some(backup) })
}

/// Writes a new store holding `events` under their sequence numbers.
fn write_store(path: &Path, events: &[(u64, UserEvent)], next_seq: u64) -> anyhow::Result<()> {
    let db = format::create(path)?;
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(EVENTS)?;
        let mut ids = txn.open_table(EVENT_IDS)?;
        for &(seq, ref e) in events {
            table.insert((e.user.as_bytes(), seq), frame(e.user.as_bytes(), seq, &e.event).as_slice())?;
            ids.insert(e.event.event_id.as_bytes(), seq)?;
        }
        let mut meta = txn.open_table(META)?;
        meta.insert(NEXT_SEQ, next_seq)?;
        meta.insert(EVENT_COUNT, events.len() as u64)?;
    }
    txn.commit()?;
    Ok(())
}
