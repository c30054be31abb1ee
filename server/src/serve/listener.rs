//! The accept loop, written out (as axum's `serve-with-hyper` example does) rather than
//! `axum::serve`, because that one cannot bound a connection's life:
//!
//! - **Header timeout.** hyper's `header_read_timeout` closes a connection that has not sent a
//!   whole request head in time. hyper starts that clock whenever it waits for a head, so the same
//!   bound also closes a keep-alive connection that has been idle that long.
//! - **Connection cap.** At most `max_connections` are served at once, below the process's file
//!   limit, so that idle sockets cannot exhaust it; beyond the cap a connection gets a short 503
//!   with `Retry-After` and is closed.
//! - The body and the whole request are bounded by a timeout layer on the router (`mod.rs`).
//!
//! HTTP/1.1 only: browsers and clients speak it, and TLS or HTTP/2 belong to a proxy in front.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::metrics::Metrics;

/// Bounds on connections.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// For a request's head, and for idleness between keep-alive requests.
    pub header_timeout: Duration,
}

/// How long requests in flight may take to finish once shutdown begins.
const DRAIN: Duration = Duration::from_secs(30);
/// Refusals being written at once; beyond it a connection over the cap is closed without a word.
const MAX_REFUSALS: usize = 64;

/// Raises the soft limit on open files to the hard one and returns the new soft limit. The stock
/// soft limit (often 1024) is what idle sockets exhausted before.
pub fn raise_open_file_limit() -> u64 {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, hard)) => {
            let raised = rlimit::increase_nofile_limit(hard).unwrap_or(soft);
            tracing::info!(soft_before = soft, hard, soft_now = raised, "open-file limit");
            raised
        }
        Err(e) => {
            tracing::warn!("cannot read the open-file limit: {e}; assuming 1024");
            1024
        }
    }
}

/// The connection cap for a file limit: three quarters of it, after 64 files kept for the store,
/// the snapshot and the web files, and never more than 16384.
pub fn default_max_connections(open_files: u64) -> usize {
    (open_files.saturating_sub(64) * 3 / 4).clamp(1, 16384) as usize
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of files or a connection reset before accept: wait a moment, go on.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.observe_connection_refused();
            if let Ok(refusal) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(refusal);
                });
            }
            continue;
        };
        let connection =
            graceful.watch(http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone())));
        let metrics = metrics.clone();
        metrics.connections_open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _ = connection.await;
            metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight after {} s of shutdown; closing them", DRAIN.as_secs());
    }
}

/// A 503 for a connection over the cap, written within a second, then the connection is closed.
async fn refuse(mut stream: TcpStream) {
    let body = r#"{"error":"overloaded","detail":"the server holds as many connections as it may; retry shortly"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_file_limit() {
        assert_eq!(default_max_connections(1024), 720);
        assert_eq!(default_max_connections(128), 48);
        assert_eq!(default_max_connections(10), 1);
        assert_eq!(default_max_connections(1 << 20), 16384);
    }
}
