//! The HTTP handlers: each validates its input, does one thing, and answers JSON.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use onerec_core::api::{
    EventBatch, EventKind, EventsStored, Feed, FeedItem, History, ItemInfo, NewEvent, UserEvent, UserToken, Users,
};
use onerec_core::data::{Event, User};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::{Caller, require_admin, unix_now};
use super::engine::{Catalogue, Change, Engine};
use super::error::{ApiJson, ApiQuery, AppError};
use super::experiment;
use super::histories::{HISTORY_PAGE, MAX_PAGE};
use super::store::{Freshness, StoreError, StoreStatus};

type Shared = State<Arc<AppState>>;

/// Set on an answer read from histories that may lack recent events, because the shared event
/// store could not be read: how many seconds old they are.
pub const STALE_HEADER: HeaderName = HeaderName::from_static("onerec-stale");

/// A JSON answer read from the histories, marked with [`STALE_HEADER`] when they are stale.
pub struct Read<T>(Json<T>, Freshness);

impl<T: Serialize> IntoResponse for Read<T> {
    fn into_response(self) -> Response {
        let mut response = self.0.into_response();
        if let Freshness::Stale { age } = self.1 {
            response.headers_mut().insert(STALE_HEADER, HeaderValue::from(age.as_secs()));
        }
        response
    }
}

/// Query of `GET /v1/feed`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// The user; omit it for an anonymous cold-start feed.
    user: Option<String>,
    /// Slate size (default 10).
    k: Option<usize>,
    /// Candidates in all, slate included, for on-device re-ranking (default `k`).
    pool: Option<usize>,
    /// Beam width, at least `pool` (default: the larger of `pool` and 32, or for an aligned
    /// snapshot with a slate, the beam its weight was chosen with).
    beam: Option<usize>,
    /// Leave out items the user has already seen (default true).
    exclude_seen: Option<bool>,
}

/// The slate for a user, decoded by constrained beam search. With a shared event store it first
/// reads the events other replicas stored; when the store cannot be read, the slate comes from
/// the history known so far, and the `onerec-stale` header says how many seconds old it is.
#[utoipa::path(get, path = "/v1/feed", params(FeedQuery), responses(
    (status = 200, body = Feed), (status = 400, body = onerec_core::api::ApiError),
    (status = 404, body = onerec_core::api::ApiError), (status = 503, body = onerec_core::api::ApiError)))]
