//! The item ↔ semantic-ID map. Residual codes can collide; colliding items get one extra code
//! (their rank within the collision group), so every item ends with a unique ID of one fixed length.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::Code;
use super::trie::PrefixTrie;
use crate::data::ItemIdx;
use crate::error::{Error, Result};

/// Every item's semantic ID and the trie of legal IDs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SemanticIds {
    /// Vocabulary size of each position of the ID (the last one is the disambiguation code, if any).
    pub level_sizes: Vec<usize>,
    /// `items × level_sizes.len()`, row-major.
    codes: Vec<Code>,
    /// Items that may never be recommended again, sorted: they keep their IDs (so nothing else
    /// moves, and their events still read as before) but leave the trie.
    retired: Vec<ItemIdx>,
    trie: PrefixTrie,
}

/// How many items shared their residual codes before the extra code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Collisions {
    /// Items whose codes are shared with at least one other item.
    pub colliding_items: usize,
    /// Largest number of items sharing one code sequence.
    pub largest_group: usize,
}

impl SemanticIds {
    /// Turns residual codes (`items × codebook_sizes.len()`) into unique IDs, adding a
    /// disambiguation code only when some items collide.
    pub fn resolve(residual_codes: Vec<Code>, codebook_sizes: &[usize]) -> Result<(SemanticIds, Collisions)> {
        let levels = codebook_sizes.len();
        let n = residual_codes.len() / levels;
        let mut groups: HashMap<&[Code], Vec<ItemIdx>> = HashMap::with_capacity(n);
        for (item, id) in residual_codes.chunks_exact(levels).enumerate() {
            groups.entry(id).or_default().push(item as ItemIdx);
        }
        let largest_group = groups.values().map(Vec::len).max().unwrap_or(0);
        let colliding_items = groups.values().filter(|g| g.len() > 1).map(Vec::len).sum();
        let collisions = Collisions { colliding_items, largest_group };
        if largest_group <= 1 {
            let ids = Self::from_codes(residual_codes, codebook_sizes.to_vec())?;
            return Ok((ids, collisions));
        }
        if largest_group > Code::MAX as usize + 1 {
            return Err(Error::Config(format!(
                "{largest_group} items share one semantic ID; use more codes or levels"
            )));
        }
        let mut extra = vec![0 as Code; n];
        for group in groups.values() {
            for (rank, &item) in group.iter().enumerate() {
                extra[item as usize] = rank as Code;
            }
        }
        let codes =
            residual_codes.chunks_exact(levels).zip(extra).flat_map(|(id, e)| id.iter().copied().chain([e])).collect();
        let mut sizes = codebook_sizes.to_vec();
        sizes.push(largest_group);
        Ok((Self::from_codes(codes, sizes)?, collisions))
    }

    /// Builds the map from unique IDs; refuses duplicates or codes outside their vocabulary.
    pub fn from_codes(codes: Vec<Code>, level_sizes: Vec<usize>) -> Result<SemanticIds> {
        let len = level_sizes.len();
        if len == 0 || !codes.len().is_multiple_of(len) {
            return Err(Error::Config(format!("{} codes do not form IDs of length {len}", codes.len())));
        }
        if let Some((pos, &c)) = codes.iter().enumerate().find(|(pos, c)| **c as usize >= level_sizes[pos % len]) {
            return Err(Error::Config(format!(
                "item {} has code {c} at position {}, beyond its vocabulary",
                pos / len,
                pos % len
            )));
        }
        Self::with_retired(codes, level_sizes, Vec::new())
    }

    /// The map whose trie leaves `retired` (sorted) out.
    fn with_retired(codes: Vec<Code>, level_sizes: Vec<usize>, retired: Vec<ItemIdx>) -> Result<SemanticIds> {
        let len = level_sizes.len();
        let ids: Vec<&[Code]> = codes.chunks_exact(len).collect();
        let trie =
            PrefixTrie::build_over(&ids, len, |item| retired.binary_search(&item).is_err()).map_err(|(a, b)| {
                Error::Config(format!("items {a} and {b} share the semantic ID {:?}", ids[a as usize]))
            })?;
        Ok(SemanticIds { level_sizes, codes, retired, trie })
    }

    /// The same IDs with `items` retired too: no decode can produce them again.
    pub fn retire(&self, items: &[ItemIdx]) -> Result<SemanticIds> {
        if let Some(item) = items.iter().find(|&&i| i as usize >= self.len()) {
            return Err(Error::Config(format!("there is no item {item} to retire")));
        }
        let mut retired = [self.retired.as_slice(), items].concat();
        retired.sort_unstable();
        retired.dedup();
        Self::with_retired(self.codes.clone(), self.level_sizes.clone(), retired)
    }

    /// The retired items, sorted.
    pub fn retired(&self) -> &[ItemIdx] {
        &self.retired
    }

    /// Number of items, retired ones included.
    pub fn len(&self) -> usize {
        self.codes.len() / self.id_len()
    }

    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// Length of every ID.
    pub fn id_len(&self) -> usize {
        self.level_sizes.len()
    }

    /// The semantic ID of an item.
    pub fn id_of(&self, item: ItemIdx) -> &[Code] {
        &self.codes[item as usize * self.id_len()..][..self.id_len()]
    }

    /// These IDs followed by those of new items (`codes`, row-major), with the trie rebuilt.
    pub fn extended(&self, codes: &[Code]) -> Result<SemanticIds> {
        Self::with_retired([self.codes.as_slice(), codes].concat(), self.level_sizes.clone(), self.retired.clone())
    }

    /// The item with this semantic ID, if it is legal.
    pub fn item_of(&self, id: &[Code]) -> Option<ItemIdx> {
        self.trie.find(id)
    }

    /// The constraint for decoding.
    pub fn trie(&self) -> &PrefixTrie {
        &self.trie
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_codes_need_no_extra_code() {
        let (ids, c) = SemanticIds::resolve(vec![0, 1, 1, 0, 1, 1], &[2, 2]).unwrap();
        assert_eq!(c, Collisions { colliding_items: 0, largest_group: 1 });
        assert_eq!(ids.id_len(), 2);
        assert_eq!(ids.id_of(2), &[1, 1]);
        assert_eq!(ids.item_of(&[1, 0]), Some(1));
    }

    #[test]
    fn collisions_get_a_rank_code_and_become_unique() {
        // Items 0, 2 and 3 share (1, 1); item 1 is alone.
        let (ids, c) = SemanticIds::resolve(vec![1, 1, 0, 1, 1, 1, 1, 1], &[2, 2]).unwrap();
        assert_eq!(c, Collisions { colliding_items: 3, largest_group: 3 });
        assert_eq!(ids.level_sizes, vec![2, 2, 3]);
        assert_eq!(ids.id_of(0), &[1, 1, 0]);
        assert_eq!(ids.id_of(1), &[0, 1, 0]);
        assert_eq!(ids.id_of(2), &[1, 1, 1]);
        assert_eq!(ids.id_of(3), &[1, 1, 2]);
        for item in 0..4 {
            assert_eq!(ids.item_of(ids.id_of(item)), Some(item));
        }
    }

    #[test]
    fn out_of_vocabulary_and_duplicate_codes_are_refused() {
        assert!(SemanticIds::from_codes(vec![0, 2], vec![2, 2]).unwrap_err().to_string().contains("beyond"));
        assert!(SemanticIds::from_codes(vec![0, 1, 0, 1], vec![2, 2]).unwrap_err().to_string().contains("share"));
    }
}
