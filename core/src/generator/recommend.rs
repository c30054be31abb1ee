//! Generating recommendations with a trained model: run the user's stream once, beam search over
//! semantic codes with the ID head, constrained to the IDs that exist, then rank the items found
//! by the product of the two experts.

use std::collections::HashSet;

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::data::{Event, ItemIdx, User};
use crate::decode::{Decoding, Exclusion, Hypothesis, Search, beam_search_batch};
use crate::generator::context::{UserContext, context_at};
use crate::generator::model::{Batch, HostDecoder, HostHead, IdDecoder, ModelConfig, OneRec};
use crate::generator::trend::TrendIndex;
use crate::tokenizer::Tokenizer;

/// A model ready to recommend, with the catalogue it was trained on.
#[derive(Clone, Copy)]
pub struct Recommender<'a> {
    pub model: &'a OneRec,
    pub config: &'a ModelConfig,
    pub tokenizer: &'a Tokenizer,
    pub device: &'a Device,
    /// What was popular when, for a model with the trend input ([`ModelConfig::trend`]).
    pub trend: Option<&'a TrendIndex>,
    /// The model's ID head prepared for the host ([`crate::generator::model::IdHead::prepare`],
    /// once per model): with it the beam steps the head on host buffers, which on the CPU is
    /// faster (see [`HostHead`]). `None` steps the tensor head: on a GPU, where the selection
    /// runs on the device, or for a model whose weights change between calls.
    pub host_head: Option<&'a HostHead>,
}

/// One user's share of a batched decode.
#[derive(Clone, Debug)]
pub struct DecodeRequest {
    pub context: UserContext,
    /// Beam width, and so the most items returned.
    pub beam: usize,
    /// Items never to return (e.g. the user's history). Sized by the history, not the catalogue.
    pub excluded: Exclusion,
    /// Constrained to real items (how recommendations are made) or free (to measure legality).
    pub decoding: Decoding,
}

