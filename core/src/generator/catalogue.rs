//! Items added to a trained model's catalogue without retraining.
//!
//! Generative retrieval can only name items that have a semantic ID, and a model only scores
//! items it has an embedding for: LIGER (arXiv 2411.18814) measured TIGER-style cold-start
//! Recall@10 at 0%. So a new item gets
//! - an embedding from its text, with the collaborative part that text predicts
//!   ([`embed_new_items`], as cold items get when a catalogue is tokenized);
//! - a semantic ID under the existing codebooks ([`Tokenizer::add_items`]): the nearest free one,
//!   so that it joins the trie and decoding can produce it, and no other item's ID moves;
//! - an item ID embedding in the model: the mean of its **code neighbours'**, the trained items
//!   that share the longest prefix of its semantic ID. They are the items its content resembles
//!   most, and their embeddings are what training learnt for such items. A random or zero row
//!   would score the item as the model scores nothing it has seen.

use std::collections::HashMap;

use burn::tensor::Device;
use serde::Serialize;

use crate::data::{Item, ItemIdx};
use crate::embed::embed_new_items;
use crate::error::{Error, Result};
use crate::generator::snapshot::Snapshot;
use crate::tokenizer::Code;
use crate::training::weights_to_bytes;

/// One item added to a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AddedItem {
    pub id: String,
    pub semantic_id: Vec<Code>,
    /// The trained items whose ID embeddings its own is the mean of.
    pub neighbours: usize,
    /// How many leading codes it shares with them.
    pub shared_codes: usize,
}

impl Snapshot {
    /// Adds `new` items to the snapshot, whose catalogue is `catalogue` (the items it was
    /// trained on, in order; their text places the new ones). The model is not retrained.
    pub fn add_items(&mut self, catalogue: &[Item], new: &[Item]) -> Result<Vec<AddedItem>> {
        let tokenizer = &self.tokenizer;
        let old = tokenizer.item_ids.len();
        if catalogue.len() != old || catalogue.iter().zip(&tokenizer.item_ids).any(|(item, id)| &item.id != id) {
            return Err(Error::Config(format!(
                "the catalogue given ({} items) is not the snapshot's ({old} items of {})",
                catalogue.len(),
                tokenizer.dataset
            )));
        }
        let rows = embed_new_items(&tokenizer.embeddings, catalogue, new, &tokenizer.embedding);
        let ids: Vec<String> = new.iter().map(|item| item.id.clone()).collect();
        self.tokenizer.add_items(&ids, &rows)?;
        let device = Device::flex();
        let model = self.model(&device)?;
        let table = model.item_table();
        let d = self.model.d_model;
        let semantic_ids = &self.tokenizer.semantic_ids;
        let mut added_rows = Vec::with_capacity(new.len() * d);
        let mut added = Vec::with_capacity(new.len());
        for (k, id) in ids.into_iter().enumerate() {
            let code = semantic_ids.id_of((old + k) as ItemIdx).to_vec();
            let (shared_codes, neighbours) = (0..code.len())
                .rev()
                .map(|len| {
                    let near = (0..old as ItemIdx).filter(|&i| semantic_ids.id_of(i)[..len] == code[..len]).collect();
                    (len, near)
                })
                .find(|(_, near): &(usize, Vec<ItemIdx>)| !near.is_empty())
                .unwrap_or((0, Vec::new()));
            let mut mean = vec![0f32; d];
            for &i in &neighbours {
                let row = &table[(i as usize + 1) * d..][..d];
                mean.iter_mut().zip(row).for_each(|(m, x)| *m += x / neighbours.len() as f32);
            }
            added_rows.extend(mean);
            added.push(AddedItem { id, semantic_id: code, neighbours: neighbours.len(), shared_codes });
        }
        self.weights = weights_to_bytes(&model.with_items(added_rows))?;
        self.model.items += new.len();
        Ok(added)
    }

