//! `onerec serve`: the HTTP service (DESIGN.md §2, Server). One `Router` built by [`router`], small
//! handlers in [`handlers`], credentials and quotas as a layer ([`auth`]), decoding batched on
//! worker threads ([`batcher`]), events kept in a durable store ([`store`]), connections bounded
//! by [`listener`].

mod auth;
mod batcher;
mod catalogue_log;
mod engine;
mod error;
mod experiment;
mod handlers;
mod histories;
mod listener;
mod metrics;
mod static_files;
pub mod store;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{BoxError, Json, Router};
use burn::tensor::Device;
use onerec_core::data::Dataset;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;

use auth::Auth;
pub use auth::Quotas;
pub use batcher::BatchConfig;
use batcher::Batcher;
use catalogue_log::CatalogueLog;
use engine::{Catalogue, Engine};
use error::AppError;
use experiment::{Arms, MAIN, Online};
use histories::Histories;
pub use listener::ConnectionLimits;
use metrics::Metrics;
use store::{EventStore, StoreLocation, Writer};

/// Bounds on what one request may ask and how long it may take.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_k: usize,
    pub max_pool: usize,
    pub max_beam: usize,
    pub max_events: usize,
    pub max_body_bytes: usize,
    /// Decodes admitted at once (running or queued); beyond it the answer is 503.
    pub max_decodes: usize,
    /// Requests of any kind in flight; beyond it the answer is 503.
    pub max_requests: usize,
    /// For one decode or one store write.
    pub timeout: Duration,
    /// For a whole request, receiving its body included: a client that trickles its body is cut
    /// off with 408.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_k: 100,
            max_pool: 500,
            max_beam: 512,
            max_events: 1000,
            max_body_bytes: 1 << 20,
            max_decodes: 64,
            max_requests: 512,
            timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Slate positions kept for items added while serving (controlled exposure). Generative retrieval
/// alone hardly ever names them: the model has never seen anyone choose them, so their IDs and
/// scores are far below those of items it knows (on MovieLens-100K, none of 169 added films made
/// a top 10). The kept positions go to the fresh items users chose most since they were added
/// (a like, a high rating, a long watch), then to those the model ranks highest for the user: the
/// model alone ranks new items poorly (new-film hit@10 0.017 on MovieLens-100K, against 0.155 for
/// the week's most rated).
#[derive(Clone, Copy, Debug)]
pub struct FreshSlots {
    /// The share of a slate's positions, rounded to whole positions; 0 keeps none.
    pub share: f64,
    /// How long after it is added an item counts as fresh.
    pub max_age: Duration,
}

impl Default for FreshSlots {
    fn default() -> Self {
        FreshSlots { share: 0.1, max_age: Duration::from_secs(7 * 86_400) }
    }
}

impl FreshSlots {
    /// Positions kept in a slate of `k`.
    fn slots(&self, k: usize) -> usize {
        ((k as f64 * self.share).round() as usize).min(k)
    }
}

/// What the handlers share.
pub struct AppState {
    /// The snapshots serving, `main` and any A/B arms.
    arms: Arms,
    /// What users did with each arm's feeds.
    online: Arc<Online>,
    histories: Arc<Histories>,
    /// Where the changes to the catalogue are kept.
    catalogue_log: CatalogueLog,
    /// Held while the engines are rebuilt for a reload or a change to the catalogue, so that
    /// every arm decodes into the same catalogue.
    changing: tokio::sync::Mutex<()>,
    fresh: FreshSlots,
    store: EventStore,
    batcher: Batcher,
    decode_slots: Arc<Semaphore>,
    limits: Limits,
    auth: Auth,
    admin_token: Option<String>,
    snapshot_path: PathBuf,
    web_dir: PathBuf,
    device: Device,
    metrics: Arc<Metrics>,
    /// The event writer: readiness watches it, shutdown waits for it.
    writer: Mutex<Option<Writer>>,
}

impl AppState {
    /// The catalogue being served: `main`'s, which every arm shares.
    fn catalogue(&self) -> Arc<Catalogue> {
        self.arms.main().catalogue.clone()
    }

