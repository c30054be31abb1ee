//! A seeded synthetic data set with known structure, for tests and scale benchmarks.
//!
//! Items belong to latent topics that shape their titles and tags; users hold a few weighted
//! interests that drift over time, and every event is drawn from them. Rows stream to RecBole
//! atomic files as they are drawn, so memory grows with the catalogue, never with the log.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Geometric, Normal};

use crate::error::{Error, Result};

/// The interaction log, in RecBole's atomic format.
pub const INTER_FILE: &str = "synth.inter";
/// The item catalogue: titles and tags.
pub const ITEM_FILE: &str = "synth.item";
/// The users, each with one static segment token.
pub const USER_FILE: &str = "synth.user";
/// Ground truth for tests: the topic of every item. Loaders ignore it.
pub const TOPICS_FILE: &str = "synth.topics";
const TOPICS_HEADER: &str = "item_id\ttopic";

/// Every user gets at least this many events, so the leave-one-out split leaves training data.
pub const MIN_EVENTS_PER_USER: usize = 5;

/// Share of title words and tags taken from the item's own topic; the rest is noise.
const TEXT_ON_TOPIC: f64 = 0.85;
/// Share of events on a uniformly random topic rather than one of the user's interests.
const EXPLORE: f64 = 0.05;
/// Draws by popularity, then as many uniform ones, spent avoiding an item the user already has,
/// since real logs rarely repeat.
const REPEAT_RETRIES: usize = 4;
/// Largest vocabulary (title words plus tags over all topics) we agree to hold in memory.
const MAX_VOCABULARY: usize = 1 << 24;
/// Mean rating (before noise) on the strongest interest, another interest, and anything else.
const RATING_STRONGEST: f64 = 4.2;
const RATING_INTEREST: f64 = 3.3;
const RATING_OTHER: f64 = 2.4;
const RATING_NOISE_SD: f64 = 0.8;
/// First events fall within a year after this instant (2020-09-13).
const START_TIME: i64 = 1_600_000_000;
const START_SPREAD_SECONDS: i64 = 365 * 24 * 3600;
const MEAN_GAP_SECONDS: f64 = 3600.0;
const BUFFER_BYTES: usize = 1 << 20;

/// What to generate. Everything is drawn from `seed`: one seed, byte-identical files.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthConfig {
    pub items: usize,
    pub users: usize,
    /// Mean events per user. Lengths are `MIN_EVENTS_PER_USER` plus a geometric tail.
    pub events_per_user: usize,
    /// Latent topics; items are spread evenly over them.
    pub topics: usize,
    /// Size of each topic's title vocabulary.
    pub words_per_topic: usize,
    /// Size of each topic's tag vocabulary.
    pub tags_per_topic: usize,
    /// How many topics a user follows at once, drawn uniformly from this range.
    pub interests_per_user: RangeInclusive<usize>,
    /// Probability, per event, that one of the user's interests is replaced by another topic.
    pub drift: f64,
    pub seed: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            items: 1000,
            users: 200,
            events_per_user: 30,
            topics: 10,
            words_per_topic: 40,
            tags_per_topic: 8,
            interests_per_user: 1..=3,
            drift: 0.02,
            seed: 42,
        }
    }
}

