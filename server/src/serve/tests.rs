//! In-process tests of the routes and their limits: the real router and state over a tiny trained
//! snapshot, driven with `tower::ServiceExt::oneshot` (as axum's `testing` example does), and the
//! accept loop over loopback for what only a socket shows. Kill -9, reload under load and the
//! browser stay in the real-process tests of `tests/`.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Request, StatusCode, header};
use clap::Parser;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::{Cli, Command};

const KEY: &str = "test-key";
const ADMIN: &str = "admin-token";

struct Fixture {
    _dir: tempfile::TempDir,
    data: PathBuf,
    snapshot: PathBuf,
}

/// Synthetic data and a `tiny` model trained for one epoch, made once, in-process, with the CLI.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
        let (data, tok, snapshot) = (p("synth"), p("tok.bin"), p("model.snap"));
        for args in [
            vec!["data", "synth", "--out", &data, "--items", "120", "--users", "60", "--topics", "4"],
            vec!["tokenize", "--data", &data, "--out", &tok, "--codes", "8", "--dim", "32", "--collab-dims", "16"],
            vec!["train", "--data", &data, "--tokenizer", &tok, "--preset", "tiny", "--epochs", "1"],
        ] {
            let mut args = [vec!["onerec"], args].concat();
            if args[1] == "train" {
                args.extend(["--out", &snapshot, "--device", "cpu"]);
            }
            crate::run(Cli::try_parse_from(args).unwrap()).unwrap();
        }
        Fixture { data: PathBuf::from(data), snapshot: PathBuf::from(snapshot), _dir: dir }
    })
}

/// A server's configuration over the fixture, with its own data and web folders in `dir`.
fn config(dir: &Path) -> ServeConfig {
    let f = fixture();
    let web = dir.join("web");
    std::fs::create_dir_all(&web).unwrap();
    std::fs::write(web.join("index.html"), "<!doctype html><title>feed</title>").unwrap();
    ServeConfig {
        snapshot: f.snapshot.clone(),
        data_dir: dir.join("serve"),
        store: super::store::StoreLocation::Local,
        web_dir: web,
        device: onerec_core::device::select(onerec_core::device::DeviceChoice::Cpu).unwrap().0,
        addr: "127.0.0.1:0".into(),
        metrics_addr: None,
        admin_token: Some(ADMIN.into()),
        api_keys: vec![KEY.into()],
        token_secret: None,
        limits: Limits::default(),
        quotas: Quotas::default(),
        batching: BatchConfig { window: Duration::from_millis(1), max_batch: 16, workers: 1 },
        max_connections: None,
        header_timeout: Duration::from_secs(10),
        max_models: 4,
        fresh: FreshSlots::default(),
    }
}

async fn open(config: &ServeConfig) -> Arc<AppState> {
    let f = fixture();
    let args = ["onerec", "serve", "--snapshot", f.snapshot.to_str().unwrap(), "--data", f.data.to_str().unwrap()];
    let Command::Serve(serve) = Cli::try_parse_from(args).unwrap().command else { unreachable!() };
    AppState::open(config, serve.data.load().unwrap()).await.unwrap()
}

/// One request through the whole router; the status, the headers and the body as JSON (or as a
/// JSON string when it is not JSON).
async fn call(app: &Router, request: Request<Body>) -> (StatusCode, header::HeaderMap, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (parts.status, parts.headers, value)
}

fn get(uri: &str, credential: Option<&str>) -> Request<Body> {
    let mut request = Request::get(uri);
    if let Some(c) = credential {
        request = request.header(header::AUTHORIZATION, format!("Bearer {c}"));
    }
    request.body(Body::empty()).unwrap()
}

fn post(uri: &str, credential: Option<&str>, body: Value) -> Request<Body> {
    let mut request = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(c) = credential {
        request = request.header(header::AUTHORIZATION, format!("Bearer {c}"));
    }
    request.body(Body::from(body.to_string())).unwrap()
}

fn item_ids(state: &AppState, n: usize) -> Vec<String> {
    state.catalogue().dataset.items.iter().take(n).map(|i| i.id.clone()).collect()
}

