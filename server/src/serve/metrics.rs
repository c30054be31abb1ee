//! Prometheus metrics in the text exposition format: request counts and latency by route, decode
//! batch sizes and decode time. A handful of series does not need a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::store::StoreStatus;

const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// A cumulative histogram with fixed upper bounds.
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(&mut self.counts) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

struct Series {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    batch_size: Histogram,
    decode_seconds: Histogram,
    events_stored: u64,
    events_duplicate: u64,
    decodes_dropped: BTreeMap<&'static str, u64>,
    rate_limited: u64,
    connections_refused: u64,
    stale_reads: u64,
}

/// Every series the server exports.
pub struct Metrics {
    series: Mutex<Series>,
    /// Changed on every connection, so kept out of the lock.
    pub connections_open: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        let series = Series {
            requests: BTreeMap::new(),
            latency: BTreeMap::new(),
            batch_size: Histogram::new(BATCH_BUCKETS),
            decode_seconds: Histogram::new(LATENCY_BUCKETS),
            events_stored: 0,
            events_duplicate: 0,
            decodes_dropped: BTreeMap::from([("client_gone", 0), ("deadline", 0)]),
            rate_limited: 0,
            connections_refused: 0,
            stale_reads: 0,
        };
        Metrics { series: Mutex::new(series), connections_open: AtomicI64::new(0) }
    }
}

impl Metrics {
    pub fn observe_request(&self, route: &str, status: u16, elapsed: Duration) {
        let mut s = self.series.lock().expect("metrics lock");
        *s.requests.entry((route.to_string(), status)).or_default() += 1;
        s.latency
            .entry(route.to_string())
            .or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(elapsed.as_secs_f64());
    }

    pub fn observe_batch(&self, size: usize, elapsed: Duration) {
        let mut s = self.series.lock().expect("metrics lock");
        s.batch_size.observe(size as f64);
        s.decode_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn observe_events(&self, stored: usize, duplicates: usize) {
        let mut s = self.series.lock().expect("metrics lock");
        s.events_stored += stored as u64;
        s.events_duplicate += duplicates as u64;
    }

    /// A queued decode that nobody waited for any more: `client_gone` or `deadline`.
    pub fn observe_dropped_decode(&self, reason: &'static str) {
        *self.series.lock().expect("metrics lock").decodes_dropped.entry(reason).or_default() += 1;
    }

    pub fn observe_rate_limited(&self) {
        self.series.lock().expect("metrics lock").rate_limited += 1;
    }

    /// A connection turned away because the server holds as many as it may.
    pub fn observe_connection_refused(&self) {
        self.series.lock().expect("metrics lock").connections_refused += 1;
    }

    /// A feed, history or export answered from histories that the shared event store could not
    /// bring up to date.
    pub fn observe_stale_read(&self) {
        self.series.lock().expect("metrics lock").stale_reads += 1;
    }

    /// The exposition text, with the event store's reachability as a gauge.
    pub fn render(&self, store: &StoreStatus) -> String {
        let s = self.series.lock().expect("metrics lock");
        let mut out = String::new();
        out.push_str("# HELP onerec_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE onerec_http_requests_total counter\n");
        for ((route, status), n) in &s.requests {
            let _ = writeln!(out, "onerec_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        out.push_str("# HELP onerec_http_request_seconds HTTP request latency by route.\n");
        out.push_str("# TYPE onerec_http_request_seconds histogram\n");
        for (route, h) in &s.latency {
            h.render(&mut out, "onerec_http_request_seconds", &format!("route=\"{route}\""));
        }
        out.push_str("# HELP onerec_decode_batch_size Requests decoded together.\n");
        out.push_str("# TYPE onerec_decode_batch_size histogram\n");
        s.batch_size.render(&mut out, "onerec_decode_batch_size", "");
        out.push_str("# HELP onerec_decode_seconds Time to decode one batch.\n");
        out.push_str("# TYPE onerec_decode_seconds histogram\n");
        s.decode_seconds.render(&mut out, "onerec_decode_seconds", "");
        out.push_str("# HELP onerec_events_total Events received, by outcome.\n");
        out.push_str("# TYPE onerec_events_total counter\n");
        let _ = writeln!(out, "onerec_events_total{{outcome=\"stored\"}} {}", s.events_stored);
        let _ = writeln!(out, "onerec_events_total{{outcome=\"duplicate\"}} {}", s.events_duplicate);
        out.push_str("# HELP onerec_decodes_dropped_total Queued decodes not computed: the client left or the deadline passed.\n");
        out.push_str("# TYPE onerec_decodes_dropped_total counter\n");
        for (reason, n) in &s.decodes_dropped {
            let _ = writeln!(out, "onerec_decodes_dropped_total{{reason=\"{reason}\"}} {n}");
        }
        out.push_str("# HELP onerec_rate_limited_total Requests answered 429.\n");
        out.push_str("# TYPE onerec_rate_limited_total counter\n");
        let _ = writeln!(out, "onerec_rate_limited_total {}", s.rate_limited);
        out.push_str("# HELP onerec_connections_open HTTP connections open now.\n");
        out.push_str("# TYPE onerec_connections_open gauge\n");
        let _ = writeln!(out, "onerec_connections_open {}", self.connections_open.load(Ordering::Relaxed));
        out.push_str("# HELP onerec_connections_refused_total Connections refused at the connection cap.\n");
        out.push_str("# TYPE onerec_connections_refused_total counter\n");
        let _ = writeln!(out, "onerec_connections_refused_total {}", s.connections_refused);
        out.push_str(
            "# HELP onerec_stale_reads_total Answers read from histories the shared event store could not update.\n",
        );
        out.push_str("# TYPE onerec_stale_reads_total counter\n");
        let _ = writeln!(out, "onerec_stale_reads_total {}", s.stale_reads);
        out.push_str("# HELP onerec_store_reachable Whether the event store answered its last read or write.\n");
        out.push_str("# TYPE onerec_store_reachable gauge\n");
        let _ = writeln!(out, "onerec_store_reachable{{kind=\"{}\"}} {}", store.kind, u8::from(store.reachable));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_rendered_in_prometheus_text() {
        let metrics = Metrics::default();
        metrics.observe_request("/v1/feed", 200, Duration::from_millis(3));
        metrics.observe_request("/v1/feed", 200, Duration::from_millis(30));
        metrics.observe_request("/v1/feed", 404, Duration::from_millis(1));
        metrics.observe_batch(3, Duration::from_millis(2));
        let text = metrics.render(&StoreStatus { kind: "redb", reachable: false, detail: None });
        assert!(text.contains("onerec_http_requests_total{route=\"/v1/feed\",status=\"200\"} 2\n"), "{text}");
        assert!(text.contains("onerec_http_requests_total{route=\"/v1/feed\",status=\"404\"} 1\n"));
        // 1 ms and 3 ms are ≤ 5 ms; 30 ms is not (buckets count everything at or below them).
        assert!(text.contains("onerec_http_request_seconds_bucket{route=\"/v1/feed\",le=\"0.005\"} 2\n"));
        assert!(text.contains("onerec_http_request_seconds_bucket{route=\"/v1/feed\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("onerec_http_request_seconds_count{route=\"/v1/feed\"} 3\n"));
        assert!(text.contains("onerec_decode_batch_size_bucket{le=\"2\"} 0\n"));
        assert!(text.contains("onerec_decode_batch_size_bucket{le=\"4\"} 1\n"));
        assert!(text.contains("onerec_decode_batch_size_sum 3\n"));
        assert!(text.contains("onerec_store_reachable{kind=\"redb\"} 0\n"));
    }
}
