//! End-to-end tests of `onerec serve`: the real binary on a loopback port, driven over HTTP.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    API_KEY, Server, client, event_batch, first_user, get, ids, onerec, onerec_json, path, post, post_as,
    trained_fixture,
};
use serde_json::{Value, json};

#[test]
fn feeds_follow_events_and_cold_users_get_a_slate() {
    let fixture = trained_fixture();
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&fixture.snapshot, &fixture.data, state.path(), &["--admin-token", "ops"]);
    let agent = client();
    let user = first_user(&agent, &server);

    let (status, feed) = get(&agent, &format!("{}/v1/feed?user={user}&k=5&pool=20", server.url));
    assert_eq!(status, 200, "{feed}");
    assert_eq!(feed["items"].as_array().unwrap().len(), 5);
    assert_eq!(feed["pool"].as_array().unwrap().len(), 15);
    assert_eq!(feed["cold_start"], false);
    let slate = ids(&feed["items"]);
    let all: HashSet<String> = slate.iter().chain(&ids(&feed["pool"])).cloned().collect();
    assert_eq!(all.len(), 20, "slate and pool are distinct items");
    let scores: Vec<f64> = feed["items"].as_array().unwrap().iter().map(|i| i["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");
    // Each item is the catalogue's, with its semantic ID and a compact embedding.
    let (status, item) = get(&agent, &format!("{}/v1/items/{}", server.url, slate[0]));
    assert_eq!(status, 200);
    assert_eq!(item["semantic_id"], feed["items"][0]["semantic_id"]);
    assert_eq!(item["embedding"].as_array().unwrap().len(), 32);

    // The user likes the whole slate; the next feed reflects it (seen items leave the slate).
    let (status, stored) =
        post(&agent, &format!("{}/v1/events", server.url), &event_batch(&user, &slate, "like", "a"), &[]);
    assert_eq!((status, stored["stored"].as_u64(), stored["duplicates"].as_u64()), (200, Some(5), Some(0)));
    let (_, after) = get(&agent, &format!("{}/v1/feed?user={user}&k=5&pool=20", server.url));
    assert!(ids(&after["items"]).iter().all(|i| !slate.contains(i)), "{after}");
    let (_, history) = get(&agent, &format!("{}/v1/users/{user}/history", server.url));
    let history_ids: Vec<&str> =
        history["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(history_ids, ["a-4", "a-3", "a-2", "a-1", "a-0"], "newest first");

    // A retry is stored once.
    let (status, again) =
        post(&agent, &format!("{}/v1/events", server.url), &event_batch(&user, &slate, "like", "a"), &[]);
    assert_eq!((status, again["stored"].as_u64(), again["duplicates"].as_u64()), (200, Some(0), Some(5)));
    let (_, history) = get(&agent, &format!("{}/v1/users/{user}/history", server.url));
    assert_eq!(history["events"].as_array().unwrap().len(), 5);

    // Anonymous and brand-new users: a cold-start slate from an empty context.
    let (status, cold) = get(&agent, &format!("{}/v1/feed?k=4", server.url));
    assert_eq!((status, cold["cold_start"].as_bool(), cold["items"].as_array().unwrap().len()), (200, Some(true), 4));
    let (status, _) = get(&agent, &format!("{}/v1/feed?user=newcomer", server.url));
    assert_eq!(status, 404);
    let (status, _) =
        post(&agent, &format!("{}/v1/events", server.url), &event_batch("newcomer", &slate[..1], "click", "n"), &[]);
    assert_eq!(status, 200);
    let (status, feed) = get(&agent, &format!("{}/v1/feed?user=newcomer&k=3", server.url));
    assert_eq!((status, feed["cold_start"].as_bool()), (200, Some(false)));
    assert!(!ids(&feed["items"]).contains(&slate[0]));

    // Operations: health, readiness, metrics and the API description.
    assert_eq!(get(&agent, &format!("{}/healthz", server.url)).0, 200);
    assert_eq!(get(&agent, &format!("{}/readyz", server.url)).0, 200);
    let metrics = agent
        .get(format!("{}/metrics", server.url))
        .header("authorization", "Bearer ops")
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(metrics.contains("onerec_http_requests_total{route=\"/v1/feed\",status=\"200\"}"), "{metrics}");
    assert!(metrics.contains("onerec_decode_batch_size_count"), "{metrics}");
    assert!(metrics.contains("onerec_store_reachable{kind=\"redb\"} 1\n"), "{metrics}");
    let (_, openapi) = get(&agent, &format!("{}/openapi.json", server.url));
    for route in [
        "/v1/feed",
        "/v1/events",
        "/v1/users/{id}/history",
        "/v1/items/{id}",
        "/v1/tokens",
        "/admin/reload",
        "/admin/events",
        "/admin/experiments",
        "/metrics",
    ] {
        assert!(openapi["paths"].get(route).is_some(), "{route} is documented");
    }
}

#[test]
fn bad_input_gets_a_json_error_and_changes_nothing() {
    let fixture = trained_fixture();
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&fixture.snapshot, &fixture.data, state.path(), &["--admin-token", "s3cret"]);
    let agent = client();
    let user = first_user(&agent, &server);
    let url = |p: &str| format!("{}{p}", server.url);
    let item = ids(&get(&agent, &url("/v1/feed?k=1")).1["items"])[0].clone();
    let expect = |(status, body): (u16, Value), want: u16, what: &str| {
        assert_eq!(status, want, "{what}: {body}");
        assert!(body["error"].is_string() && body["detail"].is_string(), "{what}: {body}");
    };
    expect(get(&agent, &url(&format!("/v1/feed?user={user}&k=0"))), 400, "k = 0");
    expect(get(&agent, &url(&format!("/v1/feed?user={user}&k=100000"))), 400, "huge k");
    expect(get(&agent, &url(&format!("/v1/feed?user={user}&k=-3"))), 400, "negative k");
    expect(get(&agent, &url("/v1/feed?k=10&pool=5")), 400, "pool below k");
    expect(get(&agent, &url("/v1/feed?k=10&beam=100000")), 400, "huge beam");
    expect(get(&agent, &url("/v1/feed?user=nobody")), 404, "unknown user");
    expect(get(&agent, &url("/v1/users/nobody/history")), 404, "unknown user's history");
    expect(get(&agent, &url("/v1/items/nothing")), 404, "unknown item");
    expect(get(&agent, &url("/v1/nothing")), 404, "unknown route");
    let events_url = url("/v1/events");
    expect(post(&agent, &events_url, "{\"events\": [", &[]), 400, "malformed JSON");
    expect(post(&agent, &events_url, "{\"events\": []}", &[]), 400, "empty batch");
    let one = |e: Value| json!({ "events": [e] }).to_string();
    let good = json!({"event_id": "ok", "user": user, "item": item, "kind": "like"});
    let unknown_item = json!({"event_id": "x1", "user": user, "item": "no-such-item", "kind": "like"});
    // A batch with one bad event is refused whole: the good one is not stored either.
    let mixed = json!({ "events": [good, unknown_item] }).to_string();
    expect(post(&agent, &events_url, &mixed, &[]), 422, "unknown item");
    let rating = |value: Value| json!({"event_id": "x2", "user": user, "item": item, "kind": "rating", "value": value});
    expect(post(&agent, &events_url, &one(rating(json!(-2.0))), &[]), 422, "negative rating");
    expect(post(&agent, &events_url, &one(rating(Value::Null)), &[]), 422, "rating without a value");
    let poke = json!({"event_id": "x3", "user": user, "item": item, "kind": "poke"});
    expect(post(&agent, &events_url, &one(poke), &[]), 422, "unknown kind");
    // An oversized body is refused once the limit is passed, without reading the rest. (A raw
    // connection: an HTTP client still sending the rest would see the early answer as a broken pipe.)
    let mut stream = std::net::TcpStream::connect(server.url.trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head =
        "POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 3145728\r\n\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&vec![b' '; (1 << 20) + 4096]).unwrap();
    let mut answer = String::new();
    let _ = BufReader::new(stream).read_line(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "oversized body: {answer}");
    let (_, history) = get(&agent, &url(&format!("/v1/users/{user}/history")));
    assert_eq!(history["events"], json!([]), "nothing was stored");

    // Admin needs the token; a corrupt snapshot is refused and the old model keeps serving.
    let reload = url("/admin/reload");
    expect(post_as(&agent, &reload, "{}", None), 401, "reload without a token");
    expect(post(&agent, &reload, "{}", &[("authorization", "Bearer wrong")]), 403, "reload with a wrong token");
    let model = get(&agent, &url("/v1/feed?k=1")).1["model"].clone();
    let corrupt = state.path().join("corrupt.snap");
    let bytes = std::fs::read(&fixture.snapshot).unwrap();
    std::fs::write(&corrupt, &bytes[..bytes.len() - 100]).unwrap();
    let body = json!({ "snapshot": corrupt }).to_string();
    let (status, error) = post(&agent, &reload, &body, &[("authorization", "Bearer s3cret")]);
    assert_eq!(status, 422, "{error}");
    assert!(error["detail"].as_str().unwrap().contains("truncated"), "{error}");
    let (status, feed) = get(&agent, &url("/v1/feed?k=1"));
    assert_eq!((status, &feed["model"]), (200, &model));
}

#[test]
fn reload_under_concurrent_load_fails_no_request() {
    let fixture = trained_fixture();
    let state = tempfile::tempdir().unwrap();
    // A second file of the same model: a different snapshot id, so the swap is visible.
    let other = state.path().join("other.snap");
    std::fs::copy(&fixture.snapshot, &other).unwrap();
    let server = Server::start(&fixture.snapshot, &fixture.data, state.path(), &["--admin-token", "t"]);
    let user = first_user(&client(), &server);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let models = Arc::new(Mutex::new(HashSet::new()));
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (stop, failures, models) = (stop.clone(), failures.clone(), models.clone());
            let url = format!("{}/v1/feed?user={user}&k=5", server.url);
            thread::spawn(move || {
                let agent = client();
                let mut count = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (status, feed) = get(&agent, &url);
                    if status == 200 {
                        models.lock().unwrap().insert(feed["model"].as_str().unwrap().to_string());
                    } else {
                        failures.lock().unwrap().push((status, feed));
                    }
                    count += 1;
                }
                count
            })
        })
        .collect();
    let agent = client();
    for snapshot in [&other, &fixture.snapshot, &other] {
        thread::sleep(Duration::from_millis(300));
        let body = json!({ "snapshot": snapshot }).to_string();
        let (status, answer) =
            post(&agent, &format!("{}/admin/reload", server.url), &body, &[("authorization", "Bearer t")]);
        assert_eq!(status, 200, "{answer}");
    }
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let requests: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(failures.lock().unwrap().is_empty(), "{:?}", failures.lock().unwrap());
    assert!(requests > 20, "only {requests} requests ran");
    assert_eq!(models.lock().unwrap().len(), 2, "both snapshots served: {:?}", models.lock().unwrap());
}

