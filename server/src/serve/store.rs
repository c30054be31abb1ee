//! Where acknowledged events are kept: one interface, two homes.
//!
//! - [`local`]: an embedded redb file in `--data-dir`, the default. One server owns it.
//! - [`shared`]: a PostgreSQL database (`--store postgres://…`), which several `onerec serve`
//!   replicas behind a load balancer share, each seeing every user's events whichever replica
//!   took them.
//!
//! Both give the same guarantees: an event is acknowledged only once it is durable, a batch is
//! stored all or nothing, and a retried `event_id` is a no-op. Both feed every stored event, in
//! write order, to one [`OnCommit`] callback, which keeps the serving caches (histories, A/B
//! counts) current: at start, then as events commit. A shared store also feeds its replica the
//! events other replicas stored, before that replica reads a history ([`EventStore::catch_up`]).

mod format;
mod inspect;
mod local;
mod queue;
mod shared;

pub use inspect::{CheckReport, Damaged, RepairReport, check, read_events, repair, store_path};
pub use shared::migrate;

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use onerec_core::api::{EventsStored, UserEvent};
use serde::Serialize;

use local::LocalStore;
use shared::SharedStore;

/// Called with stored events in write order, each exactly once: how the serving caches learn of
/// them. A local store calls it before it acknowledges them, a shared one before it acknowledges
/// its own and before its replica reads a history after others'.
pub type OnCommit = Box<dyn Fn(&[UserEvent]) + Send + Sync>;

/// `--store`: where events are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// `redb`: the embedded file in `--data-dir`.
    Local,
    /// `postgres://…` or `postgresql://…`: a PostgreSQL database that replicas share.
    Postgres(String),
}

impl FromStr for StoreLocation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "redb" {
            Ok(StoreLocation::Local)
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(StoreLocation::Postgres(s.to_string()))
        } else {
            Err("expected `redb` (the embedded store in --data-dir) or a postgres:// URL".into())
        }
    }
}

/// Why a write was not acknowledged.
#[derive(Clone, Debug)]
pub enum StoreError {
    /// The store cannot be reached now; nothing was acknowledged, and a retry with the same event
    /// ids is safe (503 with `Retry-After`).
    Unavailable(String),
    /// Anything else (500).
    Failed(String),
}

/// How current a replica's view of the events is.
#[derive(Debug, PartialEq)]
pub enum Freshness {
    Current,
    /// The shared store could not be read: the caches hold what was read `age` ago.
    Stale {
        age: Duration,
    },
}

/// What `/readyz` says of the store.
#[derive(Debug, Serialize)]
pub struct StoreStatus {
    /// `redb` or `postgres`.
    pub kind: &'static str,
    pub reachable: bool,
    /// Why it is not, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The event store, cheap to clone.
#[derive(Clone)]
pub enum EventStore {
    Local(LocalStore),
    Shared(SharedStore),
}

/// The thread or task that writes events. Dropping every [`EventStore`] handle lets it commit
/// what is queued and stop.
pub enum Writer {
    Thread(std::thread::JoinHandle<()>),
    Task(tokio::task::JoinHandle<()>),
}

impl Writer {
    pub fn is_finished(&self) -> bool {
        match self {
            Writer::Thread(thread) => thread.is_finished(),
            Writer::Task(task) => task.is_finished(),
        }
    }

    /// Waits until it has written what was queued.
    pub async fn join(self) {
        match self {
            Writer::Thread(thread) => {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
            Writer::Task(task) => {
                let _ = task.await;
            }
        }
    }
}

impl EventStore {
    /// Opens the store, replays every stored event through `on_commit`, and starts its writer.
    pub async fn open(
        location: &StoreLocation,
        data_dir: &Path,
        on_commit: OnCommit,
    ) -> anyhow::Result<(EventStore, Writer)> {
        match location {
            StoreLocation::Local => {
                let (store, writer) = LocalStore::open(data_dir, on_commit)?;
                Ok((EventStore::Local(store), Writer::Thread(writer)))
            }
            StoreLocation::Postgres(url) => {
                let (store, writer) = SharedStore::open(url, on_commit).await?;
                Ok((EventStore::Shared(store), Writer::Task(writer)))
            }
        }
    }

    /// Appends a batch durably, all or nothing; resolves once it is. Events whose id is already
    /// stored are counted as duplicates and left alone.
    pub async fn append(&self, events: Vec<UserEvent>) -> Result<EventsStored, StoreError> {
        match self {
            EventStore::Local(store) => store.append(events).await,
            EventStore::Shared(store) => store.append(events).await,
        }
    }

    /// Brings the caches up to every event acknowledged (by any replica) before `asked`, the
    /// moment a request came in. A local store is always current.
    pub async fn catch_up(&self, asked: Instant) -> Freshness {
        match self {
            EventStore::Local(_) => Freshness::Current,
            EventStore::Shared(store) => store.catch_up(asked).await,
        }
    }

    pub fn status(&self) -> StoreStatus {
        match self {
            EventStore::Local(_) => StoreStatus { kind: "redb", reachable: true, detail: None },
            EventStore::Shared(store) => store.status(),
        }
    }
}