pub async fn feed(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<FeedQuery>,
) -> Result<Read<Feed>, AppError> {
    let arrived = Instant::now();
    let limits = &state.limits;
    if let Some(user) = &query.user {
        caller.require_user(user)?;
    }
    let k = query.k.unwrap_or(10);
    if k == 0 || k > limits.max_k {
        return Err(AppError::bad_request(format!("k must be between 1 and {}, not {k}", limits.max_k)));
    }
    let pool = query.pool.unwrap_or(k);
    if pool < k || pool > limits.max_pool {
        return Err(AppError::bad_request(format!("pool must be between k = {k} and {}, not {pool}", limits.max_pool)));
    }
    if let Some(beam) = query.beam
        && (beam < pool || beam > limits.max_beam)
    {
        return Err(AppError::bad_request(format!(
            "beam must be between pool = {pool} and {}, not {beam}",
            limits.max_beam
        )));
    }
    let freshness = match query.user {
        Some(_) => state.catch_up(arrived).await,
        None => Freshness::Current,
    };
    // The engine first: the history is read with the catalogue its model decodes into.
    let (arm, engine) = state.arms.assign(query.user.as_deref());
    let beam = query.beam.unwrap_or(pool.max(engine.default_beam()).min(limits.max_beam));
    let catalogue = &engine.catalogue;
    let (user, history) = match &query.user {
        Some(id) => state.histories.history(catalogue, id).ok_or_else(|| {
            AppError::not_found(
                "unknown_user",
                format!("no user {id:?}: omit `user` for a cold-start feed, or post events for them first"),
            )
        })?,
        None => (User { id: String::new(), features: Vec::new() }, Vec::new()),
    };
    // Beyond the concurrency bound, refuse at once rather than queue without limit.
    let _slot = state.decode_slots.clone().try_acquire_owned().map_err(|_| AppError::overloaded())?;
    let now = unix_now();
    let recommender = engine.recommender();
    let request = recommender.request(&user, &history, now, beam, query.exclude_seen.unwrap_or(true));
    // The positions kept for fresh items go to those users chose most since they were added, and
    // among equals (at first, all) to those the model ranks highest for this user. The second
    // search covers every fresh item the user has not seen; both queue together, so the workers
    // decode them in one batch.
    let fresh = catalogue.fresh(now, state.fresh.max_age.as_secs() as i64);
    let slots = state.fresh.slots(k).min(fresh.len());
    let fresh_beam = fresh.len().min(limits.max_beam);
    let fresh_request = (slots > 0).then(|| recommender.among(&request, &fresh, fresh_beam));
    let deadline = Instant::now() + limits.timeout;
    let history: Arc<[Event]> = history.into();
    let decode = |request| state.batcher.decode(engine.clone(), request, history.clone(), deadline);
    let (decoded, fresh_decoded) = tokio::time::timeout(limits.timeout, async {
        match fresh_request {
            Some(fresh_request) => tokio::join!(decode(request), decode(fresh_request)),
            None => (decode(request).await, Some(Vec::new())),
        }
    })
    .await
    .map_err(|_| timed_out("decoding"))?;
    let failed = || AppError::internal("decoding failed");
    let (decoded, fresh_decoded) = (decoded.ok_or_else(failed)?, fresh_decoded.ok_or_else(failed)?);
    let ranked: Vec<FeedItem> = decoded.iter().filter_map(|h| engine.feed_item(h)).collect();
    let mut fresh: Vec<FeedItem> = fresh_decoded.iter().filter_map(|h| engine.feed_item(h)).collect();
    // What users chose among them first, then the model's order (the sort is stable).
    fresh.sort_by_cached_key(|f| std::cmp::Reverse(state.histories.chosen(&f.id)));
    let mut items = with_fresh_slots(ranked, fresh, k, pool, slots);
    let pool = items.split_off(k.min(items.len()));
    let token = query.user.as_deref().map(|u| state.auth.mint(u, now).token);
    let cold_start = history.is_empty();
    state.online.feed(&arm);
    let request_id = experiment::request_id(&arm);
    let feed = Feed { user: query.user, items, pool, cold_start, model: engine.id.clone(), arm, request_id, token };
    Ok(Read(Json(feed), freshness))
}

/// The slate and its pool, `pool` items in all: the first `k - slots` of `ranked`, then up to
/// `slots` of `fresh` (marked as such) that those do not hold, then the rest of `ranked`.
fn with_fresh_slots(ranked: Vec<FeedItem>, fresh: Vec<FeedItem>, k: usize, pool: usize, slots: usize) -> Vec<FeedItem> {
    let kept = k - slots;
    let held = |item: &FeedItem, items: &[FeedItem]| items.iter().any(|i| i.id == item.id);
    let fresh: Vec<FeedItem> = fresh
        .into_iter()
        .filter(|f| !held(f, &ranked[..kept.min(ranked.len())]))
        .take(slots)
        .map(|f| FeedItem { fresh: true, ..f })
        .collect();
    let mut items: Vec<FeedItem> = ranked.into_iter().filter(|r| !held(r, &fresh)).take(pool - fresh.len()).collect();
    let at = (k - fresh.len()).min(items.len());
    items.splice(at..at, fresh);
    items
}

/// Stores a batch of events durably (fsynced before the answer); idempotent on `event_id`. Needs
/// an API key, or the user token of the one user all the events are for; each user's events
/// count against their hourly budget.
#[utoipa::path(post, path = "/v1/events", request_body = EventBatch, security(("bearer" = [])), responses(
    (status = 200, body = EventsStored), (status = 400, body = onerec_core::api::ApiError),
    (status = 401, body = onerec_core::api::ApiError), (status = 403, body = onerec_core::api::ApiError),
    (status = 413, body = onerec_core::api::ApiError), (status = 422, body = onerec_core::api::ApiError),
    (status = 429, body = onerec_core::api::ApiError)))]