impl SynthConfig {
    /// Refuses settings that cannot produce the promised structure.
    pub fn validate(&self) -> Result<()> {
        let fail = |message: String| Err(Error::Config(message));
        if self.items == 0 || self.users == 0 || self.topics == 0 {
            return fail(format!(
                "synthetic data needs at least one item, user and topic (got {} items, {} users, {} topics)",
                self.items, self.users, self.topics
            ));
        }
        if self.items > u32::MAX as usize || self.users > u32::MAX as usize {
            return fail(format!("at most {} items and users are supported", u32::MAX));
        }
        if self.topics > self.items {
            return fail(format!("every topic needs an item: {} topics but {} items", self.topics, self.items));
        }
        if self.events_per_user < MIN_EVENTS_PER_USER {
            return fail(format!(
                "events_per_user is {}, below the minimum of {MIN_EVENTS_PER_USER} events per user",
                self.events_per_user
            ));
        }
        if self.words_per_topic == 0 || self.tags_per_topic == 0 {
            return fail("words_per_topic and tags_per_topic must be at least 1".to_string());
        }
        let per_topic = self.words_per_topic.checked_add(self.tags_per_topic);
        let vocabulary = per_topic.and_then(|per_topic| per_topic.checked_mul(self.topics));
        if vocabulary.is_none_or(|v| v > MAX_VOCABULARY) {
            return fail(format!("the vocabulary (topics × (words + tags)) exceeds {MAX_VOCABULARY} entries"));
        }
        let (low, high) = (*self.interests_per_user.start(), *self.interests_per_user.end());
        if low == 0 || low > high || high > self.topics {
            return fail(format!(
                "interests_per_user {low}..={high} must be a non-empty range within 1..={}",
                self.topics
            ));
        }
        if !(0.0..=1.0).contains(&self.drift) {
            return fail(format!("drift is a probability per event, got {}", self.drift));
        }
        Ok(())
    }
}

/// What [`write_synth`] produced.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthSummary {
    pub items: usize,
    pub users: usize,
    pub events: u64,
    /// The files written, in the order: log, items, users, topics.
    pub files: Vec<PathBuf>,
}

/// Generates the data set described by `config` into `dir` (created if missing) as
/// `synth.inter`, `synth.item`, `synth.user` and the ground truth `synth.topics`.
///
/// Each file is written under a temporary name (`synth.inter.tmp`, …) and renamed only once all
/// four are complete and synced, so a failed or interrupted run never leaves a truncated file.
pub fn write_synth(config: &SynthConfig, dir: &Path) -> Result<SynthSummary> {
    config.validate()?;
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let catalogue = Catalogue::new(config.items, config.topics, &mut rng);

    let mut inter = AtomicWriter::create(dir.join(INTER_FILE))?;
    let mut items = AtomicWriter::create(dir.join(ITEM_FILE))?;
    let mut users = AtomicWriter::create(dir.join(USER_FILE))?;
    let mut topics = AtomicWriter::create(dir.join(TOPICS_FILE))?;
    write_catalogue(&catalogue, config, &mut items, &mut topics, &mut rng)?;
    let events = write_log(&catalogue, config, &mut inter, &mut users, &mut rng)?;

    // Rename only once every file is complete and on disk.
    let staged = [inter, items, users, topics].into_iter().map(AtomicWriter::sync).collect::<Result<Vec<_>>>()?;
    let files = staged.into_iter().map(Staged::rename).collect::<Result<Vec<_>>>()?;
    Ok(SynthSummary { items: config.items, users: config.users, events, files })
}

/// Writes every item's title and tags, and its topic to the ground truth.
fn write_catalogue(
    catalogue: &Catalogue,
    config: &SynthConfig,
    items: &mut AtomicWriter,
    topics: &mut AtomicWriter,
    rng: &mut ChaCha8Rng,
) -> Result<()> {
    let (words, tags) = Vocabulary::pair(config);
    items.line(format_args!("item_id:token\ttitle:token_seq\ttags:token_seq"))?;
    topics.line(format_args!("{TOPICS_HEADER}"))?;
    let mut title = Vec::new();
    let mut item_tags = Vec::new();
    for (item, &topic) in catalogue.item_topic.iter().enumerate() {
        title.clear();
        for _ in 0..rng.random_range(2..=4) {
            title.push(words.draw(topic, rng));
        }
        // Distinct tags; a vocabulary smaller than the wish caps it, so the loop always ends.
        let n_tags = rng.random_range(2..=4).min(tags.words.len());
        item_tags.clear();
        while item_tags.len() < n_tags {
            let tag = tags.draw(topic, rng);
            if !item_tags.contains(&tag) {
                item_tags.push(tag);
            }
        }
        let id = ItemId(item as u32);
        items.line(format_args!("{id}\t{}\t{}", title.join(" "), item_tags.join(" ")))?;
        topics.line(format_args!("{id}\t{topic}"))?;
    }
    Ok(())
}

