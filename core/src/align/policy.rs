//! The generator seen as a policy over whole semantic IDs: sampling G IDs per user code by code
//! (with temperature, masked to the trie or not) and the teacher-forced log π(ID) that gradients
//! flow through. Beam search, constrained or free, is [`crate::decode`]'s.

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::Rng;

use crate::generator::model::OneRec;
use crate::tokenizer::Code;
use crate::tokenizer::trie::{PrefixTrie, ROOT};

/// The query states of the given users (rows of `states`), in that order: one row per ID to draw
/// or score.
pub fn repeat_rows(states: &Tensor<2>, users: &[usize], device: &Device) -> Tensor<2> {
    let rows: Vec<i64> = users.iter().map(|&u| u as i64).collect();
    states.clone().select(0, Tensor::from_data(TensorData::new(rows.clone(), [rows.len()]), device))
}

/// Samples one ID per row of `states` (query states, `[rows, d_model]`). With `trie`, each step is restricted to the legal children
/// of the prefix (while the prefix is legal). Returns the IDs and log π(ID) under the model at
/// temperature 1, unmasked: the "old" policy's probability of what it produced.
pub fn sample(
    model: &OneRec,
    states: &Tensor<2>,
    levels: usize,
    temperature: f32,
    trie: Option<&PrefixTrie>,
    rng: &mut impl Rng,
) -> (Vec<Vec<Code>>, Vec<f32>) {
    let rows = states.dims()[0];
    let mut ids: Vec<Vec<Code>> = vec![Vec::with_capacity(levels); rows];
    let mut nodes: Vec<Option<u32>> = vec![Some(ROOT); rows];
    let mut log_probs = vec![0f32; rows];
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
            log_probs[row] += row_lp[code as usize];
            ids[row].push(code);
            nodes[row] = match (trie, nodes[row]) {
                (Some(t), Some(node)) => t.child(node, code),
                _ => None,
            };
        }
    }
    (ids, log_probs)
}

/// Teacher-forced log π(ID) per row (the sum of the codes' log-probabilities), with gradient when
/// `model` lives on an autodiff device. `states` has one row per ID.
pub fn sequence_log_probs(model: &OneRec, states: Tensor<2>, ids: &[Vec<Code>], device: &Device) -> Tensor<1> {
    let levels = ids.first().map_or(0, Vec::len);
    let flat: Vec<i64> = ids.iter().flat_map(|id| id.iter().map(|&c| c as i64)).collect();
    let codes = Tensor::<2, Int>::from_data(TensorData::new(flat, [ids.len(), levels]), device);
    model.head().sequence_log_probs(states, codes)
}