pub async fn post_events(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    ApiJson(batch): ApiJson<EventBatch>,
) -> Result<Json<EventsStored>, AppError> {
    if batch.events.is_empty() || batch.events.len() > state.limits.max_events {
        return Err(AppError::bad_request(format!(
            "a batch holds 1 to {} events, not {}",
            state.limits.max_events,
            batch.events.len()
        )));
    }
    let mut per_user: Vec<(&str, usize)> = Vec::new();
    for e in &batch.events {
        match per_user.iter_mut().find(|(u, _)| *u == e.user) {
            Some((_, n)) => *n += 1,
            None => per_user.push((&e.user, 1)),
        }
    }
    for (user, _) in &per_user {
        caller.require_user(user)?;
    }
    for (user, n) in &per_user {
        state.auth.charge_events(user, *n).inspect_err(|_| state.metrics.observe_rate_limited())?;
    }
    let now = unix_now();
    let catalogue = state.catalogue();
    let events = batch
        .events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            validate(&catalogue, e, now)
                .map_err(|detail| AppError::invalid("invalid_event", format!("event {i}: {detail}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // On a timeout the batch may still commit; a retry with the same event ids is harmless.
    let stored = tokio::time::timeout(state.limits.timeout, state.store.append(events))
        .await
        .map_err(|_| timed_out("storing the events"))?
        .map_err(|e| match e {
            StoreError::Unavailable(detail) => {
                AppError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", detail)
            }
            StoreError::Failed(detail) => AppError::internal(detail),
        })?;
    state.metrics.observe_events(stored.stored, stored.duplicates);
    Ok(Json(stored))
}

fn timed_out(what: &str) -> AppError {
    AppError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", format!("{what} took too long; retry"))
}

/// Longest id accepted for events and users.
const MAX_ID_LEN: usize = 128;

fn validate(catalogue: &Catalogue, e: NewEvent, now: i64) -> Result<UserEvent, String> {
    for (name, id) in [("event_id", &e.event_id), ("user", &e.user), ("item", &e.item)] {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(format!("{name} must be 1 to {MAX_ID_LEN} bytes long"));
        }
    }
    if catalogue.item(&e.item).is_none() {
        return Err(format!("unknown item {:?}", e.item));
    }
    let value = match (e.kind, e.value) {
        (EventKind::Rating | EventKind::WatchTime, None) => return Err(format!("a {:?} event needs a value", e.kind)),
        (_, Some(v)) if !v.is_finite() || v < 0.0 => return Err(format!("value must be finite and ≥ 0, not {v}")),
        (EventKind::Rating | EventKind::WatchTime, v) => v,
        _ => None,
    };
    if e.timestamp.is_some_and(|t| t < 0) {
        return Err("timestamp must be Unix seconds ≥ 0".into());
    }
    if e.request_id.as_ref().is_some_and(|r| r.is_empty() || r.len() > MAX_ID_LEN) {
        return Err(format!("request_id must be 1 to {MAX_ID_LEN} bytes long"));
    }
    let event = onerec_core::api::StoredEvent {
        event_id: e.event_id,
        item: e.item,
        kind: e.kind,
        value,
        timestamp: e.timestamp.unwrap_or(now),
        request_id: e.request_id,
    };
    Ok(UserEvent { user: e.user, event })
}

/// Query of `GET /v1/users/{id}/history`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Events per page, at most 1000 (default 100).
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The events stored for a user since the data set, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/users/{id}/history", params(("id" = String, Path), HistoryQuery),
    security(("bearer" = [])), responses(
    (status = 200, body = History), (status = 401, body = onerec_core::api::ApiError),
    (status = 403, body = onerec_core::api::ApiError), (status = 404, body = onerec_core::api::ApiError)))]
pub async fn history(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Read<History>, AppError> {
    let arrived = Instant::now();
    caller.require_user(&id)?;
    let limit = page_limit(query.limit, HISTORY_PAGE)?;
    let before = match &query.cursor {
        None => None,
        Some(c) => Some(c.parse().map_err(|_| AppError::bad_request(format!("cursor {c:?} is not one we gave")))?),
    };
    let freshness = state.catch_up(arrived).await;
    let (events, next) = state
        .histories
        .recent(&state.catalogue(), &id, before, limit)
        .ok_or_else(|| AppError::not_found("unknown_user", format!("no user {id:?}")))?;
    Ok(Read(Json(History { user: id, events, next_cursor: next.map(|n| n.to_string()) }), freshness))
}

fn page_limit(asked: Option<usize>, default: usize) -> Result<usize, AppError> {
    match asked.unwrap_or(default) {
        limit @ 1..=MAX_PAGE => Ok(limit),
        limit => Err(AppError::bad_request(format!("limit must be between 1 and {MAX_PAGE}, not {limit}"))),
    }
}

/// Query of `GET /v1/users`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsersQuery {
    offset: Option<usize>,
    /// At most 1000 (default 20).
    limit: Option<usize>,
}