/// The closed loop, as the README's nightly recipe runs it: events are served, the running
/// server exports them, a fine-tune of the serving snapshot learns from them, and the server
/// reloads the result. A stopped server's store gives the same log as the export.
#[test]
fn served_events_fine_tune_the_serving_model_which_then_reloads() {
    let fixture = trained_fixture();
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&fixture.snapshot, &fixture.data, state.path(), &["--admin-token", "ops"]);
    let agent = client();
    let user = first_user(&agent, &server);
    let (_, feed) = get(&agent, &format!("{}/v1/feed?user={user}&k=5", server.url));
    let slate = ids(&feed["items"]);
    let url = format!("{}/v1/events", server.url);
    assert_eq!(post(&agent, &url, &event_batch(&user, &slate, "like", "l"), &[]).0, 200);
    assert_eq!(post(&agent, &url, &event_batch(&user, &slate[..1], "undo", "u"), &[]).0, 200);
    assert_eq!(post(&agent, &url, &event_batch("newcomer", &slate[1..4], "click", "n"), &[]).0, 200);

    // The export: admin only, one JSON line per stored event.
    assert_eq!(get(&agent, &format!("{}/admin/events", server.url)).0, 403, "an API key is not the admin token");
    let export = |server: &Server| {
        let mut answer = agent.get(format!("{}/admin/events", server.url)).header("authorization", "Bearer ops");
        answer = answer.header("accept", "application/x-ndjson");
        answer.call().unwrap().body_mut().read_to_string().unwrap()
    };
    let lines = export(&server);
    let exported: Vec<Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(exported.len(), 9, "{lines}");
    assert_eq!(exported.iter().filter(|e| e["user"] == "newcomer").count(), 3);
    assert!(exported.iter().any(|e| e["event"]["kind"] == "undo" && e["event"]["item"] == slate[0].as_str()));
    let jsonl = state.path().join("events.jsonl");
    std::fs::write(&jsonl, &lines).unwrap();

    // The store itself is the server's while it runs: refused, with the way round it.
    let held = onerec(&["data", "stats", "--data", path(&fixture.data), "--events", path(state.path())]);
    let stderr = String::from_utf8_lossy(&held.stderr);
    assert!(!held.status.success() && stderr.contains("in use by another process"), "{stderr}");

    // The log gains the events as the server reads them: 5 likes, one taken back, 3 clicks.
    let stats = |events: Option<&std::path::Path>| {
        let mut args = vec!["data", "stats", "--data", path(&fixture.data), "--json"];
        if let Some(events) = events {
            args.extend(["--events", path(events)]);
        }
        onerec_json(&args)
    };
    let (before, after) = (stats(None), stats(Some(&jsonl)));
    assert_eq!(after["events"].as_u64().unwrap(), before["events"].as_u64().unwrap() + 7);
    assert_eq!(after["users"].as_u64().unwrap(), before["users"].as_u64().unwrap() + 1);

    // Fine-tune the serving snapshot on the last day (the served events) and a tenth of the rest.
    let tuned = state.path().join("tuned.snap");
    let args = ["train", "--data", path(&fixture.data), "--events", path(&jsonl), "--init-from"];
    let tune = [path(&fixture.snapshot), "--epochs", "1", "--lr", "5e-4", "--recent-days", "1", "--replay", "0.1"];
    let out = onerec(&[&args[..], &tune, &["--out", path(&tuned), "--device", "cpu", "--json"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("served events: 9 read, 7 added to the log, 1 new users"), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["training"]["epochs"].as_array().unwrap().len(), 1);
    // The fine-tune starts where the snapshot left off: no cold start's first-epoch loss.
    let cold = state.path().join("cold.snap");
    let cold_args =
        ["train", "--data", path(&fixture.data), "--tokenizer", path(&fixture.tokenizer), "--preset", "tiny"];
    let cold_run =
        onerec_json(&[&cold_args[..], &["--epochs", "1", "--out", path(&cold), "--device", "cpu", "--json"]].concat());
    let loss = |r: &Value| r["training"]["epochs"][0]["train_loss"].as_f64().unwrap();
    assert!(loss(&report) < loss(&cold_run), "fine-tuned {} against cold {}", loss(&report), loss(&cold_run));

    let body = json!({ "snapshot": tuned }).to_string();
    let (status, reloaded) =
        post(&agent, &format!("{}/admin/reload", server.url), &body, &[("authorization", "Bearer ops")]);
    assert_eq!(status, 200, "{reloaded}");
    assert!(reloaded["model"].as_str().unwrap().starts_with("tuned.snap:"), "{reloaded}");
    let (status, feed) = get(&agent, &format!("{}/v1/feed?user=newcomer&k=3", server.url));
    assert_eq!((status, &feed["model"]), (200, &reloaded["model"]));

    // Stopped, the server's store gives the log that its export gave.
    assert!(server.terminate().success());
    assert_eq!(stats(Some(state.path())), after);
}

/// A/B between snapshots: a second snapshot takes a share of users by a stable hash, each feed
/// names its arm and a request id, events that carry the id count toward that arm, and the
/// summary compares the arms with a confidence interval.
#[test]
fn an_ab_arm_takes_its_share_of_users_and_their_events_count_toward_it() {
    let fixture = trained_fixture();
    let state = tempfile::tempdir().unwrap();
    let other = state.path().join("other.snap");
    std::fs::copy(&fixture.snapshot, &other).unwrap();
    let flags = ["--admin-token", "ops", "--max-models", "2"];
    let server = Server::start(&fixture.snapshot, &fixture.data, state.path(), &flags);
    let agent = client();
    let admin = [("authorization", "Bearer ops")];
    let reload = |body: Value| post(&agent, &format!("{}/admin/reload", server.url), &body.to_string(), &admin);

    let (status, added) = reload(json!({ "snapshot": other, "arm": "b", "share": 0.5 }));
    assert_eq!(status, 200, "{added}");
    assert_eq!((added["arm"].as_str(), added["previous"].is_null()), (Some("b"), true));
    let b_model = added["model"].as_str().unwrap().to_string();
    assert!(b_model.starts_with("other.snap:"), "{added}");
    for (body, why) in [
        (json!({ "arm": "c", "share": 0.6 }), "shares beyond 1"),
        (json!({ "arm": "c", "share": 0.1 }), "more than --max-models"),
        (json!({ "arm": "main", "share": 0.5 }), "a share for main"),
        (json!({ "arm": "no spaces", "share": 0.1 }), "a bad name"),
        (json!({ "arm": "d" }), "a new arm without a share"),
    ] {
        let (status, answer) = reload(body);
        assert_eq!((status, answer["error"].as_str()), (422, Some("bad_arm")), "{why}: {answer}");
    }

    let (_, users) = get(&agent, &format!("{}/v1/users?limit=60", server.url));
    let users: Vec<String> = users["users"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().into()).collect();
    assert_eq!(users.len(), 60);
    let mut in_b = 0;
    for (n, user) in users.iter().enumerate() {
        let feed = |user: &str| get(&agent, &format!("{}/v1/feed?user={user}&k=3", server.url)).1;
        let (first, again) = (feed(user), feed(user));
        let arm = first["arm"].as_str().unwrap().to_string();
        assert_eq!(again["arm"], first["arm"], "a user stays in their arm");
        let request_id = first["request_id"].as_str().unwrap();
        assert!(request_id.starts_with(&format!("{arm}.")), "{request_id}");
        assert_ne!(again["request_id"], first["request_id"]);
        assert_eq!(first["model"] == b_model.as_str(), arm == "b", "{first}");
        // Every slate item is seen; the users in b also click the first.
        let mut events: Vec<Value> = ids(&first["items"])
            .iter()
            .enumerate()
            .map(|(i, item)| json!({"event_id": format!("i{n}-{i}"), "user": user, "item": item, "kind": "impression", "request_id": request_id}))
            .collect();
        if arm == "b" {
            in_b += 1;
            let item = &first["items"][0]["id"];
            events.push(json!({"event_id": format!("c{n}"), "user": user, "item": item, "kind": "click", "request_id": request_id}));
        }
        let (status, _) =
            post(&agent, &format!("{}/v1/events", server.url), &json!({ "events": events }).to_string(), &[]);
        assert_eq!(status, 200);
    }
    assert!((15..=45).contains(&in_b), "{in_b} of 60 users in a half share");

    let answer = agent.get(format!("{}/admin/experiments", server.url)).header("authorization", "Bearer ops");
    let summary: Value = serde_json::from_str(&answer.call().unwrap().body_mut().read_to_string().unwrap()).unwrap();
    let (main, b) = (&summary["arms"][0], &summary["arms"][1]);
    assert_eq!((main["arm"].as_str(), b["arm"].as_str(), b["share"].as_f64()), (Some("main"), Some("b"), Some(0.5)));
    let n_main = 60 - in_b;
    assert_eq!(main["counts"]["impressions"], 3 * n_main);
    assert_eq!(main["counts"]["feeds"], 2 * n_main);
    assert_eq!((b["counts"]["impressions"].as_u64(), b["counts"]["clicks"].as_u64()), (Some(3 * in_b), Some(in_b)));
    assert_eq!(b["ctr"]["rate"].as_f64(), Some(1.0 / 3.0));
    let difference: Vec<f64> = b["ctr"]["difference"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert!((difference[0] - 1.0 / 3.0).abs() < 1e-9 && difference[1] > 0.0 && difference[2] < 1.0, "{difference:?}");
    assert!(main["ctr"]["difference"].is_null());
    let metrics = agent.get(format!("{}/metrics", server.url)).header("authorization", "Bearer ops");
    let metrics = metrics.call().unwrap().body_mut().read_to_string().unwrap();
    assert!(metrics.contains(&format!("onerec_online_clicks_total{{arm=\"b\"}} {in_b}")), "{metrics}");

    // A share of 0 ends the test: everyone is back on main.
    let (status, removed) = reload(json!({ "arm": "b", "share": 0.0 }));
    assert_eq!((status, removed["previous"].as_str()), (200, Some(b_model.as_str())), "{removed}");
    for user in &users[..10] {
        assert_eq!(get(&agent, &format!("{}/v1/feed?user={user}&k=1", server.url)).1["arm"], "main");
    }
}

/// The closed loop, judged on what users see: a group of users likes a topic they never touched
/// in training; after a fine-tune on those events and a reload, their feeds hold more of that
/// topic than the old model gave them from the same histories (so history exclusion, which both
/// apply, does not explain it). Then both snapshots serve at 50/50 to a population whose likes
/// follow the topic, and the experiment summary shows the fine-tuned arm winning.
#[test]
fn a_fine_tune_on_served_likes_raises_their_topic_and_wins_the_ab_test() {
    let fixture = trained_fixture();
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&fixture.snapshot, &fixture.data, state.path(), &["--admin-token", "ops"]);
    let agent = client();
    let admin = [("authorization", "Bearer ops")];
    let reload = |body: Value| post(&agent, &format!("{}/admin/reload", server.url), &body.to_string(), &admin);

    // The synthetic data's ground truth: each item's topic, and which topics each user touched.
    let read = |name: &str| std::fs::read_to_string(fixture.data.join(name)).unwrap();
    let topic: HashMap<String, String> = read("synth.topics")
        .lines()
        .skip(1)
        .map(|l| l.split_once('\t').map(|(i, t)| (i.to_string(), t.to_string())).unwrap())
        .collect();
    let mut touched: HashMap<String, HashSet<String>> = HashMap::new();
    for line in read("synth.inter").lines().skip(1) {
        let fields: Vec<&str> = line.split('\t').collect();
        touched.entry(fields[0].into()).or_default().insert(topic[fields[1]].clone());
    }
    let topics: HashSet<&String> = topic.values().collect();
    let (family, group) = topics
        .into_iter()
        .map(|t| {
            (t.clone(), touched.iter().filter(|(_, ts)| !ts.contains(t)).map(|(u, _)| u.clone()).collect::<Vec<_>>())
        })
        .max_by_key(|(_, users)| users.len())
        .unwrap();
    assert!(group.len() >= 10, "only {} users never touched topic {family}", group.len());
    let mut members: Vec<String> = topic.iter().filter(|(_, t)| **t == family).map(|(i, _)| i.clone()).collect();
    members.sort();

    // Each user of the group likes eight of the topic's items.
    for (u, user) in group.iter().enumerate() {
        let liked: Vec<String> = (0..8).map(|j| members[(u * 5 + j * 3) % members.len()].clone()).collect();
        let (status, _) = post(
            &agent,
            &format!("{}/v1/events", server.url),
            &event_batch(user, &liked, "like", &format!("f{u}")),
            &[],
        );
        assert_eq!(status, 200);
    }
    let in_family = |feed: &Value| ids(&feed["items"]).iter().filter(|i| topic[*i] == family).count();
    let share = |users: &[String]| {
        let slates: usize =
            users.iter().map(|u| in_family(&get(&agent, &format!("{}/v1/feed?user={u}&k=10", server.url)).1)).sum();
        slates as f64 / (10 * users.len()) as f64
    };
    let before = share(&group);

    let lines = agent.get(format!("{}/admin/events", server.url)).header("authorization", "Bearer ops");
    let jsonl = state.path().join("events.jsonl");
    std::fs::write(&jsonl, lines.call().unwrap().body_mut().read_to_string().unwrap()).unwrap();
    let tuned = state.path().join("tuned.snap");
    let args = ["train", "--data", path(&fixture.data), "--events", path(&jsonl), "--init-from"];
    let tune = [path(&fixture.snapshot), "--epochs", "10", "--patience", "10", "--recent-days", "1", "--replay", "0.2"];
    let out = onerec(&[&args[..], &tune, &["--out", path(&tuned), "--device", "cpu"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, answer) = reload(json!({ "snapshot": tuned }));
    assert_eq!(status, 200, "{answer}");
    let after = share(&group);
    eprintln!("topic {family}: {} users, share of their slates {before:.3} -> {after:.3}", group.len());
    assert!(after > before + 0.1, "the topic's share of the group's slates went from {before:.3} to {after:.3}");

    // A/B at 50/50: the old model on main, the fine-tuned one in arm b. The population likes
    // what it is shown of the topic.
    assert_eq!(reload(json!({ "snapshot": fixture.snapshot })).0, 200);
    assert_eq!(reload(json!({ "snapshot": tuned, "arm": "b", "share": 0.5 })).0, 200);
    for (u, user) in group.iter().enumerate() {
        let (_, feed) = get(&agent, &format!("{}/v1/feed?user={user}&k=10", server.url));
        let request_id = feed["request_id"].as_str().unwrap();
        let events: Vec<Value> = ids(&feed["items"])
            .iter()
            .enumerate()
            .flat_map(|(i, item)| {
                let event = |kind: &str| json!({"event_id": format!("ab{u}-{i}-{kind}"), "user": user, "item": item, "kind": kind, "request_id": request_id});
                let liked = (topic[item] == family).then(|| event("like"));
                std::iter::once(event("impression")).chain(liked)
            })
            .collect();
        let (status, _) =
            post(&agent, &format!("{}/v1/events", server.url), &json!({ "events": events }).to_string(), &[]);
        assert_eq!(status, 200);
    }
    let answer = agent.get(format!("{}/admin/experiments", server.url)).header("authorization", "Bearer ops");
    let summary: Value = serde_json::from_str(&answer.call().unwrap().body_mut().read_to_string().unwrap()).unwrap();
    let b = &summary["arms"][1];
    let difference =
        b["like_rate"]["difference"].as_array().map(|d| d.iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>());
    eprintln!("{summary}");
    // The point difference, not the interval's lower end: with 100 and 140 impressions and a
    // fixture model trained afresh on each run, the lower end fell below 0 in two runs of seven
    // here (in one, rates 0.52 against 0.48) while the fine-tuned arm still led.
    let [difference, low, high] = difference.expect("both arms have impressions")[..] else { panic!("{summary}") };
    assert!(low < difference && difference < high, "the interval brackets the difference: {summary}");
    assert!(difference > 0.0, "the fine-tuned arm wins on like-rate: {summary}");
    let metrics = agent.get(format!("{}/metrics", server.url)).header("authorization", "Bearer ops");
    let metrics = metrics.call().unwrap().body_mut().read_to_string().unwrap();
    assert!(metrics.contains("onerec_online_likes_total{arm=\"b\"}"), "{metrics}");
}

/// Items the model never saw join a trained snapshot without retraining (`onerec items add`):
/// the server shows them, some users' feeds hold them, and retired items never appear again.
#[test]
fn added_items_reach_feeds_without_retraining_and_retired_ones_never_do() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    assert!(
        onerec(&["data", "synth", "--items", "120", "--users", "60", "--topics", "4", "--out", path(&full)])
            .status
            .success()
    );
    // The catalogue before: the last 12 items and their events left out.
    let read = |name: &str| std::fs::read_to_string(full.join(name)).unwrap();
    let new: Vec<String> = (109..=120).map(|i| format!("i{i}")).collect();
    let keep = |line: &&str| !new.iter().any(|id| line.split('\t').any(|field| field == id));
    let old = dir.path().join("old");
    std::fs::create_dir(&old).unwrap();
    for name in ["synth.item", "synth.inter", "synth.user"] {
        let text = read(name);
        let kept: Vec<&str> = text.lines().filter(keep).collect();
        std::fs::write(old.join(name.replace("synth", "old")), kept.join("\n") + "\n").unwrap();
    }
    // The catalogue after: every item, the new ones last, and the same events.
    let grown = dir.path().join("grown");
    std::fs::create_dir(&grown).unwrap();
    std::fs::copy(old.join("old.inter"), grown.join("grown.inter")).unwrap();
    std::fs::copy(old.join("old.user"), grown.join("grown.user")).unwrap();
    let item_file = read("synth.item");
    let (kept, added): (Vec<&str>, Vec<&str>) = item_file.lines().partition(keep);
    std::fs::write(grown.join("grown.item"), [kept, added.clone()].concat().join("\n") + "\n").unwrap();

    let tok = dir.path().join("old.tok");
    let snapshot = dir.path().join("old.snap");
    let tokenize =
        ["tokenize", "--data", path(&old), "--out", path(&tok), "--codes", "8", "--dim", "32", "--collab-dims", "16"];
    assert!(onerec(&tokenize).status.success());
    let train = ["train", "--data", path(&old), "--tokenizer", path(&tok), "--preset", "tiny", "--epochs", "3"];
    assert!(onerec(&[&train[..], &["--out", path(&snapshot), "--device", "cpu"]].concat()).status.success());

    let grown_snapshot = dir.path().join("grown.snap");
    let report = onerec_json(&[
        "items",
        "add",
        "--snapshot",
        path(&snapshot),
        "--data",
        path(&grown),
        "--out",
        path(&grown_snapshot),
        "--json",
    ]);
    let items = report["items"].as_array().unwrap();
    assert_eq!(items.len(), 12);
    assert!(items.iter().all(|i| i["neighbours"].as_u64().unwrap() > 0), "{report}");
    // The old catalogue no longer fits the grown snapshot, and a catalogue without new items says so.
    let again = onerec(&[
        "items",
        "add",
        "--snapshot",
        path(&grown_snapshot),
        "--data",
        path(&grown),
        "--out",
        path(&grown_snapshot),
    ]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("no items beyond the snapshot's 120"));

    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&grown_snapshot, &grown, state.path(), &["--admin-token", "ops"]);
    let agent = client();
    let (status, item) = get(&agent, &format!("{}/v1/items/{}", server.url, new[0]));
    assert_eq!(status, 200);
    assert_eq!(item["semantic_id"], items[0]["semantic_id"]);
    let (_, users) = get(&agent, &format!("{}/v1/users?limit=60", server.url));
    let users: Vec<String> = users["users"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().into()).collect();
    let slates = |server: &Server| -> Vec<Vec<String>> {
        users
            .iter()
            .map(|u| ids(&get(&agent, &format!("{}/v1/feed?user={u}&k=10&pool=100", server.url)).1["items"]))
            .collect()
    };
    let with_new = slates(&server).iter().filter(|s| s.iter().any(|i| new.contains(i))).count();
    eprintln!("{with_new} of 60 slates of 10 hold a new item");
    assert!(with_new > 0, "no user's slate holds a new item");

    // Retire a new item and the old item shown most: neither is offered again, in any slate or pool.
    let shown = slates(&server).concat();
    let mut counts: HashMap<&String, usize> = HashMap::new();
    shown.iter().filter(|i| !new.contains(i)).for_each(|i| *counts.entry(i).or_default() += 1);
    let popular = counts.into_iter().max_by_key(|(_, n)| *n).unwrap().0.clone();
    let newest = shown.iter().find(|i| new.contains(i)).unwrap().clone();
    let retired = dir.path().join("retired.snap");
    let ids_arg = format!("{newest},{popular}");
    let out =
        onerec(&["items", "retire", "--snapshot", path(&grown_snapshot), "--ids", &ids_arg, "--out", path(&retired)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let body = json!({ "snapshot": retired }).to_string();
    assert_eq!(post(&agent, &format!("{}/admin/reload", server.url), &body, &[("authorization", "Bearer ops")]).0, 200);
    for u in &users {
        let (_, feed) = get(&agent, &format!("{}/v1/feed?user={u}&k=10&pool=100", server.url));
        let offered: Vec<String> = [ids(&feed["items"]), ids(&feed["pool"])].concat();
        assert!(offered.len() >= 10, "{feed}");
        assert!(!offered.contains(&newest) && !offered.contains(&popular), "{u} was offered a retired item");
    }
    drop(server);

    // The same items posted to a server that runs the old snapshot: no retraining, no restart.
    let live_dir = tempfile::tempdir().unwrap();
    let ops = ["--admin-token", "ops", "--fresh-share", "0.1"];
    let live = Server::start(&snapshot, &old, live_dir.path(), &ops);
    let rows: Vec<Value> = added
        .iter()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            json!({"id": fields[0], "title": fields[1], "tags": fields[2].split_whitespace().collect::<Vec<_>>()})
        })
        .collect();
    let admin = [("authorization", "Bearer ops")];
    let body = json!({ "items": rows }).to_string();
    let (status, answer) = post(&agent, &format!("{}/admin/items", live.url), &body, &admin);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["added"].as_array().unwrap().len(), 12);
    let (status, item) = get(&agent, &format!("{}/v1/items/{}", live.url, new[0]));
    assert_eq!((status, item["added_at"].is_i64()), (200, true), "{item}");
    // Every slate keeps its last position of ten for a fresh item.
    let live_slates = slates(&live);
    assert!(live_slates.iter().all(|s| s.len() == 10 && new.contains(&s[9])), "{live_slates:?}");
    // Retire one over HTTP, then kill the server: both acknowledged changes survive.
    let gone = live_slates[0][9].clone();
    let retire =
        agent.delete(&format!("{}/admin/items/{gone}", live.url)).header("authorization", "Bearer ops").call().unwrap();
    assert_eq!(retire.status(), 200);
    drop(live); // SIGKILL
    let live = Server::start(&snapshot, &old, live_dir.path(), &ops);
    let (_, item) = get(&agent, &format!("{}/v1/items/{gone}", live.url));
    assert_eq!(item["retired"], true, "{item}");
    for u in &users {
        let (_, feed) = get(&agent, &format!("{}/v1/feed?user={u}&k=10&pool=100", live.url));
        let (slate, pool) = (ids(&feed["items"]), ids(&feed["pool"]));
        assert!(new.contains(&slate[9]), "{u}'s fresh slot holds an added item after the restart: {slate:?}");
        assert!(!slate.contains(&gone) && !pool.contains(&gone), "{u} was offered the retired item");
    }
}

