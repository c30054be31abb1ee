//! `onerec bench`: speed of a stage, as medians over runs: tokenizing and decoding on synthetic
//! data of a chosen size, training on a real data set.

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use clap::{Args, Subcommand};
use onerec_core::data::{Event, Feedback, ItemIdx, User};
use onerec_core::device::{self, DeviceChoice};
use onerec_core::embed::ItemEmbeddings;
use onerec_core::eval;
use onerec_core::generator::context::{Window, training_windows};
use onerec_core::generator::model::{ModelConfig, Preset};
use onerec_core::generator::recommend::{DecodeRequest, Recommender};
use onerec_core::generator::train::{Hyper, StepTimes, TrainConfig, TrainingData, train_step};
use onerec_core::generator::trend::TrendIndex;
use onerec_core::tokenizer::synthetic::{synthetic_catalogue, topic_mixture};
use onerec_core::tokenizer::{self, RqConfig, Tokenizer, TokenizerReport};
use onerec_core::training::adamw;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{DataArgs, print_report};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// RQ-KMeans on synthetic item embeddings (a mixture of topics), e.g. 1M items × 64 dims.
    Tokenize(TokenizeBenchArgs),
    /// Feed decoding (the stream once, then the constrained beam over the ID head) against a brute-force
    /// dot-product scorer, by beam width and catalogue size.
    Decode(DecodeBenchArgs),
    /// Training steps of the generator on a real data set: targets (next items learnt) per second,
    /// and where a step's time goes. Compare with `../shared/peers/sasrec.py` in the same run.
    Train(TrainBenchArgs),
}

#[derive(Args, Debug)]
pub struct TokenizeBenchArgs {
    #[arg(long, default_value_t = 1_000_000)]
    pub items: usize,
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    #[arg(long, default_value_t = 3)]
    pub levels: usize,
    #[arg(long, default_value_t = 256)]
    pub codes: usize,
    /// Iteration cap of each level's k-means.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Latent topics of the synthetic embeddings.
    #[arg(long, default_value_t = 1000)]
    pub topics: usize,
    /// Spread of items around their topic centre (the centres have unit spread per dimension).
    #[arg(long, default_value_t = 1.0)]
    pub noise: f32,
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct TokenizeBench {
    items: usize,
    dim: usize,
    levels: usize,
    codes: usize,
    threads: usize,
    seconds: Vec<f64>,
    median_seconds: f64,
    last_report: TokenizerReport,
}

impl fmt::Display for TokenizeBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bench tokenize: {} items × {} dims, {} × {} codes, {} threads",
            self.items, self.dim, self.levels, self.codes, self.threads
        )?;
        let runs: Vec<String> = self.seconds.iter().map(|s| format!("{s:.2}")).collect();
        writeln!(f, "runs (s): {}", runs.join(", "))?;
        writeln!(f, "median: {:.2} s", self.median_seconds)?;
        write!(f, "{}", self.last_report)
    }
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Tokenize(args) => bench_tokenize(args),
        BenchCommand::Decode(args) => bench_decode(args),
        BenchCommand::Train(args) => bench_train(args),
    }
}

fn bench_tokenize(args: TokenizeBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let embeddings = topic_mixture(args.items, args.dim, args.topics.max(1), args.noise, args.seed);
    let config = RqConfig { levels: args.levels, codes: args.codes, max_iters: args.iters, seed: args.seed };
    let mut seconds = Vec::with_capacity(args.runs);
    let mut last_report = None;
    for run in 0..args.runs {
        let started = Instant::now();
        let (_, _, report) = tokenizer::fit(&embeddings, args.dim, &config)?;
        seconds.push(started.elapsed().as_secs_f64());
        if !args.json {
            eprintln!("run {}: {:.2} s", run + 1, seconds[run]);
        }
        last_report = Some(report);
    }
    let bench = TokenizeBench {
        items: args.items,
        dim: args.dim,
        levels: args.levels,
        codes: args.codes,
        threads: rayon::current_num_threads(),
        median_seconds: median(&seconds),
        seconds,
        last_report: last_report.expect("at least one run"),
    };
    print_report(&bench, args.json)
}

