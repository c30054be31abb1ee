//! What a snapshot gives the server: the model on its device and the catalogue it decodes into.
//! An engine is immutable; a reload builds a new one and swaps it in, while requests that already
//! hold the old one finish with it.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::Device;
use onerec_core::api::{FeedItem, ItemInfo, quantise_embedding};
use onerec_core::data::{Dataset, Event, ItemIdx};
use onerec_core::decode::Hypothesis;
use onerec_core::generator::model::{ModelConfig, OneRec};
use onerec_core::generator::recommend::Recommender;
use onerec_core::generator::snapshot::Snapshot;
use onerec_core::generator::trend::TrendIndex;
use onerec_core::tokenizer::Tokenizer;

/// A loaded snapshot.
pub struct Engine {
    /// Names the snapshot in feeds and logs: its file name and the CRC of its weights.
    pub id: String,
    pub model: OneRec,
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub device: Device,
    /// What was popular when, for a model with the trend input.
    pub trend: Option<TrendIndex>,
}

impl Engine {
    /// Loads a snapshot for serving `dataset`'s catalogue; refuses one trained on another. The
    /// "popular now" input counts the data set's events and those `served` since, as of this load.
    pub fn load(path: &Path, dataset: &Dataset, served: &[Event], device: &Device) -> anyhow::Result<Engine> {
        let snapshot = Snapshot::load(path)?;
        snapshot.check_dataset(dataset)?;
        let model = snapshot.model(device)?;
        let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let id = format!("{name}:{:08x}", crc32fast::hash(&snapshot.weights));
        let trend = TrendIndex::for_model(&snapshot.model, dataset.events.iter().chain(served));
        Ok(Engine { id, model, config: snapshot.model, tokenizer: snapshot.tokenizer, device: device.clone(), trend })
    }

    pub fn recommender(&self) -> Recommender<'_> {
        Recommender {
            model: &self.model,
            config: &self.config,
            tokenizer: &self.tokenizer,
            device: &self.device,
            trend: self.trend.as_ref(),
        }
    }

    fn embedding(&self, item: ItemIdx) -> Vec<i8> {
        let e = &self.tokenizer.embeddings;
        quantise_embedding(&e.data[item as usize * e.dim..][..e.dim])
    }

    fn semantic_id(&self, item: ItemIdx) -> Vec<u16> {
        self.tokenizer.semantic_ids.id_of(item).to_vec()
    }

    /// A decoded item as the API shows it; `None` for an ID that names no item, which the
    /// constrained search that serving runs never returns.
    pub fn feed_item(&self, catalogue: &Catalogue, h: &Hypothesis) -> Option<FeedItem> {
        let index = h.item?;
        let item = &catalogue.dataset.items[index as usize];
        Some(FeedItem {
            id: item.id.clone(),
            title: item.title.clone(),
            tags: item.tags.clone(),
            score: h.score,
            semantic_id: h.id.clone(),
            embedding: self.embedding(index),
        })
    }

    pub fn item_info(&self, catalogue: &Catalogue, item: ItemIdx) -> ItemInfo {
        let i = &catalogue.dataset.items[item as usize];
        ItemInfo {
            id: i.id.clone(),
            title: i.title.clone(),
            tags: i.tags.clone(),
            semantic_id: self.semantic_id(item),
            embedding: self.embedding(item),
        }
    }
}

/// The data set the server was started with, indexed by the external ids clients use.
pub struct Catalogue {
    pub dataset: Dataset,
    items: HashMap<String, ItemIdx>,
    users: HashMap<String, u32>,
}

impl Catalogue {
    pub fn new(dataset: Dataset) -> Catalogue {
        let items = dataset.items.iter().enumerate().map(|(i, item)| (item.id.clone(), i as ItemIdx)).collect();
        let users = dataset.users.iter().enumerate().map(|(u, user)| (user.id.clone(), u as u32)).collect();
        Catalogue { dataset, items, users }
    }

    pub fn item(&self, id: &str) -> Option<ItemIdx> {
        self.items.get(id).copied()
    }

    /// The data set's index of a user, if the data set has them.
    pub fn user(&self, id: &str) -> Option<u32> {
        self.users.get(id).copied()
    }
}
