//! Helpers shared by the end-to-end tests: the real `onerec` binary, small data sets made with it,
//! and a server process on a loopback port.
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

pub fn onerec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onerec")).args(args).output().expect("the onerec binary runs")
}

/// Runs a command that must succeed and parses its JSON report.
pub fn onerec_json(args: &[&str]) -> Value {
    let out = onerec(args);
    assert!(out.status.success(), "onerec {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// Writes a synthetic data set and tokenizes it with small codebooks; returns the tokenize report.
pub fn synth_and_tokenize(data: &Path, tokenizer: &Path, synth: &[&str]) -> Value {
    let mut args = vec!["data", "synth", "--out", path(data)];
    args.extend_from_slice(synth);
    let out = onerec(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    onerec_json(&[
        "tokenize",
        "--data",
        path(data),
        "--out",
        path(tokenizer),
        "--codes",
        "8",
        "--dim",
        "32",
        "--collab-dims",
        "16",
        "--json",
    ])
}

/// A synthetic data set and a `tiny` model trained on it, made once per test binary.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub data: PathBuf,
    pub tokenizer: PathBuf,
    pub snapshot: PathBuf,
}

pub fn trained_fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("synth");
        let tok = dir.path().join("tok.bin");
        let snapshot = dir.path().join("model.snap");
        synth_and_tokenize(&data, &tok, &["--items", "120", "--users", "60", "--topics", "4"]);
        let args = ["train", "--data", path(&data), "--tokenizer", path(&tok), "--preset", "tiny", "--epochs", "2"];
        let out = onerec(&[&args[..], &["--out", path(&snapshot), "--device", "cpu"]].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Fixture { _dir: dir, data, tokenizer: tok, snapshot }
    })
}

/// The API key every test server accepts; [`get`] and [`post`] send it.
pub const API_KEY: &str = "e2e-api-key";

/// A running `onerec serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Server {
    /// Starts the server on a free loopback port and waits until it listens.
    pub fn start(snapshot: &Path, data: &Path, data_dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_onerec"))
            .args(["serve", "--snapshot", path(snapshot), "--data", path(data), "--data-dir", path(data_dir)])
            .args(["--addr", "127.0.0.1:0", "--device", "cpu", "--api-key", API_KEY])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("onerec serve starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("the server prints its address");
        let url = line
            .trim()
            .strip_prefix("onerec serving on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .trim_end_matches('/')
            .to_string();
        Server { child, url }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server did not stop within 10 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that returns 4xx and 5xx answers instead of failing on them.
pub fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// `GET url` with the API key → status and JSON body (`Null` when the body is not JSON).
pub fn get(agent: &ureq::Agent, url: &str) -> (u16, Value) {
    get_as(agent, url, Some(API_KEY))
}

/// `GET url` with a bearer credential, or none.
pub fn get_as(agent: &ureq::Agent, url: &str, credential: Option<&str>) -> (u16, Value) {
    let mut request = agent.get(url);
    if let Some(credential) = credential {
        request = request.header("authorization", format!("Bearer {credential}"));
    }
    let mut response = request.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// `POST url` with a raw body → status and JSON body. It sends the API key unless `headers` name
/// another `authorization`.
pub fn post(agent: &ureq::Agent, url: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    if headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("authorization")) {
        send_post(agent, url, body, headers)
    } else {
        let key = format!("Bearer {API_KEY}");
        send_post(agent, url, body, &[headers, &[("authorization", key.as_str())]].concat())
    }
}

/// `POST url` with a bearer credential, or none.
pub fn post_as(agent: &ureq::Agent, url: &str, body: &str, credential: Option<&str>) -> (u16, Value) {
    match credential {
        Some(c) => send_post(agent, url, body, &[("authorization", &format!("Bearer {c}"))]),
        None => send_post(agent, url, body, &[]),
    }
}

fn send_post(agent: &ureq::Agent, url: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = agent.post(url).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.send(body).unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The item ids of a feed's `items` or `pool`.
pub fn ids(items: &Value) -> Vec<String> {
    items.as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

/// The first user the server lists.
pub fn first_user(agent: &ureq::Agent, server: &Server) -> String {
    let (status, users) = get(agent, &format!("{}/v1/users?limit=1", server.url));
    assert_eq!(status, 200, "{users}");
    users["users"][0].as_str().unwrap().to_string()
}

/// A `POST /v1/events` body: one event of `kind` per item, with ids `{prefix}-0`, `{prefix}-1`…
pub fn event_batch(user: &str, items: &[String], kind: &str, prefix: &str) -> String {
    let events: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(i, item)| json!({"event_id": format!("{prefix}-{i}"), "user": user, "item": item, "kind": kind}))
        .collect();
    json!({ "events": events }).to_string()
}