#[derive(Args, Debug)]
pub struct DecodeBenchArgs {
    /// Catalogue sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub items: Vec<usize>,
    /// Beam widths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16,64,256")]
    pub beams: Vec<usize>,
    /// Model preset (weights are random: decoding cost does not depend on them).
    #[arg(long, default_value = "small")]
    pub preset: Preset,
    /// Requests timed per setting, one at a time (latency).
    #[arg(long, default_value_t = 100)]
    pub requests: usize,
    /// Requests decoded together when measuring throughput.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Batches timed per setting (the throughput is their median).
    #[arg(long, default_value_t = 5)]
    pub batches: usize,
    /// Events in each synthetic user's history.
    #[arg(long, default_value_t = 50)]
    pub history: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print the table as JSON.
    #[arg(long)]
    pub json: bool,
    /// cpu, gpu or auto. A benchmark says where it runs, so the default is the CPU.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// The device's peak, in TFLOP/s, for the model FLOP utilisation (MFU). Without it, a GPU
    /// from the known-devices table gets its FP32 peak, and anything else no MFU.
    #[arg(long)]
    pub peak_tflops: Option<f64>,
}

/// Latency of one request at a time and throughput of batches, in one setting.
#[derive(Serialize)]
struct DecodeRow {
    method: &'static str,
    items: usize,
    beam: usize,
    p50_ms: f64,
    p99_ms: f64,
    /// Requests per second on one thread, one at a time.
    requests_per_s: f64,
    /// Requests per second on one thread in batches of `--batch` (decode only).
    batched_requests_per_s: Option<f64>,
    /// Achieved GFLOP/s of the analytic count ([`ModelConfig::decode_flops`]) at the p50, one
    /// request at a time, and in batches (decode only).
    gflops_per_s: Option<f64>,
    batched_gflops_per_s: Option<f64>,
    /// Batched GFLOP/s as a share of the device's peak, when the peak is known.
    mfu: Option<f64>,
}

#[derive(Serialize)]
struct DecodeBench {
    device: String,
    peak_tflops: Option<f64>,
    preset: Preset,
    parameters: Vec<(usize, usize)>,
    batch: usize,
    requests: usize,
    rows: Vec<DecodeRow>,
}

impl fmt::Display for DecodeBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bench decode on {}: {:?} preset, {} requests per setting, batches of {}{}",
            self.device,
            self.preset,
            self.requests,
            self.batch,
            self.peak_tflops.map_or(String::new(), |p| format!(", MFU against a peak of {p} TFLOP/s"))
        )?;
        writeln!(
            f,
            "{:<12} {:>9} {:>5} {:>9} {:>9} {:>9} {:>11} {:>9} {:>11} {:>7}",
            "method", "items", "beam", "p50 ms", "p99 ms", "req/s", "batch req/s", "GFLOP/s", "batch GF/s", "MFU"
        )?;
        let or_dash = |x: Option<f64>, digits: usize| x.map_or("-".to_string(), |x| format!("{x:.digits$}"));
        for r in &self.rows {
            writeln!(
                f,
                "{:<12} {:>9} {:>5} {:>9.2} {:>9.2} {:>9.0} {:>11} {:>9} {:>11} {:>7}",
                r.method,
                r.items,
                if r.beam == 0 { "-".into() } else { r.beam.to_string() },
                r.p50_ms,
                r.p99_ms,
                r.requests_per_s,
                or_dash(r.batched_requests_per_s, 0),
                or_dash(r.gflops_per_s, 2),
                or_dash(r.batched_gflops_per_s, 2),
                r.mfu.map_or("-".to_string(), |m| format!("{:.2}%", 100.0 * m)),
            )?;
        }
        Ok(())
    }
}

