//! Beam search's selection on a wgpu device (`shaders/beam_select.wgsl`). On the host, every step
//! of the search reads all of its rows' logits back (`rows × vocabulary` floats), masks them to
//! the trie and keeps the best children. Here the trie, the exclusions and the selection sit next
//! to the logits, and only the survivors come back: `beam × 4` numbers per search. The reference
//! is [`select_on_host`](crate::decode::select_on_host), and the test below holds the kernel to it.
//!
//! The kernel normalises with the model's full softmax, as the host does, and masks only the
//! choice: a child's log-probability is what the model gives its code, not a share of the legal
//! codes' mass.
//!
//! Buffers (all `u32` but the logits and the normalisers; `S` searches, `R` rows):
//! - `rows`: each row's trie node, then each row's score as `f32` bits;
//! - `searches`: row starts (`S + 1`), beams (`S`), exclusion starts (`S + 1`), then every
//!   search's excluded leaves, sorted, one run per search;
//! - `trie`: [`PrefixTrie::first_child`](crate::tokenizer::trie::PrefixTrie) (`first leaf + 1`),
//!   then the code into every node;
//! - `out`: `S × beam_max` survivors of (row, code, node, score bits), then `S` counts;
//! - `info`: `R`, vocabulary, `S`, `beam_max`, first leaf.
//!
//! The trie stays on the device between decodes (a million items make about 8 MB), under the
//! trie's identity, until another trie is decoded against (a reload). What crosses the bus at a
//! step is the rows' nodes and scores and the searches' exclusions on the way in, and the
//! survivors on the way out: `(S × beam_max × 4 + S) × 4` bytes, 4 kB for a search at beam 256,
//! where the rows' logits would be `rows × vocabulary × 4`, 256 kB at 256 codes a level.

use std::sync::{Mutex, PoisonError};

use burn::backend::Wgpu;
use burn::backend::wgpu::{CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous};
use burn::tensor::{DType, Tensor};
use cubecl::client::Client;
use cubecl::prelude::KernelId;
use cubecl::server::{Handle, KernelArguments};
use cubecl::{CubeCount, CubeDim, Device as CubeDevice};

use crate::decode::{Candidate, Decoding, Frontier};
use crate::tokenizer::trie::PrefixTrie;

/// Threads per search.
const WORKGROUP: u32 = 256;

struct BeamSelect;

