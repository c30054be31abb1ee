//! Who is calling, and how much they may do (the threat model is in the README, "Security").
//!
//! - An **API key** (`--api-key`) is the operator's: any user's feed, events and history, the
//!   user list, and minting user tokens.
//! - A **user token** (`u1.<user in hex>.<expiry>.<HMAC-SHA256>`) is one user's: their feed,
//!   history and events, nothing else. The browser gets a fresh one with each feed, so its offline
//!   queue can post later. Tokens are stateless: the server keeps only the signing secret.
//! - **Anonymous** callers get the cold-start feed, items, health and the web app.
//!
//! The [`authenticate`] layer resolves the `Authorization` header once, refuses a bad credential
//! with 401, applies the caller's rate limit (429 with `Retry-After`), and leaves a [`Caller`] in
//! the request's extensions for the handlers to check against what they touch. Rate limits are
//! GCRA buckets from `governor`, keyed by credential; a per-user budget of events bounds what any
//! one user can add to the store.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, Mac};
use onerec_core::api::UserToken;
use sha2::Sha256;

use super::AppState;
use super::error::AppError;

/// How long a user token stays valid; a feed hands out a fresh one.
const TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Requests per second and burst, per credential.
#[derive(Clone, Copy, Debug)]
pub struct Quotas {
    pub key_per_second: u32,
    pub user_per_second: u32,
    /// Events one user may add per hour (a burst of this many, refilled evenly); 0 for no cap.
    pub user_events_per_hour: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas { key_per_second: 1000, user_per_second: 20, user_events_per_hour: 3600 }
    }
}

/// The identity behind a request, as [`authenticate`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    /// The index of the API key in the server's list (never the key itself).
    Key(usize),
    User(String),
}

impl Caller {
    /// Refuses a caller who may not act for `user`.
    pub fn require_user(&self, user: &str) -> Result<(), AppError> {
        match self {
            Caller::Key(_) => Ok(()),
            Caller::User(u) if u == user => Ok(()),
            Caller::User(u) => Err(forbidden(format!("this token is for user {u:?}, not {user:?}"))),
            Caller::Anonymous => Err(unauthorised()),
        }
    }

    /// Refuses anyone without an API key.
    pub fn require_key(&self) -> Result<(), AppError> {
        match self {
            Caller::Key(_) => Ok(()),
            Caller::User(_) => Err(forbidden("this needs an API key, not a user token".into())),
            Caller::Anonymous => Err(unauthorised()),
        }
    }
}

fn unauthorised() -> AppError {
    AppError::new(StatusCode::UNAUTHORIZED, "unauthorised", "send Authorization: Bearer <API key or user token>")
}

fn forbidden(detail: String) -> AppError {
    AppError::new(StatusCode::FORBIDDEN, "forbidden", detail)
}

/// The server's credentials and the buckets that meter them.
pub struct Auth {
    api_keys: Vec<String>,
    secret: Vec<u8>,
    keys: DefaultKeyedRateLimiter<usize>,
    users: DefaultKeyedRateLimiter<String>,
    events: Option<DefaultKeyedRateLimiter<String>>,
}

impl Auth {
    pub fn new(api_keys: Vec<String>, secret: Vec<u8>, quotas: Quotas) -> Auth {
        let per_second = |n: u32| {
            let n = NonZeroU32::new(n.max(1)).expect("at least 1");
            Quota::per_second(n).allow_burst(n.saturating_mul(NonZeroU32::new(2).expect("2")))
        };
        let events =
            NonZeroU32::new(quotas.user_events_per_hour).map(|n| RateLimiter::keyed(Quota::per_hour(n).allow_burst(n)));
        Auth {
            api_keys,
            secret,
            keys: RateLimiter::keyed(per_second(quotas.key_per_second)),
            users: RateLimiter::keyed(per_second(quotas.user_per_second)),
            events,
        }
    }