/// Known users: the data set's, then those who exist only through events, in the order they came.
/// Needs an API key.
#[utoipa::path(get, path = "/v1/users", params(UsersQuery), security(("bearer" = [])), responses(
    (status = 200, body = Users), (status = 401, body = onerec_core::api::ApiError),
    (status = 403, body = onerec_core::api::ApiError)))]
pub async fn users(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<UsersQuery>,
) -> Result<Json<Users>, AppError> {
    caller.require_key()?;
    let limit = page_limit(query.limit, 20)?;
    let offset = query.offset.unwrap_or(0);
    let catalogue = state.catalogue();
    let known = &catalogue.dataset.users;
    let mut users: Vec<String> = known.iter().skip(offset).take(limit).map(|u| u.id.clone()).collect();
    let (new, new_total) = state.histories.new_users(offset.saturating_sub(known.len()), limit - users.len());
    users.extend(new);
    let total = known.len() + new_total;
    let next_offset = (offset + users.len() < total && !users.is_empty()).then_some(offset + users.len());
    Ok(Json(Users { users, total, next_offset }))
}

/// Body of `POST /v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    user: String,
}

/// Mints a user token, for the operator's backend to hand to that user's browser (as
/// `/#token=...`). Needs an API key.
#[utoipa::path(post, path = "/v1/tokens", request_body = TokenRequest, security(("bearer" = [])), responses(
    (status = 200, body = UserToken), (status = 400, body = onerec_core::api::ApiError),
    (status = 401, body = onerec_core::api::ApiError), (status = 403, body = onerec_core::api::ApiError)))]
pub async fn mint_token(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<TokenRequest>,
) -> Result<Json<UserToken>, AppError> {
    caller.require_key()?;
    if request.user.is_empty() || request.user.len() > MAX_ID_LEN {
        return Err(AppError::bad_request(format!("user must be 1 to {MAX_ID_LEN} bytes long")));
    }
    Ok(Json(state.auth.mint(&request.user, unix_now())))
}

#[utoipa::path(get, path = "/v1/items/{id}", params(("id" = String, Path)), responses(
    (status = 200, body = ItemInfo), (status = 404, body = onerec_core::api::ApiError)))]
pub async fn item(State(state): Shared, Path(id): Path<String>) -> Result<Json<ItemInfo>, AppError> {
    let engine = state.arms.main();
    let index =
        engine.catalogue.item(&id).ok_or_else(|| AppError::not_found("unknown_item", format!("no item {id:?}")))?;
    Ok(Json(engine.item_info(index)))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Query of `GET /readyz`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadyQuery {
    /// `1`: also decode a cold-start feed, behind the same queue as the feeds.
    deep: Option<u8>,
}

/// How long the deep readiness check waits for its decode.
const DEEP_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// What `/readyz` answers when the server is ready.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// Always `ready`.
    status: &'static str,
    /// The event store's state. A shared store that cannot be reached does not make the server
    /// unready: it still serves feeds, from the histories it has (marked stale), while writes
    /// answer 503 until the store is back.
    #[schema(value_type = Object)]
    store: StoreStatus,
}

/// Readiness, from state: the decoding workers and the event writer are running (a model is
/// always loaded once the server listens), and how the event store is. It never waits behind
/// feeds or the store, so a probe stays fast under load; `?deep=1` adds a real decode.
#[utoipa::path(get, path = "/readyz", params(ReadyQuery), responses((status = 200, body = Readiness),
    (status = 503, body = onerec_core::api::ApiError)))]