    /// Brings the histories up to every event stored before `arrived` (on any replica), counting
    /// the answers that must make do without.
    async fn catch_up(&self, arrived: Instant) -> store::Freshness {
        let freshness = self.store.catch_up(arrived).await;
        if freshness != store::Freshness::Current {
            self.metrics.observe_stale_read();
        }
        freshness
    }

    fn writer_alive(&self) -> bool {
        self.writer.lock().expect("writer lock").as_ref().is_some_and(|w| !w.is_finished())
    }
}

/// Everything `onerec serve` is started with.
pub struct ServeConfig {
    pub snapshot: PathBuf,
    pub data_dir: PathBuf,
    /// Where events are kept: the local file in `data_dir`, or PostgreSQL shared by replicas.
    pub store: StoreLocation,
    pub web_dir: PathBuf,
    pub device: Device,
    pub addr: String,
    /// Where `/metrics` is served without a token; without it, only behind the admin token.
    pub metrics_addr: Option<String>,
    pub admin_token: Option<String>,
    /// API keys; without any, one is made for the run and logged.
    pub api_keys: Vec<String>,
    /// Signs user tokens; kept in `data_dir` when not given.
    pub token_secret: Option<String>,
    pub limits: Limits,
    pub quotas: Quotas,
    pub batching: BatchConfig,
    /// The cap on connections; `None` sizes it to the open-file limit.
    pub max_connections: Option<usize>,
    pub header_timeout: Duration,
    /// Snapshots held at once: `main` and the A/B arms.
    pub max_models: usize,
    pub fresh: FreshSlots,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "onerec",
        description = "A generative recommender: feeds decoded as semantic IDs, and the events that steer them."
    ),
    paths(
        handlers::feed,
        handlers::post_events,
        handlers::history,
        handlers::users,
        handlers::mint_token,
        handlers::item,
        handlers::healthz,
        handlers::readyz,
        handlers::metrics,
        handlers::reload,
        handlers::add_items,
        handlers::retire_item,
        handlers::export_events,
        handlers::experiments
    )
)]
struct ApiDoc;

/// The OpenAPI document of every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

impl AppState {
    /// Loads the snapshot, opens the event store and starts the decoding workers.
    pub async fn open(config: &ServeConfig, dataset: Dataset) -> anyhow::Result<Arc<AppState>> {
        let (catalogue_log, changes) = CatalogueLog::open(&config.data_dir)?;
        let (catalogue, passed) = Catalogue::new(dataset).changed(&changes);
        for reason in passed {
            tracing::warn!("catalogue change passed over: {reason}");
        }
        let catalogue = Arc::new(catalogue);
        let histories = Arc::new(Histories::default());
        let online = Arc::new(Online::default());
        online.open(MAIN);
        let (store, writer) = {
            let (histories, catalogue, online) = (histories.clone(), catalogue.clone(), online.clone());
            EventStore::open(
                &config.store,
                &config.data_dir,
                Box::new(move |events| {
                    histories.apply(&catalogue, events);
                    online.record(events);
                }),
            )
            .await?
        };
        let served = histories.served(&catalogue);
        let engine = Engine::load(&config.snapshot, catalogue, &served, &config.device)?;
        let secret = auth::load_secret(config.token_secret.as_deref(), &config.data_dir)?;
        let metrics = Arc::new(Metrics::default());
        Ok(Arc::new(AppState {
            arms: Arms::new(engine, config.max_models),
            online,
            histories,
            catalogue_log,
            changing: tokio::sync::Mutex::new(()),
            fresh: config.fresh,
            store,
            batcher: Batcher::start(config.batching, metrics.clone()),
            decode_slots: Arc::new(Semaphore::new(config.limits.max_decodes)),
            limits: config.limits.clone(),
            auth: Auth::new(config.api_keys.clone(), secret, config.quotas),
            admin_token: config.admin_token.clone(),
            snapshot_path: config.snapshot.clone(),
            web_dir: config.web_dir.clone(),
            device: config.device.clone(),
            metrics,
            writer: Mutex::new(Some(writer)),
        }))
    }
}