/// Simulates the users one after another, streaming their events; returns the event count.
fn write_log(
    catalogue: &Catalogue,
    config: &SynthConfig,
    inter: &mut AtomicWriter,
    users: &mut AtomicWriter,
    rng: &mut ChaCha8Rng,
) -> Result<u64> {
    inter.line(format_args!("user_id:token\titem_id:token\trating:float\ttimestamp:float"))?;
    users.line(format_args!("user_id:token\tsegment:token"))?;
    let mut simulator = Simulator::new(config, catalogue);
    let mut events = 0u64;
    for user in 0..config.users {
        let user = UserId(user as u32);
        let segment = simulator.start_user(rng);
        users.line(format_args!("{user}\tseg{segment}"))?;
        for _ in 0..simulator.sequence_length(rng) {
            let e = simulator.next_event(rng);
            inter.line(format_args!("{user}\t{}\t{}\t{}", ItemId(e.item), e.rating, e.timestamp))?;
            events += 1;
        }
    }
    Ok(events)
}

/// Reads the ground truth written by [`write_synth`]: item id → topic.
pub fn read_topics(dir: &Path) -> Result<HashMap<String, u32>> {
    let path = dir.join(TOPICS_FILE);
    let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
    let mut lines = BufReader::new(file).lines();
    let header = lines.next().transpose().map_err(|e| Error::io(&path, e))?;
    if header.as_deref() != Some(TOPICS_HEADER) {
        let message = format!("expected the header {TOPICS_HEADER:?}, found {:?}", header.unwrap_or_default());
        return Err(Error::parse(&path, 1, message));
    }
    let mut topics = HashMap::new();
    for (i, line) in lines.enumerate() {
        let line = line.map_err(|e| Error::io(&path, e))?;
        let number = i + 2;
        let Some((id, topic)) = line.split_once('\t') else {
            return Err(Error::parse(&path, number, "expected two tab-separated fields: item id and topic"));
        };
        let topic = topic
            .parse()
            .map_err(|_| Error::parse(&path, number, format!("topic {topic:?} is not a non-negative integer")))?;
        if topics.insert(id.to_string(), topic).is_some() {
            return Err(Error::parse(&path, number, format!("duplicate item id {id:?}")));
        }
    }
    Ok(topics)
}

/// Item tokens are `i1`, `i2`, …, distinct from user tokens so that mix-ups show.
struct ItemId(u32);

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}", self.0 + 1)
    }
}

/// User tokens are `u1`, `u2`, ….
struct UserId(u32);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "u{}", self.0 + 1)
    }
}

/// The topic of every item, and every topic's items ordered from most to least popular.
struct Catalogue {
    item_topic: Vec<u32>,
    by_topic: Vec<Vec<u32>>,
}

impl Catalogue {
    /// Deals a random permutation of the items round-robin over the topics: topics get equal
    /// shares, and neither topic nor popularity can be read off the item id.
    fn new(items: usize, topics: usize, rng: &mut ChaCha8Rng) -> Self {
        let mut order: Vec<u32> = (0..items as u32).collect();
        order.shuffle(rng);
        let mut item_topic = vec![0; items];
        let mut by_topic = vec![Vec::with_capacity(items / topics + 1); topics];
        for (position, &item) in order.iter().enumerate() {
            let topic = position % topics;
            item_topic[item as usize] = topic as u32;
            by_topic[topic].push(item);
        }
        Catalogue { item_topic, by_topic }
    }

    /// An item of `topic`, the item of popularity rank r (from 0) drawn with probability close
    /// to 1/(r+1): Zipf's law, sampled in O(1) by inverting the continuous law's distribution.
    fn draw(&self, topic: u32, rng: &mut ChaCha8Rng) -> u32 {
        let items = &self.by_topic[topic as usize];
        let u: f64 = rng.random();
        let rank = ((items.len() as f64 + 1.0).powf(u) - 1.0) as usize;
        items[rank.min(items.len() - 1)]
    }

    /// An item of `topic`, uniformly.
    fn draw_any(&self, topic: u32, rng: &mut ChaCha8Rng) -> u32 {
        let items = &self.by_topic[topic as usize];
        items[rng.random_range(0..items.len())]
    }
}

