//! Prefix trie over the legal semantic IDs: the decoder's constraint, and the map from an ID back
//! to its item. Nodes are numbered breadth-first, so a node's children are one contiguous range and
//! their codes one sorted slice, which a decoder can use as a logit mask without allocating.

use serde::{Deserialize, Serialize};

use super::Code;
use crate::data::ItemIdx;

/// A trie whose every leaf sits at depth `depth` and names one item.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PrefixTrie {
    depth: usize,
    /// Children of node `i` are nodes `first_child[i]..first_child[i + 1]`; `len = internal nodes + 1`.
    first_child: Vec<u32>,
    /// The code on the edge into each node (root's entry unused).
    code: Vec<Code>,
    /// First node of the deepest level; leaf `first_leaf + j` names `leaf_item[j]`.
    first_leaf: u32,
    leaf_item: Vec<ItemIdx>,
    /// Names these contents, so that a device can keep a copy between decodes: fresh for every
    /// trie built or loaded, shared by clones (which hold the same contents).
    #[serde(skip, default = "fresh_identity")]
    identity: u64,
}

fn fresh_identity() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Equal contents, whatever their identities.
impl PartialEq for PrefixTrie {
    fn eq(&self, other: &Self) -> bool {
        (self.depth, &self.first_child, &self.code, self.first_leaf, &self.leaf_item)
            == (other.depth, &other.first_child, &other.code, other.first_leaf, &other.leaf_item)
    }
}

/// The root node.
pub const ROOT: u32 = 0;

impl PrefixTrie {
    /// Builds the trie from every item's code sequence (`ids[item]`, all of length `depth`).
    /// Returns the first pair of items that share an ID, if any, as an error.
    pub fn build(ids: &[&[Code]], depth: usize) -> Result<PrefixTrie, (ItemIdx, ItemIdx)> {
        Self::build_over(ids, depth, |_| true)
    }

    /// The trie of the items `live` keeps: the others keep their IDs, which no decode can reach.
    pub fn build_over(
        ids: &[&[Code]],
        depth: usize,
        live: impl Fn(ItemIdx) -> bool,
    ) -> Result<PrefixTrie, (ItemIdx, ItemIdx)> {
        let mut order: Vec<ItemIdx> = (0..ids.len() as ItemIdx).filter(|&item| live(item)).collect();
        order.sort_by(|&a, &b| ids[a as usize].cmp(ids[b as usize]).then(a.cmp(&b)));
        if let Some(w) = order.windows(2).find(|w| ids[w[0] as usize] == ids[w[1] as usize]) {
            return Err((w[0], w[1]));
        }
        let mut first_child = Vec::new();
        let mut code = vec![0];
        // node_of[j]: the node at the current depth on the path of the j-th item in sorted order.
        let mut node_of = vec![ROOT; order.len()];
        for d in 0..depth {
            let mut parent_seen = None;
            let mut next_node = vec![0u32; order.len()];
            for (j, &item) in order.iter().enumerate() {
                let starts_new = j == 0 || ids[order[j - 1] as usize][..=d] != ids[item as usize][..=d];
                if starts_new {
                    if parent_seen != Some(node_of[j]) {
                        first_child.push(code.len() as u32);
                        parent_seen = Some(node_of[j]);
                    }
                    code.push(ids[item as usize][d]);
                }
                next_node[j] = code.len() as u32 - 1;
            }
            node_of = next_node;
        }
        first_child.push(code.len() as u32);
        let first_leaf = first_child.len() as u32 - 1;
        let leaf_item = order;
        Ok(PrefixTrie { depth, first_child, code, first_leaf, leaf_item, identity: fresh_identity() })
    }

    /// Length of every ID.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Number of items (leaves).
    pub fn len(&self) -> usize {
        self.leaf_item.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leaf_item.is_empty()
    }

    /// The children of `node`, as a range of node ids (empty for a leaf).
    pub fn children(&self, node: u32) -> std::ops::Range<u32> {
        if node >= self.first_leaf {
            return 0..0;
        }
        self.first_child[node as usize]..self.first_child[node as usize + 1]
    }

    /// The legal next codes after `node`, sorted ascending, parallel to [`Self::children`].
    pub fn legal_codes(&self, node: u32) -> &[Code] {
        let r = self.children(node);
        &self.code[r.start as usize..r.end as usize]
    }

    /// The child of `node` reached by `code`, if that code is legal there.
    pub fn child(&self, node: u32, code: Code) -> Option<u32> {
        let codes = self.legal_codes(node);
        codes.binary_search(&code).ok().map(|i| self.children(node).start + i as u32)
    }

    /// The trie as two flat arrays, for a device to walk: node `i`'s children are nodes
    /// `first_child[i]..first_child[i + 1]` for every `i` below the first leaf (which is
    /// `first_child.len() − 1`), and `codes[n]` is the code on the edge into node `n`.
    pub fn flat(&self) -> (&[u32], &[Code]) {
        (&self.first_child, &self.code)
    }