fn events(user: &str, items: &[String], prefix: &str) -> Value {
    let events: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(i, item)| json!({"event_id": format!("{prefix}-{i}"), "user": user, "item": item, "kind": "like"}))
        .collect();
    json!({ "events": events })
}

#[tokio::test]
async fn errors_the_router_makes_are_json_too() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    std::fs::remove_file(config.web_dir.join("index.html")).unwrap();
    let app = router(open(&config).await);
    for (request, status, code) in [
        (get("/v1/events", Some(KEY)), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (get("/no/such/file.js", None), StatusCode::NOT_FOUND, "not_found"),
        (get("/", None), StatusCode::NOT_FOUND, "web_app_not_built"),
        (get("/v1/nothing", Some(KEY)), StatusCode::NOT_FOUND, "unknown_route"),
        (post("/healthz", None, json!({})), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    ] {
        let uri = request.uri().to_string();
        let (got, headers, body) = call(&app, request).await;
        assert_eq!(got, status, "{uri}: {body}");
        assert_eq!(body["error"], code, "{uri}: {body}");
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{uri}: {body}");
        assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/json"));
    }
}

#[tokio::test]
async fn static_files_stay_inside_the_web_folder() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let web = &config.web_dir;
    std::fs::write(web.join(".env"), "SECRET=1").unwrap();
    std::fs::create_dir_all(web.join(".git")).unwrap();
    std::fs::write(web.join(".git/config"), "[core]").unwrap();
    std::fs::write(dir.path().join("outside.txt"), "private").unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside.txt"), web.join("leak.txt")).unwrap();
    std::fs::write(web.join("app.js"), "console.log(1)").unwrap();
    let app = router(open(&config).await);
    for uri in ["/.env", "/%2eenv", "/.git/config", "/assets/../.env", "/leak.txt"] {
        let (status, _, body) = call(&app, get(uri, None)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri} must not be served: {body}");
        assert_eq!(body["error"], "not_found");
    }
    let (status, _, body) = call(&app, get("/app.js", None)).await;
    assert_eq!((status, body), (StatusCode::OK, Value::String("console.log(1)".into())));
    // The app's own routes get index.html.
    let (status, _, body) = call(&app, get("/some/app/route", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.as_str().unwrap().contains("<title>feed</title>"));
}

#[tokio::test]
async fn writes_and_user_reads_need_a_credential_that_covers_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(&config(dir.path())).await;
    let app = router(state.clone());
    let items = item_ids(&state, 3);
    let alice = json!({"user": "alice"});

    // Anonymous: the cold-start feed and items, nothing user-scoped.
    assert_eq!(call(&app, get("/v1/feed?k=3", None)).await.0, StatusCode::OK);
    assert_eq!(call(&app, get(&format!("/v1/items/{}", items[0]), None)).await.0, StatusCode::OK);
    for request in [
        post("/v1/events", None, events("alice", &items, "anon")),
        get("/v1/users", None),
        get("/v1/users/alice/history", None),
        post("/v1/tokens", None, alice.clone()),
    ] {
        let uri = request.uri().to_string();
        let (status, _, body) = call(&app, request).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorised")), "{uri}");
    }
    let (status, _, body) = call(&app, get("/v1/users", Some("not-a-key"))).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorised")));

    // The API key mints alice a token; it covers alice and nobody else.
    let (status, _, minted) = call(&app, post("/v1/tokens", Some(KEY), alice)).await;
    assert_eq!(status, StatusCode::OK, "{minted}");
    let token = minted["token"].as_str().unwrap().to_string();
    let (status, _, stored) = call(&app, post("/v1/events", Some(&token), events("alice", &items, "a"))).await;
    assert_eq!((status, stored["stored"].as_u64()), (StatusCode::OK, Some(3)), "{stored}");
    let (status, _, body) = call(&app, post("/v1/events", Some(&token), events("bob", &items, "b"))).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    assert_eq!(call(&app, get("/v1/users/bob/history", Some(&token))).await.0, StatusCode::FORBIDDEN);
    assert_eq!(call(&app, get("/v1/users", Some(&token))).await.0, StatusCode::FORBIDDEN);
    let (status, _, history) = call(&app, get("/v1/users/alice/history", Some(&token))).await;
    assert_eq!((status, history["events"].as_array().map(Vec::len)), (StatusCode::OK, Some(3)));

    // A feed for alice hands back a fresh token for alice.
    let (status, _, feed) = call(&app, get("/v1/feed?user=alice&k=3", Some(&token))).await;
    assert_eq!(status, StatusCode::OK, "{feed}");
    let fresh = feed["token"].as_str().unwrap();
    assert_eq!(onerec_core::api::UserToken::user_of(fresh).as_deref(), Some("alice"));
    assert_eq!(call(&app, get("/v1/feed?user=bob&k=3", Some(fresh))).await.0, StatusCode::FORBIDDEN);
    assert_eq!(call(&app, get("/v1/feed?user=alice&k=3", None)).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn quotas_answer_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.quotas = Quotas { key_per_second: 1000, user_per_second: 1000, user_events_per_hour: 5 };
    let state = open(&config).await;
    let app = router(state.clone());
    let items = item_ids(&state, 4);
    assert_eq!(call(&app, post("/v1/events", Some(KEY), events("carol", &items, "c1"))).await.0, StatusCode::OK);
    let (status, headers, body) = call(&app, post("/v1/events", Some(KEY), events("carol", &items, "c2"))).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")), "{body}");
    let wait: u64 = headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&wait), "{wait}");
    assert_eq!(call(&app, post("/v1/events", Some(KEY), events("dave", &items, "d"))).await.0, StatusCode::OK);

    // A key's request rate: a burst of twice the rate, then 429.
    let other = tempfile::tempdir().unwrap();
    let mut config = self::config(other.path());
    config.quotas.key_per_second = 1;
    let app = router(open(&config).await);
    let statuses: Vec<StatusCode> = {
        let mut out = Vec::new();
        for _ in 0..3 {
            out.push(call(&app, get("/v1/users?limit=1", Some(KEY))).await.0);
        }
        out
    };
    assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
    let metrics = call(&app, get("/metrics", Some(ADMIN))).await.2;
    assert!(metrics.as_str().unwrap().contains("onerec_rate_limited_total 1\n"), "{metrics}");
}