/// Pronounceable pseudo-words, a separate block of them for every topic.
struct Vocabulary {
    words: Vec<String>,
    per_topic: usize,
    topics: usize,
}

impl Vocabulary {
    /// Title words (capitalised) and tags, drawn from one pool of distinct words.
    fn pair(config: &SynthConfig) -> (Vocabulary, Vocabulary) {
        let (n_words, n_tags) = (config.topics * config.words_per_topic, config.topics * config.tags_per_topic);
        let encoder = WordEncoder::new(n_words + n_tags);
        let words = (0..n_words).map(|i| capitalise(&encoder.word(i))).collect();
        let tags = (n_words..n_words + n_tags).map(|i| encoder.word(i)).collect();
        (
            Vocabulary { words, per_topic: config.words_per_topic, topics: config.topics },
            Vocabulary { words: tags, per_topic: config.tags_per_topic, topics: config.topics },
        )
    }

    /// A word of `topic` most of the time, otherwise one of any topic.
    fn draw(&self, topic: u32, rng: &mut ChaCha8Rng) -> &str {
        let topic = if rng.random_bool(TEXT_ON_TOPIC) { topic as usize } else { rng.random_range(0..self.topics) };
        &self.words[topic * self.per_topic + rng.random_range(0..self.per_topic)]
    }
}

/// Spells numbers as syllables (`ka`, `mo`, …), scrambled so that neighbours look unrelated.
struct WordEncoder {
    syllables: u32,
    modulus: u64,
}

impl WordEncoder {
    const CONSONANTS: &[u8] = b"bdfgklmnprstvz";
    const VOWELS: &[u8] = b"aeiou";
    /// A prime that shares no factor with the syllable count (70), so scrambling is a bijection.
    const SCRAMBLE: u64 = 1_000_003;

    fn new(count: usize) -> Self {
        let base = (Self::CONSONANTS.len() * Self::VOWELS.len()) as u64;
        let (mut syllables, mut modulus) = (2, base * base);
        while modulus < count as u64 {
            syllables += 1;
            modulus *= base;
        }
        WordEncoder { syllables, modulus }
    }

    fn word(&self, index: usize) -> String {
        let base = (Self::CONSONANTS.len() * Self::VOWELS.len()) as u64;
        let mut code = ((index as u128 * Self::SCRAMBLE as u128 + 7) % self.modulus as u128) as u64;
        let mut word = String::with_capacity(2 * self.syllables as usize);
        for _ in 0..self.syllables {
            let syllable = (code % base) as usize;
            code /= base;
            word.push(Self::CONSONANTS[syllable / Self::VOWELS.len()] as char);
            word.push(Self::VOWELS[syllable % Self::VOWELS.len()] as char);
        }
        word
    }
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

/// A user's current interests: distinct topics with weights summing to one.
struct Interests {
    topics: Vec<u32>,
    weights: Vec<f64>,
}

impl Interests {
    /// Uniformly random distinct topics with Dirichlet(1) weights.
    fn draw(count: usize, n_topics: usize, rng: &mut ChaCha8Rng) -> Self {
        let topics = rand::seq::index::sample(rng, n_topics, count).into_iter().map(|t| t as u32).collect();
        let mut weights: Vec<f64> = (0..count).map(|_| -(1.0 - rng.random::<f64>()).ln()).collect();
        let total: f64 = weights.iter().sum();
        if total > 0.0 {
            weights.iter_mut().for_each(|w| *w /= total);
        } else {
            weights.fill(1.0 / count as f64);
        }
        Interests { topics, weights }
    }

    fn strongest(&self) -> u32 {
        let best = (0..self.topics.len()).max_by(|&a, &b| self.weights[a].total_cmp(&self.weights[b]));
        self.topics[best.unwrap_or(0)]
    }

    /// A topic drawn by weight.
    fn pick(&self, rng: &mut ChaCha8Rng) -> u32 {
        let mut u: f64 = rng.random();
        for (&topic, &weight) in self.topics.iter().zip(&self.weights) {
            if u < weight {
                return topic;
            }
            u -= weight;
        }
        self.topics[self.topics.len() - 1]
    }

