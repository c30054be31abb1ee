//! The network side: JSON over `fetch`, and the service worker that caches the app shell.

use std::cell::Cell;

use onerec_core::api::{EventBatch, EventsStored, Feed, Users};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestCache, RequestInit, Response};

/// Why a request gave no answer to use.
#[derive(Debug)]
pub enum NetError {
    /// No answer at all: offline, or the server is down. Worth retrying later.
    Unreachable(String),
    /// The server answered with an error status.
    Status(u16, String),
    /// The server answered something we cannot read.
    Invalid(String),
}

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetError::Unreachable(why) => write!(f, "server unreachable ({why})"),
            NetError::Status(code, body) => write!(f, "HTTP {code}: {body}"),
            NetError::Invalid(why) => write!(f, "unreadable answer: {why}"),
        }
    }
}

fn js_text(value: JsValue) -> String {
    value.as_string().or_else(|| js_sys::JSON::stringify(&value).ok().and_then(|s| s.as_string())).unwrap_or_default()
}

async fn request(method: &str, url: &str, body: Option<String>) -> Result<String, NetError> {
    let init = RequestInit::new();
    init.set_method(method);
    // API answers are never cached by the browser: offline, the app serves its own copy.
    init.set_cache(RequestCache::NoStore);
    if let Some(body) = &body {
        init.set_body(&JsValue::from_str(body));
    }
    let request = Request::new_with_str_and_init(url, &init).map_err(|e| NetError::Invalid(js_text(e)))?;
    if body.is_some() {
        let _ = request.headers().set("content-type", "application/json");
    }
    let window = web_sys::window().ok_or_else(|| NetError::Unreachable("no window".into()))?;
    let response: Response = JsFuture::from(window.fetch_with_request(&request))
        .await
        .map_err(|e| NetError::Unreachable(js_text(e)))?
        .unchecked_into();
    let text = match response.text() {
        Ok(promise) => JsFuture::from(promise).await.map_err(|e| NetError::Unreachable(js_text(e)))?,
        Err(e) => return Err(NetError::Invalid(js_text(e))),
    };
    let text = text.as_string().unwrap_or_default();
    if response.ok() { Ok(text) } else { Err(NetError::Status(response.status(), text)) }
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, NetError> {
    serde_json::from_str(text).map_err(|e| NetError::Invalid(e.to_string()))
}

fn encode(component: &str) -> String {
    js_sys::encode_uri_component(component).into()
}

/// The slate and the candidate pool, for a user or (without one) the anonymous cold-start feed.
pub async fn feed(user: Option<&str>, k: usize, pool: usize) -> Result<Feed, NetError> {
    let mut url = format!("/v1/feed?k={k}&pool={pool}");
    if let Some(user) = user {
        url.push_str(&format!("&user={}", encode(user)));
    }
    parse(&request("GET", &url, None).await?)
}

pub async fn users(limit: usize) -> Result<Users, NetError> {
    parse(&request("GET", &format!("/v1/users?limit={limit}"), None).await?)
}

pub async fn post_events(batch: &EventBatch) -> Result<EventsStored, NetError> {
    let body = serde_json::to_string(batch).map_err(|e| NetError::Invalid(e.to_string()))?;
    parse(&request("POST", "/v1/events", Some(body)).await?)
}

thread_local! {
    static FLUSHING: Cell<bool> = const { Cell::new(false) };
}

/// Events sent per request while flushing.
const FLUSH_BATCH: usize = 64;

/// What a flush achieved.
pub enum Flushed {
    /// Nothing was waiting, or another flush is running.
    Idle,
    /// The queue is empty now.
    Done,
    /// The server could not be reached; the rest stays queued.
    Unreachable,
}

/// Sends the queued events, oldest first, removing each batch only once the server has stored it.
/// A batch the server refuses as invalid (4xx) is dropped, since retrying cannot fix it; one that
/// fails in transit stays queued, and its retry is harmless because of the client event ids.
pub async fn flush_queue() -> Flushed {
    if FLUSHING.with(|f| f.replace(true)) {
        return Flushed::Idle;
    }
    let mut outcome = Flushed::Idle;
    loop {
        let queue = crate::store::load_queue();
        if queue.is_empty() {
            break;
        }
        let events: Vec<_> = queue.iter().take(FLUSH_BATCH).cloned().collect();
        let sent: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
        match post_events(&EventBatch { events }).await {
            Ok(_) => {}
            Err(NetError::Status(code, body)) if (400..500).contains(&code) && code != 408 && code != 429 => {
                web_sys::console::warn_1(&format!("dropping {} events the server refused: {body}", sent.len()).into());
            }
            Err(e) => {
                web_sys::console::warn_1(&format!("events stay queued: {e}").into());
                outcome = Flushed::Unreachable;
                break;
            }
        }
        // Re-read: events queued while the request was in flight must survive.
        let mut queue = crate::store::load_queue();
        queue.retain(|e| !sent.contains(&e.event_id));
        crate::store::save_queue(&queue);
        outcome = Flushed::Done;
    }
    FLUSHING.with(|f| f.set(false));
    outcome
}

/// Registers `/sw.js`, which caches the app shell so that the feed opens with no network.
pub fn register_service_worker() {
    let Some(window) = web_sys::window() else { return };
    let container = window.navigator().service_worker();
    let _ = container.register("/sw.js");
}
