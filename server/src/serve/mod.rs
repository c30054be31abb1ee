//! `onerec serve`: the HTTP service (DESIGN.md §2, Server). One `Router` built by [`router`], small
//! handlers in [`handlers`], decoding batched on worker threads ([`batcher`]), events kept in a
//! durable store ([`store`]).

mod batcher;
mod engine;
mod error;
mod handlers;
mod histories;
mod metrics;
mod store;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{BoxError, Json, Router};
use burn::tensor::Device;
use onerec_core::data::Dataset;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_http::services::{ServeDir, ServeFile};
use utoipa::OpenApi;

pub use batcher::BatchConfig;
use batcher::Batcher;
use engine::{Catalogue, Engine};
use error::AppError;
use histories::Histories;
use metrics::Metrics;
use store::EventStore;

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
    pub timeout: Duration,
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
        }
    }
}

/// What the handlers share.
pub struct AppState {
    engine: RwLock<Arc<Engine>>,
    catalogue: Arc<Catalogue>,
    histories: Arc<Histories>,
    store: EventStore,
    batcher: Batcher,
    decode_slots: Arc<Semaphore>,
    limits: Limits,
    admin_token: Option<String>,
    snapshot_path: PathBuf,
    device: Device,
    metrics: Arc<Metrics>,
}

impl AppState {
    /// The engine now serving; a request keeps the one it took even if a reload swaps it.
    fn engine(&self) -> Arc<Engine> {
        self.engine.read().expect("engine lock").clone()
    }

    /// Swaps in `engine`; returns the id of the one it replaced.
    fn swap_engine(&self, engine: Engine) -> String {
        let old = std::mem::replace(&mut *self.engine.write().expect("engine lock"), Arc::new(engine));
        old.id.clone()
    }
}

/// Everything `onerec serve` is started with.
pub struct ServeConfig {
    pub snapshot: PathBuf,
    pub dataset: Dataset,
    pub data_dir: PathBuf,
    pub web_dir: PathBuf,
    pub device: Device,
    pub addr: String,
    pub admin_token: Option<String>,
    pub limits: Limits,
    pub batching: BatchConfig,
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
        handlers::item,
        handlers::healthz,
        handlers::readyz,
        handlers::metrics,
        handlers::reload
    )
)]
struct ApiDoc;

/// The OpenAPI document of every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Loads everything, serves until SIGTERM or Ctrl-C, then lets requests in flight finish and the
/// event writer drain before returning.
pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    let catalogue = Arc::new(Catalogue::new(config.dataset));
    let engine = Engine::load(&config.snapshot, &catalogue.dataset, &config.device)?;
    let histories = Arc::new(Histories::default());
    let (store, writer) = {
        let histories = histories.clone();
        EventStore::open(&config.data_dir, Box::new(move |events| histories.apply(events)))?
    };
    let stored = store.all()?;
    histories.apply(&stored);
    let metrics = Arc::new(Metrics::default());
    let state = Arc::new(AppState {
        engine: RwLock::new(Arc::new(engine)),
        catalogue,
        histories,
        store,
        batcher: Batcher::start(config.batching, metrics.clone()),
        decode_slots: Arc::new(Semaphore::new(config.limits.max_decodes)),
        limits: config.limits,
        admin_token: config.admin_token,
        snapshot_path: config.snapshot,
        device: config.device,
        metrics,
    });
    let listener = tokio::net::TcpListener::bind(&config.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.addr))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        model = %state.engine().id,
        events = stored.len(),
        "serving in {:.1} s", started.elapsed().as_secs_f64()
    );
    // The line scripts and tests wait for; it names the real port when `--addr` asked for port 0.
    println!("onerec serving on http://{addr}/");
    let app = router(state.clone(), &config.web_dir);
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    // Dropping the last store handle lets the writer commit what is queued and stop.
    drop(state);
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    tracing::info!("stopped; the event store is flushed");
    Ok(())
}

/// The one router: API routes, admin, operations, and the web app as the fallback.
fn router(state: Arc<AppState>, web_dir: &Path) -> Router {
    let limits = state.limits.clone();
    let api = Router::new()
        .route("/v1/feed", get(handlers::feed))
        .route("/v1/events", post(handlers::post_events))
        .route("/v1/users", get(handlers::users))
        .route("/v1/users/{id}/history", get(handlers::history))
        .route("/v1/items/{id}", get(handlers::item))
        .route("/admin/reload", post(handlers::reload))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.json", get(|| async { Json(openapi()) }))
        .route("/v1/{*rest}", get(unknown_route).post(unknown_route));
    let index = web_dir.join("index.html");
    api.fallback_service(ServeDir::new(web_dir).fallback(ServeFile::new(index)))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
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
