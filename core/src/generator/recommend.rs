//! Generating recommendations with a trained model: encode the user once, then beam search over
//! semantic codes, constrained to the IDs that exist.

use burn::tensor::{Device, Tensor};

use crate::data::{Event, User};
use crate::decode::{CodeStepper, Decoding, Exclusion, Hypothesis, Search, beam_search_batch};
use crate::generator::context::{UserContext, build_context};
use crate::generator::model::{Batch, IncrementalDecoder, ModelConfig, OneRec};
use crate::tokenizer::{Code, Tokenizer};

/// A model ready to recommend, with the catalogue it was trained on.
#[derive(Clone, Copy)]
pub struct Recommender<'a> {
    pub model: &'a OneRec,
    pub config: &'a ModelConfig,
    pub tokenizer: &'a Tokenizer,
    pub device: &'a Device,
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
    /// A constrained decode of up to `beam` items for the user; items in `history` are left out
    /// when `exclude_history` is set.
    pub fn request(&self, user: &User, history: &[Event], beam: usize, exclude_history: bool) -> DecodeRequest {
        let ids = &self.tokenizer.semantic_ids;
        let excluded = if exclude_history {
            Exclusion::new(ids.trie(), history.iter().map(|e| ids.id_of(e.item)))
        } else {
            Exclusion::default()
        };
        DecodeRequest { context: self.context(user, history), beam, excluded, decoding: Decoding::Constrained }
    }

    /// The user's context as the model reads it.
    pub fn context(&self, user: &User, history: &[Event]) -> UserContext {
        build_context(user, history, self.tokenizer, &self.config.context)
    }

    /// Scores for the evaluation protocol: the beam's items get their log-probability, every
    /// other item −∞, so it ranks after the beam (and ties count against the target).
    pub fn scores(&self, user: &User, history: &[Event], beam: usize) -> Vec<f32> {
        let mut scores = vec![f32::NEG_INFINITY; self.config.items];
        for h in self.recommend(user, history, beam, true) {
            if let Some(item) = h.item {
                scores[item as usize] = h.log_prob;
            }
        }
        scores
    }

    /// Up to `beam` distinct items for the user, best first; items in `history` are left out
    /// when `exclude_history` is set. Every item is a real catalogue item.
    pub fn recommend(&self, user: &User, history: &[Event], beam: usize, exclude_history: bool) -> Vec<Hypothesis> {
        self.recommend_batch(&[self.request(user, history, beam, exclude_history)]).pop().unwrap_or_default()
    }

    /// Decodes several users together: one encoder pass for all of them, then one decoder step per
    /// ID position for all of their beams. Each user gets what [`Recommender::recommend`] would
    /// give them alone.
    pub fn recommend_batch(&self, requests: &[DecodeRequest]) -> Vec<Vec<Hypothesis>> {
        if requests.is_empty() {
            return Vec::new();
        }
        let contexts: Vec<UserContext> = requests.iter().map(|r| r.context.clone()).collect();
        let batch = Batch::new(&contexts, None, &self.tokenizer.semantic_ids, self.config, self.device);
        let memory = self.model.encode(&batch);
        let searches: Vec<Search> =
            requests.iter().map(|r| Search { beam: r.beam, excluded: &r.excluded, decoding: r.decoding }).collect();
        let mut stepper = ModelStepper::new(IncrementalDecoder::new(self.model, &memory), requests.len());
        beam_search_batch(&mut stepper, self.tokenizer.semantic_ids.trie(), &searches)
    }
}

/// Serves the incremental decoder to beam search. The search's rows (any number per user, grouped
/// by user) sit in the decoder's rectangular `[users, width]` slots; unused slots are padding whose
/// outputs are dropped.
struct ModelStepper<'m> {
    decoder: IncrementalDecoder<'m>,
    users: usize,
    /// The user of each row of the last call, and the row's slot among that user's `width`.
    rows: Vec<(usize, usize)>,
}

impl<'m> ModelStepper<'m> {
    fn new(decoder: IncrementalDecoder<'m>, users: usize) -> Self {
        ModelStepper { decoder, users, rows: Vec::new() }
    }
}

impl CodeStepper for ModelStepper<'_> {
    fn start(&mut self) -> Vec<f32> {
        self.rows = (0..self.users).map(|u| (u, 0)).collect();
        to_vec(self.decoder.start())
    }

    fn step(&mut self, parents: &[usize], codes: &[Code]) -> Vec<f32> {
        let mut counts = vec![0usize; self.users];
        let rows: Vec<(usize, usize)> = parents
            .iter()
            .map(|&p| {
                let user = self.rows[p].0;
                counts[user] += 1;
                (user, counts[user] - 1)
            })
            .collect();
        let width = counts.iter().copied().max().unwrap_or(1).max(1);
        let mut slot_parents = vec![0usize; self.users * width];
        let mut slot_codes: Vec<Code> = vec![0; self.users * width];
        for ((&(user, slot), &p), &code) in rows.iter().zip(parents).zip(codes) {
            slot_parents[user * width + slot] = self.rows[p].1;
            slot_codes[user * width + slot] = code;
        }
        let log_probs = to_vec(self.decoder.step(&slot_parents, &slot_codes, width));
        let vocab = log_probs.len() / (self.users * width);
        self.rows = rows;
        self.rows
            .iter()
            .flat_map(|&(user, slot)| &log_probs[(user * width + slot) * vocab..][..vocab])
            .copied()
            .collect()
    }
}