pub async fn readyz(State(state): Shared, ApiQuery(query): ApiQuery<ReadyQuery>) -> Result<Json<Readiness>, AppError> {
    let not_ready = |detail: &str| AppError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", detail);
    if state.batcher.workers_alive() == 0 {
        return Err(not_ready("no decoding worker is running"));
    }
    if !state.writer_alive() {
        return Err(not_ready("the event writer has stopped"));
    }
    if query.deep == Some(1) {
        let engine = state.arms.main();
        let cold = User { id: String::new(), features: Vec::new() };
        let request = engine.recommender().request(&cold, &[], unix_now(), 1, false);
        let decode = state.batcher.decode(engine, request, Arc::from([]), Instant::now() + DEEP_CHECK_TIMEOUT);
        match tokio::time::timeout(DEEP_CHECK_TIMEOUT, decode).await {
            Ok(Some(items)) if !items.is_empty() => {}
            Ok(_) => return Err(not_ready("the decoder failed")),
            Err(_) => return Err(not_ready("the decoder did not answer within 1 s")),
        }
    }
    Ok(Json(Readiness { status: "ready", store: state.store.status() }))
}

/// Prometheus text. On the main address it needs the admin token; `--metrics-addr` serves it
/// apart, without one, for a scraper on a private network.
#[utoipa::path(get, path = "/metrics", security(("bearer" = [])), responses(
    (status = 200, description = "Prometheus text format"), (status = 401, body = onerec_core::api::ApiError),
    (status = 403, body = onerec_core::api::ApiError)))]
pub async fn metrics(State(state): Shared, headers: HeaderMap) -> Result<impl IntoResponse, AppError> {
    require_admin(&state, &headers)?;
    Ok(open_metrics(State(state)).await)
}

/// `/metrics` without a token, for the separate metrics address.
pub async fn open_metrics(State(state): Shared) -> impl IntoResponse {
    let mut text = state.metrics.render(&state.store.status());
    state.online.render(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// Every event stored since the data set, as JSON Lines of `UserEvent`: users in id order, each
/// user's events in write order. `onerec train --events` reads it, to learn from what was served
/// while the server keeps the store open. On replicas it holds every replica's events; while the
/// shared store cannot be read it answers 503 rather than an export that may lack some.
#[utoipa::path(get, path = "/admin/events", security(("bearer" = [])), responses(
    (status = 200, description = "JSON Lines, one UserEvent a line", body = onerec_core::api::UserEvent,
        content_type = "application/x-ndjson"),
    (status = 401, body = onerec_core::api::ApiError), (status = 403, body = onerec_core::api::ApiError),
    (status = 503, body = onerec_core::api::ApiError)))]
pub async fn export_events(State(state): Shared, headers: HeaderMap) -> Result<impl IntoResponse, AppError> {
    let arrived = Instant::now();
    require_admin(&state, &headers)?;
    if let Freshness::Stale { .. } = state.catch_up(arrived).await {
        let detail = "the shared event store cannot be read now, so an export could lack recent events; retry";
        return Err(AppError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", detail));
    }
    let mut lines = String::new();
    for event in state.histories.all() {
        lines += &serde_json::to_string(&event).map_err(|e| AppError::internal(e.to_string()))?;
        lines.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], lines))
}

/// Body of `POST /admin/reload`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ReloadRequest {
    /// The snapshot to load; the one the server started with when absent.
    #[schema(value_type = Option<String>)]
    snapshot: Option<std::path::PathBuf>,
    /// The arm that serves it: `main` (the default) or an A/B arm, which a share creates.
    arm: Option<String>,
    /// Share of users for an A/B arm, in [0, 1]; `main` keeps what the arms leave. 0 removes
    /// the arm, and its users go back to `main`.
    share: Option<f64>,
}

/// Answer of `POST /admin/reload`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reloaded {
    /// The id of the snapshot the arm now serves; absent when the arm was removed.
    model: Option<String>,
    /// The id of the snapshot it served before; absent for a new arm.
    previous: Option<String>,
    arm: String,
}

/// Swaps in a new snapshot atomically, for `main` or an A/B arm: requests in flight finish on
/// the old one. A snapshot that fails to load is refused and the old one keeps serving.
#[utoipa::path(post, path = "/admin/reload", request_body = ReloadRequest, security(("bearer" = [])), responses(
    (status = 200, body = Reloaded), (status = 401, body = onerec_core::api::ApiError),
    (status = 403, body = onerec_core::api::ApiError), (status = 422, body = onerec_core::api::ApiError)))]