#[tokio::test]
async fn history_and_users_come_a_page_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(&config(dir.path())).await;
    let app = router(state.clone());
    let items = item_ids(&state, 5);
    assert_eq!(call(&app, post("/v1/events", Some(KEY), events("erin", &items, "e"))).await.0, StatusCode::OK);
    let mut seen = Vec::new();
    let mut uri = "/v1/users/erin/history?limit=2".to_string();
    loop {
        let (status, _, page) = call(&app, get(&uri, Some(KEY))).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(page["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/v1/users/erin/history?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["e-4", "e-3", "e-2", "e-1", "e-0"], "newest first, each once");
    assert_eq!(call(&app, get("/v1/users/erin/history?limit=0", Some(KEY))).await.0, StatusCode::BAD_REQUEST);

    // New users follow the data set's, in the order they came.
    for user in ["zed", "amy"] {
        assert_eq!(call(&app, post("/v1/events", Some(KEY), events(user, &items[..1], user))).await.0, StatusCode::OK);
    }
    let known = state.catalogue().dataset.users.len();
    let (_, _, page) = call(&app, get(&format!("/v1/users?offset={}&limit=10", known - 1), Some(KEY))).await;
    let last_known = state.catalogue().dataset.users[known - 1].id.clone();
    assert_eq!(page["users"], json!([last_known, "erin", "zed", "amy"]));
    assert_eq!(page["total"], known + 3);
    assert!(page.get("next_offset").is_none());
    let (_, _, page) = call(&app, get("/v1/users?limit=2", Some(KEY))).await;
    assert_eq!(page["next_offset"], 2);
}

/// A decode queue holding feeds: `/readyz` answers from state without waiting for them, while
/// `?deep=1` decodes in turn; the feeds whose clients left are dropped, not computed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_decodes_are_dropped_and_readiness_does_not_queue() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    // One worker, which gathers the feeds into one batch for 600 ms: long enough to check
    // readiness and to hang up on them before it decodes.
    config.batching = BatchConfig { window: Duration::from_millis(600), max_batch: 64, workers: 1 };
    let app = router(open(&config).await);
    let feed = "/v1/feed?k=10&pool=100&beam=512&exclude_seen=false";
    let waiting: Vec<_> = (0..12).map(|_| tokio::spawn(call_owned(app.clone(), get(feed, None)))).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _, body) = call(&app, get("/readyz", None)).await;
    assert_eq!((status, &body["status"], &body["store"]["kind"]), (StatusCode::OK, &json!("ready"), &json!("redb")));
    assert!(waiting.iter().filter(|t| !t.is_finished()).count() >= 10, "readiness answered behind the feeds");
    for task in &waiting {
        task.abort();
    }
    // The deep check joins the worker's batch: by its answer, the abandoned feeds have been
    // taken off the queue.
    let (status, _, body) = call(&app, get("/readyz?deep=1", None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let metrics = call(&app, get("/metrics", Some(ADMIN))).await.2;
    let dropped: u64 = metrics
        .as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("onerec_decodes_dropped_total{reason=\"client_gone\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(dropped, 12, "abandoned decodes were computed:\n{metrics}");
}

async fn call_owned(app: Router, request: Request<Body>) -> (StatusCode, header::HeaderMap, Value) {
    call(&app, request).await
}

/// A body that never arrives.
struct Trickle;

impl HttpBody for Trickle {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Pending
    }
}

#[tokio::test]
async fn a_body_that_does_not_arrive_is_cut_off_and_metrics_need_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.limits.request_timeout = Duration::from_millis(200);
    let app = router(open(&config).await);
    let request = Request::post("/v1/events")
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::new(Trickle))
        .unwrap();
    let (status, _, body) = call(&app, request).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::REQUEST_TIMEOUT, Some("request_timeout")), "{body}");

    assert_eq!(call(&app, get("/metrics", None)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&app, get("/metrics", Some(KEY))).await.0, StatusCode::FORBIDDEN);
    assert_eq!(call(&app, get("/metrics", Some(ADMIN))).await.0, StatusCode::OK);
}

