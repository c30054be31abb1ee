//! Several `onerec serve` replicas sharing one PostgreSQL (`--store postgres://…`): real server
//! processes and a real database cluster, started for each test in a temporary folder.
//!
//! The tests need PostgreSQL's server binaries (Debian's `postgresql`). Without them they say so
//! and pass, unless `ONEREC_REQUIRE_POSTGRES=1`, which CI sets, makes that a failure.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{API_KEY, Server, client, event_batch, first_user, get, ids, onerec, path, post, trained_fixture};
use serde_json::{Value, json};

const ADMIN: &str = "ops";
/// Lifts the per-key and per-user quotas, which the load here would reach.
const UNCAPPED: [&str; 6] = ["--admin-token", ADMIN, "--key-rate", "100000", "--user-events-per-hour", "0"];

/// A private PostgreSQL cluster, stopped when dropped.
struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// initdb and the server refuse to run as root: then they run as the `postgres` user.
    as_postgres: bool,
}

impl Postgres {
    /// Creates and starts a cluster, or `None` when PostgreSQL is not installed.
    fn start() -> Option<Postgres> {
        let Some(bin) = server_binaries() else {
            assert!(
                std::env::var("ONEREC_REQUIRE_POSTGRES").is_err(),
                "ONEREC_REQUIRE_POSTGRES is set, but no PostgreSQL server binaries were found"
            );
            eprintln!("skipped: no PostgreSQL server binaries (apt-get install postgresql)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let uid = Command::new("id").arg("-u").output().unwrap().stdout;
        let as_postgres = String::from_utf8_lossy(&uid).trim() == "0";
        if as_postgres {
            assert!(Command::new("chown").args(["postgres:", path(dir.path())]).status().unwrap().success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = Postgres { dir, bin, port, as_postgres };
        let data = pg.data();
        pg.run("initdb", &["-D", path(&data), "-U", "onerec", "-A", "trust", "--no-sync"]);
        pg.resume();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://onerec@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server on the cluster, and waits until it accepts connections.
    fn resume(&self) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, path(self.dir.path()));
        let log = self.dir.path().join("log");
        self.run("pg_ctl", &["-D", path(&self.data()), "-l", path(&log), "-o", &options, "-w", "-t", "60", "start"]);
    }

    /// Stops the server as an operator would (`pg_ctl stop -m fast`): it rolls back open
    /// transactions and closes every connection.
    fn stop(&self) {
        self.run("pg_ctl", &["-D", path(&self.data()), "-m", "fast", "-w", "stop"]);
    }

    /// Runs one SQL statement with `psql`.
    fn sql(&self, statement: &str) {
        let port = self.port.to_string();
        self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "onerec",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                statement,
            ],
        );
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let tool = self.bin.join(tool);
        let mut command = match self.as_postgres {
            true => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--", path(&tool)]);
                c
            }
            false => Command::new(&tool),
        };
        let out = command.args(args).output().unwrap();
        assert!(out.status.success(), "{tool:?} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let tool = self.bin.join("pg_ctl");
        let data = self.data();
        let args = ["-D", path(&data), "-m", "immediate", "stop"];
        let _ = match self.as_postgres {
            true => Command::new("runuser").args(["-u", "postgres", "--", path(&tool)]).args(args).output(),
            false => Command::new(&tool).args(args).output(),
        };
    }
}

/// Debian's versioned folder of server binaries (the newest), or `initdb`'s folder on the PATH.
fn server_binaries() -> Option<PathBuf> {
    let debian = std::fs::read_dir("/usr/lib/postgresql").into_iter().flatten().flatten().map(|e| e.path().join("bin"));
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    let mut found: Vec<PathBuf> = debian.filter(|bin| bin.join("initdb").is_file()).collect();
    found.sort_by_key(|bin| bin.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()).unwrap_or(0));
    found.pop().or_else(|| on_path.into_iter().find(|bin| bin.join("initdb").is_file()))
}

