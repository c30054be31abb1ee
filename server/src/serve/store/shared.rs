//! The event store in PostgreSQL (`--store postgres://…`), which several `onerec serve` replicas
//! share.
//!
//! **Why tokio-postgres and deadpool-postgres.** The store runs six fixed statements. sqlx would
//! bring compile-time query macros that need a database (or checked-in metadata) at build time;
//! tokio-postgres is the maintained async driver beneath much of the ecosystem, and
//! deadpool-postgres a small pool over it with timeouts on waiting, connecting and recycling, so a
//! database that is down fails a request within a second instead of hanging it. Connections are
//! plain TCP or a Unix socket: there is no TLS yet, so keep the database on a private network.
//!
//! **The same guarantees as the local store.**
//! - An event is acknowledged only after its transaction commits, with `synchronous_commit` set
//!   on for that transaction, so a server default of `off` cannot weaken it.
//! - A unique key on `event_id` and `ON CONFLICT DO NOTHING` make a retry a no-op, whichever
//!   replica it reaches.
//! - A batch is one transaction.
//! - The schema is versioned ([`MIGRATIONS`]) and brought up to date at start, under an advisory
//!   lock so that replicas starting together take turns, or by `onerec store migrate`. A database
//!   migrated by a newer onerec is refused.
//!
//! **How replicas see each other's events.** Each event gets a `seq` from an identity column
//! while its writer holds a transaction-scoped advisory lock, so sequence numbers become visible
//! in commit order: a reader that sees seq `s` will never later find a smaller one appear. (Without
//! the lock, a transaction that took 5 could commit after one that took 6, and a replica already
//! past 6 would never read 5.) Each replica keeps the highest seq it has applied to its caches and,
//! before it reads a user's history, reads what lies past it ([`Feed::catch_up`]): a primary-key
//! range scan that returns nothing when nothing is new. One read serves every request that arrived
//! before it was sent. The lock serialises commits across replicas; each commit carries every
//! batch its replica had queued (group commit), as the local store does.
//!
//! LISTEN/NOTIFY would spare that read, but a notification arrives after the commit, on its own
//! time: a feed that replica B answers right after replica A acknowledged an event could miss it.
//! The read per request is what gives a user their own events on every replica, and it is cheap:
//! reading only when notified was measured to save about 0.4 ms of a feed's p50 with one replica
//! on a 2-core machine, and nothing visible with two (README, "Scaling out"). A background read
//! every second keeps an idle replica's counts current and notices when the database is back.
//!
//! **When PostgreSQL is down.** Writes are refused with [`StoreError::Unavailable`] (503 and
//! `Retry-After`), never acknowledged falsely: a commit whose outcome is unknown is refused too,
//! and the client's retry with the same ids is safe. Reads are answered from the caches, marked
//! with their age ([`Freshness::Stale`]). The pool reconnects by itself once the database is back.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use deadpool_postgres::{Client, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use onerec_core::api::{EventsStored, StoredEvent, UserEvent};
use tokio_postgres::NoTls;

use super::queue::{self, Jobs, Queue, WriteJob};
use super::{Freshness, OnCommit, StoreError, StoreStatus};

/// The schema, one migration per version. Never change one that has shipped: add the next.
const MIGRATIONS: &[&str] = &[
    // 1: events in commit order, unique by id. Replicas read them by seq, so the primary key is
    // the only index.
    "CREATE TABLE onerec_events (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id text NOT NULL UNIQUE,
        user_id text NOT NULL,
        event jsonb NOT NULL,
        stored_at timestamptz NOT NULL DEFAULT now()
    )",
];

/// Advisory lock keys: one taken while migrating, one while writing events.
const MIGRATION_LOCK: i64 = 0x6f6e_6572_6563_0001;
const WRITE_LOCK: i64 = 0x6f6e_6572_6563_0002;