pub async fn reload(
    State(state): Shared,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Reloaded>, AppError> {
    require_admin(&state, &headers)?;
    // The body is optional, so it is parsed here rather than by a `Json` extractor.
    let request: ReloadRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ReloadRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| AppError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))?
    };
    let arm = request.arm.unwrap_or_else(|| experiment::MAIN.into());
    state.arms.check(&arm, request.share).map_err(|e| AppError::invalid("bad_arm", e))?;
    if request.share == Some(0.0) {
        let previous = state.arms.set(&arm, request.share, None).map_err(|e| AppError::invalid("bad_arm", e))?;
        tracing::info!(%arm, "removed the arm");
        return Ok(Json(Reloaded { model: None, previous, arm }));
    }
    let path = request.snapshot.unwrap_or_else(|| state.snapshot_path.clone());
    let _changing = state.changing.lock().await;
    let loader = state.clone();
    let engine = tokio::task::spawn_blocking(move || {
        let catalogue = loader.catalogue();
        let served = loader.histories.served(&catalogue);
        Engine::load(&path, catalogue, &served, &loader.device)
    })
    .await
    .map_err(|e| AppError::internal(format!("the loader failed: {e}")))?
    .map_err(|e| AppError::invalid("bad_snapshot", format!("{e:#}; the current model keeps serving")))?;
    let model = engine.id.clone();
    // Counting opens first, so that no event of the arm's first feeds is missed.
    state.online.open(&arm);
    let previous = state.arms.set(&arm, request.share, Some(engine)).map_err(|e| AppError::invalid("bad_arm", e))?;
    tracing::info!(%model, ?previous, %arm, "reloaded the snapshot");
    Ok(Json(Reloaded { model: Some(model), previous, arm }))
}

/// Body of `POST /admin/items`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewItems {
    items: Vec<NewItem>,
}

/// A catalogue row: what a content embedding is built from.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewItem {
    id: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    tags: Vec<String>,
}

/// What `POST /admin/items` added.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemsAdded {
    /// Each item and the semantic ID `main` gave it.
    added: Vec<AddedItem>,
    /// The models that can now recommend them: every arm's.
    models: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AddedItem {
    id: String,
    semantic_id: Vec<u16>,
}

/// Longest title, and most tags, of an added item.
const MAX_TITLE_LEN: usize = 1000;
const MAX_TAGS: usize = 64;

/// Adds items to the catalogue of every model serving, without retraining: each gets an
/// embedding from its title and tags, a semantic ID under the model's codebooks and an item
/// embedding from its code neighbours (`onerec items add` does the same offline). They are kept
/// in the data directory before the answer, and so survive a restart and are added again to any
/// snapshot loaded later; for `--fresh-days` they take a share of slate positions (`--fresh-share`).
#[utoipa::path(post, path = "/admin/items", request_body = NewItems, security(("bearer" = [])), responses(
    (status = 200, body = ItemsAdded), (status = 400, body = onerec_core::api::ApiError),
    (status = 401, body = onerec_core::api::ApiError), (status = 403, body = onerec_core::api::ApiError),
    (status = 422, body = onerec_core::api::ApiError)))]
pub async fn add_items(
    State(state): Shared,
    headers: HeaderMap,
    ApiJson(body): ApiJson<NewItems>,
) -> Result<Json<ItemsAdded>, AppError> {
    require_admin(&state, &headers)?;
    let max = state.limits.max_events;
    if body.items.is_empty() || body.items.len() > max {
        return Err(AppError::bad_request(format!("a request adds 1 to {max} items, not {}", body.items.len())));
    }
    let _changing = state.changing.lock().await;
    let catalogue = state.catalogue();
    let mut ids = std::collections::HashSet::new();
    for (i, item) in body.items.iter().enumerate() {
        let invalid = |detail: String| AppError::invalid("invalid_item", format!("item {i}: {detail}"));
        if item.id.is_empty() || item.id.len() > MAX_ID_LEN {
            return Err(invalid(format!("id must be 1 to {MAX_ID_LEN} bytes long")));
        }
        if catalogue.item(&item.id).is_some() || !ids.insert(item.id.as_str()) {
            return Err(invalid(format!("item {:?} is in the catalogue already", item.id)));
        }
        if item.title.len() > MAX_TITLE_LEN || item.tags.len() > MAX_TAGS {
            return Err(invalid(format!("at most {MAX_TITLE_LEN} bytes of title and {MAX_TAGS} tags")));
        }
        if item.tags.iter().any(|t| t.is_empty() || t.len() > MAX_ID_LEN) {
            return Err(invalid(format!("a tag is 1 to {MAX_ID_LEN} bytes long")));
        }
    }
    let ids: Vec<String> = body.items.iter().map(|i| i.id.clone()).collect();
    let at = unix_now();
    let changes: Vec<Change> = body
        .items
        .into_iter()
        .map(|i| Change::Add { item: onerec_core::data::Item { id: i.id, title: i.title, tags: i.tags }, at })
        .collect();
    let models = change_catalogue(&state, changes).await?;
    let engine = state.arms.main();
    let added = ids
        .into_iter()
        .filter_map(|id| engine.catalogue.item(&id))
        .map(|index| {
            let info = engine.item_info(index);
            AddedItem { id: info.id, semantic_id: info.semantic_id }
        })
        .collect();
    Ok(Json(ItemsAdded { added, models }))
}

