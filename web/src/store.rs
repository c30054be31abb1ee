//! What the browser keeps between visits, in localStorage: the credential, the chosen user, and per
//! user the local preference state, the last candidate pool, the user's likes and skips and the
//! user's token, and the queue of events not yet acknowledged by the server. Nothing here is sent
//! anywhere except the queue, and the credentials that authorise it and the feed.

use onerec_core::api::{EventKind, FeedItem, NewEvent};
use onerec_core::rescore::LocalPreferences;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use web_sys::Storage;

fn storage() -> Option<Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

fn load<T: DeserializeOwned>(key: &str) -> Option<T> {
    let text = storage()?.get_item(key).ok().flatten()?;
    serde_json::from_str(&text).ok()
}

fn save<T: Serialize>(key: &str, value: &T) {
    if let (Some(storage), Ok(text)) = (storage(), serde_json::to_string(value)) {
        // A full quota loses only this write; the app keeps working from memory.
        let _ = storage.set_item(key, &text);
    }
}

const USER: &str = "onerec.user";
const QUEUE: &str = "onerec.queue";
const CREDENTIAL: &str = "onerec.credential";

/// The user key for per-user entries; the anonymous feed has its own.
fn user_key(kind: &str, user: Option<&str>) -> String {
    format!("onerec.{kind}.{}", user.unwrap_or("~anonymous"))
}

pub fn load_user() -> Option<String> {
    load(USER)
}

pub fn save_user(user: Option<&str>) {
    save(USER, &user)
}

/// The API key or user token this browser was handed in a link (see `crate::auth`).
pub fn load_credential() -> Option<String> {
    load(CREDENTIAL)
}

pub fn save_credential(credential: &str) {
    save(CREDENTIAL, &credential)
}

/// The user's own token, from the last feed the server answered for them.
pub fn load_token(user: &str) -> Option<String> {
    load(&user_key("token", Some(user)))
}

/// Saves the user's token, or with `None` forgets one the server no longer accepts.
pub fn save_token(user: &str, token: Option<&str>) {
    save(&user_key("token", Some(user)), &token)
}

pub fn load_prefs(user: Option<&str>) -> LocalPreferences {
    load(&user_key("prefs", user)).unwrap_or_default()
}

pub fn save_prefs(user: Option<&str>, prefs: &LocalPreferences) {
    save(&user_key("prefs", user), prefs)
}

pub fn load_pool(user: Option<&str>) -> Vec<FeedItem> {
    load(&user_key("pool", user)).unwrap_or_default()
}

pub fn save_pool(user: Option<&str>, pool: &[FeedItem]) {
    save(&user_key("pool", user), &pool)
}

/// A like or skip made on this device. The whole item is kept, not just its id: an undo must take
/// back what the preference state learned from it, and bring it back to the feed, after the pool
/// that held it has been replaced.
#[derive(Clone, Serialize, Deserialize)]
pub struct Reaction {
    pub item: FeedItem,
    pub kind: EventKind,
}

/// The user's reactions, newest first.
pub fn load_reactions(user: Option<&str>) -> Vec<Reaction> {
    load(&user_key("reactions", user)).unwrap_or_default()
}

pub fn save_reactions(user: Option<&str>, reactions: &[Reaction]) {
    save(&user_key("reactions", user), &reactions)
}

/// Events waiting for the server, oldest first.
pub fn load_queue() -> Vec<NewEvent> {
    load(QUEUE).unwrap_or_default()
}

pub fn save_queue(queue: &[NewEvent]) {
    save(QUEUE, &queue)
}

/// A fresh client event id: 128 random bits from the browser's CSPRNG, in hex. The server stores
/// an event once per id, so a retried flush can never duplicate it.
pub fn new_event_id() -> String {
    let mut bytes = [0u8; 16];
    let crypto = web_sys::window().and_then(|w| w.crypto().ok());
    if crypto.and_then(|c| c.get_random_values_with_u8_array(&mut bytes).ok()).is_none() {
        // No crypto (very old browser): time and Math.random still make collisions unlikely.
        let seed = (js_sys::Date::now() as u64) ^ ((js_sys::Math::random() * 2f64.powi(52)) as u64);
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        bytes[8..].copy_from_slice(&((js_sys::Math::random() * 2f64.powi(52)) as u64).to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Unix seconds, the clock of the preference state.
pub fn now_secs() -> f64 {
    js_sys::Date::now() / 1000.0
}