fn bench_decode(args: DecodeBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.requests > 0 && args.batch > 0 && args.batches > 0,
        "--requests, --batch and --batches must be at least 1"
    );
    let (device, description) = device::select(args.device)?;
    let peak_tflops = args.peak_tflops.or_else(|| known_peak_tflops(&description));
    if !args.json {
        eprintln!("device: {description}");
    }
    device.seed(args.seed);
    let mut rows = Vec::new();
    let mut parameters = Vec::new();
    for &items in &args.items {
        let tokenizer = synthetic_catalogue(items, args.seed)?;
        let ids = &tokenizer.semantic_ids;
        let config = ModelConfig::preset(args.preset, items, ids.level_sizes.clone(), 3, tokenizer.embeddings.dim);
        parameters.push((items, config.parameter_count()));
        let model = config.init(&device);
        let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
        // An event an hour, so that the trend index has a list for every request to read.
        const HOUR: i64 = 3_600;
        let histories: Vec<Vec<Event>> = (0..args.requests.max(args.batch))
            .map(|_| {
                (0..args.history)
                    .map(|t| Event {
                        user: 0,
                        item: rng.random_range(0..items as u32),
                        timestamp: t as i64 * HOUR,
                        feedback: Feedback::Rating(rng.random_range(1..=5) as f32),
                    })
                    .collect()
            })
            .collect();
        // The requests' own events are the log the trend is counted over.
        let trend = TrendIndex::for_model(&config, histories.iter().flatten());
        let host_head = model.host_head();
        let recommender = Recommender {
            model: &model,
            config: &config,
            tokenizer: &tokenizer,
            device: &device,
            trend: trend.as_ref(),
            host_head: host_head.as_ref(),
        };
        let user = User { id: "bench".into(), features: vec!["age=30".into()] };
        let request = |h: &[Event], beam| recommender.request(&user, h, args.history as i64 * HOUR, beam, true);
        for &beam in &args.beams {
            // Warm-up, so that allocations and lazy initialisation are not timed.
            recommender.recommend_batch(&[request(&histories[0], beam)]);
            let latencies = time_each(&histories[..args.requests], |h| {
                recommender.recommend_batch(&[request(h, beam)]);
            });
            let batch: Vec<DecodeRequest> = histories[..args.batch].iter().map(|h| request(h, beam)).collect();
            let batch_times = time_each(&vec![(); args.batches], |_| {
                recommender.recommend_batch(&batch);
            });
            let mut row = latency_row("onerec", items, beam, latencies);
            let batched = args.batch as f64 / median(&batch_times);
            let flops = config.decode_flops(beam);
            row.batched_requests_per_s = Some(batched);
            row.gflops_per_s = Some(flops / (row.p50_ms / 1e3) / 1e9);
            row.batched_gflops_per_s = Some(flops * batched / 1e9);
            row.mfu = peak_tflops.map(|peak| flops * batched / (peak * 1e12));
            if !args.json {
                eprintln!("{items} items, beam {beam}: p50 {:.2} ms, p99 {:.2} ms", row.p50_ms, row.p99_ms);
            }
            rows.push(row);
        }
        // The brute-force baseline: score every item by a dot product with a user vector, keep the top k.
        let user_vectors: Vec<Vec<f32>> = (0..args.requests)
            .map(|_| (0..tokenizer.embeddings.dim).map(|_| rng.random::<f32>() - 0.5).collect())
            .collect();
        let none_excluded = vec![false; items];
        let latencies = time_each(&user_vectors, |u| {
            std::hint::black_box(brute_force_top_k(&tokenizer.embeddings, u, &none_excluded, 64));
        });
        rows.push(latency_row("brute-force", items, 0, latencies));
    }
    let bench = DecodeBench {
        device: description,
        peak_tflops,
        preset: args.preset,
        parameters,
        batch: args.batch,
        requests: args.requests,
        rows,
    };
    print_report(&bench, args.json)
}

/// Seconds each call of `f` took, one per input.
fn time_each<T>(inputs: &[T], mut f: impl FnMut(&T)) -> Vec<f64> {
    inputs
        .iter()
        .map(|x| {
            let started = Instant::now();
            f(x);
            started.elapsed().as_secs_f64()
        })
        .collect()
}

fn median(seconds: &[f64]) -> f64 {
    let mut sorted = seconds.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn latency_row(method: &'static str, items: usize, beam: usize, seconds: Vec<f64>) -> DecodeRow {
    let mut sorted = seconds;
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| 1000.0 * sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
    DecodeRow {
        method,
        items,
        beam,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        requests_per_s: 1.0 / mean,
        batched_requests_per_s: None,
        gflops_per_s: None,
        batched_gflops_per_s: None,
        mfu: None,
    }
}

/// FP32 peaks (TFLOP/s, without tensor cores: the kernels compute in f32) of GPUs a self-hoster
/// is likely to have, found by name in the adapter's description. Vendor data sheets; the H100
/// figure is the SXM part's.
fn known_peak_tflops(description: &str) -> Option<f64> {
    const KNOWN: [(&str, f64); 8] = [
        ("H200", 67.0),
        ("H100", 67.0),
        ("A100", 19.5),
        ("L40S", 91.6),
        ("L20", 59.8),
        ("L4", 30.3),
        ("RTX 4090", 82.6),
        ("RTX 3090", 35.6),
    ];
    KNOWN.iter().find(|(name, _)| description.contains(name)).map(|&(_, peak)| peak)
}

/// The `k` items of highest dot product with `user`: what retrieval without generation costs.
fn brute_force_top_k(embeddings: &ItemEmbeddings, user: &[f32], none_excluded: &[bool], k: usize) -> Vec<ItemIdx> {
    let scores: Vec<f32> = embeddings
        .data
        .chunks_exact(embeddings.dim)
        .map(|row| row.iter().zip(user).map(|(a, b)| a * b).sum())
        .collect();
    eval::top_k(&scores, none_excluded, k)
}

#[derive(Args, Debug)]
pub struct TrainBenchArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The tokenizer written by `onerec tokenize` for this data set.
    #[arg(long)]
    pub tokenizer: PathBuf,
    #[arg(long, default_value = "small")]
    pub preset: Preset,
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    pub batch_size: usize,
    /// Steps timed, after the warm-up steps.
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// Untimed steps first, so that allocation and lazy initialisation are not measured.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct TrainBench {
    dataset: String,
    preset: Preset,
    d_model: usize,
    parameters: usize,
    threads: usize,
    batch_size: usize,
    steps: usize,
    /// Timed targets over timed seconds.
    targets_per_second: f64,
    median_step_seconds: f64,
    median_targets_per_step: usize,
    /// Median seconds of each part of a step.
    median_times: StepTimes,
}

