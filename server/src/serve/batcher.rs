//! Dynamic batching of decodes. Requests queued together share one pass over their streams and
//! one ID-head step per ID position (`Recommender::recommend_batch`), which amortises the
//! per-operation cost that dominates small models on the CPU.
//!
//! By default a free worker takes what is queued **at that moment** and waits for nothing more:
//! on an idle server a request is decoded at once, as it would be alone, and under load the
//! queue that builds up while the workers are busy becomes the batch. A fixed wait for company
//! (`window`) made every request of a quiet server slower by the window, 2 ms against a decode of
//! about 1 ms at beam 64; it stays available for an operator who trades latency for throughput.
//!
//! A fixed pool of worker threads owns the decoding; the async handlers only queue a job and await
//! its answer, so a slow decode never blocks the runtime.
//!
//! Work nobody waits for is not done: a job whose client has hung up (its answer channel is
//! closed, because the handler's future was dropped) or whose deadline has passed while it queued
//! is dropped when a worker takes it, and counted in `onerec_decodes_dropped_total`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use onerec_core::data::Event;
use onerec_core::decode::Hypothesis;
use onerec_core::generator::recommend::DecodeRequest;
use tokio::sync::oneshot;

use super::engine::Engine;
use super::metrics::Metrics;

/// How requests are grouped.
#[derive(Clone, Copy, Debug)]
pub struct BatchConfig {
    /// How long the first request of a batch waits for company; zero takes only what is queued.
    pub window: Duration,
    /// The most requests decoded together.
    pub max_batch: usize,
    /// Decoding threads.
    pub workers: usize,
}

struct Job {
    engine: Arc<Engine>,
    request: DecodeRequest,
    /// The events the request was made from, for the slate's reward model.
    history: Arc<[Event]>,
    /// After it, nobody will read the answer.
    deadline: Instant,
    reply: oneshot::Sender<Vec<Hypothesis>>,
}

/// Queue to the decoding workers; cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    jobs: mpsc::Sender<Job>,
    /// Worker threads still running; a panic outside a decode (which `catch_unwind` covers)
    /// would lower it, and readiness reports it.
    alive: Arc<AtomicUsize>,
}

/// Lowers the count of live workers when a worker thread ends, however it ends.
struct AliveGuard(Arc<AtomicUsize>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Batcher {
    pub fn start(config: BatchConfig, metrics: Arc<Metrics>) -> Batcher {
        let (jobs, queue) = mpsc::channel();
        let queue = Arc::new(Mutex::new(queue));
        let alive = Arc::new(AtomicUsize::new(0));
        for i in 0..config.workers.max(1) {
            let queue = queue.clone();
            let metrics = metrics.clone();
            alive.fetch_add(1, Ordering::SeqCst);
            let guard = AliveGuard(alive.clone());
            thread::Builder::new()
                .name(format!("decoder-{i}"))
                .spawn(move || {
                    let _guard = guard;
                    work(&queue, config, &metrics)
                })
                .expect("spawn a decoding thread");
        }
        Batcher { jobs, alive }
    }

    /// Decodes one request, made from `history`, with `engine` (see [`Engine::decode`]), unless
    /// `deadline` passes before a worker takes it; `None` when decoding failed or was dropped.
    pub async fn decode(
        &self,
        engine: Arc<Engine>,
        request: DecodeRequest,
        history: Arc<[Event]>,
        deadline: Instant,
    ) -> Option<Vec<Hypothesis>> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { engine, request, history, deadline, reply }).ok()?;
        answer.await.ok()
    }

    /// Decoding threads running.
    pub fn workers_alive(&self) -> usize {
        self.alive.load(Ordering::SeqCst)
    }
}

fn work(queue: &Mutex<mpsc::Receiver<Job>>, config: BatchConfig, metrics: &Metrics) {
    while let Some(jobs) = next_batch(queue, config) {
        let now = Instant::now();
        let (mut jobs, abandoned): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| !j.reply.is_closed() && j.deadline > now);
        for job in abandoned {
            metrics.observe_dropped_decode(if job.reply.is_closed() { "client_gone" } else { "deadline" });
        }
        // A batch shares one engine; jobs queued across a reload wait for the next round.
        while !jobs.is_empty() {
            let engine = jobs[0].engine.clone();
            let (same, rest): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| Arc::ptr_eq(&j.engine, &engine));
            jobs = rest;
            let mut requests = Vec::with_capacity(same.len());
            let mut histories = Vec::with_capacity(same.len());
            let mut replies = Vec::with_capacity(same.len());
            for job in same {
                requests.push(job.request);
                histories.push(job.history);
                replies.push(job.reply);
            }
            let histories: Vec<&[Event]> = histories.iter().map(|h| &h[..]).collect();
            let started = Instant::now();
            let decoded = catch_unwind(AssertUnwindSafe(|| engine.decode(&requests, &histories)));
            metrics.observe_batch(requests.len(), started.elapsed());
            match decoded {
                Ok(results) => {
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(result);
                    }
                }
                // Dropping the replies answers each request with an error; the worker lives on.
                Err(_) => tracing::error!("decoding a batch of {} panicked", requests.len()),
            }
        }
    }
}

/// Waits for a job, then gathers the jobs already queued and those that arrive before the window
/// closes, until the batch is full. `None` once every sender is gone.
fn next_batch<T>(queue: &Mutex<mpsc::Receiver<T>>, config: BatchConfig) -> Option<Vec<T>> {
    let queue = queue.lock().expect("decode queue lock");
    let first = queue.recv().ok()?;
    let deadline = Instant::now() + config.window;
    let mut jobs = vec![first];
    while jobs.len() < config.max_batch {
        let wait = deadline.saturating_duration_since(Instant::now());
        let next = if wait.is_zero() { queue.try_recv().ok() } else { queue.recv_timeout(wait).ok() };
        match next {
            Some(job) => jobs.push(job),
            None => break,
        }
    }
    Some(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(window: Duration, max_batch: usize) -> BatchConfig {
        BatchConfig { window, max_batch, workers: 1 }
    }

    #[test]
    fn without_a_window_a_batch_is_what_is_queued_and_nothing_waits_for_more() {
        let (jobs, queue) = mpsc::channel();
        let queue = Mutex::new(queue);
        for job in 0..5 {
            jobs.send(job).unwrap();
        }
        // Full batches of what is queued, then the rest; the sender stays open, so a batch that
        // waited for more would never return.
        assert_eq!(next_batch(&queue, config(Duration::ZERO, 3)), Some(vec![0, 1, 2]));
        assert_eq!(next_batch(&queue, config(Duration::ZERO, 3)), Some(vec![3, 4]));
        jobs.send(5).unwrap();
        assert_eq!(next_batch(&queue, config(Duration::ZERO, 3)), Some(vec![5]));
        drop(jobs);
        assert_eq!(next_batch(&queue, config(Duration::ZERO, 3)), None);
    }

    #[test]
    fn a_window_gathers_the_jobs_that_arrive_while_it_is_open() {
        let (jobs, queue) = mpsc::channel();
        let queue = Mutex::new(queue);
        jobs.send(0).unwrap();
        let late = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            jobs.send(1).unwrap();
        });
        assert_eq!(next_batch(&queue, config(Duration::from_secs(60), 2)), Some(vec![0, 1]));
        late.join().unwrap();
    }
}