impl KernelSource for BeamSelect {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(include_str!("../../../shaders/beam_select.wgsl"))
            .register("workgroup_size", WORKGROUP.to_string())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>()
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Each search's best children, chosen on the device from the rows' raw `logits`
/// (`[rows, vocabulary]`), best first, as [`select_on_host`](crate::decode::select_on_host)
/// would choose them. `None` when the logits are not on a wgpu device or a search is free
/// (the kernel walks the trie), so that the caller selects on the host.
pub fn beam_select(logits: Tensor<2>, frontier: &Frontier) -> Option<Vec<Vec<Candidate>>> {
    if frontier.searches.iter().any(|s| s.decoding == Decoding::Free) {
        return None;
    }
    let [rows, vocabulary] = logits.dims();
    let logits = into_contiguous(logits.try_into_primitive::<Wgpu>().ok()?);
    if logits.dtype != DType::F32 {
        return None;
    }
    let Frontier { trie, rows: beams, ranges, searches } = *frontier;
    assert_eq!(rows, beams.len(), "one row of logits per beam");
    assert!(ranges.windows(2).all(|w| w[0].end == w[1].start), "searches' rows are contiguous");
    let count = searches.len();
    let beam_max = searches.iter().map(|s| s.beam).max().unwrap_or(0);
    if count == 0 || beam_max == 0 {
        return Some(vec![Vec::new(); count]);
    }

    let row_words: Vec<u32> = beams.iter().map(|b| b.node).chain(beams.iter().map(|b| b.log_prob.to_bits())).collect();
    let mut search_words: Vec<u32> = ranges.iter().map(|r| r.start as u32).collect();
    search_words.push(ranges.last().map_or(0, |r| r.end as u32));
    search_words.extend(searches.iter().map(|s| s.beam as u32));
    let mut leaves = Vec::new();
    search_words.push(0);
    for search in searches {
        leaves.extend_from_slice(search.excluded.leaves());
        search_words.push(leaves.len() as u32);
    }
    search_words.extend(leaves);
    let first_leaf = trie.flat().0.len() as u32 - 1;
    let info = [rows as u32, vocabulary as u32, count as u32, beam_max as u32, first_leaf];

    let client = logits.client.clone();
    let upload = |words: &[u32]| upload(&client, words);
    let trie_on_device = device_trie(&logits, trie);
    let out_words = count * beam_max * 4 + count;
    let out = client.empty(out_words * 4);
    client.launch(
        Box::new(SourceKernel::new(BeamSelect, CubeDim::new_1d(WORKGROUP))),
        CubeCount::Static(count as u32, 1, 1),
        KernelArguments::new().with_buffers(vec![
            logits.handle.clone().binding(),
            upload(&row_words).binding(),
            upload(&search_words).binding(),
            trie_on_device.binding(),
            client.empty(rows.max(1) * 4).binding(),
            out.clone().binding(),
            upload(&info).binding(),
        ]),
    );
    let bytes = client.read_one(out).expect("reading the beam survivors back from the GPU");
    let words: Vec<u32> = bytes.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect();
    let counts = &words[count * beam_max * 4..];
    Some(
        (0..count)
            .map(|g| {
                let mut kept: Vec<Candidate> = words[g * beam_max * 4..][..counts[g] as usize * 4]
                    .chunks_exact(4)
                    .map(|s| Candidate {
                        parent: s[0] as usize,
                        code: s[1] as _,
                        node: s[2],
                        log_prob: f32::from_bits(s[3]),
                    })
                    .collect();
                kept.sort_by(Candidate::rank_order);
                kept
            })
            .collect(),
    )
}

fn upload(client: &Client, words: &[u32]) -> Handle {
    // A binding must not be empty.
    let bytes: Vec<u8> = words.iter().chain(words.is_empty().then_some(&0)).flat_map(|w| w.to_le_bytes()).collect();
    client.create_from_slice(&bytes)
}

/// The trie as the kernel reads it, on the logits' device: uploaded when this trie (by identity)
/// or this device is new, else the copy kept from the last call. A server decodes against one
/// trie until a reload, so one copy is kept.
fn device_trie(logits: &CubeTensor, trie: &PrefixTrie) -> Handle {
    static KEPT: Mutex<Option<(u64, CubeDevice, Handle)>> = Mutex::new(None);
    let mut kept = KEPT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((identity, device, handle)) = &*kept
        && *identity == trie.identity()
        && *device == logits.device
    {
        return handle.clone();
    }
    let (first_child, codes) = trie.flat();
    let words: Vec<u32> = first_child.iter().copied().chain(codes.iter().map(|&c| c as u32)).collect();
    let handle = upload(&logits.client, &words);
    *kept = Some((trie.identity(), logits.device.clone(), handle.clone()));
    handle
}

#[cfg(test)]
mod tests {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::decode::{Exclusion, Search, select_on_host};
    use crate::tokenizer::Code;
    use crate::tokenizer::trie::ROOT;

    /// A trie of `items` random IDs over `vocabulary` codes a level.
    fn random_trie(rng: &mut ChaCha8Rng, items: usize, vocabulary: Code, depth: usize) -> (PrefixTrie, Vec<Vec<Code>>) {
        let mut ids: Vec<Vec<Code>> =
            (0..items).map(|_| (0..depth).map(|_| rng.random_range(0..vocabulary)).collect()).collect();
        ids.sort();
        ids.dedup();
        ids.shuffle(rng);
        let trie = PrefixTrie::build(&ids.iter().map(Vec::as_slice).collect::<Vec<_>>(), depth).unwrap();
        (trie, ids)
    }