    /// The caller a bearer credential names; `None` when it names nobody (wrong key, forged or
    /// expired token).
    fn identify(&self, credential: &str, now: i64) -> Option<Caller> {
        if credential.starts_with(UserToken::PREFIX) {
            return self.verify(credential, now).map(Caller::User);
        }
        self.api_keys.iter().position(|k| constant_time_eq(k.as_bytes(), credential.as_bytes())).map(Caller::Key)
    }

    /// A token for `user`, valid for [`TOKEN_LIFETIME`] from `now`.
    pub fn mint(&self, user: &str, now: i64) -> UserToken {
        let expires = now + TOKEN_LIFETIME.as_secs() as i64;
        let body = format!("{}{}.{expires}", UserToken::PREFIX, hex(user.as_bytes()));
        let token = format!("{body}.{}", hex(&self.mac(&body)));
        UserToken { user: user.to_string(), token, expires }
    }

    fn verify(&self, token: &str, now: i64) -> Option<String> {
        let (body, mac) = token.rsplit_once('.')?;
        let expires: i64 = body.rsplit_once('.')?.1.parse().ok()?;
        let valid = constant_time_eq(hex(&self.mac(body)).as_bytes(), mac.as_bytes()) && expires > now;
        valid.then(|| UserToken::user_of(token)).flatten()
    }