impl fmt::Display for TrainBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bench train: {} ({:?}, d_model {}, {} parameters), batch {} windows, {} steps, {} threads",
            self.dataset, self.preset, self.d_model, self.parameters, self.batch_size, self.steps, self.threads
        )?;
        writeln!(
            f,
            "targets/s: {:.0} (median step {:.3} s, {} targets)",
            self.targets_per_second, self.median_step_seconds, self.median_targets_per_step
        )?;
        let t = &self.median_times;
        write!(f, "median parts (s): batch {:.4}, gradients {:.4}, update {:.4}", t.batch, t.gradients, t.update)
    }
}

fn bench_train(args: TrainBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.steps > 0 && args.batch_size > 0, "--steps and --batch-size must be at least 1");
    let dataset = args.data.load()?;
    let tokenizer = Tokenizer::load(&args.tokenizer)?;
    let config = ModelConfig::preset(
        args.preset,
        tokenizer.item_ids.len(),
        tokenizer.semantic_ids.level_sizes.clone(),
        tokenizer.config.levels,
        tokenizer.embeddings.dim,
    );
    let train_config = TrainConfig::default();
    let device = Device::flex();
    device.seed(args.seed);
    let device = device.autodiff();
    let mut model = config.init(&device);
    let parameters = model.num_params();
    let mut optimizer = adamw(train_config.weight_decay, train_config.grad_clip);
    let trend = TrendIndex::for_training_log(&config, &dataset);
    let data = TrainingData { dataset: &dataset, tokenizer: &tokenizer, model: &config, trend: trend.as_ref() };
    let mut windows = training_windows(&dataset, config.context.short_len);
    windows.shuffle(&mut ChaCha8Rng::seed_from_u64(args.seed));
    let windows: Vec<&Window> = windows.iter().collect();
    let mut batches = windows.chunks(args.batch_size).cycle();
    let mut outcomes = Vec::with_capacity(args.steps);
    for step in 0..args.warmup + args.steps {
        let started = Instant::now();
        let windows = batches.next().expect("training_windows is not empty for a loaded data set");
        let hyper =
            Hyper { lr: train_config.learning_rate, balance_rate: train_config.balance_rate, noise: step as u64 };
        let (next, outcome) = train_step(model, &mut optimizer, data, windows, hyper, &device);
        model = next;
        let seconds = started.elapsed().as_secs_f64();
        if step >= args.warmup {
            if !args.json {
                eprintln!("step {}: {} targets, {:.3} s", step - args.warmup + 1, outcome.targets, seconds);
            }
            outcomes.push((seconds, outcome));
        }
    }
    let seconds: Vec<f64> = outcomes.iter().map(|(s, _)| *s).collect();
    let median_of =
        |part: fn(&StepTimes) -> f64| median(&outcomes.iter().map(|(_, o)| part(&o.times)).collect::<Vec<_>>());
    let mut targets: Vec<usize> = outcomes.iter().map(|(_, o)| o.targets).collect();
    let targets_per_second = targets.iter().sum::<usize>() as f64 / seconds.iter().sum::<f64>();
    targets.sort_unstable();
    let bench = TrainBench {
        dataset: dataset.name.clone(),
        preset: args.preset,
        d_model: config.d_model,
        parameters,
        threads: rayon::current_num_threads(),
        batch_size: args.batch_size,
        steps: args.steps,
        targets_per_second,
        median_step_seconds: median(&seconds),
        median_targets_per_step: targets[targets.len() / 2],
        median_times: StepTimes {
            batch: median_of(|t| t.batch),
            gradients: median_of(|t| t.gradients),
            update: median_of(|t| t.update),
        },
    };
    print_report(&bench, args.json)
}