/// Posts events from several clients, kills the server with SIGKILL mid-stream, restarts it on the
/// same store, and finds every acknowledged event.
#[test]
fn every_acknowledged_event_survives_kill_9() {
    let fixture = trained_fixture();
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&fixture.snapshot, &fixture.data, state.path(), &[]);
    let agent = client();
    let user = first_user(&agent, &server);
    let items = ids(&get(&agent, &format!("{}/v1/feed?k=20", server.url)).1["items"]);
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (acknowledged, sent, items) = (acknowledged.clone(), sent.clone(), items.clone());
            let url = format!("{}/v1/events", server.url);
            let user = user.clone();
            thread::spawn(move || {
                // A short timeout: requests in flight at the kill just fail.
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(5)))
                    .build()
                    .into();
                for n in 0.. {
                    let id = format!("w{w}-{n}");
                    let body = event_batch(&user, &items[n % items.len()..][..1], "click", &id);
                    sent.fetch_add(1, Ordering::Relaxed);
                    let request = agent.post(&url).header("authorization", format!("Bearer {API_KEY}"));
                    match request.header("content-type", "application/json").send(&body) {
                        Ok(r) if r.status() == 200 => acknowledged.lock().unwrap().push(format!("{id}-0")),
                        _ => return,
                    }
                }
            })
        })
        .collect();
    while acknowledged.lock().unwrap().len() < 40 {
        thread::sleep(Duration::from_millis(5));
    }
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL: no shutdown hook runs.
    server.child.wait().unwrap();
    writers.into_iter().for_each(|w| w.join().unwrap());
    let acknowledged = acknowledged.lock().unwrap().clone();
    drop(server);

    let restarted = Server::start(&fixture.snapshot, &fixture.data, state.path(), &[]);
    let (status, history) = get(&agent, &format!("{}/v1/users/{user}/history?limit=1000", restarted.url));
    assert_eq!(status, 200);
    let stored: HashSet<&str> =
        history["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    let lost: Vec<&String> = acknowledged.iter().filter(|id| !stored.contains(id.as_str())).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged events lost: {lost:?}", lost.len(), acknowledged.len());
    assert!(stored.len() <= sent.load(Ordering::Relaxed), "nothing is invented");

    // SIGTERM: a clean exit, and the store is complete after it too.
    let (status, _) =
        post(&agent, &format!("{}/v1/events", restarted.url), &event_batch(&user, &items[..1], "like", "last"), &[]);
    assert_eq!(status, 200);
    assert!(restarted.terminate().success());
    let again = Server::start(&fixture.snapshot, &fixture.data, state.path(), &[]);
    let (_, history) = get(&agent, &format!("{}/v1/users/{user}/history", again.url));
    assert_eq!(history["events"][0]["event_id"], "last-0");
}

