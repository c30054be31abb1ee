//! What a snapshot gives the server: the model on its device and the catalogue it decodes into.
//! An engine is immutable; a reload, or a change to the catalogue, builds a new one and swaps it
//! in, while requests that already hold the old one finish with it. Each engine holds the
//! catalogue it was built over, so that a request reads histories and names items with the very
//! catalogue its model decodes into, even while items are being added. An aligned snapshot's
//! slate re-ranks each beam with its reward model, which passes over the items added since it was
//! trained (see [`rank_by_reward`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use burn::tensor::Device;
use onerec_core::api::{FeedItem, ItemInfo, quantise_embedding};
use onerec_core::data::{Dataset, Event, Item, ItemIdx};
use onerec_core::decode::{Decoding, Hypothesis};
use onerec_core::generator::model::{HostHead, OneRec};
use onerec_core::generator::recommend::{DecodeRequest, Recommender};
use onerec_core::generator::snapshot::Snapshot;
use onerec_core::generator::trend::TrendIndex;
use onerec_core::reward::Reward;
use onerec_core::reward::slate::rank_by_reward;
use serde::{Deserialize, Serialize};

/// A loaded snapshot.
pub struct Engine {
    /// Names the snapshot in feeds and logs: its file name and the CRC of its weights.
    pub id: String,
    pub model: OneRec,
    /// The snapshot as loaded, with the items added while serving; the model is built from it,
    /// and items added later are added to it.
    pub snapshot: Snapshot,
    /// The catalogue this engine decodes into.
    pub catalogue: Arc<Catalogue>,
    pub device: Device,
    /// What was popular when, for a model with the trend input.
    pub trend: Option<TrendIndex>,
    /// On the CPU, the model's ID head prepared for host decoding (see [`Recommender::host_head`]).
    pub host_head: Option<HostHead>,
    /// The snapshot's slate, ready to score.
    slate: Option<(Reward, f32)>,
}

/// The beam a feed decodes when the request names none (with at least its pool): that of the
/// slate's choice, or this.
const DEFAULT_BEAM: usize = 32;

impl Engine {
    /// Loads a snapshot for serving `catalogue`; refuses one trained on another. The "popular
    /// now" input counts the data set's events and those `served` since, as of this load.
    pub fn load(path: &Path, catalogue: Arc<Catalogue>, served: &[Event], device: &Device) -> anyhow::Result<Engine> {
        let snapshot = Snapshot::load(path)?;
        let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let id = format!("{name}:{:08x}", crc32fast::hash(&snapshot.weights));
        Engine::build(id, snapshot, catalogue, served, device)
    }

    /// This engine's snapshot over a catalogue that has changed since.
    pub fn over(&self, catalogue: Arc<Catalogue>, served: &[Event]) -> anyhow::Result<Engine> {
        Engine::build(self.id.clone(), self.snapshot.clone(), catalogue, served, &self.device)
    }

    /// Brings `snapshot` up to `catalogue`: the items added while serving, which a snapshot
    /// trained on the data set lacks, are added to it (see `onerec_core::generator::catalogue`),
    /// and the items retired while serving are retired.
    fn build(
        id: String,
        mut snapshot: Snapshot,
        catalogue: Arc<Catalogue>,
        served: &[Event],
        device: &Device,
    ) -> anyhow::Result<Engine> {
        let items = &catalogue.dataset.items;
        let have = snapshot.tokenizer.item_ids.len();
        if have < items.len() && snapshot.tokenizer.item_ids.iter().zip(items).all(|(id, item)| *id == item.id) {
            snapshot.add_items(&items[..have], &items[have..])?;
        }
        snapshot.check_dataset(&catalogue.dataset)?;
        // By index: the catalogue and the snapshot now list the same items. Only what the
        // snapshot has not retired yet, as each retirement rebuilds the trie.
        let ids = &snapshot.tokenizer.semantic_ids;
        let retire: Vec<ItemIdx> =
            catalogue.retired.iter().copied().filter(|i| ids.retired().binary_search(i).is_err()).collect();
        if !retire.is_empty() {
            snapshot.tokenizer.semantic_ids = ids.retire(&retire)?;
        }
        let model = snapshot.model(device)?;
        let trend = TrendIndex::for_model(&snapshot.model, catalogue.dataset.events.iter().chain(served));
        let host_head = model.host_head();
        let slate = match &snapshot.slate {
            Some(s) => Some((s.reward.scorer(&catalogue.dataset, device)?, s.weight)),
            None => None,
        };
        Ok(Engine { id, model, snapshot, catalogue, device: device.clone(), trend, host_head, slate })
    }

    /// Decodes `requests` together; with a slate, each constrained beam is then re-ranked for the
    /// history its request was made from, `histories[i]` for `requests[i]`.
    pub fn decode(&self, requests: &[DecodeRequest], histories: &[&[Event]]) -> Vec<Vec<Hypothesis>> {
        let mut found = self.recommender().recommend_batch(requests);
        if let Some((reward, weight)) = &self.slate {
            for ((beam, request), history) in found.iter_mut().zip(requests).zip(histories) {
                if request.decoding == Decoding::Constrained {
                    rank_by_reward(beam, history, reward, *weight);
                }
            }
        }
        found
    }