    /// The trie's nodes at `depth`.
    fn nodes_at(trie: &PrefixTrie, depth: usize) -> Vec<u32> {
        (0..depth).fold(vec![ROOT], |nodes, _| nodes.into_iter().flat_map(|n| trie.children(n)).collect())
    }

    #[test]
    fn gpu_selection_equals_host_selection() {
        let Some(device) = crate::test_fixtures::test_gpu() else { return };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let vocabulary: Code = 12;
        // Two tries, one after the other: the second must not be decoded against the first's
        // copy on the device.
        for (trie, ids) in [random_trie(&mut rng, 600, vocabulary, 3), random_trie(&mut rng, 300, vocabulary, 3)] {
            check_every_depth(&device, &mut rng, &trie, &ids, vocabulary);
        }
    }

    /// Searches over rows at every depth of `trie`, selected on the device and on the host.
    fn check_every_depth(
        device: &burn::tensor::Device,
        rng: &mut ChaCha8Rng,
        trie: &PrefixTrie,
        ids: &[Vec<Code>],
        vocabulary: Code,
    ) {
        for depth in 0..3 {
            let nodes = nodes_at(trie, depth);
            // Searches of several widths, over disjoint sets of rows; beam 0 and beams wider than
            // the children on offer included.
            let beams = [5usize, 0, 1, 40, 3, 200];
            let mut rows = Vec::new();
            let mut ranges = Vec::new();
            let mut exclusions = Vec::new();
            for (g, _) in beams.iter().enumerate() {
                let mut mine = nodes.clone();
                mine.shuffle(rng);
                mine.truncate(rng.random_range(1..=nodes.len().min(9)));
                mine.sort();
                let start = rows.len();
                rows.extend(mine.iter().map(|&node| Candidate {
                    parent: 0,
                    node,
                    code: 0,
                    log_prob: if depth == 0 { 0.0 } else { rng.random_range(-6.0..0.0) },
                }));
                ranges.push(start..rows.len());
                // Every other search excludes a third of the items, whole subtrees among them.
                let excluded = ids.iter().filter(|id| g % 2 == 1 && (id[0] + id[1]) % 3 == 0);
                exclusions.push(Exclusion::new(trie, excluded.map(Vec::as_slice)));
            }
            let searches: Vec<Search> = beams
                .iter()
                .zip(&exclusions)
                .map(|(&beam, excluded)| Search { beam, excluded, decoding: Decoding::Constrained })
                .collect();
            let mut logits: Vec<f32> =
                (0..rows.len() * vocabulary as usize).map(|_| rng.random_range(-4.0..4.0)).collect();
            // A row of equal logits: its children tie, and ties go to the smaller node.
            logits[..vocabulary as usize].fill(0.5);
            let frontier = Frontier { trie, rows: &rows, ranges: &ranges, searches: &searches };
            let mut host_log_probs = logits.clone();
            crate::linalg::log_softmax_rows(&mut host_log_probs, vocabulary as usize);
            let want = select_on_host(&frontier, &host_log_probs);
            let tensor = Tensor::<2>::from_data(
                burn::tensor::TensorData::new(logits, [rows.len(), vocabulary as usize]),
                device,
            );
            let got = beam_select(tensor, &frontier).expect("logits on the GPU");
            assert_eq!(got.len(), want.len());
            for (g, (got, want)) in got.iter().zip(&want).enumerate() {
                let key = |c: &Candidate| (c.parent, c.node, c.code);
                assert_eq!(
                    got.iter().map(key).collect::<Vec<_>>(),
                    want.iter().map(key).collect::<Vec<_>>(),
                    "depth {depth}, search {g}"
                );
                for (a, b) in got.iter().zip(want) {
                    assert!(
                        (a.log_prob - b.log_prob).abs() < 1e-5,
                        "depth {depth}, search {g}: {} vs {}",
                        a.log_prob,
                        b.log_prob
                    );
                }
            }
        }
    }
}
