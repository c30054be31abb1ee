//! The one beam search over semantic IDs. **Constrained** (what serving and evaluation use), it
//! expands only the prefix trie's legal children of a beam, so every result is a real item.
//! **Free**, it expands every code, so it shows what the model prefers with no trie; alignment's
//! format reward and `onerec eval --unconstrained` measure how often that is a real item. The
//! search knows nothing of neural networks: a model plugs in through [`CodeStepper`], and tests
//! drive it with a fake one.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::ItemIdx;
use crate::tokenizer::Code;
use crate::tokenizer::trie::{PrefixTrie, ROOT};

/// What beam search needs from a model. Stateful, so that a model can keep a KV cache per beam and
/// reorder it by `parents` when beams are re-selected. Several searches (one per user of a batch)
/// run in lock-step: their rows are laid out search after search.
pub trait CodeStepper {
    /// Scores ID position 0: one row per search.
    fn start(&mut self);
    /// Row `i` now continues row `parents[i]` of the previous position with code `codes[i]`; a row
    /// belongs to the search of its parent, and rows stay grouped by search. Scores the next
    /// position.
    fn step(&mut self, parents: &[usize], codes: &[Code]);
    /// The current rows' log-probabilities over the codes of the position last scored, on the
    /// host (`rows × vocabulary`, row-major).
    fn log_probs(&mut self) -> Vec<f32>;
    /// Each search's best children of the current rows. By default the log-probabilities come to
    /// the host and [`select_on_host`] picks there; a model on a GPU picks on the device instead,
    /// so that only the survivors come back.
    fn select(&mut self, frontier: &Frontier) -> Vec<Vec<Candidate>> {
        select_on_host(frontier, &self.log_probs())
    }
}

/// Where a batch of searches stands before a selection: its rows (the prefixes kept so far), which
/// rows belong to which search, and what each search may expand.
pub struct Frontier<'a> {
    pub trie: &'a PrefixTrie,
    pub rows: &'a [Candidate],
    /// Search `g`'s rows are `rows[ranges[g]]`.
    pub ranges: &'a [std::ops::Range<usize>],
    pub searches: &'a [Search<'a>],
}

/// Whether the search keeps to IDs that exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decoding {
    /// Only prefixes of real items' IDs are expanded: every result is an item.
    #[default]
    Constrained,
    /// Every code is expanded: results may name no item.
    Free,
}

/// Settings of the search.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeamConfig {
    /// Prefixes kept after each step, and so the most IDs returned.
    pub beam: usize,
    pub decoding: Decoding,
}

/// One search of a batch: its width, the items it must not return (e.g. the user's history), and
/// whether it keeps to the trie.
#[derive(Clone, Copy)]
pub struct Search<'a> {
    pub beam: usize,
    pub excluded: &'a Exclusion,
    pub decoding: Decoding,
}

/// Items a search must not return, as the sorted positions of their trie leaves. Whole subtrees
/// holding nothing else are pruned at every level, so the beam never spends its width on prefixes
/// that lead only to excluded items, and a search returns `min(beam, items left)` items.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exclusion {
    leaves: Vec<u32>,
}

impl Exclusion {
    /// Excludes the items with these semantic IDs (IDs not in the trie are ignored).
    pub fn new<'i>(trie: &PrefixTrie, ids: impl IntoIterator<Item = &'i [Code]>) -> Self {
        let mut leaves: Vec<u32> =
            ids.into_iter().filter_map(|id| trie.leaf(id)).map(|leaf| trie.leaf_range(leaf).start).collect();
        leaves.sort_unstable();
        leaves.dedup();
        Exclusion { leaves }
    }

    /// The items either excludes.
    pub fn union(&self, other: &Exclusion) -> Exclusion {
        let mut leaves = [self.leaves.as_slice(), &other.leaves].concat();
        leaves.sort_unstable();
        leaves.dedup();
        Exclusion { leaves }
    }

    /// The excluded items' leaf positions, sorted.
    pub fn leaves(&self) -> &[u32] {
        &self.leaves
    }

    /// Whether every item under `node` is excluded: a count of excluded leaves in its range.
    pub fn covers(&self, trie: &PrefixTrie, node: u32) -> bool {
        let range = trie.leaf_range(node);
        let below = self.leaves.partition_point(|&l| l < range.end) - self.leaves.partition_point(|&l| l < range.start);
        below == range.len()
    }
}