#[test]
fn beyond_the_concurrency_bound_the_answer_is_503_not_a_hang() {
    let fixture = trained_fixture();
    let state = tempfile::tempdir().unwrap();
    // One decode admitted at a time, and each held for the batching window.
    let server = Server::start(
        &fixture.snapshot,
        &fixture.data,
        state.path(),
        &["--max-decodes", "1", "--workers", "1", "--batch-window-ms", "300"],
    );
    let url = format!("{}/v1/feed?k=5", server.url);
    let answers: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || {
                let mut response = client().get(&url).call().unwrap();
                let retry = response.headers().get("retry-after").is_some();
                let body: Value = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
                (response.status().as_u16(), retry, body["error"].clone())
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    let refused: Vec<_> = answers.iter().filter(|(status, _, _)| *status == 503).collect();
    assert!(statuses.iter().all(|status| [200, 503].contains(status)), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(!refused.is_empty(), "8 concurrent feeds against a bound of 1: {statuses:?}");
    assert!(refused.iter().all(|(_, retry, error)| *retry && error == "overloaded"), "{refused:?}");
}

/// A bounded load test on loopback: N clients for a fixed time, mixing feeds and events, first on
/// an idle server, then with 200 slow-loris connections open (each sending a header byte now and
/// then). It reports latency (run with `--nocapture` to see it) and requires zero errors.
#[test]
fn load_test_has_no_errors_even_beside_slow_loris_connections() {
    let fixture = trained_fixture();
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&fixture.snapshot, &fixture.data, state.path(), &["--key-rate", "100000"]);
    let agent = client();
    let (_, users) = get(&agent, &format!("{}/v1/users?limit=50", server.url));
    let users: Vec<String> =
        users["users"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_string()).collect();
    let items = ids(&get(&agent, &format!("{}/v1/feed?k=20", server.url)).1["items"]);
    let idle = load(&server.url, &users, &items, "idle");

    let addr = server.url.trim_start_matches("http://").to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicUsize::new(0));
    let loris = {
        let (stop, open) = (stop.clone(), open.clone());
        thread::spawn(move || {
            let mut sockets: Vec<_> = (0..200)
                .map(|_| {
                    let mut s = std::net::TcpStream::connect(&addr).unwrap();
                    s.write_all(b"GET /v1/feed HTTP/1.1\r\nHost: x\r\n").unwrap();
                    s
                })
                .collect();
            open.store(sockets.len(), Ordering::SeqCst);
            while !stop.load(Ordering::SeqCst) {
                for s in &mut sockets {
                    let _ = s.write_all(b"X");
                }
                thread::sleep(Duration::from_millis(500));
            }
        })
    };
    while open.load(Ordering::SeqCst) < 200 {
        thread::sleep(Duration::from_millis(10));
    }
    let loaded = load(&server.url, &users, &items, "slow-loris");
    stop.store(true, Ordering::SeqCst);
    loris.join().unwrap();
    println!("feed p99 beside 200 slow-loris connections: {:.2}× the idle figure", loaded / idle);
}