/// What `DELETE /admin/items/{id}` did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemRetired {
    id: String,
    /// False when it was retired already.
    changed: bool,
}

/// Retires an item: no model serving recommends it again, nor any snapshot loaded later. It stays
/// known to the histories and events that name it.
#[utoipa::path(delete, path = "/admin/items/{id}", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = ItemRetired), (status = 401, body = onerec_core::api::ApiError),
    (status = 403, body = onerec_core::api::ApiError), (status = 404, body = onerec_core::api::ApiError)))]
pub async fn retire_item(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ItemRetired>, AppError> {
    require_admin(&state, &headers)?;
    let _changing = state.changing.lock().await;
    let catalogue = state.catalogue();
    let index = catalogue.item(&id).ok_or_else(|| AppError::not_found("unknown_item", format!("no item {id:?}")))?;
    if catalogue.is_retired(index) {
        return Ok(Json(ItemRetired { id, changed: false }));
    }
    change_catalogue(&state, vec![Change::Retire { id: id.clone(), at: unix_now() }]).await?;
    Ok(Json(ItemRetired { id, changed: true }))
}

/// Makes `changes` to the catalogue of every arm: the engines are rebuilt first (nothing is kept
/// if one fails), then the changes are made durable, then the new engines swapped in. The caller
/// holds `state.changing`. Returns how many engines serve the new catalogue.
async fn change_catalogue(state: &Arc<AppState>, changes: Vec<Change>) -> Result<usize, AppError> {
    let builder = state.clone();
    tokio::task::spawn_blocking(move || {
        let (catalogue, passed) = (*builder.catalogue()).clone().changed(&changes);
        if let Some(reason) = passed.first() {
            return Err(AppError::invalid("bad_change", reason.clone()));
        }
        let catalogue = Arc::new(catalogue);
        let served = builder.histories.served(&catalogue);
        let engines = builder
            .arms
            .engines()
            .into_iter()
            .map(|(arm, engine)| {
                let rebuilt = engine
                    .over(catalogue.clone(), &served)
                    .map_err(|e| AppError::internal(format!("arm {arm}: {e:#}; nothing changed")))?;
                Ok((arm, rebuilt))
            })
            .collect::<Result<Vec<_>, AppError>>()?;
        builder.catalogue_log.append(&changes).map_err(|e| AppError::internal(format!("{e:#}; nothing changed")))?;
        let models = engines.len();
        builder.arms.replace_engines(engines);
        tracing::info!(changes = changes.len(), models, "changed the catalogue");
        Ok(models)
    })
    .await
    .map_err(|e| AppError::internal(format!("the catalogue change failed: {e}")))?
}

/// Each arm's snapshot, share, online counts and rates, and its difference from `main` with a
/// 95% confidence interval. Counts come from events that carry a feed's `request_id`.
#[utoipa::path(get, path = "/admin/experiments", security(("bearer" = [])), responses(
    (status = 200, body = experiment::Experiments), (status = 401, body = onerec_core::api::ApiError),
    (status = 403, body = onerec_core::api::ApiError)))]
pub async fn experiments(State(state): Shared, headers: HeaderMap) -> Result<Json<experiment::Experiments>, AppError> {
    require_admin(&state, &headers)?;
    Ok(Json(experiment::summarise(&state.arms, &state.online)))
}