impl Candidate {
    /// The order [`beam_search`] ranks candidates in, best first: see [`Ranked`].
    pub fn rank_order(&self, other: &Self) -> Ordering {
        descending(self.log_prob, other.log_prob)
            .then(self.node.cmp(&other.node))
            .then(self.parent.cmp(&other.parent))
            .then(self.code.cmp(&other.code))
    }
}

/// One decoded semantic ID.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// The item the ID names: always `Some` under constrained decoding.
    pub item: Option<ItemIdx>,
    /// Sum of the log-probabilities of the ID's codes.
    pub log_prob: f32,
    /// What the hypothesis ranks by: `log_prob` as the search leaves it; a recommender may add
    /// evidence of its own about the item (see [`crate::generator::recommend`]).
    pub score: f32,
    pub id: Vec<Code>,
}

/// The node of a free search's prefix that has left the trie (it names no item's prefix).
pub const OFF_TRIE: u32 = u32::MAX;

/// An extension of a beam: the row it extends, the trie node it reaches ([`OFF_TRIE`] if none),
/// the code that led there, and its score. A search's rows are the candidates it kept.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub parent: usize,
    pub node: u32,
    pub code: Code,
    pub log_prob: f32,
}

/// Decodes up to `config.beam` distinct IDs, none of them an `excluded` item (e.g. the user's
/// history), best first; ties go to the lexicographically smaller ID. The model is started once and stepped
/// once per further ID position, with at most `config.beam` rows. Non-finite log-probabilities never
/// panic: `-inf` ranks as such and NaN ranks below everything.
pub fn beam_search(
    stepper: &mut impl CodeStepper,
    trie: &PrefixTrie,
    config: &BeamConfig,
    excluded: &Exclusion,
) -> Vec<Hypothesis> {
    let search = Search { beam: config.beam, excluded, decoding: config.decoding };
    beam_search_batch(stepper, trie, &[search]).pop().unwrap_or_default()
}

/// Runs several searches in lock-step, so that the model steps once per ID position for all of
/// them (how concurrent requests share a forward pass). Each search gets what [`beam_search`] would
/// give it alone.
pub fn beam_search_batch(
    stepper: &mut impl CodeStepper,
    trie: &PrefixTrie,
    searches: &[Search],
) -> Vec<Vec<Hypothesis>> {
    let depth = trie.depth();
    if searches.iter().all(|s| s.beam == 0) || trie.is_empty() || depth == 0 {
        return vec![Vec::new(); searches.len()];
    }
    // Row `g` of the first call is search `g`'s root; `ranges[g]` are its rows in `beams`.
    let mut beams: Vec<Candidate> =
        (0..searches.len()).map(|g| Candidate { parent: g, node: ROOT, code: 0, log_prob: 0.0 }).collect();
    let mut ranges: Vec<std::ops::Range<usize>> = (0..searches.len()).map(|g| g..g + 1).collect();
    let mut next_beams = Vec::new();
    // The codes chosen so far by each row (`rows × level`), and the buffer for the next level's.
    let mut ids = Vec::new();
    let mut next_ids = Vec::new();
    let mut parents = Vec::new();
    let mut codes = Vec::new();
    stepper.start();
    for level in 0..depth {
        next_beams.clear();
        next_ids.clear();
        let best = stepper.select(&Frontier { trie, rows: &beams, ranges: &ranges, searches });
        for (candidates, range) in best.iter().zip(&mut ranges) {
            let first = next_beams.len();
            for c in candidates {
                next_ids.extend_from_slice(&ids[c.parent * level..][..level]);
                next_ids.push(c.code);
            }
            next_beams.extend_from_slice(candidates);
            *range = first..next_beams.len();
        }
        std::mem::swap(&mut ids, &mut next_ids);
        std::mem::swap(&mut beams, &mut next_beams);
        if level + 1 < depth {
            if beams.is_empty() {
                break;
            }
            parents.clear();
            parents.extend(beams.iter().map(|b| b.parent));
            codes.clear();
            codes.extend(beams.iter().map(|b| b.code));
            stepper.step(&parents, &codes);
        }
    }
    ranges
        .iter()
        .map(|range| {
            range
                .clone()
                .map(|row| Hypothesis {
                    item: (beams[row].node != OFF_TRIE).then(|| trie.item(beams[row].node)).flatten(),
                    log_prob: beams[row].log_prob,
                    score: beams[row].log_prob,
                    id: ids[row * depth..][..depth].to_vec(),
                })
                .collect()
        })
        .collect()
}

