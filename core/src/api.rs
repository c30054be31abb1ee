//! The HTTP API's wire types. The server writes them and the browser feed reads them; both compile
//! this one module (the browser to WebAssembly), so the two sides cannot drift apart.

use serde::{Deserialize, Serialize};

/// One recommended item, with what the browser needs to show it and to re-score it on the device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FeedItem {
    /// The catalogue's item id.
    pub id: String,
    pub title: String,
    pub tags: Vec<String>,
    /// The model's log-probability of the item's semantic ID; higher is better.
    pub score: f32,
    pub semantic_id: Vec<u16>,
    /// The item's L2-normalised embedding, quantised to `round(x · 127)`: small on the wire and
    /// enough for on-device affinity and diversity.
    pub embedding: Vec<i8>,
    /// In a position the server keeps for items added recently (`onerec serve --fresh-share`):
    /// the device's re-ranking keeps it there rather than sink it by its low score.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fresh: bool,
}

fn is_false(b: &bool) -> bool {
    !b
}

impl FeedItem {
    /// The embedding back as floats (unit length up to quantisation).
    pub fn embedding_f32(&self) -> Vec<f32> {
        self.embedding.iter().map(|&q| f32::from(q) / 127.0).collect()
    }
}

/// Quantises a unit-length embedding for [`FeedItem::embedding`].
pub fn quantise_embedding(embedding: &[f32]) -> Vec<i8> {
    embedding.iter().map(|&x| (x * 127.0).round().clamp(-127.0, 127.0) as i8).collect()
}

/// `GET /v1/feed`: the slate, and a further candidate pool for the browser to re-rank.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Feed {
    /// The user the feed is for; absent for an anonymous cold-start feed.
    pub user: Option<String>,
    /// The slate: `k` distinct items, best first.
    pub items: Vec<FeedItem>,
    /// The candidates ranked after the slate (`pool − k` of them), best first; the browser keeps
    /// them to re-rank locally and to serve offline.
    pub pool: Vec<FeedItem>,
    /// True when the user had no history and the slate came from an empty context.
    pub cold_start: bool,
    /// Identifies the snapshot that decoded this feed; it changes on reload.
    pub model: String,
    /// The experiment arm the user is assigned to (`main` unless the server runs an A/B test).
    #[serde(default)]
    pub arm: String,
    /// Names this feed; events about its items that carry it count toward its arm's online
    /// metrics.
    #[serde(default)]
    pub request_id: String,
    /// A fresh user token for `user` (see [`UserToken`]), with which the browser posts that
    /// user's events, queued ones included; absent for an anonymous feed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// What a user did with an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Impression,
    Click,
    Like,
    Skip,
    /// Needs `value`: the rating.
    Rating,
    /// Needs `value`: seconds watched.
    WatchTime,
    /// Takes back the user's latest like or skip of `item`: the model no longer sees it, and
    /// the item may be recommended again.
    Undo,
}

/// One event as a client sends it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewEvent {
    /// Chosen by the client and unique per event: a retried event with the same id is stored once.
    pub event_id: String,
    pub user: String,
    pub item: String,
    pub kind: EventKind,
    /// The rating or the seconds watched; required for those kinds, ignored for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f32>,
    /// Unix seconds; the server's clock when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// The `request_id` of the feed the item was shown in, which attributes the event to the
    /// arm that served it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// `POST /v1/events` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventBatch {
    pub events: Vec<NewEvent>,
}

/// `POST /v1/events` answer, sent only once the batch is durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventsStored {
    /// Events newly written.
    pub stored: usize,
    /// Events whose `event_id` was already stored (retries), left as they were.
    pub duplicates: usize,
}

/// An event as the server keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoredEvent {
    pub event_id: String,
    pub item: String,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f32>,
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// A stored event with its user: one line of `GET /admin/events`, which training on served
/// events reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserEvent {
    pub user: String,
    pub event: StoredEvent,
}

/// `GET /v1/users/{id}/history`: the events stored for a user since the snapshot's data, newest
/// first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct History {
    pub user: String,
    pub events: Vec<StoredEvent>,
    /// Pass as `cursor` for the next, older page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /v1/users`: some user ids, for a demo's user picker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Users {
    pub users: Vec<String>,
    /// All users the server knows.
    pub total: usize,
    /// Pass as `offset` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
}

/// `POST /v1/tokens`: a user token, minted for an API key's holder to hand to that user's browser.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserToken {
    pub user: String,
    /// `u1.<user in hex>.<expiry, Unix seconds>.<HMAC-SHA256 in hex>`; send it as
    /// `Authorization: Bearer <token>`. It lets its holder read and write this one user's feed,
    /// history and events, and nothing else.
    pub token: String,
    /// Unix seconds.
    pub expires: i64,
}

impl UserToken {
    /// The prefix that tells a user token from an API key.
    pub const PREFIX: &'static str = "u1.";

    /// The user a token names, read without checking its signature (only the server can): what
    /// the browser needs to know whose feed a `#token=` link opens.
    pub fn user_of(token: &str) -> Option<String> {
        let hex = token.strip_prefix(Self::PREFIX)?.split('.').next()?;
        if hex.len() % 2 != 0 {
            return None;
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        String::from_utf8(bytes).ok()
    }
}

/// `GET /v1/items/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ItemInfo {
    pub id: String,
    pub title: String,
    pub tags: Vec<String>,
    pub semantic_id: Vec<u16>,
    pub embedding: Vec<i8>,
    /// A retired item is never recommended again; it stays known to the histories that hold it.
    #[serde(default)]
    pub retired: bool,
    /// When the item was added while serving (Unix seconds); none for the data set's items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_at: Option<i64>,
}

/// Every error answer: a stable machine-readable `error` code and a sentence for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    pub error: String,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantised_embeddings_round_trip_within_half_a_step() {
        let v = [0.6f32, -0.8, 0.0, 1.0, -1.0];
        let item = FeedItem {
            id: "1".into(),
            title: String::new(),
            tags: vec![],
            score: 0.0,
            semantic_id: vec![],
            embedding: quantise_embedding(&v),
            fresh: false,
        };
        assert_eq!(item.embedding, vec![76, -102, 0, 127, -127]);
        // Only a kept position is marked on the wire, and a feed without the field reads.
        let wire = serde_json::to_value(&item).unwrap();
        assert!(wire.get("fresh").is_none(), "{wire}");
        let fresh = FeedItem { fresh: true, ..item.clone() };
        assert_eq!(serde_json::to_value(&fresh).unwrap()["fresh"], true);
        assert_eq!(serde_json::from_value::<FeedItem>(wire).unwrap(), item);
        for (a, b) in item.embedding_f32().iter().zip(v) {
            assert!((a - b).abs() <= 0.5 / 127.0 + 1e-6);
        }
    }

    #[test]
    fn events_use_snake_case_kinds_and_optional_fields() {
        let json = r#"{"events":[{"event_id":"e1","user":"7","item":"42","kind":"watch_time","value":31.5}]}"#;
        let batch: EventBatch = serde_json::from_str(json).unwrap();
        assert_eq!(batch.events[0].kind, EventKind::WatchTime);
        assert_eq!(batch.events[0].value, Some(31.5));
        assert_eq!(batch.events[0].timestamp, None);
        assert!(
            serde_json::from_str::<EventBatch>(r#"{"events":[{"event_id":"e","user":"1","item":"2","kind":"poke"}]}"#)
                .is_err()
        );
    }
}