/// A replica over the test fixture, on its own data dir, sharing `pg`.
fn replica(pg: &Postgres, data_dir: &Path) -> Server {
    let fixture = trained_fixture();
    let store = pg.url();
    let args = ["--store", &store, "--token-secret", "shared-secret"];
    Server::start(&fixture.snapshot, &fixture.data, data_dir, &[&args[..], &UNCAPPED[..]].concat())
}

/// A status, the headers the tests read, and the body as JSON.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    stale: Option<String>,
    body: Value,
}

fn call(agent: &ureq::Agent, method: &str, url: &str, body: Option<&str>) -> Answer {
    let auth = format!("Bearer {}", if url.contains("/admin/") { ADMIN } else { API_KEY });
    let response = match body {
        Some(body) => agent
            .post(url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .send(body.as_bytes()),
        None if method == "GET" => agent.get(url).header("authorization", &auth).call(),
        None => unreachable!("{method}"),
    };
    let mut response = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_string());
    let (retry_after, stale) = (header("retry-after"), header("onerec-stale"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    Answer { status, retry_after, stale, body: serde_json::from_str(&text).unwrap_or(Value::Null) }
}

/// The replica's `/metrics` text.
fn metrics(server: &Server) -> String {
    let mut answer = client()
        .get(format!("{}/metrics", server.url))
        .header("authorization", format!("Bearer {ADMIN}"))
        .call()
        .unwrap();
    answer.body_mut().read_to_string().unwrap()
}

/// Every event id the store holds, through a replica's export.
fn stored_ids(server: &Server) -> Vec<String> {
    let mut answer = client()
        .get(format!("{}/admin/events", server.url))
        .header("authorization", format!("Bearer {ADMIN}"))
        .call()
        .unwrap();
    let lines = answer.body_mut().read_to_string().unwrap();
    lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["event"]["event_id"].as_str().unwrap().into())
        .collect()
}

#[test]
fn two_replicas_share_every_users_events_and_store_a_retry_once() {
    let Some(pg) = Postgres::start() else { return };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (replica(&pg, dir_a.path()), replica(&pg, dir_b.path()));
    let agent = client();
    let user = first_user(&client(), &a);

    // An event posted to A changes the user's next feed from B: what A's user liked leaves B's slate.
    let feed_b = |agent: &ureq::Agent| call(agent, "GET", &format!("{}/v1/feed?user={user}&k=5&pool=20", b.url), None);
    let before = feed_b(&agent);
    assert_eq!((before.status, &before.stale), (200, &None), "{}", before.body);
    let slate = ids(&before.body["items"]);
    let liked = call(&agent, "POST", &format!("{}/v1/events", a.url), Some(&event_batch(&user, &slate, "like", "a")));
    assert_eq!((liked.status, &liked.body["stored"]), (200, &json!(5)), "{}", liked.body);
    let after = feed_b(&agent);
    assert_eq!(after.status, 200, "{}", after.body);
    assert!(ids(&after.body["items"]).iter().all(|i| !slate.contains(i)), "B still offers what was liked on A");
    let history = call(&agent, "GET", &format!("{}/v1/users/{user}/history", b.url), None);
    let order: Vec<&str> =
        history.body["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(order, ["a-4", "a-3", "a-2", "a-1", "a-0"], "B has A's events, newest first");

    // A new user's first events, posted to B, make them known on A.
    let newcomer = call(
        &agent,
        "POST",
        &format!("{}/v1/events", b.url),
        Some(&event_batch("newcomer", &slate[..1], "click", "n")),
    );
    assert_eq!(newcomer.status, 200, "{}", newcomer.body);
    let feed = call(&agent, "GET", &format!("{}/v1/feed?user=newcomer&k=3", a.url), None);
    assert_eq!((feed.status, &feed.body["cold_start"]), (200, &json!(false)), "{}", feed.body);

    // One retried batch sent to both replicas at once is stored once; so is an id repeated within a batch.
    let retried = event_batch(&user, &slate, "click", "r");
    let both: Vec<_> = [&a.url, &b.url]
        .map(|url| {
            let (url, body) = (format!("{url}/v1/events"), retried.clone());
            thread::spawn(move || call(&client(), "POST", &url, Some(&body)))
        })
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert!(both.iter().all(|r| r.status == 200), "{:?}", both.iter().map(|r| &r.body).collect::<Vec<_>>());
    let stored: u64 = both.iter().map(|r| r.body["stored"].as_u64().unwrap()).sum();
    let duplicates: u64 = both.iter().map(|r| r.body["duplicates"].as_u64().unwrap()).sum();
    assert_eq!((stored, duplicates), (5, 5));
    let twice = json!({"events": [
        {"event_id": "twice", "user": user, "item": slate[0], "kind": "click"},
        {"event_id": "twice", "user": user, "item": slate[1], "kind": "click"},
    ]});
    let answer = call(&agent, "POST", &format!("{}/v1/events", a.url), Some(&twice.to_string()));
    assert_eq!((&answer.body["stored"], &answer.body["duplicates"]), (&json!(1), &json!(1)), "{}", answer.body);
    for server in [&a, &b] {
        let ids = stored_ids(server);
        assert_eq!(ids.len(), 12, "{ids:?}");
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 12, "{ids:?}");
    }

    // Readiness names the store.
    let ready = call(&agent, "GET", &format!("{}/readyz", a.url), None);
    assert_eq!((&ready.body["store"]["kind"], &ready.body["store"]["reachable"]), (&json!("postgres"), &json!(true)));

    // A rolling reload: each replica reloads on its own, so the operator reloads them in turn.
    let other = dir_a.path().join("other.snap");
    std::fs::copy(&trained_fixture().snapshot, &other).unwrap();
    let model = |server: &Server| get(&agent, &format!("{}/v1/feed?k=1", server.url)).1["model"].clone();
    let old = model(&a);
    let reload = |server: &Server| {
        let body = json!({ "snapshot": other }).to_string();
        let answer = call(&agent, "POST", &format!("{}/admin/reload", server.url), Some(&body));
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body["model"].clone()
    };
    let new = reload(&a);
    assert_ne!(new, old);
    assert_eq!((model(&a), model(&b)), (new.clone(), old), "reloading A leaves B as it was");
    reload(&b);
    assert_eq!((model(&a), model(&b)), (new.clone(), new));
}

#[test]
fn migrations_run_once_and_a_newer_schema_or_an_unreachable_database_is_refused() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.url();
    let migrate = || {
        let out = onerec(&["store", "migrate", "--store", &url]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    assert_eq!(migrate(), (true, "migrated the schema from version 0 to 1\n".into()));
    assert_eq!(migrate(), (true, "the schema is at version 1, this onerec's; nothing to do\n".into()));

    // A server refuses to start on what it cannot use, saying why, and never echoes the URL.
    let fixture = trained_fixture();
    let dir = tempfile::tempdir().unwrap();
    let serve = |store: &str| {
        let args = ["serve", "--snapshot", path(&fixture.snapshot), "--data", path(&fixture.data), "--data-dir"];
        let out = onerec(&[&args[..], &[path(dir.path()), "--addr", "127.0.0.1:0", "--store", store]].concat());
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    pg.sql("INSERT INTO onerec_migrations (version) VALUES (2)");
    let newer = serve(&url);
    assert!(newer.contains("schema version 2, newer than this onerec's 1: upgrade onerec"), "{newer}");
    assert!(!migrate().0);
    let wrong = serve("mysql://somewhere");
    assert!(wrong.contains("expected `redb` (the embedded store in --data-dir) or a postgres:// URL"), "{wrong}");
    pg.stop();
    let down = serve("postgres://onerec:secret-password@127.0.0.1:1/postgres");
    assert!(down.contains("cannot connect to the PostgreSQL store") && down.contains("onnection refused"), "{down}");
    assert!(!down.contains("secret-password"), "{down}");
}

#[test]
fn a_replica_killed_during_writes_loses_no_acknowledged_event() {
    let Some(pg) = Postgres::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut victim = replica(&pg, dir.path());
    let user = first_user(&client(), &victim);
    let items = ids(&get(&client(), &format!("{}/v1/feed?k=20", victim.url)).1["items"]);
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (url, user, items, acknowledged) =
                (format!("{}/v1/events", victim.url), user.clone(), items.clone(), acknowledged.clone());
            thread::spawn(move || {
                let agent = client();
                for n in 0.. {
                    let prefix = format!("w{w}-{n}");
                    let body = event_batch(&user, &items[..3], "click", &prefix);
                    let sent = agent
                        .post(&url)
                        .header("authorization", format!("Bearer {API_KEY}"))
                        .header("content-type", "application/json")
                        .send(body.as_bytes());
                    match sent {
                        Ok(r) if r.status() == 200 => {
                            acknowledged.lock().unwrap().extend((0..3).map(|i| format!("{prefix}-{i}")))
                        }
                        // The server died under the request.
                        _ => return n,
                    }
                }
                unreachable!()
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(1500));
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let batches: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(batches >= 20, "only {batches} batches were acknowledged before the kill");

    let other = tempfile::tempdir().unwrap();
    let survivor = replica(&pg, other.path());
    let stored: HashSet<String> = stored_ids(&survivor).into_iter().collect();
    let lost: Vec<&String> = acknowledged.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged events were lost: {lost:?}", lost.len(), acknowledged.len());
}

#[test]
fn postgres_stopping_mid_load_refuses_writes_serves_stale_feeds_then_heals() {
    let Some(pg) = Postgres::start() else { return };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (replica(&pg, dir_a.path()), replica(&pg, dir_b.path()));
    let user = first_user(&client(), &a);
    let items = ids(&get(&client(), &format!("{}/v1/feed?k=20", a.url)).1["items"]);

    // Clients keep writing to A and reading feeds from B while the database stops and starts.
    let stop = Arc::new(AtomicBool::new(false));
    // (what, status, marked stale) of each answer.
    let seen = Arc::new(Mutex::new(Vec::<(&'static str, u16, bool)>::new()));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let load: Vec<_> = (0..2)
        .map(|c| {
            let (events, feed) = (format!("{}/v1/events", a.url), format!("{}/v1/feed?user={user}&k=5", b.url));
            let (stop, seen, acknowledged, user, items) =
                (stop.clone(), seen.clone(), acknowledged.clone(), user.clone(), items.clone());
            thread::spawn(move || {
                let agent = client();
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let prefix = format!("c{c}-{n}");
                    let wrote = call(
                        &agent,
                        "POST",
                        &events,
                        Some(&event_batch(&user, &items[n % 20..n % 20 + 1], "click", &prefix)),
                    );
                    if wrote.status == 200 {
                        acknowledged.lock().unwrap().push(format!("{prefix}-0"));
                    } else {
                        assert_eq!(wrote.status, 503, "{}", wrote.body);
                        assert_eq!(wrote.retry_after.as_deref(), Some("1"));
                        assert!(wrote.body["error"].is_string() && wrote.body["detail"].is_string());
                    }
                    let read = call(&agent, "GET", &feed, None);
                    assert_eq!(read.status, 200, "a feed failed: {}", read.body);
                    let mut seen = seen.lock().unwrap();
                    seen.push(("write", wrote.status, false));
                    seen.push(("feed", read.status, read.stale.is_some()));
                    drop(seen);
                    thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    let count = |what: &str, status: u16, stale: bool| {
        seen.lock().unwrap().iter().filter(|s| (s.0, s.1, s.2) == (what, status, stale)).count()
    };
    let wait_for = |what: &str, check: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("writes", &|| count("write", 200, false) >= 10);

    pg.stop();
    seen.lock().unwrap().clear();
    wait_for("refused writes and stale feeds", &|| count("write", 503, false) >= 5 && count("feed", 200, true) >= 5);
    let ready = call(&client(), "GET", &format!("{}/readyz", b.url), None);
    assert_eq!((ready.status, &ready.body["store"]["reachable"]), (200, &json!(false)), "{}", ready.body);
    assert!(ready.body["store"]["detail"].is_string(), "{}", ready.body);
    let down = metrics(&b);
    assert!(down.contains("onerec_store_reachable{kind=\"postgres\"} 0\n"), "{down}");
    assert!(!down.contains("onerec_stale_reads_total 0\n"), "{down}");

    pg.resume();
    seen.lock().unwrap().clear();
    wait_for("the replicas to heal", &|| count("write", 200, false) >= 10 && count("feed", 200, false) >= 10);
    stop.store(true, Ordering::Relaxed);
    for client in load {
        client.join().unwrap();
    }
    let ready = call(&client(), "GET", &format!("{}/readyz", b.url), None);
    assert_eq!(ready.body["store"]["reachable"], json!(true), "{}", ready.body);
    assert!(metrics(&b).contains("onerec_store_reachable{kind=\"postgres\"} 1\n"));

    // Nothing acknowledged was lost, and both replicas hold all of it.
    let acknowledged: HashSet<String> = acknowledged.lock().unwrap().iter().cloned().collect();
    for server in [&a, &b] {
        let stored: HashSet<String> = stored_ids(server).into_iter().collect();
        assert!(acknowledged.is_subset(&stored), "{} acknowledged, not all stored", acknowledged.len());
    }
}

/// Feeds and events over loopback, as a mixed load of three feeds to one event per client:
/// two replicas on one PostgreSQL, then one replica on its local store. It asserts that nothing
/// fails and prints throughput and latency; it is a measurement, not a bound.
#[test]
fn load_on_two_replicas_and_postgres_against_one_replica_on_redb() {
    let Some(pg) = Postgres::start() else { return };
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let replicas = [replica(&pg, dirs[0].path()), replica(&pg, dirs[1].path())];
    let fixture = trained_fixture();
    let local = Server::start(&fixture.snapshot, &fixture.data, dirs[2].path(), &UNCAPPED);
    let shared = load(&replicas.iter().map(|r| r.url.clone()).collect::<Vec<_>>());
    let one_shared = load(std::slice::from_ref(&replicas[0].url));
    let alone = load(std::slice::from_ref(&local.url));
    let runs =
        [("2 replicas + PostgreSQL", shared), ("1 replica + PostgreSQL", one_shared), ("1 replica + redb", alone)];
    for (label, (events, p50, p99)) in runs {
        println!("{label}: {events:.0} events/s acknowledged, feed p50 {p50:.1} ms, p99 {p99:.1} ms");
    }
}

/// 8 clients for 4 s, spread over `servers`; returns events/s acknowledged and feed p50/p99 in ms.
fn load(servers: &[String]) -> (f64, f64, f64) {
    let duration = Duration::from_secs(4);
    let user = {
        let (status, users) = get(&client(), &format!("{}/v1/users?limit=50", servers[0]));
        assert_eq!(status, 200);
        users["users"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let items = ids(&get(&client(), &format!("{}/v1/feed?k=20", servers[0])).1["items"]);
    let started = Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (base, users, items) = (servers[c % servers.len()].clone(), user.clone(), items.clone());
            thread::spawn(move || {
                let agent = client();
                let (mut feeds, mut events) = (Vec::new(), 0usize);
                for n in 0.. {
                    if started.elapsed() > duration {
                        break;
                    }
                    let user = &users[(c * 7 + n) % users.len()];
                    for _ in 0..3 {
                        let sent = Instant::now();
                        let (status, feed) = get(&agent, &format!("{base}/v1/feed?user={user}&k=10"));
                        assert_eq!(status, 200, "{feed}");
                        feeds.push(sent.elapsed().as_secs_f64() * 1000.0);
                    }
                    let body = event_batch(user, &items[n % 20..n % 20 + 1], "click", &format!("load{c}-{n}"));
                    let (status, stored) = post(&agent, &format!("{base}/v1/events"), &body, &[]);
                    assert_eq!(status, 200, "{stored}");
                    events += 1;
                }
                (feeds, events)
            })
        })
        .collect();
    let (mut feeds, mut events) = (Vec::new(), 0);
    for client in clients {
        let (f, e) = client.join().unwrap();
        feeds.extend(f);
        events += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    feeds.sort_by(f64::total_cmp);
    let at = |q: f64| feeds[((feeds.len() - 1) as f64 * q).round() as usize];
    (events as f64 / elapsed, at(0.5), at(0.99))
}