    /// Replaces one interest, keeping its weight, by a topic the user does not follow yet.
    fn drift(&mut self, n_topics: usize, rng: &mut ChaCha8Rng) {
        if self.topics.len() >= n_topics {
            return;
        }
        let slot = rng.random_range(0..self.topics.len());
        let mut topic = rng.random_range(0..n_topics as u32);
        while self.topics.contains(&topic) {
            topic = rng.random_range(0..n_topics as u32);
        }
        self.topics[slot] = topic;
    }
}

/// One drawn interaction.
struct SynthEvent {
    item: u32,
    rating: u8,
    timestamp: i64,
}

/// Draws one user's events at a time; only that user's state is held.
struct Simulator<'a> {
    config: &'a SynthConfig,
    catalogue: &'a Catalogue,
    extra_events: Geometric,
    gap: Exp<f64>,
    rating_noise: Normal<f64>,
    interests: Interests,
    seen: HashSet<u32>,
    clock: i64,
}

impl<'a> Simulator<'a> {
    fn new(config: &'a SynthConfig, catalogue: &'a Catalogue) -> Self {
        // The geometric tail has mean (1 - p) / p = events_per_user - MIN_EVENTS_PER_USER.
        let p = 1.0 / (config.events_per_user - MIN_EVENTS_PER_USER + 1) as f64;
        Simulator {
            config,
            catalogue,
            extra_events: Geometric::new(p).expect("validated: p is in (0, 1]"),
            gap: Exp::new(1.0 / MEAN_GAP_SECONDS).expect("a positive constant rate"),
            rating_noise: Normal::new(0.0, RATING_NOISE_SD).expect("a positive constant deviation"),
            interests: Interests { topics: Vec::new(), weights: Vec::new() },
            seen: HashSet::new(),
            clock: 0,
        }
    }

    /// Resets the state for a new user; returns the segment, their initially strongest topic.
    fn start_user(&mut self, rng: &mut ChaCha8Rng) -> u32 {
        let count = rng.random_range(self.config.interests_per_user.clone());
        self.interests = Interests::draw(count, self.config.topics, rng);
        self.seen.clear();
        self.clock = START_TIME + rng.random_range(0..START_SPREAD_SECONDS);
        self.interests.strongest()
    }

    fn sequence_length(&self, rng: &mut ChaCha8Rng) -> u64 {
        MIN_EVENTS_PER_USER as u64 + self.extra_events.sample(rng)
    }

    /// The user's next event: maybe drift, pick a topic, then an item of it not seen before
    /// where a few retries find one, rated by how much the user cares about the topic now.
    fn next_event(&mut self, rng: &mut ChaCha8Rng) -> SynthEvent {
        if rng.random_bool(self.config.drift) {
            self.interests.drift(self.config.topics, rng);
        }
        let topic = if rng.random_bool(EXPLORE) {
            rng.random_range(0..self.config.topics as u32)
        } else {
            self.interests.pick(rng)
        };
        let mut item = self.catalogue.draw(topic, rng);
        for retry in 0..2 * REPEAT_RETRIES {
            if !self.seen.contains(&item) {
                break;
            }
            // Heavy users exhaust a topic's head first, so later retries ignore popularity.
            item = if retry < REPEAT_RETRIES {
                self.catalogue.draw(topic, rng)
            } else {
                self.catalogue.draw_any(topic, rng)
            };
        }
        self.seen.insert(item);
        let mean = if topic == self.interests.strongest() {
            RATING_STRONGEST
        } else if self.interests.topics.contains(&topic) {
            RATING_INTEREST
        } else {
            RATING_OTHER
        };
        let rating = (mean + self.rating_noise.sample(rng)).round().clamp(1.0, 5.0) as u8;
        self.clock += 1 + self.gap.sample(rng) as i64;
        SynthEvent { item, rating, timestamp: self.clock }
    }
}

/// A file written under `<name>.tmp`, renamed into place by [`Staged::rename`].
struct AtomicWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
}

