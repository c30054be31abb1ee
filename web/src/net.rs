//! The network side: JSON over `fetch` with the credential that covers each request, and the
//! service worker that caches the app shell.

use std::cell::{Cell, RefCell};

use onerec_core::api::{ApiError, EventBatch, EventsStored, Feed, Users};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestCache, RequestInit, Response};

use crate::auth;

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
            // Every error the server answers is JSON `{error, detail}`, and the detail is written
            // for people; anything else (a proxy's page) is not worth showing.
            NetError::Status(code, body) => match serde_json::from_str::<ApiError>(body) {
                Ok(error) => f.write_str(&error.detail),
                Err(_) => write!(f, "the server answered HTTP {code}"),
            },
            NetError::Invalid(why) => write!(f, "unreadable answer: {why}"),
        }
    }
}

fn js_text(value: JsValue) -> String {
    value.as_string().or_else(|| js_sys::JSON::stringify(&value).ok().and_then(|s| s.as_string())).unwrap_or_default()
}

async fn request(method: &str, url: &str, body: Option<String>, bearer: Option<&str>) -> Result<String, NetError> {
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
    if let Some(bearer) = bearer {
        let _ = request.headers().set("authorization", &format!("Bearer {bearer}"));
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

/// A request on `user`'s behalf (`None`: the app's own, such as the user list), with
/// [`auth::bearer`]. A user token the server refuses is forgotten and the request sent once more
/// with the credential, so an expired token does not lock out a user whom the operator's key
/// covers.
async fn request_as(user: Option<&str>, method: &str, url: &str, body: Option<String>) -> Result<String, NetError> {
    let bearer = auth::bearer(user);
    match request(method, url, body.clone(), bearer.as_deref()).await {
        Err(NetError::Status(401, _)) if auth::forget_refused_token(user, bearer.as_deref()) => {
            request(method, url, body, auth::bearer(user).as_deref()).await
        }
        answer => answer,
    }
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, NetError> {
    serde_json::from_str(text).map_err(|e| NetError::Invalid(e.to_string()))
}

fn encode(component: &str) -> String {
    js_sys::encode_uri_component(component).into()
}

/// The slate and the candidate pool, for a user or (without one) the anonymous cold-start feed.
/// The anonymous feed is asked without a credential: it needs none, and a key the server no
/// longer knows (it makes a new one each run unless given one) must not cost the cold start.
pub async fn feed(user: Option<&str>, k: usize, pool: usize) -> Result<Feed, NetError> {
    let url = format!("/v1/feed?k={k}&pool={pool}");
    let text = match user {
        Some(user) => request_as(Some(user), "GET", &format!("{url}&user={}", encode(user)), None).await?,
        None => request("GET", &url, None, None).await?,
    };
    parse(&text)
}

/// Some user ids for the picker; needs an API key.
pub async fn users(limit: usize) -> Result<Users, NetError> {
    parse(&request_as(None, "GET", &format!("/v1/users?limit={limit}"), None).await?)
}

/// Posts `user`'s events: a user token covers its own user only, so a batch holds one user's.
pub async fn post_events(user: &str, batch: &EventBatch) -> Result<EventsStored, NetError> {
    let body = serde_json::to_string(batch).map_err(|e| NetError::Invalid(e.to_string()))?;
    parse(&request_as(Some(user), "POST", "/v1/events", Some(body)).await?)
}

thread_local! {
    static FLUSHING: Cell<bool> = const { Cell::new(false) };
    /// Users whose events the server refused for their credential, with the bearer it refused.
    static REFUSED: RefCell<Vec<(String, Option<String>)>> = const { RefCell::new(Vec::new()) };
}

/// Whether `user`'s events wait for another credential: the one they would be sent with now was
/// refused already in this page.
fn waits_for_credential(user: &str) -> bool {
    let bearer = auth::bearer(Some(user));
    REFUSED.with(|refused| refused.borrow().iter().any(|(u, b)| u == user && *b == bearer))
}

/// Events sent per request while flushing.
const FLUSH_BATCH: usize = 64;

/// What a flush achieved.
pub enum Flushed {
    /// Nothing was waiting, or another flush is running.
    Idle,
    /// The server answered every batch: the queue is empty, but for events that wait for a
    /// credential.
    Done,
    /// The server could not be reached; the rest stays queued.
    Unreachable,
}

/// Sends the queued events, oldest first and one user's per batch, removing each batch only once
/// the server has stored it. A batch the server refuses as invalid (4xx) is dropped, since
/// retrying cannot fix it; one that fails in transit or is rate limited (429) stays queued, and
/// its retry is harmless because of the client event ids.
///
/// A batch refused for its credential (401: none or expired; 403: it does not cover the user)
/// stays queued too: the events are sound, and the user's taste must not be lost for want of a
/// key. They are not re-sent with the credential that was refused, but as soon as another one is
/// at hand: a new `#key=`/`#token=` link, or the fresh token of the user's next feed.
pub async fn flush_queue() -> Flushed {
    if FLUSHING.with(|f| f.replace(true)) {
        return Flushed::Idle;
    }
    let mut outcome = Flushed::Idle;
    loop {
        let queue = crate::store::load_queue();
        let mut users: Vec<&str> = Vec::new();
        for event in &queue {
            if !users.contains(&event.user.as_str()) {
                users.push(&event.user);
            }
        }
        let Some(user) = users.into_iter().find(|u| !waits_for_credential(u)).map(str::to_string) else {
            break;
        };
        let events: Vec<_> = queue.iter().filter(|e| e.user == user).take(FLUSH_BATCH).cloned().collect();
        let sent: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
        outcome = Flushed::Done;
        match post_events(&user, &EventBatch { events }).await {
            Ok(_) => {}
            Err(NetError::Status(401 | 403, body)) => {
                web_sys::console::warn_1(&format!("events of user {user} wait for a credential: {body}").into());
                let bearer = auth::bearer(Some(&user));
                REFUSED.with(|refused| refused.borrow_mut().push((user, bearer)));
                continue;
            }
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