#[tokio::test]
async fn reload_refuses_what_is_not_a_snapshot_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(open(&config(dir.path())).await);
    for path in ["/dev/zero", "/"] {
        let request = post("/admin/reload", Some(ADMIN), json!({ "snapshot": path }));
        let (status, _, body) = call(&app, request).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("bad_snapshot")),
            "{body}"
        );
        assert!(body["detail"].as_str().unwrap().contains("not a snapshot file"), "{path}: {body}");
    }
}

/// The accept loop over loopback: a connection that sends half its headers, or that idles after
/// a request, is closed at the header timeout; beyond the cap a connection gets a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_and_connections_are_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    let dir = tempfile::tempdir().unwrap();
    let state = open(&config(dir.path())).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = ConnectionLimits { max_connections: 3, header_timeout: Duration::from_millis(300) };
    tokio::spawn(listener::serve(
        listener,
        router(state.clone()),
        limits,
        state.metrics.clone(),
        std::future::pending(),
    ));

    /// Reads until the server closes the connection; `None` if it is still open after 10 s.
    async fn read_to_close(stream: &mut TcpStream) -> Option<String> {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await.ok()?.ok()?;
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut third = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The cap is 3: a fourth connection is refused with a 503 while those are open.
    let mut refused = TcpStream::connect(addr).await.unwrap();
    let answer = read_to_close(&mut refused).await.expect("a refused connection is closed");
    assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("retry-after: 1"), "{answer}");

    assert!(read_to_close(&mut slow).await.is_some(), "half-sent headers held the connection open");
    let idle_answer = read_to_close(&mut idle).await.expect("an idle keep-alive connection stays open");
    assert!(idle_answer.starts_with("HTTP/1.1 200"), "{idle_answer}");
    assert!(read_to_close(&mut third).await.is_some(), "a silent connection stays open");
    // Once they are closed, there is room again.
    let mut again = TcpStream::connect(addr).await.unwrap();
    again.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    assert!(read_to_close(&mut again).await.unwrap().starts_with("HTTP/1.1 200"));
    let metrics = state.metrics.render(&state.store.status());
    assert!(metrics.contains("onerec_connections_refused_total 1\n"), "{metrics}");
}

