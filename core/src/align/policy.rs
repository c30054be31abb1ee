//! The generator seen as a policy over whole semantic IDs: sampling G IDs per user code by code
//! (with temperature, masked to the trie or not) and the log-probability that gradients flow
//! through. Beam search, constrained or free, is [`crate::decode`]'s.
//!
//! A feed ranks its items by the product of the model's two experts, `log π(ID) + score(item)`
//! (see [`crate::generator::recommend`]), so the policy that alignment moves is that product too:
//! `log π(ID) + log softmax(score)[item]`, the item term left out for an ID that names no item.
//! Moving `π(ID)` alone leaves the item expert, and so most of the ranking, where it was: on
//! MovieLens-100K that cost twice the NDCG for the same P-score gain.

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::Rng;

use burn::tensor::activation::log_softmax;

use crate::data::ItemIdx;
use crate::generator::model::OneRec;
use crate::tokenizer::Code;
use crate::tokenizer::trie::{PrefixTrie, ROOT};

/// The query states of the given users (rows of `states`), in that order: one row per ID to draw
/// or score.
pub fn repeat_rows(states: &Tensor<2>, users: &[usize], device: &Device) -> Tensor<2> {
    let rows: Vec<i64> = users.iter().map(|&u| u as i64).collect();
    states.clone().select(0, Tensor::from_data(TensorData::new(rows.clone(), [rows.len()]), device))
}

/// Samples one ID per row of `states` (query states, `[rows, d_model]`), code by code at
/// `temperature`. With `trie`, each step is restricted to the legal children of the prefix (while
/// the prefix is legal). The policy's probability of what was drawn is [`log_probs`]'s to give.
pub fn sample(
    model: &OneRec,
    states: &Tensor<2>,
    levels: usize,
    temperature: f32,
    trie: Option<&PrefixTrie>,
    rng: &mut impl Rng,
) -> Vec<Vec<Code>> {
    let rows = states.dims()[0];
    let mut ids: Vec<Vec<Code>> = vec![Vec::with_capacity(levels); rows];
    let mut nodes: Vec<Option<u32>> = vec![Some(ROOT); rows];
    let mut weights = Vec::new();
    for _ in 0..levels {
        let lp = model.head().next_log_probs(states.clone(), &ids);
        let lp = lp.into_data().try_to_vec::<f32>().expect("f32 log-probabilities");
        let vocab = lp.len() / rows;
        for row in 0..rows {
            let row_lp = &lp[row * vocab..][..vocab];
            let legal: Option<&[Code]> = match (trie, nodes[row]) {
                (Some(t), Some(node)) => Some(t.legal_codes(node)),
                _ => None,
            };
            let candidates = |i: usize| legal.map_or(i as Code, |l| l[i]);
            let n = legal.map_or(vocab, <[Code]>::len);
            let top = (0..n).map(|i| row_lp[candidates(i) as usize]).fold(f32::NEG_INFINITY, f32::max);
            weights.clear();
            weights.extend((0..n).map(|i| ((row_lp[candidates(i) as usize] - top) / temperature).exp()));
            let total: f32 = weights.iter().sum();
            let mut u = rng.random::<f32>() * total;
            let mut pick = n - 1;
            for (i, w) in weights.iter().enumerate() {
                if u < *w {
                    pick = i;
                    break;
                }
                u -= w;
            }
            let code = candidates(pick);
            ids[row].push(code);
            nodes[row] = match (trie, nodes[row]) {
                (Some(t), Some(node)) => t.child(node, code),
                _ => None,
            };
        }
    }
    ids
}

/// The policy's log-probability per row, `log π(ID) + log softmax(score)[item]` (see the module
/// doc), teacher-forced, with gradient when `model` lives on an autodiff device. `states` has one
/// row per ID; `items[r]` is the item `ids[r]` names, if any.
pub fn log_probs(
    model: &OneRec,
    states: Tensor<2>,
    ids: &[Vec<Code>],
    items: &[Option<ItemIdx>],
    device: &Device,
) -> Tensor<1> {
    let levels = ids.first().map_or(0, Vec::len);
    let flat: Vec<i64> = ids.iter().flat_map(|id| id.iter().map(|&c| c as i64)).collect();
    let codes = Tensor::<2, Int>::from_data(TensorData::new(flat, [ids.len(), levels]), device);
    let id_log_probs = model.head().sequence_log_probs(states.clone(), codes);
    let rows = items.len();
    let item_log_probs = log_softmax(model.item_scores(states), 1);
    let index: Vec<i64> = items.iter().map(|i| i.map_or(0, |i| i as i64)).collect();
    let named: Vec<f32> = items.iter().map(|i| if i.is_some() { 1.0 } else { 0.0 }).collect();
    let picked = item_log_probs.gather(1, Tensor::<2, Int>::from_data(TensorData::new(index, [rows, 1]), device));
    id_log_probs + picked.reshape([rows]) * Tensor::<1>::from_data(TensorData::new(named, [rows]), device)
}