/// How long a request waits for the database before it reads the caches instead; also the
/// pool's bound on waiting for, opening and checking a connection.
const TIMEOUT: Duration = Duration::from_secs(1);
/// How long a write may take before it is refused as unavailable.
const WRITE_TIMEOUT: Duration = Duration::from_secs(4);
/// How often the background read runs; after a failed read, requests use the caches this long
/// before one of them tries the database again.
const POLL: Duration = Duration::from_secs(1);
/// Events read per query when catching up.
const PAGE: i64 = 10_000;

const INSERT: &str = "INSERT INTO onerec_events (event_id, user_id, event)
    SELECT e.event_id, e.user_id, e.event::jsonb
    FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS e(event_id, user_id, event, n)
    ORDER BY e.n
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id";

const READ: &str = "SELECT seq, user_id, event::text FROM onerec_events WHERE seq > $1 ORDER BY seq LIMIT $2";

/// Handle to the shared store; cheap to clone.
#[derive(Clone)]
pub struct SharedStore {
    jobs: Jobs,
    feed: Arc<Feed>,
}

impl SharedStore {
    /// Connects, migrates the schema, replays every stored event through `on_commit`, and starts
    /// the writer and the background read. Refuses to start without the database: a replica
    /// without its events would serve histories that are wrong, not just old.
    pub async fn open(url: &str, on_commit: OnCommit) -> anyhow::Result<(SharedStore, tokio::task::JoinHandle<()>)> {
        let pool = pool(url)?;
        let mut client = connect(&pool).await?;
        let (from, to) = apply_migrations(&mut client).await?;
        if from < to {
            tracing::info!("PostgreSQL store migrated from schema version {from} to {to}");
        }
        drop(client);
        let feed = Arc::new(Feed {
            pool: pool.clone(),
            on_commit,
            progress: tokio::sync::Mutex::new(Progress { applied: 0, read_at: None }),
            health: Mutex::new(Health { last_read: Instant::now(), failing: None }),
        });
        {
            let mut progress = feed.progress.lock().await;
            let sent = Instant::now();
            feed.read_new(&mut progress).await.map_err(|e| anyhow!("cannot read the stored events: {e}"))?;
            progress.read_at = Some(sent);
        }
        read_in_background(Arc::downgrade(&feed));
        let (jobs, queue) = queue::queue();
        let writer = tokio::spawn(write_loop(pool, feed.clone(), queue));
        Ok((SharedStore { jobs, feed }, writer))
    }

    pub async fn append(&self, events: Vec<UserEvent>) -> Result<EventsStored, StoreError> {
        self.jobs.append(events).await
    }

    pub async fn catch_up(&self, asked: Instant) -> Freshness {
        self.feed.catch_up(asked).await
    }

    pub fn status(&self) -> StoreStatus {
        let failing = self.feed.health.lock().expect("health lock").failing.clone();
        StoreStatus { kind: "postgres", reachable: failing.is_none(), detail: failing.map(|(_, why)| why) }
    }
}

/// Brings the database's schema up to this build's version; returns the versions before and
/// after. What `onerec store migrate` runs, and every replica at start.
pub async fn migrate(url: &str) -> anyhow::Result<(usize, usize)> {
    let pool = pool(url)?;
    apply_migrations(&mut connect(&pool).await?).await
}

/// A pool that gives up within [`TIMEOUT`]. The URL is never echoed: it may hold a password.
fn pool(url: &str) -> anyhow::Result<Pool> {
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|e| anyhow!("--store is not a valid PostgreSQL URL: {e}"))?;
    config.connect_timeout(TIMEOUT).application_name("onerec");
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(4)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(TIMEOUT))
        .create_timeout(Some(TIMEOUT))
        .recycle_timeout(Some(TIMEOUT))
        .build()
        .context("cannot set up the PostgreSQL connection pool")
}

async fn connect(pool: &Pool) -> anyhow::Result<Client> {
    pool.get().await.map_err(|e| anyhow!("cannot connect to the PostgreSQL store: {}", describe(&e)))
}

