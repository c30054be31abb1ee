//! The snapshot: everything needed to serve a trained model, in one file (DESIGN.md §2).
//! Model sizes, the tokenizer (item table, embeddings, semantic IDs) and the weights as burnpack
//! bytes travel together, so a snapshot can never be paired with the wrong catalogue.

use std::path::Path;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::codec::{self, Format};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::generator::model::{ModelConfig, OneRec};
use crate::generator::train::TrainReport;
use crate::reward::slate::Slate;
use crate::tokenizer::Tokenizer;
use crate::training::{weights_from_bytes, weights_to_bytes};

/// A trained model with its catalogue.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub model: ModelConfig,
    pub tokenizer: Tokenizer,
    /// Burnpack bytes of the model's parameters.
    pub weights: Vec<u8>,
    pub training: TrainReport,
    /// How an aligned model's beam becomes its slate; `None` keeps the model's own order.
    pub slate: Option<Slate>,
}

/// Version 8 added the slate.
const FORMAT: Format = Format { magic: b"ONRECSNP", version: 8, kind: "snapshot" };

impl Snapshot {
    /// Packs a model's parameters with its configuration and tokenizer, with no slate.
    pub fn new(model: OneRec, config: ModelConfig, tokenizer: Tokenizer, training: TrainReport) -> Result<Snapshot> {
        Ok(Snapshot { model: config, tokenizer, weights: weights_to_bytes(&model)?, training, slate: None })
    }

    /// Writes the snapshot by atomic rename.
    pub fn save(&self, path: &Path) -> Result<()> {
        codec::save(FORMAT, self, path)
    }

    /// Reads a snapshot, refusing a damaged one or one whose parts disagree.
    pub fn load(path: &Path) -> Result<Snapshot> {
        let snapshot: Snapshot = codec::load(FORMAT, path)?;
        let ids = &snapshot.tokenizer.semantic_ids;
        if snapshot.model.items != snapshot.tokenizer.item_ids.len() || snapshot.model.level_sizes != ids.level_sizes {
            return Err(Error::corrupt(
                path,
                format!(
                    "the model was built for {} items with codes {:?}, but its tokenizer has {} items with codes {:?}",
                    snapshot.model.items,
                    snapshot.model.level_sizes,
                    snapshot.tokenizer.item_ids.len(),
                    ids.level_sizes
                ),
            ));
        }
        Ok(snapshot)
    }

    /// Rebuilds the model on `device`.
    pub fn model(&self, device: &Device) -> Result<OneRec> {
        weights_from_bytes(self.model.init(device), &self.weights, "the snapshot")
    }

    /// Refuses a data set whose catalogue is not the one this snapshot was trained on.
    pub fn check_dataset(&self, dataset: &Dataset) -> Result<()> {
        check_catalogue(&self.tokenizer, dataset)
    }
}

/// A tokenizer and a data set belong together when they list the same items in the same order.
pub fn check_catalogue(tokenizer: &Tokenizer, dataset: &Dataset) -> Result<()> {
    if tokenizer.item_ids.len() != dataset.n_items() {
        return Err(Error::Config(format!(
            "the tokenizer was built for {} items ({}), but the data set {} has {}",
            tokenizer.item_ids.len(),
            tokenizer.dataset,
            dataset.name,
            dataset.n_items()
        )));
    }
    if let Some((i, (a, b))) = tokenizer.item_ids.iter().zip(&dataset.items).enumerate().find(|(_, (a, b))| **a != b.id)
    {
        return Err(Error::Config(format!(
            "item {i} is {a:?} in the tokenizer ({}) but {:?} in the data set {}",
            tokenizer.dataset, b.id, dataset.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::context::build_context;
    use crate::generator::model::Batch;
    use crate::test_fixtures::{cyclic_dataset, tiny_setup};

    #[test]
    fn snapshot_round_trips_and_refuses_damage_and_foreign_data() {
        let _rng = crate::test_fixtures::device_rng();
        let (dataset, tokenizer, config) = tiny_setup(24, 4, 12, 4);
        let ids = tokenizer.semantic_ids.clone();
        let device = Device::flex();
        let model = config.init(&device);
        let context = build_context(&dataset.users[0], dataset.user_events(0), &tokenizer, &config.context);
        let batch = Batch::new(&[context], None, &ids, &config, &device);
        let before = model.encode(&batch).0;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.snap");
        Snapshot::new(model, config.clone(), tokenizer, TrainReport::default()).unwrap().save(&path).unwrap();
        let loaded = Snapshot::load(&path).unwrap();
        let after = loaded.model(&device).unwrap().encode(&batch).0;
        assert!((before - after).abs().max().into_scalar::<f32>() < 1e-6, "the same weights come back");
        loaded.check_dataset(&dataset).unwrap();

        let other = cyclic_dataset(25, 4, 12);
        assert!(loaded.check_dataset(&other).unwrap_err().to_string().contains("built for 24 items"));

        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
        assert!(Snapshot::load(&path).unwrap_err().to_string().contains("truncated"));
        let mut flipped = bytes;
        let middle = flipped.len() / 2;
        flipped[middle] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert!(Snapshot::load(&path).unwrap_err().to_string().contains("checksum"));
    }
}
