//! The durable event store: every acknowledged event survives a crash.
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
//! Layout: `events[(user, seq)] = JSON StoredEvent`, so a user's history is one range scan, and
//! `event_ids[event_id] = seq`, which makes a retried event a no-op.

use std::path::Path;
use std::sync::mpsc;
use std::thread;

use onerec_core::api::{EventsStored, StoredEvent};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
const EVENT_IDS: TableDefinition<&str, u64> = TableDefinition::new("event_ids");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_SEQ: &str = "next_seq";

/// A user's event, as written.
#[derive(Clone, Debug)]
pub struct UserEvent {
    pub user: String,
    pub event: StoredEvent,
}

/// Called inside the writer, after the commit and before the acknowledgement, with the events
/// that were new: how the serving caches learn of them before the client can ask again.
pub type OnCommit = Box<dyn Fn(&[UserEvent]) + Send>;

struct WriteJob {
    events: Vec<UserEvent>,
    reply: oneshot::Sender<Result<EventsStored, String>>,
}

/// Handle to the store; cheap to clone. Dropping every handle lets the writer finish what is
/// queued and stop.
#[derive(Clone)]
pub struct EventStore {
    jobs: mpsc::Sender<WriteJob>,
    db: std::sync::Arc<Database>,
}

impl EventStore {
    /// Opens (or creates) `dir/events.redb` and starts the writer.
    pub fn open(dir: &Path, on_commit: OnCommit) -> anyhow::Result<(EventStore, thread::JoinHandle<()>)> {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join("events.redb");
        let db = Database::create(&path).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        let db = std::sync::Arc::new(db);
        let (jobs, queue) = mpsc::channel();
        let writer_db = db.clone();
        let writer = thread::Builder::new()
            .name("event-writer".into())
            .spawn(move || write_loop(&writer_db, queue, on_commit))?;
        Ok((EventStore { jobs, db }, writer))
    }

    /// Appends a batch durably; resolves once it is fsynced. Events whose id is already stored
    /// are counted as duplicates and left alone.
    pub async fn append(&self, events: Vec<UserEvent>) -> Result<EventsStored, String> {
        let (reply, done) = oneshot::channel();
        self.jobs.send(WriteJob { events, reply }).map_err(|_| "the event writer has stopped".to_string())?;
        done.await.map_err(|_| "the event writer has stopped".to_string())?
    }

    /// Every stored event, user by user in write order.
    pub fn all(&self) -> anyhow::Result<Vec<UserEvent>> {
        let read = self.db.begin_read()?;
        let table = match read.open_table(EVENTS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            let event = serde_json::from_slice(value.value())?;
            out.push(UserEvent { user: key.value().0.to_string(), event });
        }
        Ok(out)
    }
}

fn write_loop(db: &Database, queue: mpsc::Receiver<WriteJob>, on_commit: OnCommit) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        jobs.extend(queue.try_iter());
        match write_batch(db, &jobs) {
            Ok((counts, fresh)) => {
                on_commit(&fresh);
                for (job, count) in jobs.into_iter().zip(counts) {
                    let _ = job.reply.send(Ok(count));
                }
            }
            Err(e) => {
                tracing::error!("event store write failed: {e}");
                for job in jobs {
                    let _ = job.reply.send(Err(format!("the event store could not write: {e}")));
                }
            }
        }
    }
}

/// Writes every job's events in one fsynced transaction; returns each job's counts and the events
/// that were new.
fn write_batch(db: &Database, jobs: &[WriteJob]) -> Result<(Vec<EventsStored>, Vec<UserEvent>), redb::Error> {
    let txn = db.begin_write()?;
    let mut counts = Vec::with_capacity(jobs.len());
    let mut fresh = Vec::new();
    {
        let mut events = txn.open_table(EVENTS)?;
        let mut ids = txn.open_table(EVENT_IDS)?;
        let mut meta = txn.open_table(META)?;
        let mut seq = meta.get(NEXT_SEQ)?.map_or(0, |v| v.value());
        for job in jobs {
            let mut count = EventsStored { stored: 0, duplicates: 0 };
            for e in &job.events {
                if ids.get(e.event.event_id.as_str())?.is_some() {
                    count.duplicates += 1;
                    continue;
                }
                let json = serde_json::to_vec(&e.event).expect("events serialise");
                events.insert((e.user.as_str(), seq), json.as_slice())?;
                ids.insert(e.event.event_id.as_str(), seq)?;
                seq += 1;
                count.stored += 1;
                fresh.push(e.clone());
            }
            counts.push(count);
        }
        meta.insert(NEXT_SEQ, seq)?;
    }
    txn.commit()?;
    Ok((counts, fresh))
}
