//! What the store's files hold, and opening them without trusting them: the tables, the framed
//! event values, the format marker, and the acknowledgement record kept beside the database.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, anyhow, bail};
use onerec_core::api::StoredEvent;
use redb::{Builder, Database, DatabaseError, ReadTransaction, ReadableDatabase, TableDefinition};

/// `(user, seq) → frame`. Keys are bytes, not `&str`, so that a damaged key is reported as a
/// damaged event instead of panicking in redb's UTF-8 decoding.
pub(super) const EVENTS: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("events");
/// `event_id → seq`: what makes a retried event a no-op.
pub(super) const EVENT_IDS: TableDefinition<&[u8], u64> = TableDefinition::new("event_ids");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// META key whose presence says the file is an onerec event store, and whose value is the format.
const FORMAT: &str = "onerec_event_store_format";
const FORMAT_VERSION: u64 = 1;
/// META key: the sequence number the next event gets; never decreases, even when events are dropped.
pub(super) const NEXT_SEQ: &str = "next_seq";
/// META key: how many rows the events table holds, to notice rows that vanished.
pub(super) const EVENT_COUNT: &str = "events";

/// An event's stored value: CRC-32 (little-endian) of the key and the JSON, then the JSON.
pub(super) fn frame(user: &[u8], seq: u64, event: &StoredEvent) -> Vec<u8> {
    let json = serde_json::to_vec(event).expect("events serialise");
    let mut out = Vec::with_capacity(4 + json.len());
    out.extend_from_slice(&checksum(user, seq, &json).to_le_bytes());
    out.extend_from_slice(&json);
    out
}

/// Checks a stored value against its key; the reason it is damaged otherwise.
pub(super) fn unframe(user: &[u8], seq: u64, value: &[u8]) -> Result<StoredEvent, String> {
    let Some((stored, json)) = value.split_first_chunk::<4>() else {
        return Err(format!("value of {} bytes is too short to be framed", value.len()));
    };
    if u32::from_le_bytes(*stored) != checksum(user, seq, json) {
        return Err("checksum mismatch".to_string());
    }
    serde_json::from_slice(json).map_err(|e| format!("checksum matches but the event does not parse: {e}"))
}

fn checksum(user: &[u8], seq: u64, json: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&(user.len() as u64).to_le_bytes());
    hasher.update(user);
    hasher.update(&seq.to_le_bytes());
    hasher.update(json);
    hasher.finalize()
}

/// The META counters.
#[derive(Clone, Copy, Debug)]
pub(super) struct Meta {
    pub next_seq: u64,
    pub events: u64,
}

/// Reads META, refusing a redb database that is not an onerec event store of this format.
pub(super) fn read_meta(read: &ReadTransaction) -> anyhow::Result<Meta> {
    let foreign = || anyhow!("a redb database, but not an onerec event store (no format marker)");
    let meta = match read.open_table(META) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Err(foreign()),
        Err(e) => return Err(e.into()),
    };
    let value = |key: &str| meta.get(key).map(|v| v.map(|v| v.value()));
    match value(FORMAT)? {
        Some(FORMAT_VERSION) => {}
        Some(other) => bail!("an onerec event store of format {other}, but this build reads format {FORMAT_VERSION}"),
        None => return Err(foreign()),
    }
    let counter = |key: &str| value(key)?.ok_or_else(|| anyhow!("META has no {key:?}"));
    Ok(Meta { next_seq: counter(NEXT_SEQ)?, events: counter(EVENT_COUNT)? })
}

/// Runs `f`, turning a panic (redb panics on some damaged files) into an error naming the file.
pub(super) fn guarded<T>(path: &Path, doing: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.with_context(|| format!("{doing} {}", path.display())),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(anyhow!(
                "{doing} {}: redb panicked ({message}); the file is damaged: see `onerec store check`",
                path.display()
            ))
        }
    }
}

/// An open database whose close cannot unwind into its owner: redb's close panics on some
/// damaged files, and it runs wherever the last handle happens to drop.
pub(super) struct Db {
    db: Option<Database>,
    path: PathBuf,
}

impl Deref for Db {
    type Target = Database;

    fn deref(&self) -> &Database {
        self.db.as_ref().expect("open until dropped")
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let db = self.db.take();
        if catch_unwind(AssertUnwindSafe(|| drop(db))).is_err() {
            tracing::error!(
                "redb panicked closing {}; the file is damaged: see `onerec store check`",
                self.path.display()
            );
        }
    }
}

/// An open store, and whether redb had to recover it after an unclean shutdown.
pub(super) struct Opened {
    pub db: Db,
    pub meta: Meta,
    pub recovered: bool,
}

