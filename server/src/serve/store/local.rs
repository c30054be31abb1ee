//! The embedded event store, one redb file in the data dir (the default): every acknowledged event
//! survives a crash, and damage to the file is reported, never served.
//!
//! **Why redb.** It is an embedded, pure-Rust, copy-on-write B-tree in one file: a committed write
//! transaction is fsynced (`Durability::Immediate`, the default) and a crash can only lose
//! transactions that never committed. SQLite in WAL mode gives the same guarantee, but brings a C
//! library and SQL strings for what is a two-table key-value job.
//!
//! **Group commit.** One writer thread owns all writes. It takes every batch that is waiting,
//! writes them in one transaction, fsyncs once and then acknowledges each batch, so the fsync
//! cost is shared by concurrent clients instead of serialising them.
//!
//! Layout (`format`): `events[(user, seq)] = CRC-32 ‖ JSON StoredEvent`, so a user's history is
//! one range scan; `event_ids[event_id] = seq`, which makes a retried event a no-op; `meta` holds
//! a format marker, `next_seq` and the event count. Beside it, `events.acked` records the
//! `next_seq` of the last acknowledged commit.
//!
//! **What is detected.** redb checks its own page checksums only when it recovers from an unclean
//! shutdown, so the store checks what it serves itself. At start (and in `onerec store check`):
//! - an event whose key or value bytes changed: the CRC-32 over user, seq and JSON fails;
//! - an event id stored twice, rows that vanished or appeared (against META's count), and an
//!   `event_ids` index that disagrees with the events;
//! - acknowledged events that are gone, because redb's recovery rolled back a damaged last commit,
//!   or an older copy of the file replaced it: `events.acked` is ahead of META's `next_seq`. The
//!   record is not fsynced, so after a power cut it may lag and hide such a loss, never invent one;
//!   a missing or unreadable record is refused too;
//! - recovery after an unclean shutdown, logged as a warning naming the file;
//! - a file that is not a store: not a regular file, 0 bytes, not redb, or redb without our marker
//!   or of another format. A new store is only created where no file is (`events.redb` missing
//!   while `events.acked` records events is refused);
//! - a redb panic while opening, reading, writing or closing, reported as an error naming the file.
//!
//! All but the recovery warning refuse the start, pointing to `onerec store check` and
//! `onerec store repair` (`inspect`); repair rewrites the store without what is damaged and
//! accepts any loss. Not detected: a change that keeps the CRC valid (it guards against accidents,
//! not forgery). Damage to redb's own structure (branch pages, lengths) shows as a redb error or
//! panic naming the file, which repair cannot salvage: restore a backup.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::thread;

use anyhow::bail;
use onerec_core::api::{EventsStored, UserEvent};
use redb::ReadableTable;

use super::format::{self, AckRecord, Db, EVENT_COUNT, EVENT_IDS, EVENTS, META, NEXT_SEQ, frame};
use super::inspect::{self, store_path};
use super::queue::{self, Jobs, Queue, WriteJob};
use super::{OnCommit, StoreError};

/// Handle to the store; cheap to clone. Dropping every handle lets the writer finish what is
/// queued and stop.
#[derive(Clone)]
pub struct LocalStore {
    jobs: Jobs,
}

impl LocalStore {
    /// Opens `dir/events.redb`, or creates it where no file is, replays its events through
    /// `on_commit` and starts the writer. Refuses a file that is not a store, a store that lost
    /// acknowledged events, and one with damaged events (saying what is damaged).
    pub fn open(dir: &Path, on_commit: OnCommit) -> anyhow::Result<(LocalStore, thread::JoinHandle<()>)> {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let path = store_path(dir);
        let ack_path = AckRecord::path(&path);
        let acked = AckRecord::read(&ack_path)?;
        let advice = advice(dir, "accepts the loss");
        let exists = match std::fs::symlink_metadata(&path) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => bail!("cannot read {}: {e}", path.display()),
        };
        let (db, next_seq) = if exists {
            let opened = format::open_existing(&path)?;
            if opened.recovered {
                tracing::warn!("{} was not shut down cleanly; redb recovered its last intact commit", path.display());
            }
            match acked {
                None => bail!(
                    "{} is missing, so a loss of acknowledged events would go unnoticed; {advice}",
                    ack_path.display()
                ),
                Some(acked) => {
                    if let Some(lost) = format::lost_acknowledged(acked, opened.meta) {
                        bail!("{}: {lost}; {advice}", path.display());
                    }
                }
            }
            (opened.db, opened.meta.next_seq)
        } else {
            if let Some(acked @ 1..) = acked {
                bail!(
                    "{} is missing, but {} records {acked} acknowledged events: restore the store, or delete the \
                     record to start an empty one",
                    path.display(),
                    ack_path.display()
                );
            }
            AckRecord::write(&ack_path, 0)?;
            let db = format::create(&path)?;
            (db, 0)
        };
        // The record catches up with commits whose acknowledgement it missed.
        AckRecord::write(&ack_path, next_seq)?;
        let ack = AckRecord::open(&ack_path)?;
        on_commit(&inspect::scan(&db, &path)?.verified(&path)?);
        let (jobs, queue) = queue::queue();
        let writer = thread::Builder::new()
            .name("event-writer".into())
            .spawn(move || write_loop(&db, &path, &ack, queue, on_commit))?;
        Ok((LocalStore { jobs }, writer))
    }

    /// Appends a batch durably; resolves once it is fsynced. Events whose id is already stored
    /// are counted as duplicates and left alone.
    pub async fn append(&self, events: Vec<UserEvent>) -> Result<EventsStored, StoreError> {
        self.jobs.append(events).await
    }
}