async fn apply_migrations(client: &mut Client) -> anyhow::Result<(usize, usize)> {
    let txn = client.transaction().await?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS onerec_migrations (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let from: i32 = txn.query_one("SELECT coalesce(max(version), 0) FROM onerec_migrations", &[]).await?.get(0);
    let (from, to) = (from as usize, MIGRATIONS.len());
    if from > to {
        bail!("the database holds onerec schema version {from}, newer than this onerec's {to}: upgrade onerec");
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(from).map(|(i, sql)| (i as i32 + 1, sql)) {
        txn.batch_execute(sql).await.with_context(|| format!("schema migration {version} failed"))?;
        txn.execute("INSERT INTO onerec_migrations (version) VALUES ($1)", &[&version]).await?;
    }
    txn.commit().await?;
    Ok((from, to))
}

/// Takes every batch that is waiting, writes them in one transaction, brings this replica's
/// caches up to date, and acknowledges them.
async fn write_loop(pool: Pool, feed: Arc<Feed>, mut queue: Queue) {
    while let Some(jobs) = queue.next_group().await {
        let written = tokio::time::timeout(WRITE_TIMEOUT, write(&pool, &jobs)).await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "PostgreSQL did not commit within {} s; the events may or may not be stored, and a retry with the \
                 same event ids is safe",
                WRITE_TIMEOUT.as_secs()
            )))
        });
        match &written {
            // A client's own events are in this replica's caches before it hears they are stored.
            Ok(_) => {
                feed.read(Instant::now()).await;
            }
            Err(e) => {
                let why = match e {
                    StoreError::Unavailable(why) => {
                        feed.failed(why.clone());
                        why
                    }
                    StoreError::Failed(why) => why,
                };
                tracing::error!("PostgreSQL event store write failed: {why}");
            }
        }
        queue::answer(jobs, written);
    }
}

/// Writes the jobs' events in one transaction; returns each job's counts.
async fn write(pool: &Pool, jobs: &[WriteJob]) -> Result<Vec<EventsStored>, StoreError> {
    let mut client =
        pool.get().await.map_err(|e| StoreError::Unavailable(format!("cannot reach PostgreSQL: {}", describe(&e))))?;
    let events: Vec<&UserEvent> = jobs.iter().flat_map(|job| &job.events).collect();
    let ids: Vec<&str> = events.iter().map(|e| e.event.event_id.as_str()).collect();
    let users: Vec<&str> = events.iter().map(|e| e.user.as_str()).collect();
    let bodies = events
        .iter()
        .map(|e| serde_json::to_string(&e.event))
        .collect::<Result<Vec<String>, _>>()
        .map_err(|e| StoreError::Failed(format!("cannot encode an event: {e}")))?;
    let txn = client.transaction().await.map_err(refused)?;
    // One round trip for both.
    let setup = format!("SET LOCAL synchronous_commit TO on; SELECT pg_advisory_xact_lock({WRITE_LOCK})");
    txn.batch_execute(&setup).await.map_err(refused)?;
    let insert = txn.prepare_cached(INSERT).await.map_err(refused)?;
    let rows = txn.query(&insert, &[&ids, &users, &bodies]).await.map_err(refused)?;
    txn.commit().await.map_err(refused)?;
    // Each new id counts once, for the first event that carries it; the rest are duplicates.
    let mut new: HashSet<String> = rows.iter().map(|row| row.get(0)).collect();
    Ok(jobs
        .iter()
        .map(|job| {
            let stored = job.events.iter().filter(|e| new.remove(&e.event.event_id)).count();
            EventsStored { stored, duplicates: job.events.len() - stored }
        })
        .collect())
}

/// A failed statement: unavailable (retry) when the connection, the server's state or a
/// conflict with another transaction is to blame, failed otherwise.
fn refused(e: tokio_postgres::Error) -> StoreError {
    // SQLSTATE classes: 08 connection, 40 transaction rollback, 53 insufficient resources,
    // 57 operator intervention (a shutdown).
    match e.code().map(|code| code.code()) {
        Some(code) if !["08", "40", "53", "57"].iter().any(|class| code.starts_with(class)) => {
            StoreError::Failed(format!("PostgreSQL refused the write: {}", describe(&e)))
        }
        _ => StoreError::Unavailable(format!("PostgreSQL is unavailable: {}", describe(&e))),
    }
}

