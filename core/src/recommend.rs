//! Generating recommendations with a trained model: encode the user once, then beam search over
//! semantic codes, constrained to the IDs that exist.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::context::{UserContext, build_context};
use crate::data::{Event, ItemIdx, User};
use crate::decode::{BeamConfig, CodeStepper, Hypothesis, beam_search};
use crate::model::{Batch, Memory, ModelConfig, OneRec};
use crate::tokenizer::{Code, Tokenizer};

/// A model ready to recommend, with the catalogue it was trained on.
#[derive(Clone, Copy)]
pub struct Recommender<'a> {
    pub model: &'a OneRec,
    pub config: &'a ModelConfig,
    pub tokenizer: &'a Tokenizer,
    pub device: &'a Device,
}

impl Recommender<'_> {
    /// The user's context as the model reads it.
    pub fn context(&self, user: &User, history: &[Event]) -> UserContext {
        build_context(user, history, self.tokenizer, &self.config.context)
    }

    /// Scores for the evaluation protocol: the beam's items get their log-probability, every
    /// other item −∞, so it ranks after the beam (and ties count against the target).
    pub fn scores(&self, user: &User, history: &[Event], beam: usize) -> Vec<f32> {
        let mut scores = vec![f32::NEG_INFINITY; self.config.items];
        for h in self.recommend(user, history, beam, true) {
            scores[h.item as usize] = h.log_prob;
        }
        scores
    }

    /// Up to `beam` distinct items for the user, best first; items in `history` are left out
    /// when `exclude_history` is set. Every item is a real catalogue item.
    pub fn recommend(&self, user: &User, history: &[Event], beam: usize, exclude_history: bool) -> Vec<Hypothesis> {
        let context = self.context(user, history);
        let batch = Batch::new(&[context], None, &self.tokenizer.semantic_ids, self.config, self.device);
        let memory = self.model.encode(&batch);
        let mut excluded = vec![false; self.config.items];
        if exclude_history {
            history.iter().for_each(|e| excluded[e.item as usize] = true);
        }
        let mut stepper = ModelStepper { model: self.model, memory, prefixes: Vec::new(), device: self.device };
        beam_search(&mut stepper, self.tokenizer.semantic_ids.trie(), &BeamConfig { beam }, &|item: ItemIdx| {
            excluded[item as usize]
        })
    }
}

/// Runs the decoder for the beams of one user. It recomputes each prefix in full; a KV cache
/// can replace that without changing the search.
struct ModelStepper<'a> {
    model: &'a OneRec,
    memory: Memory,
    prefixes: Vec<Vec<Code>>,
    device: &'a Device,
}

impl ModelStepper<'_> {
    fn next_log_probs(&self) -> Vec<f32> {
        let rows = self.prefixes.len().max(1);
        let t = self.prefixes.first().map_or(0, Vec::len);
        let flat: Vec<i64> = self.prefixes.iter().flat_map(|p| p.iter().map(|&c| c as i64)).collect();
        let codes = Tensor::<2, Int>::from_data(TensorData::new(flat, [rows, t]), self.device);
        let memory = self.memory.select(Tensor::<1, Int>::zeros([rows], self.device));
        let (states, _) = self.model.decode(codes, &memory);
        let last = states.narrow(1, t, 1).squeeze_dim::<2>(1);
        let logits = self.model.head(t, last);
        log_softmax(logits, 1).into_data().try_to_vec::<f32>().expect("f32 logits")
    }
}

impl CodeStepper for ModelStepper<'_> {
    fn start(&mut self) -> Vec<f32> {
        self.prefixes = vec![Vec::new()];
        self.next_log_probs()
    }

    fn step(&mut self, parents: &[usize], codes: &[Code]) -> Vec<f32> {
        self.prefixes = parents
            .iter()
            .zip(codes)
            .map(|(&p, &c)| {
                let mut prefix = self.prefixes[p].clone();
                prefix.push(c);
                prefix
            })
            .collect();
        self.next_log_probs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::exhaustive_search;
    use crate::test_fixtures::tiny_setup;

    #[test]
    fn beam_search_on_the_model_matches_exhaustive_search_and_is_always_legal() {
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
            let log_probs = |prefix: &[Code]| {
                let stepper = ModelStepper {
                    model: &model,
                    memory: memory.clone(),
                    prefixes: vec![prefix.to_vec()],
                    device: &device,
                };
                stepper.next_log_probs()
            };
            let want = exhaustive_search(&log_probs, ids.trie(), &|_| false);
            assert_eq!(got.len(), 24);
            for (g, w) in got.iter().zip(&want) {
                assert_eq!((g.item, &g.id), (w.item, &w.id));
                assert!((g.log_prob - w.log_prob).abs() < 1e-4, "{} vs {}", g.log_prob, w.log_prob);
                assert_eq!(ids.item_of(&g.id), Some(g.item), "every output is a real item");
            }
            // Excluding the history leaves it out of a narrower slate, which stays distinct.
            let slate = recommender.recommend(&dataset.users[user as usize], history, 8, true);
            assert!(slate.iter().all(|h| history.iter().all(|e| e.item != h.item)));
            let distinct: std::collections::HashSet<ItemIdx> = slate.iter().map(|h| h.item).collect();
            assert_eq!(distinct.len(), slate.len());
        }
        // A user with no history still gets a full, legal slate.
        let cold = recommender.recommend(&dataset.users[0], &[], 5, true);
        assert_eq!(cold.len(), 5);
        assert!(cold.iter().all(|h| ids.item_of(&h.id) == Some(h.item)));
    }
}