/// Runs the mixed load for a fixed time; asserts no errors and returns the feeds' p99 in ms.
fn load(base: &str, users: &[String], items: &[String], label: &str) -> f64 {
    let (clients, duration) = (8, Duration::from_secs(4));
    let deadline = Instant::now() + duration;
    // A readiness probe beside the load, as an orchestrator would send it.
    let probe = {
        let url = format!("{base}/readyz");
        thread::spawn(move || {
            let agent = client();
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let started = Instant::now();
                assert_eq!(get(&agent, &url).0, 200, "ready under load");
                latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                thread::sleep(Duration::from_millis(20));
            }
            latencies.sort_by(f64::total_cmp);
            latencies
        })
    };
    let results: Vec<(Vec<f64>, usize, usize)> = (0..clients)
        .map(|c| {
            let (users, items, base, label) = (users.to_vec(), items.to_vec(), base.to_string(), label.to_string());
            thread::spawn(move || {
                let agent = client();
                let (mut feeds, mut requests, mut errors) = (Vec::new(), 0, 0);
                for n in 0.. {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let user = &users[(c * 7 + n) % users.len()];
                    let started = Instant::now();
                    let status = if n % 4 == 3 {
                        let body =
                            event_batch(user, &items[n % items.len()..][..1], "click", &format!("{label}-{c}-{n}"));
                        post(&agent, &format!("{base}/v1/events"), &body, &[]).0
                    } else {
                        let status = get(&agent, &format!("{base}/v1/feed?user={user}&k=10&beam=64")).0;
                        feeds.push(started.elapsed().as_secs_f64() * 1000.0);
                        status
                    };
                    requests += 1;
                    errors += usize::from(status != 200);
                }
                (feeds, requests, errors)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let readiness = probe.join().unwrap();
    let errors: usize = results.iter().map(|r| r.2).sum();
    let requests: usize = results.iter().map(|r| r.1).sum();
    let mut feeds: Vec<f64> = results.into_iter().flat_map(|r| r.0).collect();
    feeds.sort_by(f64::total_cmp);
    let at = |q: f64| feeds[((feeds.len() - 1) as f64 * q) as usize];
    println!(
        "load test ({label}): {clients} clients for {duration:?}: {requests} requests ({:.0}/s), {errors} errors, \
         feed p50 {:.1} ms, p99 {:.1} ms; /readyz max {:.1} ms over {} probes",
        requests as f64 / duration.as_secs_f64(),
        at(0.5),
        at(0.99),
        readiness.last().copied().unwrap_or_default(),
        readiness.len()
    );
    assert_eq!(errors, 0, "{label}");
    assert!(feeds.len() >= clients, "every client completed requests");
    at(0.99)
}