    /// The beam a request that names none decodes (see [`DEFAULT_BEAM`]).
    pub fn default_beam(&self) -> usize {
        self.snapshot.slate.as_ref().map_or(DEFAULT_BEAM, |s| s.beam)
    }

    pub fn recommender(&self) -> Recommender<'_> {
        Recommender {
            model: &self.model,
            config: &self.snapshot.model,
            tokenizer: &self.snapshot.tokenizer,
            device: &self.device,
            trend: self.trend.as_ref(),
            host_head: self.host_head.as_ref(),
        }
    }

    fn embedding(&self, item: ItemIdx) -> Vec<i8> {
        let e = &self.snapshot.tokenizer.embeddings;
        quantise_embedding(&e.data[item as usize * e.dim..][..e.dim])
    }

    fn semantic_id(&self, item: ItemIdx) -> Vec<u16> {
        self.snapshot.tokenizer.semantic_ids.id_of(item).to_vec()
    }

    /// A decoded item as the API shows it; `None` for an ID that names no item, which the
    /// constrained search that serving runs never returns.
    pub fn feed_item(&self, h: &Hypothesis) -> Option<FeedItem> {
        let index = h.item?;
        let item = &self.catalogue.dataset.items[index as usize];
        Some(FeedItem {
            id: item.id.clone(),
            title: item.title.clone(),
            tags: item.tags.clone(),
            score: h.score,
            semantic_id: h.id.clone(),
            embedding: self.embedding(index),
            fresh: false,
        })
    }

    pub fn item_info(&self, item: ItemIdx) -> ItemInfo {
        let i = &self.catalogue.dataset.items[item as usize];
        ItemInfo {
            id: i.id.clone(),
            title: i.title.clone(),
            tags: i.tags.clone(),
            semantic_id: self.semantic_id(item),
            embedding: self.embedding(item),
            retired: self.catalogue.is_retired(item),
            added_at: self.catalogue.added_at(item),
        }
    }
}

/// The data set the server was started with, with the items added and retired while serving,
/// indexed by the external ids clients use.
#[derive(Clone)]
pub struct Catalogue {
    pub dataset: Dataset,
    items: HashMap<String, ItemIdx>,
    users: HashMap<String, u32>,
    /// The items added while serving and when (Unix seconds), oldest first; they follow the data
    /// set's items.
    added: Vec<(ItemIdx, i64)>,
    /// Items retired while serving, sorted.
    pub retired: Vec<ItemIdx>,
}

/// A change to the catalogue while serving, as the data directory keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Add { item: Item, at: i64 },
    Retire { id: String, at: i64 },
}

impl Catalogue {
    pub fn new(dataset: Dataset) -> Catalogue {
        let items = dataset.items.iter().enumerate().map(|(i, item)| (item.id.clone(), i as ItemIdx)).collect();
        let users = dataset.users.iter().enumerate().map(|(u, user)| (user.id.clone(), u as u32)).collect();
        Catalogue { dataset, items, users, added: Vec::new(), retired: Vec::new() }
    }

    /// This catalogue with `changes` made, in order, and a sentence for each change it passed
    /// over: an item it already lists is not added again (the data set may list an item added
    /// earlier while serving), and an id it does not list cannot be retired.
    pub fn changed(self, changes: &[Change]) -> (Catalogue, Vec<String>) {
        let mut next = self;
        let mut passed = Vec::new();
        for change in changes {
            match change {
                Change::Add { item, at } => {
                    if next.items.contains_key(&item.id) {
                        passed.push(format!("item {:?} is listed already; not added again", item.id));
                        continue;
                    }
                    let index = next.dataset.items.len() as ItemIdx;
                    next.items.insert(item.id.clone(), index);
                    next.dataset.items.push(item.clone());
                    next.added.push((index, *at));
                }
                Change::Retire { id, .. } => match next.items.get(id) {
                    Some(&index) => {
                        if let Err(at) = next.retired.binary_search(&index) {
                            next.retired.insert(at, index);
                        }
                    }
                    None => passed.push(format!("there is no item {id:?} to retire")),
                },
            }
        }
        (next, passed)
    }

    pub fn item(&self, id: &str) -> Option<ItemIdx> {
        self.items.get(id).copied()
    }

    /// The data set's index of a user, if the data set has them.
    pub fn user(&self, id: &str) -> Option<u32> {
        self.users.get(id).copied()
    }

    pub fn is_retired(&self, item: ItemIdx) -> bool {
        self.retired.binary_search(&item).is_ok()
    }

    /// When an item was added while serving.
    pub fn added_at(&self, item: ItemIdx) -> Option<i64> {
        let at = self.added.binary_search_by_key(&item, |&(i, _)| i).ok()?;
        Some(self.added[at].1)
    }

    /// The items added while serving at `now - max_age` or later and not retired since.
    pub fn fresh(&self, now: i64, max_age_secs: i64) -> Vec<ItemIdx> {
        let since = now.saturating_sub(max_age_secs);
        self.added.iter().filter(|&&(i, at)| at >= since && !self.is_retired(i)).map(|&(i, _)| i).collect()
    }
}