/// A complete, synced temporary file waiting for its rename.
struct Staged {
    path: PathBuf,
    tmp: PathBuf,
}

impl AtomicWriter {
    fn create(path: PathBuf) -> Result<Self> {
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(AtomicWriter { path, out: BufWriter::with_capacity(BUFFER_BYTES, file), tmp })
    }

    fn line(&mut self, row: fmt::Arguments<'_>) -> Result<()> {
        writeln!(self.out, "{row}").map_err(|e| Error::io(&self.tmp, e))
    }

    fn sync(self) -> Result<Staged> {
        let AtomicWriter { path, tmp, out } = self;
        let file = out.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        Ok(Staged { path, tmp })
    }
}

impl Staged {
    fn rename(self) -> Result<PathBuf> {
        fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row of `synth.inter`.
    struct Row {
        user: String,
        item: String,
        rating: f64,
        timestamp: i64,
    }

    /// Generated files plus an ad-hoc parse of them (the RecBole loader lives elsewhere).
    struct Generated {
        dir: tempfile::TempDir,
        summary: SynthSummary,
        rows: Vec<Row>,
        /// Item id → (title words, tags).
        items: HashMap<String, (Vec<String>, Vec<String>)>,
        segments: HashMap<String, u32>,
        topics: HashMap<String, u32>,
    }

    impl Generated {
        fn new(config: &SynthConfig) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let summary = write_synth(config, dir.path()).unwrap();
            let rows =
                body(&dir.path().join(INTER_FILE), "user_id:token\titem_id:token\trating:float\ttimestamp:float")
                    .iter()
                    .map(|f| Row {
                        user: f[0].clone(),
                        item: f[1].clone(),
                        rating: f[2].parse().unwrap(),
                        timestamp: f[3].parse().unwrap(),
                    })
                    .collect();
            let items = body(&dir.path().join(ITEM_FILE), "item_id:token\ttitle:token_seq\ttags:token_seq")
                .into_iter()
                .map(|f| {
                    let split = |s: &str| -> Vec<String> { s.split(' ').map(str::to_string).collect() };
                    (f[0].clone(), (split(&f[1]), split(&f[2])))
                })
                .collect();
            let segments = body(&dir.path().join(USER_FILE), "user_id:token\tsegment:token")
                .into_iter()
                .map(|f| (f[0].clone(), f[1].strip_prefix("seg").unwrap().parse().unwrap()))
                .collect();
            let topics = read_topics(dir.path()).unwrap();
            Generated { dir, summary, rows, items, segments, topics }
        }

        /// Each user's events in order, as (topic, rating).
        fn sequences(&self) -> HashMap<&str, Vec<(u32, f64)>> {
            let mut sequences: HashMap<&str, Vec<(u32, f64)>> = HashMap::new();
            for r in &self.rows {
                sequences.entry(&r.user).or_default().push((self.topics[&r.item], r.rating));
            }
            sequences
        }
    }