/// An error with its causes: the drivers' own messages name only the kind ("db error"), and
/// keep the server's words in the source.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        source = cause.source();
    }
    text
}

/// Brings this replica's caches up to the stored events.
struct Feed {
    pool: Pool,
    on_commit: OnCommit,
    /// Held while reading and applying, so that each event reaches `on_commit` once, in order.
    progress: tokio::sync::Mutex<Progress>,
    health: Mutex<Health>,
}

struct Progress {
    /// The highest seq applied.
    applied: i64,
    /// When the last read that succeeded was sent: it saw every event acknowledged before.
    read_at: Option<Instant>,
}

struct Health {
    /// When the last read that succeeded was sent.
    last_read: Instant,
    /// When the database last failed, and why, until a read succeeds.
    failing: Option<(Instant, String)>,
}

impl Feed {
    /// For a request that came in at `asked`. While the database is failing, only one request a
    /// [`POLL`] tries it; the others read the caches at once.
    async fn catch_up(&self, asked: Instant) -> Freshness {
        let failed_lately =
            self.health.lock().expect("health lock").failing.as_ref().is_some_and(|(at, _)| at.elapsed() < POLL);
        if failed_lately {
            return self.stale();
        }
        self.read(asked).await
    }

    /// Reads every event past those applied, unless a read sent after `asked` did already.
    async fn read(&self, asked: Instant) -> Freshness {
        let Ok(mut progress) = tokio::time::timeout(TIMEOUT, self.progress.lock()).await else {
            return self.stale();
        };
        if progress.read_at.is_some_and(|sent| sent >= asked) {
            return Freshness::Current;
        }
        let sent = Instant::now();
        let read = tokio::time::timeout(TIMEOUT, self.read_new(&mut progress))
            .await
            .unwrap_or_else(|_| Err(format!("PostgreSQL did not answer within {} s", TIMEOUT.as_secs())));
        match read {
            Ok(()) => {
                progress.read_at = Some(sent);
                let mut health = self.health.lock().expect("health lock");
                if let Some((_, why)) = health.failing.take() {
                    tracing::info!("the PostgreSQL store is reachable again (it failed with: {why})");
                }
                health.last_read = sent;
                Freshness::Current
            }
            Err(why) => {
                self.failed(format!("cannot read new events: {why}"));
                self.stale()
            }
        }
    }

    async fn read_new(&self, progress: &mut Progress) -> Result<(), String> {
        let client = self.pool.get().await.map_err(|e| describe(&e))?;
        // Prepared once per connection: a statement sent as text costs a second round trip.
        let read = client.prepare_cached(READ).await.map_err(|e| describe(&e))?;
        loop {
            let rows = client.query(&read, &[&progress.applied, &PAGE]).await.map_err(|e| describe(&e))?;
            let mut events = Vec::with_capacity(rows.len());
            for row in &rows {
                let (seq, user, body): (i64, String, &str) = (row.get(0), row.get(1), row.get(2));
                let event: StoredEvent =
                    serde_json::from_str(body).map_err(|e| format!("the event at seq {seq} does not parse: {e}"))?;
                events.push(UserEvent { user, event });
            }
            if let Some(last) = rows.last() {
                progress.applied = last.get(0);
            }
            (self.on_commit)(&events);
            if rows.len() < PAGE as usize {
                return Ok(());
            }
        }
    }

    fn failed(&self, why: String) {
        let mut health = self.health.lock().expect("health lock");
        if health.failing.is_none() {
            tracing::warn!("the PostgreSQL store failed: {why}; feeds are served from the caches, writes refused");
        }
        health.failing = Some((Instant::now(), why));
    }

    fn stale(&self) -> Freshness {
        Freshness::Stale { age: self.health.lock().expect("health lock").last_read.elapsed() }
    }
}

/// Every [`POLL`], reads what other replicas stored, until the store is dropped.
fn read_in_background(feed: Weak<Feed>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(feed) = feed.upgrade() else { return };
            feed.read(Instant::now()).await;
        }
    });
}