/// Loads everything, serves until SIGTERM or Ctrl-C, then lets requests in flight finish and the
/// event writer drain before returning.
pub async fn run(mut config: ServeConfig, dataset: Dataset) -> anyhow::Result<()> {
    let started = Instant::now();
    let open_files = listener::raise_open_file_limit();
    let connections = ConnectionLimits {
        max_connections: config.max_connections.unwrap_or_else(|| listener::default_max_connections(open_files)),
        header_timeout: config.header_timeout,
    };
    let made_key = if config.api_keys.is_empty() {
        config.api_keys.push(auth::random_key()?);
        true
    } else {
        false
    };
    let state = AppState::open(&config, dataset).await?;
    forget_idle_callers(Arc::downgrade(&state));
    let listener = tokio::net::TcpListener::bind(&config.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.addr))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        model = %state.arms.main().id,
        max_connections = connections.max_connections,
        "serving in {:.1} s", started.elapsed().as_secs_f64()
    );
    if let Some(metrics_addr) = &config.metrics_addr {
        let metrics_listener = tokio::net::TcpListener::bind(metrics_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {metrics_addr} for metrics: {e}"))?;
        tracing::info!("metrics on http://{}/metrics", metrics_listener.local_addr()?);
        let app = metrics_router(state.clone());
        tokio::spawn(async move { axum::serve(metrics_listener, app).await });
    }
    if !config.web_dir.join("index.html").is_file() {
        tracing::warn!("{}", static_files::not_built(&config.web_dir).detail);
    }
    // The line scripts and tests wait for; it names the real port when `--addr` asked for port 0.
    println!("onerec serving on http://{addr}/");
    if made_key {
        println!(
            "no --api-key given; this run's key: open http://{addr}/#key={} for the operator's feed",
            config.api_keys[0]
        );
    }
    let app = router(state.clone());
    listener::serve(listener, app, connections, state.metrics.clone(), shutdown_signal()).await;
    // Dropping the last store handle lets the writer commit what is queued and stop.
    let writer = state.writer.lock().expect("writer lock").take();
    drop(state);
    if let Some(writer) = writer {
        writer.join().await;
    }
    tracing::info!("stopped; the event store is flushed");
    Ok(())
}

/// The one router: the API behind the credential layer, admin and operations, and the web app as
/// the fallback. Every error leaves it as JSON.
pub fn router(state: Arc<AppState>) -> Router {
    let limits = state.limits.clone();
    let api = Router::new()
        .route("/v1/feed", get(handlers::feed))
        .route("/v1/events", post(handlers::post_events))
        .route("/v1/users", get(handlers::users))
        .route("/v1/users/{id}/history", get(handlers::history))
        .route("/v1/tokens", post(handlers::mint_token))
        .route("/v1/items/{id}", get(handlers::item))
        .route("/v1/{*rest}", get(unknown_route).post(unknown_route))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::authenticate));
    Router::new()
        .merge(api)
        .route("/admin/reload", post(handlers::reload))
        .route("/admin/items", post(handlers::add_items))
        .route("/admin/items/{id}", axum::routing::delete(handlers::retire_item))
        .route("/admin/events", get(handlers::export_events))
        .route("/admin/experiments", get(handlers::experiments))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.json", get(|| async { Json(openapi()) }))
        .fallback_service(static_files::router(&state.web_dir))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout))
        .layer(middleware::from_fn(error::json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .layer(
            ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(|_: BoxError| async { AppError::overloaded() }))
                .load_shed()
                .concurrency_limit(limits.max_requests),
        )
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Once a minute, drops the rate-limit buckets of callers who have gone quiet, so that they hold
/// memory only for recent callers. Holds the state weakly, so that shutdown is not kept waiting.
fn forget_idle_callers(state: std::sync::Weak<AppState>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let Some(state) = state.upgrade() else { return };
            state.auth.forget_idle();
        }
    });
}

/// `/metrics` alone, without a token, for `--metrics-addr`.
fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new().route("/metrics", get(handlers::open_metrics)).with_state(state)
}

async fn unknown_route() -> AppError {
    AppError::not_found("unknown_route", "no such API route; see /openapi.json")
}

/// Counts each request and times it, by route template (not raw path, which would explode the
/// series with ids).
async fn record_metrics(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("static", |p| p.as_str()).to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics.observe_request(&route, response.status().as_u16(), started.elapsed());
    response
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { () = ctrl_c => {}, () = terminate => {} }
    tracing::info!("shutting down: finishing requests in flight");
}