/// Each search's best children, from the rows' log-probabilities on the host (`rows ×
/// vocabulary`). Searches are independent: each picks on its own thread.
pub fn select_on_host(frontier: &Frontier, log_probs: &[f32]) -> Vec<Vec<Candidate>> {
    let vocab = log_probs.len() / frontier.rows.len().max(1);
    assert_eq!(vocab * frontier.rows.len(), log_probs.len(), "the model must return one row per beam");
    frontier
        .searches
        .par_iter()
        .zip(frontier.ranges.par_iter())
        .map(|(search, range)| best_children(frontier.trie, frontier.rows, range.clone(), log_probs, vocab, search))
        .collect()
}

/// The `search.beam` best children of the beams in `rows` (the legal ones when constrained, every
/// code when free), best first, each scored by its beam's log-prob plus the model's for its code.
/// Children in the trie with only excluded items below are left out.
///
/// A bounded heap keeps the best so far, its worst on top, so a child that cannot beat the worst
/// of a full heap costs one comparison: at beam 256 over a million items a step offers about
/// 65,000 children per search, and sorting or partitioning all of them (and checking each one
/// against the exclusions) took most of the search's time. Exclusions are checked only for the
/// children that would enter, which leaves the same set.
fn best_children(
    trie: &PrefixTrie,
    beams: &[Candidate],
    rows: std::ops::Range<usize>,
    log_probs: &[f32],
    vocab: usize,
    search: &Search,
) -> Vec<Candidate> {
    if search.beam == 0 {
        return Vec::new();
    }
    let mut best = BinaryHeap::with_capacity(search.beam + 1);
    for parent in rows {
        let beam = &beams[parent];
        let row = &log_probs[parent * vocab..][..vocab];
        let mut offer = |node: u32, code: Code| {
            let candidate = Ranked(Candidate { parent, node, code, log_prob: beam.log_prob + row[code as usize] });
            let enters = best.len() < search.beam || best.peek().is_some_and(|worst| candidate < *worst);
            if enters && (node == OFF_TRIE || !search.excluded.covers(trie, node)) {
                best.push(candidate);
                if best.len() > search.beam {
                    best.pop();
                }
            }
        };
        match search.decoding {
            Decoding::Constrained => {
                for (node, &code) in trie.children(beam.node).zip(trie.legal_codes(beam.node)) {
                    offer(node, code);
                }
            }
            Decoding::Free => {
                for code in 0..vocab as Code {
                    let node = if beam.node == OFF_TRIE { None } else { trie.child(beam.node, code) };
                    offer(node.unwrap_or(OFF_TRIE), code);
                }
            }
        }
    }
    best.into_sorted_vec().into_iter().map(|Ranked(c)| c).collect()
}

/// A candidate ordered by rank, best first: log-prob, then the trie node (breadth-first
/// numbering makes node order the lexicographic order of the paths), then, among prefixes that
/// left the trie, the earlier parent and the smaller code. A total order, so the kept set does
/// not depend on the order children are offered in.
struct Ranked(Candidate);

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.rank_order(&other.0)
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

/// Orders log-probabilities best first and NaN last: a total order, so a broken model output can
/// neither panic the selection nor win it.
fn descending(a: f32, b: f32) -> Ordering {
    a.is_nan().cmp(&b.is_nan()).then_with(|| b.partial_cmp(&a).unwrap_or(Ordering::Equal))
}