    /// Names this trie's contents (see the field): a copy kept elsewhere under it stays valid.
    pub fn identity(&self) -> u64 {
        self.identity
    }

    /// The item named by a leaf node.
    pub fn item(&self, node: u32) -> Option<ItemIdx> {
        node.checked_sub(self.first_leaf).and_then(|j| self.leaf_item.get(j as usize)).copied()
    }

    /// The item with exactly this semantic ID.
    pub fn find(&self, id: &[Code]) -> Option<ItemIdx> {
        self.leaf(id).and_then(|leaf| self.item(leaf))
    }

    /// The leaf node of exactly this semantic ID.
    pub fn leaf(&self, id: &[Code]) -> Option<u32> {
        if id.len() != self.depth {
            return None;
        }
        id.iter().try_fold(ROOT, |node, &c| self.child(node, c))
    }

    /// The leaves under `node` as positions in ID order (leaf node `l` is position
    /// `l − first leaf`). One contiguous range, because nodes are numbered breadth-first over sorted
    /// IDs: the leftmost and rightmost descents bound it.
    pub fn leaf_range(&self, node: u32) -> std::ops::Range<u32> {
        let (mut first, mut last) = (node, node);
        while first < self.first_leaf {
            first = self.first_child[first as usize];
        }
        while last < self.first_leaf {
            last = self.first_child[last as usize + 1] - 1;
        }
        first - self.first_leaf..last - self.first_leaf + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trie(ids: &[[Code; 3]]) -> PrefixTrie {
        let refs: Vec<&[Code]> = ids.iter().map(|i| i.as_slice()).collect();
        PrefixTrie::build(&refs, 3).unwrap()
    }

    #[test]
    fn walks_legal_prefixes_and_finds_items() {
        let ids = [[2, 0, 1], [0, 5, 5], [2, 0, 0], [2, 3, 9], [0, 5, 4]];
        let t = trie(&ids);
        assert_eq!(t.legal_codes(ROOT), &[0, 2]);
        let two = t.child(ROOT, 2).unwrap();
        assert_eq!(t.legal_codes(two), &[0, 3]);
        let two_zero = t.child(two, 0).unwrap();
        assert_eq!(t.legal_codes(two_zero), &[0, 1]);
        assert_eq!(t.child(ROOT, 1), None);
        for (item, id) in ids.iter().enumerate() {
            assert_eq!(t.find(id), Some(item as ItemIdx), "{id:?}");
        }
        assert_eq!(t.find(&[2, 0, 2]), None);
        assert_eq!(t.find(&[2, 0]), None);
        assert_eq!(t.len(), 5);
        let leaf = t.child(two_zero, 1).unwrap();
        assert!(t.children(leaf).is_empty());
        assert_eq!(t.item(two), None);
    }

    /// Every legal path found by walking the trie is an item's ID, and every ID is found: the trie
    /// equals the set it was built from (checked by enumeration against the naive list).
    #[test]
    fn enumerating_the_trie_gives_exactly_the_ids() {
        let ids: Vec<[Code; 3]> = (0..200u16).map(|i| [i % 7, (i * 13) % 11, i / 7]).collect();
        let t = trie(&ids);
        let mut found = Vec::new();
        let mut stack = vec![(ROOT, Vec::new())];
        while let Some((node, path)) = stack.pop() {
            match t.item(node) {
                Some(item) => found.push((path, item)),
                None => {
                    for (child, &code) in t.children(node).zip(t.legal_codes(node)) {
                        let mut p = path.clone();
                        p.push(code);
                        stack.push((child, p));
                    }
                }
            }
        }
        assert_eq!(found.len(), ids.len());
        for (path, item) in found {
            assert_eq!(path, ids[item as usize]);
        }
    }

    /// Each node's leaf range holds exactly the leaves reached by walking down from it.
    #[test]
    fn leaf_ranges_match_the_leaves_below_each_node() {
        let ids: Vec<[Code; 3]> = (0..90u16).map(|i| [i % 5, (i * 7) % 4, i / 3]).collect();
        let t = trie(&ids);
        let first_leaf = t.leaf(&ids[0]).unwrap() - t.leaf_range(t.leaf(&ids[0]).unwrap()).start;
        let nodes = first_leaf + t.len() as u32;
        for node in 0..nodes {
            let mut below = Vec::new();
            let mut stack = vec![node];
            while let Some(n) = stack.pop() {
                if t.item(n).is_some() {
                    below.push(n - first_leaf);
                }
                stack.extend(t.children(n));
            }
            below.sort_unstable();
            assert_eq!(below, t.leaf_range(node).collect::<Vec<_>>(), "node {node}");
        }
        assert_eq!(t.leaf_range(ROOT), 0..90);
    }

    #[test]
    fn duplicate_ids_are_reported() {
        let ids: [&[Code]; 3] = [&[1, 2], &[3, 4], &[1, 2]];
        assert_eq!(PrefixTrie::build(&ids, 2), Err((0, 2)));
    }
}