/// What an operator reads when the server refuses its store: the two commands, and what repair
/// would do in this case.
pub(super) fn advice(dir: &Path, repair_does: &str) -> String {
    format!(
        "the server does not start on this store: `onerec store check --data-dir {0}` reports what is wrong, \
         and `onerec store repair --data-dir {0}` {repair_does}",
        dir.display()
    )
}

fn write_loop(db: &Db, path: &Path, ack: &AckRecord, mut queue: Queue, on_commit: OnCommit) {
    while let Some(jobs) = queue.blocking_next_group() {
        let written = catch_unwind(AssertUnwindSafe(|| write_batch(db, &jobs)))
            .unwrap_or_else(|_| Err("redb panicked; the file may be damaged".to_string()));
        let counts = match written {
            Ok(committed) => {
                if let Err(e) = ack.record(committed.next_seq) {
                    tracing::error!("cannot update the acknowledgement record of {}: {e}", path.display());
                }
                on_commit(&committed.fresh);
                Ok(committed.counts)
            }
            Err(e) => {
                tracing::error!("event store {} write failed: {e}", path.display());
                Err(StoreError::Failed(format!("the event store could not write: {e}")))
            }
        };
        queue::answer(jobs, counts);
    }
}

/// What one transaction wrote: each job's counts, the events that were new, and the next seq.
struct Committed {
    counts: Vec<EventsStored>,
    fresh: Vec<UserEvent>,
    next_seq: u64,
}