/// The reference for tests: scores every legal ID by walking the whole trie, `log_probs(prefix)`
/// giving the next code's log-probabilities after `prefix`, and ranks them as [`beam_search`] does.
#[cfg(test)]
pub fn exhaustive_search(
    log_probs: &dyn Fn(&[Code]) -> Vec<f32>,
    trie: &PrefixTrie,
    excluded: &dyn Fn(ItemIdx) -> bool,
) -> Vec<Hypothesis> {
    let mut found = Vec::new();
    let mut stack = vec![(ROOT, Vec::new(), 0.0f32)];
    while let Some((node, id, log_prob)) = stack.pop() {
        match trie.item(node) {
            Some(item) if !excluded(item) => found.push(Hypothesis { item: Some(item), log_prob, score: log_prob, id }),
            Some(_) => {}
            None => {
                let row = log_probs(&id);
                for (child, &code) in trie.children(node).zip(trie.legal_codes(node)) {
                    let mut longer = id.clone();
                    longer.push(code);
                    stack.push((child, longer, log_prob + row[code as usize]));
                }
            }
        }
    }
    found.sort_by(|a, b| descending(a.log_prob, b.log_prob).then_with(|| a.id.cmp(&b.id)));
    found
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    use super::*;

    /// A model as a pure function of the prefix: log-probabilities of the next code.
    type Model<'a> = &'a dyn Fn(&[Code]) -> Vec<f32>;

    /// Serves prefix models, one per search, through the stateful interface. It tracks each row's
    /// search and prefix from `parents` and `codes` as a KV-cached model would, so wrong bookkeeping
    /// gives wrong scores.
    struct FakeStepper<'a> {
        models: Vec<Model<'a>>,
        /// Each row's search and prefix.
        prefixes: Vec<(usize, Vec<Code>)>,
        starts: usize,
        /// Rows of each `step` call.
        step_rows: Vec<usize>,
    }

    impl<'a> FakeStepper<'a> {
        fn new(model: Model<'a>) -> Self {
            Self::batch(vec![model])
        }

        fn batch(models: Vec<Model<'a>>) -> Self {
            FakeStepper { models, prefixes: Vec::new(), starts: 0, step_rows: Vec::new() }
        }
    }

    impl CodeStepper for FakeStepper<'_> {
        fn start(&mut self) {
            self.starts += 1;
            self.prefixes = (0..self.models.len()).map(|g| (g, Vec::new())).collect();
        }

        fn step(&mut self, parents: &[usize], codes: &[Code]) {
            assert_eq!(parents.len(), codes.len());
            self.step_rows.push(parents.len());
            self.prefixes = parents
                .iter()
                .zip(codes)
                .map(|(&p, &c)| (self.prefixes[p].0, [&self.prefixes[p].1[..], &[c]].concat()))
                .collect();
            assert!(self.prefixes.windows(2).all(|w| w[0].0 <= w[1].0), "rows stay grouped by search");
        }

        fn log_probs(&mut self) -> Vec<f32> {
            self.prefixes.iter().flat_map(|(g, p)| (self.models[*g])(p)).collect()
        }
    }

    /// Beam search through a [`FakeStepper`], checking it started once and stepped once per further
    /// position with at most `beam` rows (or stopped early because everything left is excluded).
    fn search(model: Model, trie: &PrefixTrie, beam: usize, excluded: &dyn Fn(ItemIdx) -> bool) -> Vec<Hypothesis> {
        let mut stepper = FakeStepper::new(model);
        let found = beam_search(
            &mut stepper,
            trie,
            &BeamConfig { beam, decoding: Decoding::Constrained },
            &exclusion(trie, excluded),
        );
        assert_eq!(stepper.starts, 1);
        assert!(stepper.step_rows.len() < trie.depth());
        assert!(found.is_empty() || stepper.step_rows.len() == trie.depth() - 1, "{:?}", stepper.step_rows);
        assert!(stepper.step_rows.iter().all(|&rows| (1..=beam).contains(&rows)), "{:?}", stepper.step_rows);
        found
    }

    /// The item of a constrained search's hypothesis, which always names one.
    fn item(h: &Hypothesis) -> ItemIdx {
        h.item.expect("constrained decoding names an item")
    }

    fn nothing(_: ItemIdx) -> bool {
        false
    }

    /// Every (ID, item) of the trie, by walking it.
    fn all_ids(trie: &PrefixTrie, from: u32) -> Vec<(Vec<Code>, ItemIdx)> {
        let mut found = Vec::new();
        let mut stack = vec![(from, Vec::new())];
        while let Some((node, id)) = stack.pop() {
            match trie.item(node) {
                Some(item) => found.push((id, item)),
                None => stack.extend(trie.children(node).zip(trie.legal_codes(node)).map(|(child, &code)| {
                    let mut longer = id.clone();
                    longer.push(code);
                    (child, longer)
                })),
            }
        }
        found
    }

    /// The exclusion of the items `excluded` picks.
    fn exclusion(trie: &PrefixTrie, excluded: &dyn Fn(ItemIdx) -> bool) -> Exclusion {
        let ids: Vec<Vec<Code>> =
            all_ids(trie, ROOT).into_iter().filter(|(_, i)| excluded(*i)).map(|(id, _)| id).collect();
        Exclusion::new(trie, ids.iter().map(Vec::as_slice))
    }

    /// A deterministic model: log-softmax of Gaussian logits seeded by `seed` and the prefix, over
    /// `vocab[prefix.len()]` codes. Along `favourite`'s path its next code gets nearly all the mass.
    fn random_model(seed: u64, vocab: Vec<usize>, favourite: Option<Vec<Code>>) -> impl Fn(&[Code]) -> Vec<f32> {
        move |prefix| {
            let key = prefix.iter().fold(seed, |h, &c| (h ^ (c as u64 + 1)).wrapping_mul(0x0100_0000_01b3));
            let mut rng = ChaCha8Rng::seed_from_u64(key);
            let mut logits: Vec<f32> = (0..vocab[prefix.len()])
                .map(|_| 2.0 * Distribution::<f32>::sample(&StandardNormal, &mut rng))
                .collect();
            if let Some(f) = &favourite
                && f.starts_with(prefix)
            {
                logits[f[prefix.len()] as usize] += 40.0;
            }
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let log_sum = logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln() + max;
            logits.iter_mut().for_each(|l| *l -= log_sum);
            logits
        }
    }

    /// A random catalogue: distinct IDs of length 3–4 over 2–5 codes per level, in random item order.
    struct Case {
        ids: Vec<Vec<Code>>,
        vocab: Vec<usize>,
        trie: PrefixTrie,
    }

    fn random_case(rng: &mut ChaCha8Rng) -> Case {
        let vocab: Vec<usize> = (0..rng.random_range(3..=4)).map(|_| rng.random_range(2..=5)).collect();
        let mut seen = HashSet::new();
        let ids: Vec<Vec<Code>> = (0..rng.random_range(1..=60))
            .map(|_| vocab.iter().map(|&v| rng.random_range(0..v) as Code).collect())
            .filter(|id: &Vec<Code>| seen.insert(id.clone()))
            .collect();
        let refs: Vec<&[Code]> = ids.iter().map(Vec::as_slice).collect();
        let trie = PrefixTrie::build(&refs, vocab.len()).unwrap();
        Case { ids, vocab, trie }
    }

    fn assert_close(a: f32, b: f32) {
        assert!((a - b).abs() <= 1e-5, "{a} vs {b}");
    }

    /// Every hypothesis is a real item with its own ID and `reference`'s exact path log-prob; items
    /// are distinct and ranked best first.
    fn assert_legal_and_exact(found: &[Hypothesis], reference: &[Hypothesis], trie: &PrefixTrie) {
        let exact: HashMap<ItemIdx, f32> = reference.iter().map(|h| (item(h), h.log_prob)).collect();
        for h in found {
            assert_eq!(trie.find(&h.id), Some(item(h)), "{h:?}");
            assert_close(h.log_prob, exact[&item(h)]);
        }
        assert_eq!(found.iter().map(|h| h.item).collect::<HashSet<_>>().len(), found.len());
        assert!(found.windows(2).all(|w| descending(w[0].log_prob, w[1].log_prob).is_le()), "{found:?}");
    }

    #[test]
    fn a_beam_as_wide_as_the_catalogue_gives_the_exhaustive_ranking() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for seed in 0..40 {
            let case = random_case(&mut rng);
            let model = random_model(seed, case.vocab.clone(), None);
            let reference = exhaustive_search(&model, &case.trie, &nothing);
            let found = search(&model, &case.trie, case.trie.len() + rng.random_range(0..3), &nothing);
            assert_eq!(found.len(), reference.len());
            for (f, r) in found.iter().zip(&reference) {
                assert_eq!((f.item, &f.id), (r.item, &r.id));
                assert_close(f.log_prob, r.log_prob);
            }
        }
    }

    #[test]
    fn a_narrow_beam_finds_a_greedy_reachable_best_item() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for seed in 0..40 {
            let case = random_case(&mut rng);
            let best = rng.random_range(0..case.ids.len());
            let model = random_model(seed, case.vocab.clone(), Some(case.ids[best].clone()));
            let reference = exhaustive_search(&model, &case.trie, &nothing);
            assert_eq!(item(&reference[0]), best as ItemIdx);
            for beam in 1..=3 {
                let found = search(&model, &case.trie, beam, &nothing);
                assert_eq!(item(&found[0]), best as ItemIdx);
                assert_legal_and_exact(&found, &reference, &case.trie);
            }
        }
    }

    #[test]
    fn a_narrow_beam_returns_legal_distinct_items_with_their_exact_log_probs() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for seed in 0..40 {
            let case = random_case(&mut rng);
            let model = random_model(seed, case.vocab.clone(), None);
            let reference = exhaustive_search(&model, &case.trie, &nothing);
            let beam = rng.random_range(1..=case.trie.len());
            let found = search(&model, &case.trie, beam, &nothing);
            assert_eq!(found.len(), beam);
            assert_legal_and_exact(&found, &reference, &case.trie);
        }
    }

    #[test]
    fn a_model_that_prefers_illegal_codes_still_yields_only_legal_items() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for _ in 0..20 {
            let case = random_case(&mut rng);
            let trie = &case.trie;
            // All mass on illegal codes; legal ones get -inf, NaN or a vanishing log-prob.
            let model = |prefix: &[Code]| {
                let node = prefix.iter().try_fold(ROOT, |node, &c| trie.child(node, c)).unwrap();
                let legal = trie.legal_codes(node);
                let junk = [f32::NEG_INFINITY, f32::NAN, -1e30];
                (0..case.vocab[prefix.len()] as Code)
                    .map(|c| if legal.contains(&c) { junk[c as usize % junk.len()] } else { 0.0 })
                    .collect()
            };
            for beam in [1, 2, 5, trie.len()] {
                let found = search(&model, trie, beam, &nothing);
                assert_eq!(found.len(), beam.min(trie.len()));
                assert!(found.iter().all(|h| trie.find(&h.id) == Some(item(h))), "{found:?}");
                assert_eq!(found.iter().map(|h| h.item).collect::<HashSet<_>>().len(), found.len());
            }
        }
    }

    /// Every ID over the full code space of `vocab`, with the sum of `model`'s log-probabilities.
    fn every_code_path(model: Model, vocab: &[usize]) -> Vec<(Vec<Code>, f32)> {
        let mut paths = vec![(Vec::new(), 0.0f32)];
        for &v in vocab {
            paths = paths
                .into_iter()
                .flat_map(|(id, lp)| {
                    let row = model(&id);
                    (0..v as Code).map(move |c| ([&id[..], &[c]].concat(), lp + row[c as usize]))
                })
                .collect();
        }
        paths
    }

    #[test]
    fn free_decoding_as_wide_as_the_code_space_ranks_every_id_exactly() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for seed in 0..20 {
            let case = random_case(&mut rng);
            let model = random_model(seed, case.vocab.clone(), None);
            let mut reference = every_code_path(&model, &case.vocab);
            reference.sort_by(|a, b| descending(a.1, b.1));
            let config = BeamConfig { beam: reference.len(), decoding: Decoding::Free };
            let found = beam_search(&mut FakeStepper::new(&model), &case.trie, &config, &Exclusion::default());
            assert_eq!(found.len(), reference.len());
            for (f, (id, lp)) in found.iter().zip(&reference) {
                assert_eq!(&f.id, id);
                assert_close(f.log_prob, *lp);
                assert_eq!(f.item, case.trie.find(&f.id), "{f:?}");
            }
        }
    }

    #[test]
    fn free_decoding_follows_a_model_that_prefers_illegal_ids() {
        // Two items, [0, 0] and [1, 1]; the model puts its mass on [0, 1] and then [1, 0].
        let trie = PrefixTrie::build(&[&[0, 0][..], &[1, 1][..]], 2).unwrap();
        let model = |prefix: &[Code]| match prefix {
            [] => vec![-0.1, -2.3],
            [0] => vec![-3.0, -0.05],
            _ => vec![-0.05, -3.0],
        };
        let free = BeamConfig { beam: 4, decoding: Decoding::Free };
        let found = beam_search(&mut FakeStepper::new(&model), &trie, &free, &Exclusion::default());
        let ids: Vec<(&[Code], Option<ItemIdx>)> = found.iter().map(|h| (h.id.as_slice(), h.item)).collect();
        assert_eq!(ids, [(&[0, 1][..], None), (&[1, 0][..], None), (&[0, 0][..], Some(0)), (&[1, 1][..], Some(1))]);
        let constrained = BeamConfig { beam: 4, decoding: Decoding::Constrained };
        let legal = beam_search(&mut FakeStepper::new(&model), &trie, &constrained, &Exclusion::default());
        assert_eq!(legal.iter().map(|h| h.item).collect::<Vec<_>>(), [Some(0), Some(1)]);
    }

    #[test]
    fn nan_ranks_last_and_negative_infinity_just_above_it() {
        let ids: [&[Code]; 4] = [&[0, 0], &[0, 1], &[1, 0], &[1, 1]];
        let trie = PrefixTrie::build(&ids, 2).unwrap();
        let model = |prefix: &[Code]| match prefix {
            [] => vec![0.5f32.ln(); 2],
            [0] => vec![f32::NAN, f32::NEG_INFINITY],
            _ => vec![-1.0, -2.0],
        };
        let items = |found: Vec<Hypothesis>| found.iter().map(item).collect::<Vec<_>>();
        assert_eq!(items(search(&model, &trie, 4, &nothing)), [2, 3, 1, 0]);
        assert_eq!(items(exhaustive_search(&model, &trie, &nothing)), [2, 3, 1, 0]);
        assert_eq!(items(search(&model, &trie, 2, &nothing)), [2, 3]);
    }

    #[test]
    fn excluded_items_never_appear() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let every_third = |item: ItemIdx| item.is_multiple_of(3);
        for seed in 0..40 {
            let case = random_case(&mut rng);
            let model = random_model(seed, case.vocab.clone(), None);
            let reference = exhaustive_search(&model, &case.trie, &every_third);
            let wide = search(&model, &case.trie, case.trie.len(), &every_third);
            assert_eq!(wide, reference);
            let narrow = search(&model, &case.trie, rng.random_range(1..=4), &every_third);
            assert!(narrow.iter().all(|h| !every_third(item(h))), "{narrow:?}");
            assert_legal_and_exact(&narrow, &reference, &case.trie);
            assert!(search(&model, &case.trie, case.trie.len(), &|_| true).is_empty());
        }
    }

    #[test]
    fn the_model_is_stepped_once_per_further_level_with_at_most_beam_rows() {
        let case = random_case(&mut ChaCha8Rng::seed_from_u64(6));
        let model = random_model(6, case.vocab.clone(), None);
        for beam in [1, 2, 3, 100] {
            let mut stepper = FakeStepper::new(&model);
            beam_search(
                &mut stepper,
                &case.trie,
                &BeamConfig { beam, decoding: Decoding::Constrained },
                &Exclusion::default(),
            );
            assert_eq!(stepper.starts, 1);
            // Each step carries the kept prefixes: all of that length, or `beam` of them.
            let expected: Vec<usize> = (1..case.vocab.len())
                .map(|len| case.ids.iter().map(|id| &id[..len]).collect::<HashSet<_>>().len().min(beam))
                .collect();
            assert_eq!(stepper.step_rows, expected);
        }
        let mut stepper = FakeStepper::new(&model);
        assert!(
            beam_search(
                &mut stepper,
                &case.trie,
                &BeamConfig { beam: 0, decoding: Decoding::Constrained },
                &Exclusion::default()
            )
            .is_empty()
        );
        assert_eq!((stepper.starts, stepper.step_rows.len()), (0, 0));
    }

    #[test]
    fn a_batch_of_searches_gives_each_what_it_would_get_alone() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for seed in 0..20 {
            let case = random_case(&mut rng);
            let models: Vec<_> = (0..4).map(|g| random_model(seed * 10 + g, case.vocab.clone(), None)).collect();
            let every_other = |item: ItemIdx| !item.is_multiple_of(2);
            let beams = [rng.random_range(1..=case.trie.len()), 0, case.trie.len(), rng.random_range(1..=3)];
            let predicates: [&dyn Fn(ItemIdx) -> bool; 4] = [&nothing, &nothing, &every_other, &|_| true];
            let exclusions: Vec<Exclusion> = predicates.iter().map(|p| exclusion(&case.trie, p)).collect();
            let searches: Vec<Search> = beams
                .iter()
                .zip(&exclusions)
                .map(|(&beam, excluded)| Search { beam, excluded, decoding: Decoding::Constrained })
                .collect();
            let refs: Vec<Model> = models.iter().map(|m| m as Model).collect();
            let mut stepper = FakeStepper::batch(refs);
            let together = beam_search_batch(&mut stepper, &case.trie, &searches);
            assert_eq!(stepper.starts, 1);
            assert!(stepper.step_rows.len() < case.vocab.len(), "one step per further level at most");
            for (g, search) in searches.iter().enumerate() {
                let alone = beam_search(
                    &mut FakeStepper::new(&models[g]),
                    &case.trie,
                    &BeamConfig { beam: search.beam, decoding: Decoding::Constrained },
                    search.excluded,
                );
                assert_eq!(together[g], alone, "search {g}");
            }
            assert!(together[1].is_empty() && together[3].is_empty());
        }
    }

    #[test]
    fn an_exclusion_covers_exactly_the_subtrees_with_nothing_else() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for _ in 0..30 {
            let case = random_case(&mut rng);
            let keep = rng.random_range(2..=4);
            let excluded = |item: ItemIdx| !(item as usize).is_multiple_of(keep);
            let e = exclusion(&case.trie, &excluded);
            let mut nodes = vec![ROOT];
            let mut next = 0;
            while next < nodes.len() {
                nodes.extend(case.trie.children(nodes[next]));
                next += 1;
            }
            for node in nodes {
                let below = all_ids(&case.trie, node);
                assert_eq!(e.covers(&case.trie, node), below.iter().all(|(_, i)| excluded(*i)), "node {node}");
            }
        }
    }

    /// A model that loves one first code, all of whose items are excluded: without pruning the
    /// beam would fill with dead prefixes and come back short.
    #[test]
    fn excluded_subtrees_do_not_starve_the_beam() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for seed in 0..30 {
            let case = random_case(&mut rng);
            let favourite = case.ids[rng.random_range(0..case.ids.len())].clone();
            let model = random_model(seed, case.vocab.clone(), Some(favourite.clone()));
            let excluded = |item: ItemIdx| case.ids[item as usize][0] == favourite[0];
            let left = case.ids.iter().filter(|id| id[0] != favourite[0]).count();
            for beam in [1, 2, 3, 8] {
                let found = search(&model, &case.trie, beam, &excluded);
                assert_eq!(found.len(), beam.min(left), "beam {beam}");
                assert!(found.iter().all(|h| !excluded(item(h))));
            }
        }
    }
}
