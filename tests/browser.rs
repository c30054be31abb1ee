//! The browser feed end to end: the Trunk-built app (`dist/`) served by a real `onerec serve`,
//! driven in headless Chromium through chromedriver. The server requires credentials: the feed
//! is opened with the operator's `#key=` link, or a user's `#token=` link.
//!
//! Ignored by default: they need `trunk build --release` and Debian's `chromium` and
//! `chromium-driver`. `.ci/run` provides all three and runs
//! `cargo test -p onerec-server --test browser -- --ignored --test-threads=1`. When something is
//! missing the tests fail with a message saying what, never pass silently.

mod common;

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{API_KEY, client, get, path, post, trained_fixture};
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// One browser and one server at a time: the machine has two cores. Each test has its own runtime
/// on its own thread; tokio's lock works across them and may be held over awaits.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(30);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The built app; fails with the command to run when it is missing.
fn dist() -> PathBuf {
    let dist = repo_root().join("dist");
    let index = std::fs::read_to_string(dist.join("index.html")).unwrap_or_default();
    assert!(
        index.contains(".wasm") && dist.join("sw.js").exists(),
        "{} holds no built web app: run `trunk build --release` at the repository root first",
        dist.display()
    );
    dist
}

fn tool(env: &str, default: &str, package: &str) -> String {
    let bin = std::env::var(env).unwrap_or_else(|_| default.to_string());
    assert!(Path::new(&bin).exists(), "{bin} is missing: `apt-get install {package}` (or set {env})");
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < WAIT, "{what} did not listen on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `onerec serve` on a fixed port, so that it can be stopped and started again at the same
/// address, as a server that goes away and comes back.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(port: u16, data_dir: &Path) -> Server {
        let fx = trained_fixture();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_onerec"))
            .args(["serve", "--snapshot", path(&fx.snapshot), "--data", path(&fx.data), "--data-dir", path(data_dir)])
            .args(["--addr", &addr, "--device", "cpu", "--web-dir", path(&dist()), "--api-key", API_KEY])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("onerec serve starts");
        wait_for_port(port, "onerec serve");
        Server { child, url: format!("http://{addr}") }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// chromedriver and one headless Chromium session with a fresh profile.
struct Browser {
    driver: Child,
    driver_url: String,
    client: Client,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let chromium = tool("ONEREC_CHROMIUM", "/usr/bin/chromium", "chromium");
        let chromedriver = tool("CHROMEDRIVER", "/usr/bin/chromedriver", "chromium-driver");
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        wait_for_port(port, "chromedriver");
        let driver_url = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1100,900",
        ]
        .map(String::from)
        .into_iter()
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let caps = json!({"browserName": "chrome", "goog:chromeOptions": {"binary": chromium, "args": args}});
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.as_object().unwrap().clone())
            .connect(&driver_url)
            .await
            .expect("a Chromium session starts");
        let session = client.session_id().await.unwrap().expect("a session id");
        Browser { driver, driver_url, client, session, _profile: profile }
    }

    /// A Chrome DevTools Protocol command through chromedriver.
    fn cdp(&self, cmd: &str, params: Value) -> Value {
        let url = format!("{}/session/{}/goog/cdp/execute", self.driver_url, self.session);
        let (status, body) = common::post(&client(), &url, &json!({"cmd": cmd, "params": params}).to_string(), &[]);
        assert_eq!(status, 200, "CDP {cmd}: {body}");
        body
    }

    /// Cuts the page off the network (or reconnects it), as a phone losing signal would be.
    fn set_offline(&self, offline: bool) {
        self.cdp("Network.enable", json!({}));
        let params = json!({"offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1});
        self.cdp("Network.emulateNetworkConditions", params);
    }

    /// Hides the page (or shows it again), as switching to another tab does: headless Chromium
    /// has no other tab to switch to, so the document's visibility is overridden and the event sent.
    async fn set_page_hidden(&self, hidden: bool) {
        let state = if hidden { "hidden" } else { "visible" };
        self.js(&format!(
            "Object.defineProperty(document, 'hidden', {{ value: {hidden}, configurable: true }});
             Object.defineProperty(document, 'visibilityState', {{ value: '{state}', configurable: true }});
             document.dispatchEvent(new Event('visibilitychange', {{ bubbles: true }}));
             return null;"
        ))
        .await;
    }

    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script {script:?}: {e}"))
    }

    /// Polls a JS expression until it is true. While the page reloads (a `#token=` link reloads
    /// it), the elements the expression reads may not exist yet, or the script may land between
    /// documents: both count as "not yet", not as a failure.
    async fn wait_until(&self, expr: &str, what: &str) {
        let start = Instant::now();
        loop {
            let script = format!("try {{ return !!({expr}); }} catch (e) {{ return false; }}");
            if self.client.execute(&script, vec![]).await.ok() == Some(json!(true)) {
                return;
            }
            if start.elapsed() > WAIT {
                let status = self.js("return document.body.innerText.slice(0, 600);").await;
                panic!("timed out waiting for {what} ({expr}); the page says: {status}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The ids of the cards on screen, top first.
    async fn card_ids(&self) -> Vec<String> {
        let ids = self.js("return [...document.querySelectorAll('article.card')].map(c => c.dataset.id);").await;
        serde_json::from_value(ids).unwrap()
    }

    async fn count(&self, id: &str) -> u64 {
        let v = self.js(&format!("return Number(document.getElementById('{id}').dataset.count);")).await;
        v.as_u64().unwrap_or_else(|| panic!("#{id} has no count: {v}"))
    }

    /// Waits until `n` reactions (likes, skips, undos) wait in the queue; impressions and dwell
    /// come and go with what is on screen.
    async fn wait_reactions_queued(&self, n: usize) {
        let queued = "JSON.parse(localStorage.getItem('onerec.queue') || '[]')";
        let reactions = format!("{queued}.filter(e => !['impression', 'watch_time'].includes(e.kind)).length");
        self.wait_until(&format!("{reactions} === {n}"), &format!("{n} reactions queued")).await;
    }

    /// Waits until the counter `#id` shows `n`.
    async fn wait_count(&self, id: &str, n: u64) {
        self.wait_until(&format!("document.getElementById('{id}').dataset.count === '{n}'"), &format!("#{id} = {n}"))
            .await;
    }

    /// Clicks a card's like or skip button, as a person would.
    async fn react(&self, item: &str, button: &str) {
        let css = format!("article.card[data-id=\"{item}\"] button.{button}");
        self.client.find(Locator::Css(&css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
        self.wait_until(&format!("!document.querySelector('article.card[data-id=\"{item}\"]')"), "the card to leave")
            .await;
    }

    /// Presses keys one after another, as a person would, on whatever has the focus.
    async fn press(&self, keys: &[char]) {
        let mut actions = KeyActions::new("keyboard".into());
        for &value in keys {
            actions = actions.then(KeyAction::Down { value }).then(KeyAction::Up { value });
        }
        self.client.perform_actions(actions).await.unwrap();
    }

    /// The card the keyboard acts on.
    async fn focused(&self) -> Value {
        self.js("return document.querySelector('article.card.focused')?.dataset.id ?? null;").await
    }

    /// Waits until the keyboard's card is `item`.
    async fn wait_focus(&self, item: &str) {
        let expr = format!("document.querySelector('article.card.focused')?.dataset.id === {}", json!(item));
        self.wait_until(&expr, &format!("the focus on {item}")).await;
    }

    /// The activity panel, top first, as (item, kind).
    async fn activity(&self) -> Vec<(String, String)> {
        let rows = self
            .js("return [...document.querySelectorAll('#activity li')].map(li => [li.dataset.id, li.dataset.kind]);")
            .await;
        serde_json::from_value(rows).unwrap()
    }

    /// Waits until the activity panel lists `rows`, top first.
    async fn wait_activity(&self, rows: &[(&str, &str)]) {
        let expr = format!(
            "JSON.stringify([...document.querySelectorAll('#activity li')].map(li => [li.dataset.id, li.dataset.kind])) === {}",
            json!(json!(rows).to_string())
        );
        self.wait_until(&expr, &format!("the activity panel to list {rows:?}")).await;
    }

    /// Shows every page of `user`'s feed, so that a card's absence means the item is not in it:
    /// waits for a card per saved candidate not reacted to.
    async fn show_all(&self, user: &str) {
        self.js("for (let i = 0; i < 30; i++) document.getElementById('load-more').click();").await;
        let left = format!(
            "(() => {{ const saved = k => JSON.parse(localStorage.getItem(`onerec.${{k}}.{user}`));
                const reacted = new Set(saved('reactions').map(r => r.item.id));
                return saved('pool').filter(i => !reacted.has(i.id)).length; }})()"
        );
        self.wait_until(&format!("document.querySelectorAll('article.card').length === {left}"), "every page").await;
    }

    /// Opens `user`'s feed through the operator's link.
    async fn open_feed(&self, server: &str, user: &str) {
        self.client.goto(&format!("{server}/?user={user}#key={API_KEY}")).await.unwrap();
        self.wait_until("document.querySelectorAll('article.card').length >= 5", "cards").await;
    }

    /// Whether this page asked the server for `path`, with `?user=` when one is given.
    async fn requested(&self, path: &str, user: Option<&str>) -> bool {
        let script = format!(
            "const [path, user] = [{}, {}]; return performance.getEntriesByType('resource').some(e => {{
                const url = new URL(e.name);
                return url.pathname === path && (user === null || url.searchParams.get('user') === user);
            }});",
            json!(path),
            json!(user)
        );
        self.js(&script).await == json!(true)
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../browser-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(name);
        std::fs::write(&file, png).unwrap();
        println!("screenshot: {}", file.display());
    }

    /// Ends the session (Chromium quits) and stops chromedriver.
    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// On any exit, a failed assertion included, the Chromium that chromedriver started (its child
/// process) and chromedriver itself are stopped, so no browser outlives the test.
impl Drop for Browser {
    fn drop(&mut self) {
        let driver = self.driver.id().to_string();
        if let Ok(out) = Command::new("pgrep").args(["-P", &driver]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-TERM", pid]).status();
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A fresh event store, a server on `port`, the `nth` user it knows, and a browser on that user's
/// feed once the server's pool is on screen.
async fn open(port: u16, nth: usize) -> (tempfile::TempDir, Server, String, Browser) {
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start(port, data_dir.path());
    let user = users(&server.url)[nth].clone();
    let browser = Browser::start().await;
    browser.open_feed(&server.url, &user).await;
    browser.wait_until("document.getElementById('status').dataset.source === 'server'", "the server's pool").await;
    (data_dir, server, user, browser)
}

/// A user token for `user`, minted with the operator's key, as an operator would to send a link.
fn mint_token(server: &str, user: &str) -> String {
    let body = json!({"user": user}).to_string();
    let (status, minted) = post(&client(), &format!("{server}/v1/tokens"), &body, &[]);
    assert_eq!(status, 200, "{minted}");
    minted["token"].as_str().unwrap_or_else(|| panic!("no token in {minted}")).to_string()
}

/// Users the server knows, from its API.
fn users(server: &str) -> Vec<String> {
    let (status, body) = get(&client(), &format!("{server}/v1/users?limit=20"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body["users"].clone()).unwrap()
}

/// Every event the server stored for `user`, oldest first, as JSON.
fn stored_events(server: &str, user: &str) -> Vec<Value> {
    let (status, body) = get(&client(), &format!("{server}/v1/users/{user}/history?limit=1000"));
    assert_eq!(status, 200, "{body}");
    let mut events = body["events"].as_array().unwrap().clone();
    events.reverse();
    events
}

/// The reactions (likes, skips, undos) the server stored for `user`, oldest first, as (event id,
/// item, kind): the events a person made, without the impressions and dwell the feed reports.
fn stored_reactions(server: &str, user: &str) -> Vec<(String, String, String)> {
    stored_events(server, user)
        .iter()
        .filter(|e| !["impression", "watch_time"].contains(&e["kind"].as_str().unwrap()))
        .map(|e| {
            (
                e["event_id"].as_str().unwrap().into(),
                e["item"].as_str().unwrap().into(),
                e["kind"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// The synthetic data's ground truth: every item's latent topic, the "kind" a person would see.
fn topics() -> HashMap<String, u32> {
    onerec_core::data::synth::read_topics(&trained_fixture().data).unwrap()
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs dist/ (trunk build --release) and chromium; .ci/run runs it"]
async fn feed_renders_from_the_server_and_likes_rerank_on_the_device() {
    let _serial = SERIAL.lock().await;
    let (_data_dir, server, user, browser) = open(free_port(), 0).await;

    // The cards are the server's candidates for this user. Those on screen have been reported
    // as impressions since, and the server no longer offers them.
    let shown = browser.card_ids().await;
    assert_eq!(shown.len(), 10, "one page of cards");
    wait_for_event(&server.url, &user, "an impression", |e| e["kind"] == "impression").await;
    browser.wait_count("queued", 0).await;
    let impressed: Vec<String> =
        stored_events(&server.url, &user).iter().map(|e| e["item"].as_str().unwrap().to_string()).collect();
    assert!(!impressed.is_empty() && impressed.iter().all(|id| shown.contains(id)), "{impressed:?}");
    let (status, feed) = get(&client(), &format!("{}/v1/feed?user={user}&k=10&pool=200", server.url));
    assert_eq!(status, 200, "{feed}");
    let served: Vec<String> = feed["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(feed["pool"].as_array().unwrap())
        .map(|i| i["id"].as_str().unwrap().into())
        .collect();
    for id in &shown {
        assert!(
            served.contains(id) != impressed.contains(id),
            "card {id}: offered again {}, reported shown {}",
            served.contains(id),
            impressed.contains(id)
        );
    }
    let title = browser.js("return document.querySelector('article.card h2').innerText;").await;
    assert!(!title.as_str().unwrap().is_empty(), "cards show titles");
    assert_eq!(browser.js("return document.getElementById('net').dataset.online;").await, json!("true"));
    // The key is kept on the device and left out of the address bar.
    assert_eq!(browser.js("return location.href;").await, json!(format!("{}/?user={user}", server.url)));
    assert_eq!(
        browser.js("return localStorage.getItem('onerec.credential');").await,
        json!(json!(API_KEY).to_string())
    );
    browser.screenshot("feed.png").await;

    // Show three pages, then pick the kind least present at the top that still has items below.
    for _ in 0..2 {
        browser.client.find(Locator::Id("load-more")).await.unwrap().click().await.unwrap();
    }
    browser.wait_until("document.querySelectorAll('article.card').length >= 25", "three pages").await;
    let topics = topics();
    let kind_of = |id: &String| topics[id];
    let before = browser.card_ids().await;
    let mut per_kind: HashMap<u32, (usize, usize)> = HashMap::new();
    for (pos, id) in before.iter().enumerate() {
        let entry = per_kind.entry(kind_of(id)).or_default();
        if pos < 10 { entry.0 += 1 } else { entry.1 += 1 }
    }
    let (&kind, &(top_before, below)) = per_kind
        .iter()
        .filter(|(_, counts)| counts.1 >= 5)
        .min_by_key(|(k, counts)| (counts.0, **k))
        .expect("some kind has at least five cards below the first page");
    assert!(top_before < 10);

    // Like three items of that kind from below the first page. No feed request may follow.
    let feed_requests = "performance.getEntriesByType('resource').filter(e => e.name.includes('/v1/feed')).length";
    let fetched = browser.js(&format!("return {feed_requests};")).await;
    let liked: Vec<String> = before[10..].iter().filter(|id| kind_of(id) == kind).take(3).cloned().collect();
    for id in &liked {
        browser.react(id, "like").await;
    }
    let after = browser.card_ids().await;
    let top_after = after[..10].iter().filter(|id| kind_of(id) == kind).count();
    println!("kind {kind}: {top_before} of the top 10 before three likes, {top_after} after ({below} were below)");
    assert!(top_after > top_before, "liking kind {kind} did not move it up: {top_before} → {top_after}");
    assert_eq!(
        browser.js(&format!("return {feed_requests};")).await,
        fetched,
        "re-ranking needed no server round trip"
    );
    let hint = browser.js("return document.querySelector('article.card .why').innerText;").await;
    println!("first card's hint after the likes: {hint}");
    browser.screenshot("feed-after-likes.png").await;

    // The likes reached the server, once each.
    browser.wait_count("queued", 0).await;
    let stored: Vec<String> = stored_reactions(&server.url, &user).into_iter().map(|e| e.1).collect();
    assert_eq!(stored, liked);
    browser.close().await;
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs dist/ (trunk build --release) and chromium; .ci/run runs it"]
async fn offline_feed_queues_events_and_flushes_each_once() {
    let _serial = SERIAL.lock().await;
    let port = free_port();
    let (data_dir, server, user, browser) = open(port, 1).await;
    let url = server.url.clone();
    // The service worker controls the page, so the shell is cached.
    browser.wait_until("navigator.serviceWorker.controller !== null", "the service worker").await;
    assert!(stored_reactions(&url, &user).is_empty());

    // Offline: the feed keeps working on the saved pool; events wait in the queue.
    browser.set_offline(true);
    browser.wait_until("document.getElementById('net').dataset.online === 'false'", "the offline indicator").await;
    let mut expected = Vec::new();
    for (n, button) in ["like", "like", "skip"].into_iter().enumerate() {
        let first = browser.card_ids().await[0].clone();
        browser.react(&first, button).await;
        expected.push((first, button.to_string()));
        browser.wait_reactions_queued(n + 1).await;
    }
    assert!(browser.card_ids().await.len() >= 5, "the feed still shows cards offline");
    browser.client.find(Locator::Id("load-more")).await.unwrap().click().await.unwrap();
    browser.wait_until("document.querySelectorAll('article.card').length >= 15", "load more offline").await;
    assert!(stored_reactions(&url, &user).is_empty(), "nothing reached the server while offline");
    browser.screenshot("feed-offline.png").await;

    // The server goes away too, and the page is reloaded: the service worker serves the shell, the
    // app serves the saved pool, and the queue survives.
    drop(server);
    browser.set_offline(false);
    browser.client.refresh().await.unwrap();
    browser.wait_until("document.querySelectorAll('article.card').length >= 5", "cards from the saved pool").await;
    browser.wait_until("document.getElementById('status').dataset.source === 'cache'", "the saved pool").await;
    browser.wait_reactions_queued(3).await;
    let first = browser.card_ids().await[0].clone();
    browser.react(&first, "like").await;
    expected.push((first, "like".to_string()));
    browser.wait_reactions_queued(4).await;

    // Back: the queue drains by itself, in order, and each event is stored exactly once.
    let server = Server::start(port, data_dir.path());
    browser.wait_count("queued", 0).await;
    let stored = stored_reactions(&server.url, &user);
    let got: Vec<(String, String)> = stored.iter().map(|e| (e.1.clone(), e.2.clone())).collect();
    assert_eq!(got, expected, "every queued event, in order, once");
    let mut ids: Vec<&String> = stored.iter().map(|e| &e.0).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), expected.len(), "distinct client event ids");
    // Nothing is left to send twice.
    browser.wait_reactions_queued(0).await;

    // A retry after a lost acknowledgement sends an event again with the same client id: put the
    // first event back in the queue and reconnect. The server keeps it once.
    let first = &stored[0];
    let retry = json!([{"event_id": first.0, "user": user, "item": first.1, "kind": first.2}]).to_string();
    browser
        .js(&format!(
            "localStorage.setItem('onerec.queue', {}); window.dispatchEvent(new Event('online'));",
            json!(retry)
        ))
        .await;
    browser.wait_until("localStorage.getItem('onerec.queue') === '[]'", "the retried event to be flushed").await;
    assert_eq!(stored_reactions(&server.url, &user), stored, "the retried event was not stored twice");
    browser.close().await;
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs dist/ (trunk build --release) and chromium; .ci/run runs it"]
async fn a_reload_keeps_the_local_state() {
    let _serial = SERIAL.lock().await;
    let (_data_dir, _server, user, browser) = open(free_port(), 2).await;
    let liked = browser.card_ids().await[0].clone();
    browser.react(&liked, "like").await;
    // The like re-ranked the feed: skip whatever leads now.
    let skipped = browser.card_ids().await[0].clone();
    browser.react(&skipped, "skip").await;
    browser.wait_count("signals", 2).await;
    let key = format!("return localStorage.getItem('onerec.prefs.{user}');");
    let prefs = browser.js(&key).await;
    assert!(prefs.as_str().is_some_and(|p| p.contains("vector")), "the state is saved: {prefs}");

    browser.client.refresh().await.unwrap();
    browser.wait_until("document.querySelectorAll('article.card').length >= 5", "cards after the reload").await;
    assert_eq!(browser.count("signals").await, 2, "the local state survived the reload");
    assert_eq!(browser.js(&key).await, prefs);
    assert_eq!(browser.js("return document.getElementById('user').value;").await, json!(user));
    let shown = browser.card_ids().await;
    assert!(!shown.contains(&liked) && !shown.contains(&skipped), "reacted-to items stay out of the feed");
    browser.close().await;
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs dist/ (trunk build --release) and chromium; .ci/run runs it"]
async fn a_user_token_link_opens_that_users_feed_and_no_other() {
    let _serial = SERIAL.lock().await;
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start(free_port(), data_dir.path());
    let listed = users(&server.url);
    let (user, other) = (listed[3].clone(), listed[4].clone());
    let token = mint_token(&server.url, &user);
    let browser = Browser::start().await;

    // No credential: the anonymous cold-start feed works, and there is no user to pick.
    browser.client.goto(&format!("{}/", server.url)).await.unwrap();
    browser.wait_until("document.getElementById('status').dataset.source === 'server'", "the anonymous feed").await;
    assert!(browser.card_ids().await.len() >= 5, "the anonymous feed shows cards");
    browser.wait_until("document.getElementById('user-locked') && !document.getElementById('user')", "no picker").await;
    assert!(!browser.requested("/v1/users", None).await, "no user list without a key");

    // The user's link, pasted into the open tab: only the fragment changes, and the app starts
    // over with the token, on that user's feed.
    browser.client.goto(&format!("{}/#token={token}", server.url)).await.unwrap();
    browser
        .wait_until(&format!("document.getElementById('user')?.value === {}", json!(user)), "the token's user")
        .await;
    browser.wait_until("document.getElementById('status').dataset.source === 'server'", "the user's feed").await;
    assert!(browser.requested("/v1/feed", Some(&user)).await, "the feed asked is the user's");
    assert_eq!(
        browser.js("return location.href;").await,
        json!(format!("{}/", server.url)),
        "the token left the address"
    );
    assert_eq!(browser.js("return localStorage.getItem('onerec.credential');").await, json!(json!(token).to_string()));
    // The picker shows this one user, fixed.
    let picker = "const s = document.getElementById('user'); return [s.disabled, s.options.length, !!document.getElementById('user-id')];";
    assert_eq!(browser.js(picker).await, json!([true, 1, false]));

    // The user's likes reach the server under the user's name.
    let liked = browser.card_ids().await[0].clone();
    browser.react(&liked, "like").await;
    browser.wait_count("queued", 0).await;
    let stored: Vec<String> = stored_reactions(&server.url, &user).into_iter().map(|e| e.1).collect();
    assert_eq!(stored, [liked.as_str()]);

    // An event of another user, left in the queue by an operator's session, is not this token's
    // to send: the server refuses it (403), and it waits for a credential instead of being
    // dropped, while the user's own events still go out.
    let foreign = json!([{"event_id": "browser-test-foreign", "user": other, "item": liked, "kind": "like"}]);
    browser.js(&format!("localStorage.setItem('onerec.queue', {});", json!(foreign.to_string()))).await;
    let second = browser.card_ids().await[0].clone();
    browser.react(&second, "like").await;
    let only_foreign =
        "JSON.parse(localStorage.getItem('onerec.queue')).map(e => e.event_id).join() === 'browser-test-foreign'";
    browser.wait_until(only_foreign, "the user's own like to be sent, the other user's to wait").await;
    let stored: Vec<String> = stored_reactions(&server.url, &user).into_iter().map(|e| e.1).collect();
    assert_eq!(stored, [liked, second]);
    assert!(stored_reactions(&server.url, &other).is_empty(), "the token posted nothing for another user");

    // Asking for another user's feed in the address changes nothing: the token names its user.
    browser.client.goto(&format!("{}/?user={other}", server.url)).await.unwrap();
    browser.wait_until("document.getElementById('status').dataset.source === 'server'", "the feed").await;
    assert_eq!(browser.js("return document.getElementById('user').value;").await, json!(user));
    assert!(!browser.requested("/v1/feed", Some(&other)).await, "no request for another user's feed");
    assert!(stored_reactions(&server.url, &other).is_empty());
    assert_eq!(browser.js(&format!("return {only_foreign};")).await, json!(true), "the refused event still waits");
    browser.close().await;
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs dist/ (trunk build --release) and chromium; .ci/run runs it"]
async fn the_activity_panel_lists_reactions_and_undo_brings_an_item_back() {
    let _serial = SERIAL.lock().await;
    let (_data_dir, server, user, browser) = open(free_port(), 5).await;
    assert!(browser.activity().await.is_empty());
    let placeholder = browser.js("return document.querySelector('#activity .quiet').innerText;").await;
    assert!(placeholder.as_str().unwrap().contains("Likes and skips"), "{placeholder}");

    let liked = browser.card_ids().await[0].clone();
    let title_of = |id: &str| format!("return document.querySelector('article.card[data-id=\"{id}\"] h2').innerText;");
    let title = browser.js(&title_of(&liked)).await;
    browser.react(&liked, "like").await;
    let skipped = browser.card_ids().await[0].clone();
    browser.react(&skipped, "skip").await;
    browser.wait_activity(&[(&skipped, "skip"), (&liked, "like")]).await;
    let row = format!("#activity li[data-id=\"{liked}\"]");
    assert_eq!(browser.js(&format!("return document.querySelector('{row} .title').innerText;")).await, title);
    let label = browser.js(&format!("return document.querySelector('{row} .kind').innerText;")).await;
    assert!(label.as_str().unwrap().contains("Liked"), "{label}");
    browser.screenshot("activity.png").await;

    // Undo the like from the panel: it leaves the panel and the item is back in the feed.
    browser.client.find(Locator::Css(&format!("{row} button.undo"))).await.unwrap().click().await.unwrap();
    browser.wait_activity(&[(&skipped, "skip")]).await;
    browser.show_all(&user).await;
    let shown = browser.card_ids().await;
    assert!(shown.contains(&liked) && !shown.contains(&skipped), "the undone item is back, the skipped one not");

    // The server stored the undo after the like and the skip, and its model no longer excludes
    // the item from the user's feed.
    browser.wait_count("queued", 0).await;
    let stored: Vec<(String, String)> = stored_reactions(&server.url, &user).into_iter().map(|e| (e.1, e.2)).collect();
    let expected = [(&liked, "like"), (&skipped, "skip"), (&liked, "undo")].map(|(i, k)| (i.clone(), k.to_string()));
    assert_eq!(stored, expected);
    let (status, feed) = get(&client(), &format!("{}/v1/feed?user={user}&k=10&pool=200", server.url));
    assert_eq!(status, 200, "{feed}");
    let offered: Vec<&str> = feed["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(feed["pool"].as_array().unwrap())
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert!(offered.contains(&liked.as_str()) && !offered.contains(&skipped.as_str()), "{offered:?}");

    // The panel is kept on the device.
    browser.client.refresh().await.unwrap();
    browser
        .wait_until("document.getElementById('status').dataset.source === 'server'", "the feed after a reload")
        .await;
    browser.wait_activity(&[(&skipped, "skip")]).await;
    browser.close().await;
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs dist/ (trunk build --release) and chromium; .ci/run runs it"]
async fn keyboard_shortcuts_like_skip_move_and_undo() {
    let _serial = SERIAL.lock().await;
    let (_data_dir, server, user, browser) = open(free_port(), 6).await;
    let keys = browser.js("return document.getElementById('keys').innerText;").await;
    assert!(["like", "skip", "next", "undo"].iter().all(|k| keys.as_str().unwrap().contains(k)), "{keys}");

    // The focus starts on the first card and moves with j, ↓ and k.
    let cards = browser.card_ids().await;
    assert_eq!(browser.focused().await, json!(cards[0]));
    browser.press(&['j']).await;
    browser.wait_focus(&cards[1]).await;
    browser.press(&[Key::Down.into()]).await;
    browser.wait_focus(&cards[2]).await;
    browser.press(&['k']).await;
    browser.wait_focus(&cards[1]).await;

    // l likes the focused card, and the card after it takes the focus; s skips that one.
    let liked = cards[1].clone();
    browser.press(&['l']).await;
    browser
        .wait_until(&format!("!document.querySelector('article.card[data-id=\"{liked}\"]')"), "the liked card to leave")
        .await;
    let skipped = browser.card_ids().await[1].clone();
    browser.wait_focus(&skipped).await;
    browser.press(&['s']).await;
    browser.wait_activity(&[(&skipped, "skip"), (&liked, "like")]).await;

    // u undoes the latest: the skip.
    browser.press(&['u']).await;
    browser.wait_activity(&[(&liked, "like")]).await;
    browser
        .wait_until(&format!("document.querySelector('article.card[data-id=\"{skipped}\"]')"), "the card back")
        .await;
    browser.wait_count("queued", 0).await;
    let stored: Vec<(String, String)> = stored_reactions(&server.url, &user).into_iter().map(|e| (e.1, e.2)).collect();
    let expected = [(&liked, "like"), (&skipped, "skip"), (&skipped, "undo")].map(|(i, k)| (i.clone(), k.to_string()));
    assert_eq!(stored, expected);

    // Keys typed into a field are text: "lsju" in the user box likes, skips and moves nothing.
    let focused = browser.focused().await;
    browser.client.find(Locator::Id("user-id")).await.unwrap().click().await.unwrap();
    browser.press(&['l', 's', 'j', 'u']).await;
    assert_eq!(browser.js("return document.getElementById('user-id').value;").await, json!("lsju"));
    assert_eq!(browser.activity().await.len(), 1);
    assert_eq!(browser.focused().await, focused);

    // Signing in as that user, whom the server does not know: its refusal shows in its own words.
    browser.press(&[Key::Enter.into()]).await;
    browser.wait_until("document.getElementById('error')", "the error banner").await;
    let banner = browser.js("return document.getElementById('error').innerText;").await;
    let banner = banner.as_str().unwrap();
    assert!(banner.contains("No user \"lsju\"") && !banner.contains('{') && !banner.contains("HTTP"), "{banner}");
    assert_eq!(browser.js("return document.getElementById('net').dataset.online;").await, json!("true"));
    browser.screenshot("error.png").await;
    browser.client.find(Locator::Css("#error button.dismiss")).await.unwrap().click().await.unwrap();
    browser.wait_until("!document.getElementById('error')", "the banner to be dismissed").await;
    browser.close().await;
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs dist/ (trunk build --release) and chromium; .ci/run runs it"]
async fn a_user_with_nothing_left_sees_the_empty_state() {
    let _serial = SERIAL.lock().await;
    let (_data_dir, server, user, browser) = open(free_port(), 7).await;
    let pool = browser.js(&format!("return JSON.parse(localStorage.getItem('onerec.pool.{user}')).length;")).await;
    let n = pool.as_u64().unwrap() as usize;
    assert!(browser.js("return document.getElementById('empty');").await.is_null(), "no empty state while cards show");

    // Skip every candidate, by keyboard.
    browser.press(&vec!['s'; n]).await;
    browser.wait_until("document.getElementById('empty')", "the empty state").await;
    assert!(browser.card_ids().await.is_empty());
    let text = browser.js("return document.getElementById('empty').innerText;").await;
    assert!(text.as_str().unwrap().contains(&format!("seen all {n} candidates")), "{text}");
    browser.screenshot("empty.png").await;
    browser.wait_count("queued", 0).await;
    let stored = stored_reactions(&server.url, &user);
    assert_eq!(stored.len(), n);
    assert!(stored.iter().all(|e| e.2 == "skip"));

    // Fetch more: the server, which stored every skip, offers none of those items again.
    browser.client.find(Locator::Id("fetch-more")).await.unwrap().click().await.unwrap();
    let skipped: Vec<String> = stored.into_iter().map(|e| e.1).collect();
    let pool = format!("JSON.parse(localStorage.getItem('onerec.pool.{user}')).map(i => i.id)");
    let fresh = format!("{pool}.every(id => !{}.includes(id))", json!(skipped));
    browser.wait_until(&fresh, "a new pool without the skipped items").await;
    // The whole catalogue (120 items) fits in one pool: nothing is left.
    assert_eq!(browser.js(&format!("return {pool};")).await, json!([]));
    browser
        .wait_until("document.getElementById('empty')?.innerText.includes('No candidates left')", "nothing new")
        .await;

    // Undo the latest skip: that item comes back, though the new pool does not hold it.
    let latest = browser.activity().await[0].0.clone();
    assert_eq!(&latest, skipped.last().unwrap());
    browser.client.find(Locator::Css("#activity li button.undo")).await.unwrap().click().await.unwrap();
    browser
        .wait_until(&format!("document.querySelector('article.card[data-id=\"{latest}\"]')"), "the undone card")
        .await;
    browser.close().await;
}

/// Waits until the server holds an event for `user` that `found` picks, and returns it.
async fn wait_for_event(server: &str, user: &str, what: &str, found: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        if let Some(e) = stored_events(server, user).into_iter().find(&found) {
            return e;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("no {what} reached the server; it holds {:?}", stored_events(server, user));
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs dist/ (trunk build --release) and chromium; .ci/run runs it"]
async fn the_feed_reports_what_it_shows_and_for_how_long() {
    let _serial = SERIAL.lock().await;
    let (_data_dir, server, user, browser) = open(free_port(), 8).await;
    // The cards wholly on screen are reported as impressions, once each, under the feed's request.
    let on_screen = cards_on_screen(&browser).await;
    assert!(!on_screen.is_empty(), "some card is on screen");
    let first = on_screen[0].clone();
    wait_for_event(&server.url, &user, "impression of the first card", |e| {
        e["kind"] == "impression" && e["item"] == json!(first)
    })
    .await;
    browser.wait_count("queued", 0).await;
    let impressions: Vec<Value> =
        stored_events(&server.url, &user).into_iter().filter(|e| e["kind"] == "impression").collect();
    let mut impressed: Vec<String> = impressions.iter().map(|e| e["item"].as_str().unwrap().to_string()).collect();
    let cards = browser.card_ids().await;
    assert!(impressed.iter().all(|id| cards.contains(id)), "{impressed:?} are cards");
    assert!(on_screen.iter().all(|id| impressed.contains(id)), "{on_screen:?} on screen, {impressed:?} reported");
    assert!(impressions.iter().all(|e| e["request_id"].as_str().is_some_and(|r| r.starts_with("main."))));
    let reported = impressed.len();
    impressed.sort();
    impressed.dedup();
    assert_eq!(impressed.len(), reported, "one impression per card");

    // After more than a second on screen, the first card is liked and so leaves the feed, and the
    // second is scrolled away, below two more pages: their dwell is reported.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    browser.react(&first, "like").await;
    let second = on_screen[1].clone();
    for _ in 0..2 {
        browser.client.find(Locator::Id("load-more")).await.unwrap().click().await.unwrap();
    }
    browser.wait_until("document.querySelectorAll('article.card').length >= 25", "three pages").await;
    browser.js("window.scrollTo(0, document.body.scrollHeight); return null;").await;
    let scrolled = wait_for_event(&server.url, &user, "dwell of the second card", |e| {
        e["kind"] == "watch_time" && e["item"] == json!(second)
    })
    .await;
    assert!(scrolled["value"].as_f64().unwrap() >= 1.5, "{scrolled}");
    let dwell = wait_for_event(&server.url, &user, "dwell of the liked card", |e| {
        e["kind"] == "watch_time" && e["item"] == json!(first)
    })
    .await;
    let seconds = dwell["value"].as_f64().unwrap();
    assert!(seconds >= 1.5, "{dwell}");

    // The tab is hidden: the stays on screen end. Shown again, a card starts a new stay, so the
    // two seconds behind another tab are not dwell.
    let last = cards_on_screen(&browser).await.pop().expect("a card on screen at the bottom");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let stays = |found: Vec<Value>| -> Vec<f64> {
        found
            .iter()
            .filter(|e| e["kind"] == "watch_time" && e["item"] == json!(last))
            .map(|e| e["value"].as_f64().unwrap())
            .collect()
    };
    browser.set_page_hidden(true).await;
    wait_for_event(&server.url, &user, "dwell of a card on screen when the tab was hidden", |e| {
        e["kind"] == "watch_time" && e["item"] == json!(last)
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    browser.set_page_hidden(false).await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    browser.set_page_hidden(true).await;
    for _ in 0..100 {
        if stays(stored_events(&server.url, &user)).len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let stays = stays(stored_events(&server.url, &user));
    assert_eq!(stays.len(), 2, "one stay before the tab was hidden, one after it was shown: {stays:?}");
    assert!(stays[0] >= 1.2 && (1.0..2.5).contains(&stays[1]), "the hidden time is not counted: {stays:?}");
    browser.close().await;
}

/// The ids of the cards wholly on screen.
async fn cards_on_screen(browser: &Browser) -> Vec<String> {
    let ids = browser
        .js("return [...document.querySelectorAll('article.card')]
            .filter(c => { const r = c.getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight; })
            .map(c => c.dataset.id);")
        .await;
    serde_json::from_value(ids).unwrap()
}

/// Not a test but the re-scorer's benchmark as shipped: release WebAssembly in headless Chromium,
/// 500 candidates × 64 dims. Prints the medians; run with `--ignored --nocapture`.
#[tokio::test(flavor = "current_thread")]
#[ignore = "benchmark; needs dist/ and chromium"]
async fn browser_bench_rescore() {
    let _serial = SERIAL.lock().await;
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start(free_port(), data_dir.path());
    let browser = Browser::start().await;
    browser.client.goto(&format!("{}/#bench", server.url)).await.unwrap();
    browser.wait_until("document.getElementById('bench')", "the benchmark").await;
    let report = browser.js("return JSON.parse(document.getElementById('bench').innerText);").await;
    println!("rescore benchmark in headless Chromium: {report}");
    for key in ["median_ms_slate_10", "median_ms_full_mmr"] {
        let ms = report[key].as_f64().unwrap_or_else(|| panic!("no {key} in {report}"));
        assert!(ms.is_finite() && ms >= 0.0);
    }
    browser.close().await;
}