/// Writes every job's events in one fsynced transaction.
fn write_batch(db: &Db, jobs: &[WriteJob]) -> Result<Committed, String> {
    let write = || -> Result<Committed, redb::Error> {
        let txn = db.begin_write()?;
        let mut counts = Vec::with_capacity(jobs.len());
        let mut fresh = Vec::new();
        let next_seq;
        {
            let mut events = txn.open_table(EVENTS)?;
            let mut ids = txn.open_table(EVENT_IDS)?;
            let mut meta = txn.open_table(META)?;
            let mut seq = meta.get(NEXT_SEQ)?.map_or(0, |v| v.value());
            let mut count = meta.get(EVENT_COUNT)?.map_or(0, |v| v.value());
            for job in jobs {
                let mut stored = EventsStored { stored: 0, duplicates: 0 };
                for e in &job.events {
                    if ids.get(e.event.event_id.as_bytes())?.is_some() {
                        stored.duplicates += 1;
                        continue;
                    }
                    let user = e.user.as_bytes();
                    events.insert((user, seq), frame(user, seq, &e.event).as_slice())?;
                    ids.insert(e.event.event_id.as_bytes(), seq)?;
                    seq += 1;
                    count += 1;
                    stored.stored += 1;
                    fresh.push(e.clone());
                }
                counts.push(stored);
            }
            meta.insert(NEXT_SEQ, seq)?;
            meta.insert(EVENT_COUNT, count)?;
            next_seq = seq;
        }
        txn.commit()?;
        Ok(Committed { counts, fresh, next_seq })
    };
    write().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::inspect::{check, repair};
    use super::*;
    use onerec_core::api::{EventKind, StoredEvent};

    fn event(user: &str, id: &str, item: &str) -> UserEvent {
        let event = StoredEvent {
            event_id: id.into(),
            item: item.into(),
            kind: EventKind::Click,
            value: None,
            timestamp: 1_700_000_000,
            request_id: None,
        };
        UserEvent { user: user.into(), event }
    }

    fn open(dir: &Path) -> anyhow::Result<(LocalStore, thread::JoinHandle<()>)> {
        LocalStore::open(dir, Box::new(|_| {}))
    }

    /// Opens the store, and returns the events it replayed too.
    fn open_replaying(dir: &Path) -> anyhow::Result<(LocalStore, thread::JoinHandle<()>, Vec<UserEvent>)> {
        let replayed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = replayed.clone();
        let (store, writer) = LocalStore::open(dir, Box::new(move |e| sink.lock().unwrap().extend_from_slice(e)))?;
        let replayed = replayed.lock().unwrap().clone();
        Ok((store, writer, replayed))
    }

    fn append(store: &LocalStore, events: Vec<UserEvent>) -> EventsStored {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(store.append(events)).unwrap()
    }

    /// Writes each batch as one commit and closes the store cleanly.
    fn write(dir: &Path, batches: Vec<Vec<UserEvent>>) {
        let (store, writer) = open(dir).unwrap();
        for batch in batches {
            append(&store, batch);
        }
        drop(store);
        writer.join().unwrap();
    }

    /// Replaces every copy of `from` in the file (copy-on-write keeps old pages) with `to`.
    fn edit(path: &Path, from: &[u8], to: &[u8]) {
        let mut bytes = std::fs::read(path).unwrap();
        let at: Vec<usize> =
            bytes.windows(from.len()).enumerate().filter(|(_, w)| *w == from).map(|(i, _)| i).collect();
        assert!(!at.is_empty(), "{:?} is not in the file", String::from_utf8_lossy(from));
        for i in at {
            bytes[i..i + to.len()].copy_from_slice(to);
        }
        std::fs::write(path, bytes).unwrap();
    }

    fn error(result: anyhow::Result<impl Sized>) -> String {
        format!("{:#}", result.err().expect("refused"))
    }

    #[test]
    fn a_good_store_round_trips_and_checks_clean() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            vec![vec![event("bob", "e1", "i1"), event("alice", "e2", "i2")], vec![event("bob", "e3", "i3")]],
        );
        let (store, writer, replayed) = open_replaying(dir.path()).unwrap();
        let back: Vec<(String, String)> = replayed.into_iter().map(|e| (e.user, e.event.event_id)).collect();
        let want = [("alice", "e2"), ("bob", "e1"), ("bob", "e3")];
        assert_eq!(back, want.map(|(u, e)| (u.to_string(), e.to_string())));
        assert_eq!(append(&store, vec![event("bob", "e1", "i1")]), EventsStored { stored: 0, duplicates: 1 });
        drop(store);
        writer.join().unwrap();
        let report = check(dir.path()).unwrap();
        assert!(report.is_clean() && report.users == 2 && report.events == 3, "{report}");
    }

    #[test]
    fn a_changed_byte_in_a_value_is_refused_reported_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let batch =
            vec![event("alice", "e1", "item-1111"), event("alice", "e2", "item-2222"), event("bob", "e3", "i3")];
        write(dir.path(), vec![batch]);
        let path = store_path(dir.path());
        // Still valid JSON, and still a plausible event.
        edit(&path, b"item-2222", b"item-2223");

        let refused = error(open(dir.path()));
        for needed in [path.to_str().unwrap(), "user \"alice\" seq 1", "checksum mismatch", "onerec store repair"] {
            assert!(refused.contains(needed), "{needed:?} not in {refused}");
        }

        let report = check(dir.path()).unwrap();
        assert!(!report.is_clean() && report.events == 2, "{report}");
        assert_eq!((report.damaged[0].user.as_str(), report.damaged[0].seq), ("alice", 1));

        let repaired = repair(dir.path()).unwrap();
        let backup = repaired.backup.expect("a backup");
        assert!(backup.exists() && backup.to_str().unwrap().contains("events.redb.bak-"));
        assert!(check(dir.path()).unwrap().is_clean());
        let (store, _writer, replayed) = open_replaying(dir.path()).unwrap();
        assert_eq!(replayed.len(), 2);
        // The dropped event's id is forgotten, so the client's retry stores it again, after the others.
        assert_eq!(append(&store, vec![event("alice", "e2", "item-2222")]).stored, 1);
    }

    #[test]
    fn empty_foreign_and_unmarked_files_are_refused_not_taken_as_empty_stores() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(dir.path());
        std::fs::write(&path, b"").unwrap();
        assert!(error(open(dir.path())).contains("is empty (0 bytes)"));
        std::fs::write(&path, b"user,item\n1,2\n").unwrap();
        let foreign = error(open(dir.path()));
        assert!(foreign.contains(path.to_str().unwrap()) && foreign.contains("Not a redb database"), "{foreign}");

        std::fs::remove_file(&path).unwrap();
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, u64>::new("other")).unwrap().insert("k", 1).unwrap();
        txn.commit().unwrap();
        drop(db);
        assert!(error(open(dir.path())).contains("not an onerec event store (no format marker)"));
        assert!(std::fs::metadata(&path).unwrap().len() > 0, "the foreign file is left as it was");

        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(error(open(dir.path())).contains("is not a regular file"));
    }

    #[test]
    fn acknowledged_events_that_are_gone_refuse_the_start_until_repair_accepts_the_loss() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), vec![vec![event("alice", "e1", "i1")]]);
        let path = store_path(dir.path());
        // As if the store were replaced by a copy from before 4 more acknowledged events.
        std::fs::write(AckRecord::path(&path), "5\n").unwrap();
        let refused = error(open(dir.path()));
        assert!(refused.contains("4 acknowledged events are missing (sequence numbers 1..5)"), "{refused}");
        assert!(!check(dir.path()).unwrap().is_clean());
        assert!(repair(dir.path()).unwrap().backup.is_some());
        let (store, writer) = open(dir.path()).unwrap();
        append(&store, vec![event("bob", "e9", "i9")]);
        drop(store);
        writer.join().unwrap();
        // Sequence numbers are not reused over the lost ones.
        assert_eq!(AckRecord::read(&AckRecord::path(&path)).unwrap(), Some(6));

        std::fs::write(AckRecord::path(&path), "garbage").unwrap();
        assert!(error(open(dir.path())).contains("\"garbage\" is not a sequence number"));
        assert!(repair(dir.path()).unwrap().backup.is_some());
        assert_eq!(AckRecord::read(&AckRecord::path(&path)).unwrap(), Some(6));

        std::fs::rename(&path, dir.path().join("elsewhere")).unwrap();
        assert!(error(open(dir.path())).contains("records 6 acknowledged events"));
    }

    #[test]
    fn a_crash_recovery_that_rolls_back_an_acknowledged_commit_is_loud() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _writer) = open(dir.path()).unwrap();
        append(&store, vec![event("alice", "e1", "item-1111")]);
        append(&store, vec![event("alice", "e2", "item-2222"), event("bob", "e3", "item-3333")]);
        // A copy taken while the store is open is what a kill -9 leaves.
        let crashed = tempfile::tempdir().unwrap();
        let path = store_path(crashed.path());
        std::fs::copy(store_path(dir.path()), &path).unwrap();
        std::fs::copy(AckRecord::path(&store_path(dir.path())), AckRecord::path(&path)).unwrap();
        edit(&path, b"item-3333", b"item-3334");
        let refused = error(open(crashed.path()));
        assert!(refused.contains("2 acknowledged events are missing (sequence numbers 1..3)"), "{refused}");
        // Still refused on the next start, although redb has committed its rollback by now.
        assert!(error(open(crashed.path())).contains("2 acknowledged events are missing"));
        let report = check(crashed.path()).unwrap();
        assert_eq!(report.events, 1, "{report}");
    }

    #[test]
    fn an_event_id_stored_twice_is_dropped_by_repair_which_then_checks_clean() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), vec![vec![event("alice", "e1", "i1")]]);
        let path = store_path(dir.path());
        // What a retry would leave if the index had lost the id.
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let again = event("bob", "e1", "i1").event;
            txn.open_table(EVENTS).unwrap().insert((&b"bob"[..], 1), frame(b"bob", 1, &again).as_slice()).unwrap();
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(NEXT_SEQ, 2).unwrap();
            meta.insert(EVENT_COUNT, 2).unwrap();
        }
        txn.commit().unwrap();
        drop(db);
        let report = check(dir.path()).unwrap();
        assert_eq!(report.damaged.len(), 1, "{report}");
        assert!(report.damaged[0].reason.contains("\"e1\" is stored already, at seq 0"), "{report}");
        repair(dir.path()).unwrap();
        let report = check(dir.path()).unwrap();
        assert!(report.is_clean() && report.events == 1, "{report}");
    }
}