impl Recommender<'_> {
    /// A constrained decode of up to `beam` items for the user, asked at `now`; items in
    /// `history` are left out when `exclude_history` is set.
    pub fn request(
        &self,
        user: &User,
        history: &[Event],
        now: i64,
        beam: usize,
        exclude_history: bool,
    ) -> DecodeRequest {
        let excluded = if exclude_history { self.exclusion(history) } else { Exclusion::default() };
        DecodeRequest { context: self.context(user, history, now), beam, excluded, decoding: Decoding::Constrained }
    }

    /// `request` searching only among `items` (e.g. those new to the catalogue), with `beam`:
    /// every other item is excluded too, so the search spends its width on their paths alone.
    /// Costs a pass over the catalogue's IDs.
    pub fn among(&self, request: &DecodeRequest, items: &[ItemIdx], beam: usize) -> DecodeRequest {
        let ids = &self.tokenizer.semantic_ids;
        let keep: HashSet<ItemIdx> = items.iter().copied().collect();
        let others = (0..ids.len() as ItemIdx).filter(|i| !keep.contains(i)).map(|i| ids.id_of(i));
        let excluded = Exclusion::new(ids.trie(), others).union(&request.excluded);
        DecodeRequest { beam, excluded, ..request.clone() }
    }

    /// The items of `history`, as the search leaves them out.
    pub fn exclusion(&self, history: &[Event]) -> Exclusion {
        let ids = &self.tokenizer.semantic_ids;
        Exclusion::new(ids.trie(), history.iter().map(|e| ids.id_of(e.item)))
    }

    /// The user's context as the model reads it, asked at `now`.
    pub fn context(&self, user: &User, history: &[Event], now: i64) -> UserContext {
        context_at(user, history, Some(now), self.tokenizer, &self.config.context, self.trend)
    }

    /// Scores for the evaluation protocol: the beam's items get their score, every other item
    /// −∞, so it ranks after the beam (and ties count against the target).
    pub fn scores(&self, user: &User, history: &[Event], now: i64, beam: usize) -> Vec<f32> {
        let mut scores = vec![f32::NEG_INFINITY; self.config.items];
        for h in self.recommend(user, history, now, beam, true) {
            if let Some(item) = h.item {
                scores[item as usize] = h.score;
            }
        }
        scores
    }

    /// Up to `beam` distinct items for the user at `now`, best first; items in `history` are left
    /// out when `exclude_history` is set. Every item is a real catalogue item.
    pub fn recommend(
        &self,
        user: &User,
        history: &[Event],
        now: i64,
        beam: usize,
        exclude_history: bool,
    ) -> Vec<Hypothesis> {
        self.recommend_batch(&[self.request(user, history, now, beam, exclude_history)]).pop().unwrap_or_default()
    }

    /// Decodes several users together: one stream pass for all of them, then one head step per
    /// ID position for all of their beams. Each user gets what [`Recommender::recommend`] would
    /// give them alone.
    ///
    /// The decode runs as one job on rayon's pool, whoever calls it. Called from a thread outside
    /// the pool (a server's decoding thread, the CLI's main thread), each of the hundreds of
    /// parallel tensor operations of a decode would otherwise be handed to a pool thread and
    /// waited for; those hand-offs took a quarter of a single request's time.
    pub fn recommend_batch(&self, requests: &[DecodeRequest]) -> Vec<Vec<Hypothesis>> {
        if requests.is_empty() {
            return Vec::new();
        }
        let contexts: Vec<UserContext> = requests.iter().map(|r| r.context.clone()).collect();
        let searches: Vec<Search> =
            requests.iter().map(|r| Search { beam: r.beam, excluded: &r.excluded, decoding: r.decoding }).collect();
        rayon::scope(|_| self.search(self.states(&contexts), &searches))
    }

    /// The searches of [`Recommender::recommend_batch`] from states already computed, one row
    /// per search, for a caller that holds them (alignment draws from the states it trains on).
    pub fn search(&self, states: Tensor<2>, searches: &[Search]) -> Vec<Vec<Hypothesis>> {
        let trie = self.tokenizer.semantic_ids.trie();
        let mut found = match self.host_head {
            Some(head) => {
                let rows = states.clone().into_data().try_into_vec::<f32>().expect("f32 states");
                beam_search_batch(&mut HostDecoder::new(head, rows), trie, searches)
            }
            None => beam_search_batch(&mut IdDecoder::new(self.model.head(), states.clone()), trie, searches),
        };
        self.rank(states, searches, &mut found);
        found
    }

    /// Orders each constrained search's items by the product of the model's two experts,
    /// `log π(ID) + score(item)` (see [`crate::generator::model`]). A free search keeps the
    /// search's order: its IDs need not name items.
    fn rank(&self, states: Tensor<2>, searches: &[Search], found: &mut [Vec<Hypothesis>]) {
        let rows: Vec<(usize, usize)> = found
            .iter()
            .enumerate()
            .filter(|(user, _)| searches[*user].decoding == Decoding::Constrained)
            .flat_map(|(user, hypotheses)| (0..hypotheses.len()).map(move |h| (user, h)))
            .collect();
        if rows.is_empty() {
            return;
        }
        let index = |v: Vec<i64>| {
            let len = v.len();
            Tensor::<1, Int>::from_data(TensorData::new(v, [len]), self.device)
        };
        let users = index(rows.iter().map(|&(u, _)| u as i64).collect());
        let items =
            index(rows.iter().map(|&(u, h)| found[u][h].item.expect("constrained IDs are items") as i64).collect());
        let scores = self.model.item_score(states, users, items);
        let scores = scores.into_data().try_to_vec::<f32>().expect("f32 scores");
        for (&(user, h), score) in rows.iter().zip(scores) {
            let hypothesis = &mut found[user][h];
            hypothesis.score = hypothesis.log_prob + score;
        }
        for (user, hypotheses) in found.iter_mut().enumerate() {
            if searches[user].decoding == Decoding::Constrained {
                hypotheses.sort_by(|a, b| b.score.total_cmp(&a.score));
            }
        }
    }

    /// The state each context's next item is generated from, `[contexts, d_model]`.
    pub fn states(&self, contexts: &[UserContext]) -> Tensor<2> {
        let batch = Batch::new(contexts, None, &self.tokenizer.semantic_ids, self.config, self.device);
        self.model.encode(&batch).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ItemIdx;
    use crate::decode::exhaustive_search;
    use crate::test_fixtures::tiny_setup;
    use crate::tokenizer::Code;

    #[test]
    fn beam_search_matches_exhaustive_search_over_teacher_forced_prefixes_and_is_always_legal() {
        let _rng = crate::test_fixtures::device_rng();
        let (dataset, tokenizer, config) = tiny_setup(24, 6, 30, 4);
        let ids = &tokenizer.semantic_ids;
        let device = Device::flex();
        device.seed(5);
        let model = config.init(&device);
        let host_head = model.host_head();
        let recommender = crate::test_fixtures::recommender(&model, &config, &tokenizer, &device, host_head.as_ref());
        for user in 0..3u32 {
            let history = &dataset.user_events(user)[..10];
            let got = recommender.recommend(&dataset.users[user as usize], history, 0, 24, false);
            let state = recommender.states(&[recommender.context(&dataset.users[user as usize], history, 0)]);
            let log_probs = |prefix: &[Code]| {
                let lp = model.head().next_log_probs(state.clone(), &[prefix.to_vec()]);
                lp.into_data().try_to_vec::<f32>().unwrap()
            };
            let want = exhaustive_search(&log_probs, ids.trie(), &|_| false);
            let item_scores = model.item_scores(state.clone()).into_data().try_to_vec::<f32>().unwrap();
            // A beam as wide as the catalogue finds every item with its exact probability, and the
            // slate is ordered by the product of experts, `log π(ID) + score(item)`.
            assert_eq!(got.len(), 24);
            for g in &got {
                let w = want.iter().find(|w| w.id == g.id).expect("the beam finds only what exists");
                assert_eq!(g.item, w.item);
                assert!((g.log_prob - w.log_prob).abs() < 1e-4, "{} vs {}", g.log_prob, w.log_prob);
                assert!(g.item.is_some() && ids.item_of(&g.id) == g.item, "every output is a real item");
                let expected = w.log_prob + item_scores[g.item.unwrap() as usize];
                assert!((g.score - expected).abs() < 1e-3, "{} vs {expected}", g.score);
            }
            assert!(got.windows(2).all(|pair| pair[0].score >= pair[1].score));
            // Excluding the history leaves it out of a narrower slate, which stays distinct.
            let slate = recommender.recommend(&dataset.users[user as usize], history, 0, 8, true);
            assert!(slate.iter().all(|h| history.iter().all(|e| Some(e.item) != h.item)));
            let distinct: std::collections::HashSet<Option<ItemIdx>> = slate.iter().map(|h| h.item).collect();
            assert_eq!(distinct.len(), slate.len());
        }
        // A user with no history still gets a full, legal slate.
        let cold = recommender.recommend(&dataset.users[0], &[], 0, 5, true);
        assert_eq!(cold.len(), 5);
        assert!(cold.iter().all(|h| h.item.is_some() && ids.item_of(&h.id) == h.item));
    }

    #[test]
    fn a_batch_of_users_gets_what_each_gets_alone() {
        let _rng = crate::test_fixtures::device_rng();
        let (dataset, tokenizer, config) = tiny_setup(24, 6, 30, 4);
        let device = Device::flex();
        device.seed(8);
        let model = config.init(&device);
        let host_head = model.host_head();
        let recommender = crate::test_fixtures::recommender(&model, &config, &tokenizer, &device, host_head.as_ref());
        // Different history lengths, beams and exclusions, a cold user, and a zero-width request.
        let cases = [(0u32, 12, 5, true), (1, 3, 24, false), (2, 0, 7, true), (3, 20, 0, true), (4, 29, 16, true)];
        let requests: Vec<DecodeRequest> = cases
            .iter()
            .map(|&(user, len, beam, exclude)| {
                recommender.request(&dataset.users[user as usize], &dataset.user_events(user)[..len], 0, beam, exclude)
            })
            .collect();
        let together = recommender.recommend_batch(&requests);
        for (&(user, len, beam, exclude), got) in cases.iter().zip(&together) {
            let alone = recommender.recommend(
                &dataset.users[user as usize],
                &dataset.user_events(user)[..len],
                0,
                beam,
                exclude,
            );
            assert_eq!(got.len(), alone.len(), "user {user}");
            for (g, a) in got.iter().zip(&alone) {
                assert_eq!((g.item, &g.id), (a.item, &a.id), "user {user}");
                assert!((g.log_prob - a.log_prob).abs() < 1e-4, "user {user}: {} vs {}", g.log_prob, a.log_prob);
            }
        }
        assert!(together[3].is_empty());
    }

    /// A search among some items returns those of them the history does not hold, each with the
    /// score the unrestricted search gives it.
    #[test]
    fn a_search_among_items_returns_only_them_with_their_full_search_scores() {
        let _rng = crate::test_fixtures::device_rng();
        let (dataset, tokenizer, config) = tiny_setup(24, 6, 30, 4);
        let device = Device::flex();
        device.seed(11);
        let model = config.init(&device);
        let host_head = model.host_head();
        let recommender = crate::test_fixtures::recommender(&model, &config, &tokenizer, &device, host_head.as_ref());
        let (user, history) = (&dataset.users[1], &dataset.user_events(1)[..6]);
        let everything = recommender.recommend(user, history, 0, 24, true);
        let seen = history[0].item;
        let among = [seen, (seen + 7) % 24, (seen + 13) % 24];
        let request = recommender.request(user, history, 0, 24, true);
        let got = recommender.recommend_batch(&[recommender.among(&request, &among, 8)]).pop().unwrap();
        let want: Vec<&Hypothesis> = everything.iter().filter(|h| among.contains(&h.item.unwrap())).collect();
        assert_eq!(got.len(), want.len(), "{got:?}");
        assert!(!got.iter().any(|h| h.item == Some(seen)), "the history stays excluded");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.item, w.item);
            assert!((g.score - w.score).abs() < 1e-4, "{} vs {}", g.score, w.score);
        }
    }
}