    /// Retires items by id, so that they are never recommended again: they leave the trie, and
    /// keep their IDs and embeddings for the histories that hold them.
    pub fn retire_items(&mut self, ids: &[String]) -> Result<()> {
        let index: HashMap<&str, ItemIdx> =
            self.tokenizer.item_ids.iter().enumerate().map(|(i, id)| (id.as_str(), i as ItemIdx)).collect();
        let items = ids
            .iter()
            .map(|id| index.get(id.as_str()).copied().ok_or_else(|| Error::Config(format!("no item {id:?} to retire"))))
            .collect::<Result<Vec<_>>>()?;
        self.tokenizer.semantic_ids = self.tokenizer.semantic_ids.retire(&items)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::recommend::Recommender;
    use crate::test_fixtures::tiny_setup;
    use crate::training::weights_from_bytes;

    /// Added items get IDs in the trie and embeddings from their code neighbours, and the
    /// unchanged model can decode them; retired items it never decodes again.
    #[test]
    fn added_items_can_be_decoded_without_retraining() {
        let _rng = crate::test_fixtures::device_rng();
        let (dataset, tokenizer, config) = tiny_setup(24, 6, 8, 4);
        let device = Device::flex();
        let model = config.init(&device);
        let mut snapshot = Snapshot::new(model, config.clone(), tokenizer, Default::default()).unwrap();
        let before = snapshot.clone();
        let twin = |i: usize| Item { id: format!("new{i}"), ..dataset.items[i].clone() };
        let added = snapshot.add_items(&dataset.items, &[twin(3), twin(17)]).unwrap();
        assert_eq!(added.len(), 2);
        assert_eq!((snapshot.model.items, snapshot.tokenizer.item_ids.len()), (26, 26));
        let ids = &snapshot.tokenizer.semantic_ids;
        for (k, a) in added.iter().enumerate() {
            let item = 24 + k as ItemIdx;
            assert_eq!(ids.item_of(&a.semantic_id), Some(item), "{a:?} is in the trie");
            assert!(a.neighbours > 0 && a.shared_codes > 0, "{a:?}");
        }
        // Old items keep their IDs, and the model its weights for them.
        for i in 0..24 {
            assert_eq!(ids.id_of(i), before.tokenizer.semantic_ids.id_of(i));
        }
        let model = snapshot.model(&device).unwrap();
        let (old_table, table) = (before.model(&device).unwrap().item_table(), model.item_table());
        assert_eq!(&table[..old_table.len()], &old_table[..]);
        // The new rows are the means of their neighbours' rows.
        let d = config.d_model;
        let a = &added[0];
        let len = a.shared_codes;
        let neighbours: Vec<usize> =
            (0..24).filter(|&i| ids.id_of(i as ItemIdx)[..len] == a.semantic_id[..len]).collect();
        assert_eq!(neighbours.len(), a.neighbours);
        for j in 0..d {
            let mean = neighbours.iter().map(|&i| table[(i + 1) * d + j]).sum::<f32>() / neighbours.len() as f32;
            assert!((table[25 * d + j] - mean).abs() < 1e-5);
        }
        // Decoding the whole catalogue now yields the new items too.
        let decoded = |snapshot: &Snapshot| -> Vec<ItemIdx> {
            let (config, tokenizer) = (&snapshot.model, &snapshot.tokenizer);
            let recommender =
                Recommender { model: &model, config, tokenizer, device: &device, trend: None, host_head: None };
            recommender.recommend(&dataset.users[0], &[], 0, 26, false).iter().filter_map(|h| h.item).collect()
        };
        let items = decoded(&snapshot);
        assert!(items.contains(&24) && items.contains(&25), "{items:?}");
        // A retired item is never decoded again, whatever the beam.
        snapshot.retire_items(&["new3".to_string(), "i5".to_string()]).unwrap();
        let items = decoded(&snapshot);
        assert_eq!(items.len(), 24, "{items:?}");
        assert!(!items.contains(&24) && !items.contains(&5) && items.contains(&25), "{items:?}");
        let unknown = snapshot.retire_items(&["nobody".to_string()]).unwrap_err();
        assert!(unknown.to_string().contains("no item \"nobody\""), "{unknown}");
        // A snapshot's weights load back at the new size.
        assert!(weights_from_bytes(snapshot.model.init(&device), &snapshot.weights, "t").is_ok());
        // A catalogue that is not the snapshot's is refused.
        let err = snapshot.add_items(&dataset.items, &[twin(5)]).unwrap_err();
        assert!(err.to_string().contains("not the snapshot's"), "{err}");
    }
}