fn to_vec(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 log-probabilities")
}

#[cfg(test)]
mod tests {
    use burn::tensor::activation::log_softmax;
    use burn::tensor::{Int, TensorData};

    use super::*;
    use crate::data::ItemIdx;
    use crate::decode::exhaustive_search;
    use crate::generator::model::Memory;
    use crate::test_fixtures::tiny_setup;

    /// The reference: the next code's log-probabilities after `prefix`, from a full (uncached)
    /// decoder pass over `[BOS, prefix…]`.
    fn full_decode_log_probs(model: &OneRec, memory: &Memory, prefix: &[Code], device: &Device) -> Vec<f32> {
        let t = prefix.len();
        let codes = prefix.iter().map(|&c| c as i64).collect();
        let codes = Tensor::<3, Int>::from_data(TensorData::new(codes, [1, 1, t]), device);
        let (states, _) = model.decode(codes, memory);
        let d = states.dims()[3];
        let last = states.narrow(2, t, 1).reshape([1, d]);
        to_vec(log_softmax(model.head(t, last), 1))
    }

    #[test]
    fn cached_beam_search_matches_exhaustive_search_over_full_decoder_passes_and_is_always_legal() {
        let _rng = crate::test_fixtures::device_rng();
        let (dataset, tokenizer, config) = tiny_setup(24, 6, 30, 4);
        let ids = &tokenizer.semantic_ids;
        let device = Device::flex();
        device.seed(5);
        let model = config.init(&device);
        let recommender = Recommender { model: &model, config: &config, tokenizer: &tokenizer, device: &device };
        for user in 0..3u32 {
            let history = &dataset.user_events(user)[..10];
            let got = recommender.recommend(&dataset.users[user as usize], history, 24, false);
            let context = recommender.context(&dataset.users[user as usize], history);
            let memory = model.encode(&Batch::new(&[context], None, ids, &config, &device));
            let log_probs = |prefix: &[Code]| full_decode_log_probs(&model, &memory, prefix, &device);
            let want = exhaustive_search(&log_probs, ids.trie(), &|_| false);
            assert_eq!(got.len(), 24);
            for (g, w) in got.iter().zip(&want) {
                assert_eq!((g.item, &g.id), (w.item, &w.id));
                assert!((g.log_prob - w.log_prob).abs() < 1e-4, "{} vs {}", g.log_prob, w.log_prob);
                assert!(g.item.is_some() && ids.item_of(&g.id) == g.item, "every output is a real item");
            }
            // Excluding the history leaves it out of a narrower slate, which stays distinct.
            let slate = recommender.recommend(&dataset.users[user as usize], history, 8, true);
            assert!(slate.iter().all(|h| history.iter().all(|e| Some(e.item) != h.item)));
            let distinct: std::collections::HashSet<Option<ItemIdx>> = slate.iter().map(|h| h.item).collect();
            assert_eq!(distinct.len(), slate.len());
        }
        // A user with no history still gets a full, legal slate.
        let cold = recommender.recommend(&dataset.users[0], &[], 5, true);
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
        let recommender = Recommender { model: &model, config: &config, tokenizer: &tokenizer, device: &device };
        // Different history lengths, beams and exclusions, a cold user, and a zero-width request.
        let cases = [(0u32, 12, 5, true), (1, 3, 24, false), (2, 0, 7, true), (3, 20, 0, true), (4, 29, 16, true)];
        let requests: Vec<DecodeRequest> = cases
            .iter()
            .map(|&(user, len, beam, exclude)| {
                recommender.request(&dataset.users[user as usize], &dataset.user_events(user)[..len], beam, exclude)
            })
            .collect();
        let together = recommender.recommend_batch(&requests);
        for (&(user, len, beam, exclude), got) in cases.iter().zip(&together) {
            let alone =
                recommender.recommend(&dataset.users[user as usize], &dataset.user_events(user)[..len], beam, exclude);
            assert_eq!(got.len(), alone.len(), "user {user}");
            for (g, a) in got.iter().zip(&alone) {
                assert_eq!((g.item, &g.id), (a.item, &a.id), "user {user}");
                assert!((g.log_prob - a.log_prob).abs() < 1e-4, "user {user}: {} vs {}", g.log_prob, a.log_prob);
            }
        }
        assert!(together[3].is_empty());
    }
}