/// Opens an existing store. Refuses anything but a regular, non-empty redb file with our marker:
/// redb would initialise an empty file, and a foreign one is not ours to write to.
pub(super) fn open_existing(path: &Path) -> anyhow::Result<Opened> {
    let metadata = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !metadata.is_file() {
        bail!("{} is not a regular file, so not an event store", path.display());
    }
    if metadata.len() == 0 {
        bail!(
            "{} is empty (0 bytes), not an event store; a new store is only created where no file is, so \
             remove it if it should start empty",
            path.display()
        );
    }
    guarded(path, "cannot open the event store", || {
        let recovered = Arc::new(AtomicBool::new(false));
        let flag = recovered.clone();
        let db = Builder::new().set_repair_callback(move |_| flag.store(true, Ordering::Relaxed)).open(path).map_err(
            |e| match e {
                DatabaseError::DatabaseAlreadyOpen => {
                    anyhow!("it is in use by another process (a running `onerec serve`?)")
                }
                e => e.into(),
            },
        )?;
        let db = Db { db: Some(db), path: path.to_path_buf() };
        let meta = read_meta(&db.begin_read()?)?;
        Ok(Opened { db, meta, recovered: recovered.load(Ordering::Relaxed) })
    })
}

/// Creates an empty store at `path`, where no file may be. It is built under a temporary name and
/// renamed into place once its marker is committed, so a failed start leaves no half store.
pub(super) fn create(path: &Path) -> anyhow::Result<Db> {
    guarded(path, "cannot create the event store", || {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".new");
        let tmp = PathBuf::from(tmp);
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let db = Db { db: Some(Builder::new().create(&tmp)?), path: path.to_path_buf() };
        let txn = db.begin_write()?;
        {
            txn.open_table(EVENTS)?;
            txn.open_table(EVENT_IDS)?;
            let mut meta = txn.open_table(META)?;
            meta.insert(FORMAT, FORMAT_VERSION)?;
            meta.insert(NEXT_SEQ, 0)?;
            meta.insert(EVENT_COUNT, 0)?;
        }
        txn.commit()?;
        fs::rename(&tmp, path)?;
        sync_dir(path)?;
        Ok(db)
    })
}

/// Makes a rename in `path`'s folder durable.
pub(super) fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

/// `events.acked`, beside the store: the `next_seq` after the last acknowledged commit, as 20
/// decimal digits. Written after each commit's fsync and before its acknowledgement, it is the
/// record to compare the store against: a store whose `next_seq` is lower has lost acknowledged
/// events. It is rewritten in place without an fsync (a process crash keeps it, a power cut may
/// leave it behind the store), so it can hide a loss but never report one that did not happen.
pub(super) struct AckRecord {
    file: File,
}

impl AckRecord {
    pub fn path(store: &Path) -> PathBuf {
        store.with_extension("acked")
    }

    /// The recorded `next_seq`, or `None` when there is no record.
    pub fn read(path: &Path) -> anyhow::Result<Option<u64>> {
        match fs::read_to_string(path) {
            Ok(text) => text.trim().parse().map(Some).map_err(|_| {
                anyhow!(
                    "{} is damaged: {:?} is not a sequence number; `onerec store repair` rewrites it",
                    path.display(),
                    text
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    /// Writes the record durably: at creation, at each start, and in repair.
    pub fn write(path: &Path, next_seq: u64) -> anyhow::Result<()> {
        Ok(onerec_core::codec::write_atomic(path, Self::text(next_seq).as_bytes())?)
    }

    /// Opens the record for the writer.
    pub fn open(path: &Path) -> anyhow::Result<AckRecord> {
        let file =
            OpenOptions::new().write(true).open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(AckRecord { file })
    }

    /// Records a commit; same-width text in place, so a reader sees the old value or the new one.
    pub fn record(&self, next_seq: u64) -> std::io::Result<()> {
        let mut file = &self.file;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(Self::text(next_seq).as_bytes())
    }

    fn text(next_seq: u64) -> String {
        format!("{next_seq:020}\n")
    }
}

/// The problem to report when `acked` shows events the store no longer holds.
pub(super) fn lost_acknowledged(acked: u64, meta: Meta) -> Option<String> {
    (acked > meta.next_seq).then(|| {
        format!(
            "{} acknowledged events are missing (sequence numbers {}..{}): redb rolled back a damaged commit, \
             or the file was replaced by an older copy",
            acked - meta.next_seq,
            meta.next_seq,
            acked
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use onerec_core::api::EventKind;

    #[test]
    fn a_frame_round_trips_and_any_changed_byte_or_key_is_caught() {
        let event = StoredEvent {
            event_id: "e1".into(),
            item: "i7".into(),
            kind: EventKind::Rating,
            value: Some(4.0),
            timestamp: 1_700_000_000,
            request_id: Some("main.00ff".into()),
        };
        let value = frame(b"alice", 3, &event);
        assert_eq!(unframe(b"alice", 3, &value).unwrap(), event);
        for i in 0..value.len() {
            let mut damaged = value.clone();
            damaged[i] ^= 0x04;
            assert!(unframe(b"alice", 3, &damaged).is_err(), "byte {i} changed unnoticed");
        }
        assert!(unframe(b"alicf", 3, &value).is_err());
        assert!(unframe(b"alice", 4, &value).is_err());
        assert!(unframe(b"alice", 3, &value[..3]).unwrap_err().contains("too short"));
    }

    #[test]
    fn a_panic_becomes_an_error_naming_the_file() {
        let error = guarded(Path::new("/data/events.redb"), "cannot read", || -> anyhow::Result<()> { panic!("boom") });
        let error = format!("{:#}", error.unwrap_err());
        assert!(error.contains("cannot read /data/events.redb: redb panicked (boom)"), "{error}");
    }
}