    fn mac(&self, body: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        mac.update(body.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Charges `events` to `user`'s hourly budget; 429 when it is spent.
    pub fn charge_events(&self, user: &str, events: usize) -> Result<(), AppError> {
        let Some(limiter) = &self.events else { return Ok(()) };
        let n = NonZeroU32::new(events.min(u32::MAX as usize) as u32).unwrap_or(NonZeroU32::MIN);
        match limiter.check_key_n(&user.to_string(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(rate_limited(
                format!("user {user:?} has used this hour's budget of events"),
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
            Err(_) => Err(AppError::bad_request(format!("{events} events are more than one user may add in an hour"))),
        }
    }

    /// Charges one request to the caller's bucket; 429 when it is empty.
    fn charge_request(&self, caller: &Caller) -> Result<(), AppError> {
        let outcome = match caller {
            Caller::Anonymous => return Ok(()),
            Caller::Key(i) => self.keys.check_key(i),
            Caller::User(u) => self.users.check_key(u),
        };
        outcome.map_err(|not_until| {
            rate_limited(
                "this credential's request rate is over its quota".into(),
                not_until.wait_time_from(DefaultClock::default().now()),
            )
        })
    }

    /// Forgets buckets that have refilled, so that the maps hold only recent callers.
    pub fn forget_idle(&self) {
        self.users.retain_recent();
        if let Some(events) = &self.events {
            events.retain_recent();
        }
    }
}

fn rate_limited(detail: String, wait: Duration) -> AppError {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    AppError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail).retry_after(seconds.max(1))
}

/// The credential of an `Authorization: Bearer …` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
}

/// The admin routes' check: 401 without a bearer token, 403 with a wrong one (or when no admin
/// token is configured). Apart from [`authenticate`], because the admin token is no API key.
pub fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let Some(token) = bearer(headers) else {
        return Err(AppError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorised",
            "send Authorization: Bearer <admin token>",
        ));
    };
    match &state.admin_token {
        Some(expected) if constant_time_eq(expected.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(forbidden("wrong admin token".into())),
        None => Err(forbidden("admin is disabled: start with --admin-token".into())),
    }
}

/// The layer: resolves the bearer credential into a [`Caller`] and meters it.
pub async fn authenticate(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let credential = bearer(request.headers()).map(str::trim);
    let caller = match credential {
        None => Caller::Anonymous,
        Some(credential) => match state.auth.identify(credential, unix_now()) {
            Some(caller) => caller,
            None => {
                let detail = "the credential is not a valid API key or an unexpired user token";
                return AppError::new(StatusCode::UNAUTHORIZED, "unauthorised", detail).into_response();
            }
        },
    };
    if let Err(e) = state.auth.charge_request(&caller) {
        state.metrics.observe_rate_limited();
        return e.into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The token-signing secret: `ONEREC_TOKEN_SECRET` when set, else `data_dir/token-secret`, made
/// on first start from the OS's random source, so that tokens outlive restarts.
pub fn load_secret(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = configured.filter(|s| !s.is_empty()) {
        return Ok(secret.as_bytes().to_vec());
    }
    let path = data_dir.join("token-secret");
    match std::fs::read(&path) {
        Ok(secret) if secret.len() >= 32 => return Ok(secret),
        Ok(_) => anyhow::bail!("{} is shorter than 32 bytes; delete it to make a new one", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    }
    let secret = random_bytes(32)?;
    std::fs::create_dir_all(data_dir)?;
    onerec_core::codec::write_atomic(&path, &secret)?;
    restrict_to_owner(&path)?;
    Ok(secret)
}

/// A fresh API key for a run started without one: 128 bits in hex.
pub fn random_key() -> anyhow::Result<String> {
    Ok(hex(&random_bytes(16)?))
}

fn random_bytes(n: usize) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = vec![0; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| anyhow::anyhow!("cannot read /dev/urandom: {e}"))?;
    Ok(bytes)
}

fn restrict_to_owner(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| anyhow::anyhow!("cannot restrict {}: {e}", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares secrets without leaking the position of the first difference through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(vec!["key-a".into(), "key-b".into()], b"0123456789abcdef0123456789abcdef".to_vec(), Quotas::default())
    }

    #[test]
    fn keys_and_tokens_name_their_caller_and_nothing_else() {
        let auth = auth();
        assert_eq!(auth.identify("key-b", 0), Some(Caller::Key(1)));
        assert_eq!(auth.identify("key-c", 0), None);
        let token = auth.mint("alice", 1000);
        assert_eq!(UserToken::user_of(&token.token).as_deref(), Some("alice"));
        assert_eq!(auth.identify(&token.token, 1000), Some(Caller::User("alice".into())));
        assert_eq!(auth.identify(&token.token, token.expires), None, "expired");
        // Another user's name under alice's signature is a forgery.
        let forged = token.token.replacen(&hex(b"alice"), &hex(b"bob"), 1);
        assert_eq!(auth.identify(&forged, 1000), None);
        let other_secret = Auth::new(vec![], b"another secret of 32 bytes......".to_vec(), Quotas::default());
        assert_eq!(other_secret.identify(&token.token, 1000), None);
    }

    #[test]
    fn a_user_token_reaches_its_own_user_only() {
        let alice = Caller::User("alice".into());
        assert!(alice.require_user("alice").is_ok());
        assert_eq!(alice.require_user("bob").unwrap_err().status, StatusCode::FORBIDDEN);
        assert_eq!(alice.require_key().unwrap_err().status, StatusCode::FORBIDDEN);
        assert_eq!(Caller::Anonymous.require_user("alice").unwrap_err().status, StatusCode::UNAUTHORIZED);
        assert!(Caller::Key(0).require_user("bob").is_ok());
    }

    #[test]
    fn the_event_budget_refuses_with_the_wait() {
        let quotas = Quotas { user_events_per_hour: 10, ..Quotas::default() };
        let auth = Auth::new(vec![], vec![0; 32], quotas);
        auth.charge_events("alice", 6).unwrap();
        let refused = auth.charge_events("alice", 6).unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        // One event refills every 6 minutes; two are missing.
        let wait = refused.retry_after.unwrap();
        assert!((600..=721).contains(&wait), "{wait}");
        auth.charge_events("bob", 10).expect("budgets are per user");
        assert_eq!(auth.charge_events("carol", 11).unwrap_err().status, StatusCode::BAD_REQUEST);
    }
}