#[tokio::test]
async fn an_undo_takes_a_like_out_of_what_the_model_reads() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(&config(dir.path())).await;
    let app = router(state.clone());
    let items = item_ids(&state, 2);
    let event = |id: &str, item: &str, kind: &str| json!({"event_id": id, "user": "fay", "item": item, "kind": kind});
    let batch = json!({"events": [event("1", &items[0], "like"), event("2", &items[1], "like"), event("3", &items[0], "undo")]});
    assert_eq!(call(&app, post("/v1/events", Some(KEY), batch)).await.0, StatusCode::OK);
    let catalogue = state.catalogue();
    let (_, read) = state.histories.history(&catalogue, "fay").unwrap();
    let liked: Vec<&str> = read.iter().map(|e| catalogue.dataset.items[e.item as usize].id.as_str()).collect();
    assert_eq!(liked, [items[1].as_str()], "the undone like is gone, the other stays");
    let (_, _, history) = call(&app, get("/v1/users/fay/history", Some(KEY))).await;
    let kinds: Vec<&str> = history["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["undo", "like", "like"], "the stored history keeps what happened");
}

#[tokio::test]
async fn a_reload_counts_what_was_chosen_since_in_what_is_popular_now() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(&config(dir.path())).await;
    let app = router(state.clone());
    let items = item_ids(&state, 2);
    // Two hours ago, three users chose one item, and another was shown and skipped more often,
    // and liked by four more users who then took their likes back.
    let at = super::auth::unix_now() - 2 * 3600;
    let event = |id: String, user: &str, item: &str, kind: &str| json!({"event_id": id, "user": user, "item": item, "kind": kind, "timestamp": at});
    let mut batch: Vec<Value> =
        ["ann", "bo", "cy"].iter().map(|u| event(format!("{u}-c"), u, &items[0], "click")).collect();
    for (i, kind) in ["impression", "skip"].iter().cycle().take(6).enumerate() {
        batch.push(event(format!("s{i}"), "dee", &items[1], kind));
    }
    for user in ["eve", "fay", "gus", "hal"] {
        batch.push(event(format!("{user}-l"), user, &items[1], "like"));
        batch.push(event(format!("{user}-u"), user, &items[1], "undo"));
    }
    assert_eq!(call(&app, post("/v1/events", Some(KEY), json!({ "events": batch }))).await.0, StatusCode::OK);
    let popular_now = |state: &AppState| {
        let trend = state.arms.main().trend.as_ref().expect("the tiny preset reads the trend").at(at + 3 * 3600);
        trend.iter().map(|&(item, _)| state.catalogue().dataset.items[item as usize].id.clone()).collect::<Vec<_>>()
    };
    assert_ne!(popular_now(&state), [items[0].clone()], "the engine was loaded before the events");
    let (status, _, body) = call(&app, post("/admin/reload", Some(ADMIN), json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(popular_now(&state), [items[0].clone()], "chosen counts; shown, skipped or taken back does not");
}

/// Items added while serving are decodable at once, take the fresh slot, survive a reload and a
/// restart, and once retired are never recommended again.
#[tokio::test]
async fn items_added_while_serving_are_recommended_kept_and_retired() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let state = open(&config).await;
    let app = router(state.clone());
    let old = state.catalogue().dataset.items.len();
    let twin = |i: usize| {
        let item = &state.catalogue().dataset.items[i];
        json!({"id": format!("fresh-{i}"), "title": item.title, "tags": item.tags})
    };
    let rows = json!({"items": [twin(0), twin(1), twin(2)]});
    assert_eq!(call(&app, post("/admin/items", Some(KEY), rows.clone())).await.0, StatusCode::FORBIDDEN);
    for (body, status) in [
        (json!({"items": []}), StatusCode::BAD_REQUEST),
        (json!({"items": [{"id": state.catalogue().dataset.items[0].id}]}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"items": [{"id": "x"}, {"id": "x"}]}), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let (got, _, answer) = call(&app, post("/admin/items", Some(ADMIN), body)).await;
        assert_eq!(got, status, "{answer}");
    }
    let (status, _, added) = call(&app, post("/admin/items", Some(ADMIN), rows)).await;
    assert_eq!(status, StatusCode::OK, "{added}");
    assert_eq!(added["added"].as_array().unwrap().len(), 3);
    let (status, _, info) = call(&app, get("/v1/items/fresh-1", Some(KEY))).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!((info["retired"].as_bool(), info["added_at"].is_i64()), (Some(false), true), "{info}");
    assert_eq!(info["semantic_id"], added["added"][1]["semantic_id"]);
    // One of ten positions is kept for fresh items, the last; the rest is what the model ranks.
    let users: Vec<String> = state.catalogue().dataset.users.iter().take(5).map(|u| u.id.clone()).collect();
    let slate = |app: Router, user: String| async move {
        let (status, _, feed) = call(&app, get(&format!("/v1/feed?user={user}&k=10"), Some(KEY))).await;
        assert_eq!(status, StatusCode::OK, "{feed}");
        let ids: Vec<String> =
            feed["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().into()).collect();
        assert_eq!(ids.len(), 10);
        assert!(ids[9].starts_with("fresh-"), "{ids:?}");
        let marked: Vec<bool> = feed["items"].as_array().unwrap().iter().map(|i| i["fresh"] == true).collect();
        assert_eq!(marked, [vec![false; 9], vec![true]].concat(), "the kept position says so");
        ids
    };
    for user in &users {
        slate(app.clone(), user.clone()).await;
    }
    // Events may name them, and what users chose among them takes the fresh slot of the others: a
    // like of a fresh item that neither the model's top 9 nor the slot held puts it in the slot.
    let before = slate(app.clone(), users[1].clone()).await;
    let liked = ["fresh-0", "fresh-1", "fresh-2"].into_iter().find(|f| !before.iter().any(|i| i == f)).unwrap();
    let batch = json!({"events": [{"event_id": "f", "user": users[0], "item": liked, "kind": "like"}]});
    assert_eq!(call(&app, post("/v1/events", Some(KEY), batch)).await.0, StatusCode::OK);
    assert_eq!(slate(app.clone(), users[1].clone()).await[9], liked);
    // Retiring.
    let delete = |id: &str, credential: &str| {
        Request::delete(format!("/admin/items/{id}"))
            .header(header::AUTHORIZATION, format!("Bearer {credential}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(call(&app, delete("fresh-1", KEY)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(call(&app, delete("nothing", ADMIN)).await.0, StatusCode::NOT_FOUND);
    let (status, _, retired) = call(&app, delete("fresh-1", ADMIN)).await;
    assert_eq!((status, retired["changed"].as_bool()), (StatusCode::OK, Some(true)), "{retired}");
    assert_eq!(call(&app, delete("fresh-1", ADMIN)).await.2["changed"], false);
    let uri = format!("/v1/feed?user={}&k=10&pool=200&beam=200&exclude_seen=false", users[1]);
    let everything = |app: Router| {
        let uri = uri.clone();
        async move {
            let (status, _, feed) = call(&app, get(&uri, Some(KEY))).await;
            assert_eq!(status, StatusCode::OK, "{feed}");
            let mut ids: Vec<String> = ["items", "pool"]
                .iter()
                .flat_map(|k| feed[k].as_array().unwrap().clone())
                .map(|i| i["id"].as_str().unwrap().to_string())
                .collect();
            ids.sort();
            ids
        }
    };
    let ids = everything(app.clone()).await;
    assert_eq!(ids.len(), old + 2, "every item but the retired one");
    assert!(ids.contains(&"fresh-0".into()) && ids.contains(&"fresh-2".into()) && !ids.contains(&"fresh-1".into()));
    assert_eq!(call(&app, get("/v1/items/fresh-1", Some(KEY))).await.2["retired"], true);
    // A reload adds them to the snapshot from disk again, and a restart to the one it starts with.
    let (status, _, body) = call(&app, post("/admin/reload", Some(ADMIN), json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(everything(app.clone()).await, ids);
    let moved = tempfile::tempdir().unwrap();
    let restarted = self::config(moved.path());
    std::fs::create_dir_all(&restarted.data_dir).unwrap();
    std::fs::copy(config.data_dir.join("catalogue.jsonl"), restarted.data_dir.join("catalogue.jsonl")).unwrap();
    let again = router(open(&restarted).await);
    assert_eq!(everything(again).await, ids);
}

/// An aligned snapshot's slate: a feed decodes the slate's beam by default and ranks it with the
/// reward model for the user's history, and an item added while serving, which the reward model
/// never saw, can be in that history and in the beam.
#[tokio::test]
async fn a_slate_ranks_the_feed_with_the_reward_model_and_passes_over_items_it_never_saw() {
    use onerec_core::generator::snapshot::Snapshot;
    use onerec_core::reward::RewardSnapshot;
    use onerec_core::reward::slate::{Slate, rank_by_reward};

    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let reward = dir.path().join("reward.snap");
    let (data, out) = (f.data.to_str().unwrap(), reward.to_str().unwrap());
    let args = ["onerec", "reward", "train", "--data", data, "--out", out, "--epochs", "1"];
    crate::run(Cli::try_parse_from(args).unwrap()).unwrap();
    let (weight, beam) = (10.0, 40);
    let slate = Slate { reward: RewardSnapshot::load(&reward).unwrap(), weight, beam };
    let aligned = dir.path().join("aligned.snap");
    Snapshot { slate: Some(slate.clone()), ..Snapshot::load(&f.snapshot).unwrap() }.save(&aligned).unwrap();
    let state = open(&ServeConfig { snapshot: aligned, ..config(dir.path()) }).await;
    let app = router(state.clone());
    let user = state.catalogue().dataset.users[0].id.clone();
    let feed = |app: Router| {
        let uri = format!("/v1/feed?user={user}&k=10&pool={beam}");
        async move {
            let (status, _, feed) = call(&app, get(&uri, Some(KEY))).await;
            assert_eq!(status, StatusCode::OK, "{feed}");
            ["items", "pool"]
                .iter()
                .flat_map(|k| feed[k].as_array().unwrap().clone())
                .map(|i| i["id"].as_str().unwrap().to_string())
                .collect::<Vec<String>>()
        }
    };
    let got = feed(app.clone()).await;
    let engine = state.arms.main();
    let (person, history) = state.histories.history(&engine.catalogue, &user).unwrap();
    let recommender = engine.recommender();
    let request = recommender.request(&person, &history, super::auth::unix_now(), beam, true);
    let mut decoded = recommender.recommend_batch(&[request]).remove(0);
    let ids = |beam: &[onerec_core::decode::Hypothesis]| -> Vec<String> {
        beam.iter().map(|h| engine.catalogue.dataset.items[h.item.unwrap() as usize].id.clone()).collect()
    };
    let plain = ids(&decoded);
    let scorer = slate.reward.scorer(&engine.catalogue.dataset, &engine.device).unwrap();
    rank_by_reward(&mut decoded, &history, &scorer, weight);
    assert_eq!(got, ids(&decoded), "the slate's order over the slate's beam");
    assert_ne!(got, plain, "the reward model moved the model's order");

    // Two items the reward model never saw: one liked, so in the history, and one in the slot kept
    // for fresh items.
    let twin = |i: usize| {
        let item = &state.catalogue().dataset.items[i];
        json!({"id": format!("fresh-{i}"), "title": item.title, "tags": item.tags})
    };
    let rows = json!({"items": [twin(0), twin(1)]});
    assert_eq!(call(&app, post("/admin/items", Some(ADMIN), rows)).await.0, StatusCode::OK);
    let batch = json!({"events": [{"event_id": "f", "user": user, "item": "fresh-0", "kind": "like"}]});
    assert_eq!(call(&app, post("/v1/events", Some(KEY), batch)).await.0, StatusCode::OK);
    let after = feed(app.clone()).await;
    assert_eq!(after.len(), beam);
    assert_eq!(after[9], "fresh-1", "{after:?}");
    assert!(!after.contains(&"fresh-0".to_string()), "seen items stay out");
}