    /// Checks the header line and splits the rest of a tab-separated file into fields.
    fn body(path: &Path, header: &str) -> Vec<Vec<String>> {
        let text = fs::read_to_string(path).unwrap();
        assert!(text.ends_with('\n'), "{} lacks a final newline", path.display());
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(header), "{}", path.display());
        let width = header.split('\t').count();
        lines
            .map(|line| {
                let fields: Vec<String> = line.split('\t').map(str::to_string).collect();
                assert_eq!(fields.len(), width, "{}: {line:?}", path.display());
                fields
            })
            .collect()
    }

    /// Counts of each topic, most frequent first.
    fn ranked(topics: impl Iterator<Item = u32>) -> Vec<(u32, usize)> {
        let mut counts: HashMap<u32, usize> = HashMap::new();
        topics.for_each(|t| *counts.entry(t).or_default() += 1);
        let mut ranked: Vec<_> = counts.into_iter().collect();
        ranked.sort_by_key(|&(t, n)| (std::cmp::Reverse(n), t));
        ranked
    }

    fn no_drift() -> SynthConfig {
        SynthConfig { drift: 0.0, ..SynthConfig::default() }
    }

    #[test]
    fn one_seed_gives_identical_bytes_and_another_seed_differs() {
        let read = |seed| {
            let dir = tempfile::tempdir().unwrap();
            write_synth(&SynthConfig { seed, ..SynthConfig::default() }, dir.path()).unwrap();
            [INTER_FILE, ITEM_FILE, USER_FILE, TOPICS_FILE].map(|f| fs::read(dir.path().join(f)).unwrap())
        };
        let (first, again, other) = (read(7), read(7), read(8));
        assert!(first == again, "same seed, different bytes");
        for (a, b) in first.iter().zip(&other) {
            assert_ne!(a, b);
        }
    }

    #[test]
    fn counts_formats_and_clock_are_as_configured() {
        let config = SynthConfig::default();
        let g = Generated::new(&config);
        assert_eq!((g.summary.items, g.summary.users), (config.items, config.users));
        assert_eq!(g.summary.events, g.rows.len() as u64);
        assert_eq!(g.summary.files.len(), 4);
        assert!(g.summary.files.iter().all(|f| f.exists()));
        let names: Vec<_> = fs::read_dir(g.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert_eq!((g.items.len(), g.segments.len(), g.topics.len()), (config.items, config.users, config.items));

        let sequences: HashMap<&str, Vec<&Row>> = g.rows.iter().fold(HashMap::new(), |mut m, r| {
            m.entry(r.user.as_str()).or_default().push(r);
            m
        });
        assert_eq!(sequences.len(), config.users);
        for events in sequences.values() {
            assert!(events.len() >= MIN_EVENTS_PER_USER);
            assert!(events.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
        }
        let mean = g.rows.len() as f64 / config.users as f64;
        assert!((mean - config.events_per_user as f64).abs() < 0.15 * config.events_per_user as f64, "mean {mean}");
        assert!(g.rows.iter().all(|r| (1.0..=5.0).contains(&r.rating) && r.rating.fract() == 0.0));
        assert!(g.rows.iter().all(|r| g.items.contains_key(&r.item) && g.segments.contains_key(&r.user)));
        for (title, tags) in g.items.values() {
            assert!((2..=4).contains(&title.len()) && (2..=4).contains(&tags.len()), "{title:?} {tags:?}");
            assert!(title.iter().chain(tags).all(|w| w.len() >= 4 && w.chars().all(|c| c.is_ascii_alphabetic())));
        }
        let mut pairs: Vec<(&str, &str)> = g.rows.iter().map(|r| (r.user.as_str(), r.item.as_str())).collect();
        let total = pairs.len();
        pairs.sort_unstable();
        pairs.dedup();
        assert!(total - pairs.len() < total / 50, "{} repeated events of {total}", total - pairs.len());
    }

    #[test]
    fn users_stay_within_their_interests_and_rate_the_strongest_highest() {
        let config = no_drift();
        let g = Generated::new(&config);
        let (mut covered, mut total, mut segment_is_mode) = (0, 0, 0);
        let (mut strongest, mut others) = ((0.0, 0), (0.0, 0));
        for (user, events) in g.sequences() {
            let ranked = ranked(events.iter().map(|e| e.0));
            covered += ranked.iter().take(*config.interests_per_user.end()).map(|r| r.1).sum::<usize>();
            total += events.len();
            segment_is_mode += usize::from(g.segments[user] == ranked[0].0);
            for &(topic, rating) in &events {
                let side = if topic == g.segments[user] { &mut strongest } else { &mut others };
                *side = (side.0 + rating, side.1 + 1);
            }
        }
        assert!(covered as f64 > 0.9 * total as f64, "{covered} of {total} events in the top topics");
        assert!(segment_is_mode as f64 > 0.8 * config.users as f64, "{segment_is_mode} users");
        let (strongest, others) = (strongest.0 / strongest.1 as f64, others.0 / others.1 as f64);
        assert!(strongest > others + 0.5, "mean rating {strongest} on the strongest topic, {others} elsewhere");
    }

    #[test]
    fn consecutive_items_share_topics_far_more_than_chance() {
        let config = SynthConfig::default();
        let g = Generated::new(&config);
        let (mut same, mut pairs) = (0, 0);
        for events in g.sequences().values() {
            same += events.windows(2).filter(|w| w[0].0 == w[1].0).count();
            pairs += events.len() - 1;
        }
        let chance = 1.0 / config.topics as f64;
        assert!(same as f64 / pairs as f64 > 3.0 * chance, "{same} of {pairs} consecutive pairs share a topic");
    }

    #[test]
    fn drift_moves_interests_over_time() {
        let modal_kept = |drift| {
            let g = Generated::new(&SynthConfig { drift, events_per_user: 80, ..SynthConfig::default() });
            let sequences = g.sequences();
            let kept = sequences
                .values()
                .filter(|events| {
                    let quarter = events.len() / 4;
                    let first = ranked(events[..quarter].iter().map(|e| e.0))[0].0;
                    let last = ranked(events[events.len() - quarter..].iter().map(|e| e.0))[0].0;
                    first == last
                })
                .count();
            kept as f64 / sequences.len() as f64
        };
        let (steady, drifting) = (modal_kept(0.0), modal_kept(0.05));
        assert!(steady > 0.75 && drifting < steady - 0.3, "favourite topic kept: {steady} steady, {drifting} drifting");
    }

    #[test]
    fn text_and_popularity_follow_topics() {
        let g = Generated::new(&SynthConfig::default());
        let mut tag_topics: HashMap<&str, Vec<u32>> = HashMap::new();
        for (id, (_, tags)) in &g.items {
            tags.iter().for_each(|t| tag_topics.entry(t).or_default().push(g.topics[id]));
        }
        let (on_topic, uses) = tag_topics
            .values()
            .fold((0, 0), |(on, all), topics| (on + ranked(topics.iter().copied())[0].1, all + topics.len()));
        assert!(on_topic as f64 > 0.8 * uses as f64, "{on_topic} of {uses} tag uses in the tag's main topic");

        let mut counts: Vec<usize> = g
            .rows
            .iter()
            .fold(HashMap::<&str, usize>::new(), |mut m, r| {
                *m.entry(&r.item).or_default() += 1;
                m
            })
            .into_values()
            .collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let head: usize = counts.iter().take(g.items.len() / 10).sum();
        assert!(head as f64 > 0.3 * g.rows.len() as f64, "the top 10% of items have {head} of {} events", g.rows.len());
    }

    #[test]
    fn impossible_settings_are_refused() {
        let base = SynthConfig::default();
        let bad = [
            SynthConfig { items: 0, ..base.clone() },
            SynthConfig { users: 0, ..base.clone() },
            SynthConfig { topics: 0, ..base.clone() },
            SynthConfig { topics: 2000, ..base.clone() },
            SynthConfig { events_per_user: 4, ..base.clone() },
            SynthConfig { tags_per_topic: 0, ..base.clone() },
            SynthConfig { words_per_topic: usize::MAX, ..base.clone() },
            SynthConfig { interests_per_user: 0..=2, ..base.clone() },
            SynthConfig { interests_per_user: RangeInclusive::new(3, 2), ..base.clone() },
            SynthConfig { interests_per_user: 1..=11, ..base.clone() },
            SynthConfig { drift: 1.5, ..base.clone() },
            SynthConfig { drift: f64::NAN, ..base.clone() },
        ];
        let dir = tempfile::tempdir().unwrap();
        for config in bad {
            let err = write_synth(&config, dir.path()).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{config:?}: {err}");
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_malformed_topics_file_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(TOPICS_FILE), "item_id\ttopic\ni1\t3\ni2\tthree\n").unwrap();
        let err = read_topics(dir.path()).unwrap_err().to_string();
        assert!(err.contains("synth.topics:3:") && err.contains("\"three\""), "{err}");
        for bad_header in ["i1\t3\n", ""] {
            fs::write(dir.path().join(TOPICS_FILE), bad_header).unwrap();
            assert!(read_topics(dir.path()).unwrap_err().to_string().contains("synth.topics:1: expected the header"));
        }
    }
}
