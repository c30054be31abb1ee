use super::*;
use crate::data::{DatasetBuilder, Feedback, Item, Origin};

fn cosine(e: &ItemEmbeddings, a: usize, b: usize) -> f32 {
    e.row(a).iter().zip(e.row(b)).map(|(x, y)| x * y).sum()
}

/// Two families of items ("space" and "farm"), each watched by its own users, plus one cold
/// "space" item nobody watched and one item only seen as a held-out test event.
fn two_families() -> (Dataset, usize, usize) {
    let mut b = DatasetBuilder::new();
    let origin = Origin::new("fixture", 1);
    for i in 0..20 {
        let (title, tag) = if i < 10 { ("star rocket orbit", "space") } else { ("barn tractor hay", "farm") };
        b.add_item(Item { id: format!("i{i}"), title: format!("{title} {i}"), tags: vec![tag.into()] }, &origin)
            .unwrap();
    }
    let cold = 20;
    b.add_item(Item { id: "cold".into(), title: "star rocket orbit".into(), tags: vec!["space".into()] }, &origin)
        .unwrap();
    let held_out = 21;
    b.add_item(Item { id: "held-out".into(), title: String::new(), tags: vec![] }, &origin).unwrap();
    for u in 0..30 {
        let family = u % 2;
        for t in 0..12 {
            let item = family * 10 + (u * 7 + t * 3) % 10;
            b.add_event(&format!("u{u}"), &format!("i{item}"), t as i64, Feedback::Rating(5.0), &origin);
        }
        // The last two events of a user are held out; this one is the test event of user 0.
        if u == 0 {
            b.add_event("u0", "i3", 100, Feedback::Rating(5.0), &origin);
            b.add_event("u0", "held-out", 101, Feedback::Rating(5.0), &origin);
        }
    }
    (b.finish("two-families").unwrap(), cold, held_out)
}

fn config() -> EmbeddingConfig {
    EmbeddingConfig { dim: 16, collab_dims: 8, ..EmbeddingConfig::default() }
}

#[test]
fn families_separate_and_rows_are_unit_length() {
    let (ds, _, _) = two_families();
    let e = item_embeddings(&ds, &config()).unwrap();
    assert_eq!((e.len(), e.dim), (22, 16));
    for i in 0..e.len() {
        let norm: f32 = e.row(i).iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5, "row {i} has squared norm {norm}");
    }
    let within = (cosine(&e, 0, 5) + cosine(&e, 12, 17)) / 2.0;
    let across = (cosine(&e, 0, 15) + cosine(&e, 5, 12)) / 2.0;
    assert!(within > across + 0.3, "within {within}, across {across}");
}

#[test]
fn collaborative_part_alone_separates_the_families() {
    let (mut ds, _, _) = two_families();
    ds.items.iter_mut().for_each(|i| {
        i.title.clear();
        i.tags.clear();
    });
    let e = item_embeddings(&ds, &config()).unwrap();
    let within = cosine(&e, 1, 8);
    let across = cosine(&e, 1, 18);
    assert!(within > across + 0.3, "within {within}, across {across}");
}

#[test]
fn cold_items_land_near_their_content_family() {
    let (ds, cold, _) = two_families();
    let e = item_embeddings(&ds, &config()).unwrap();
    let to_space: f32 = (0..10).map(|i| cosine(&e, cold, i)).sum::<f32>() / 10.0;
    let to_farm: f32 = (10..20).map(|i| cosine(&e, cold, i)).sum::<f32>() / 10.0;
    assert!(to_space > to_farm + 0.3, "space {to_space}, farm {to_farm}");
    // Its collaborative half was predicted from content, not left empty.
    assert!(e.row(cold)[8..].iter().any(|&x| x.abs() > 1e-3));
}

#[test]
fn held_out_events_do_not_shape_the_embeddings() {
    let (ds, _, held_out) = two_families();
    let e = item_embeddings(&ds, &config()).unwrap();
    // With no text and no training events, the item gets a seeded random direction, and the same
    // one when the held-out event is removed from the log.
    let (collab, warm) = collab::embed(&ds, 8, &CooccurrenceConfig::default(), 1).unwrap();
    assert!(!warm[held_out]);
    assert!(collab[held_out * 8..][..8].iter().all(|&x| x == 0.0));
    let again = item_embeddings(&ds, &config()).unwrap();
    assert_eq!(e, again, "embeddings are deterministic for a seed");
}

#[test]
fn bad_dimensions_are_refused() {
    let (ds, _, _) = two_families();
    let err = item_embeddings(&ds, &EmbeddingConfig { dim: 4, collab_dims: 8, ..config() }).unwrap_err();
    assert!(err.to_string().contains("collaborative dimensions"));
}

/// An item added later embeds as a cold item of the same text did when the catalogue was
/// embedded, and lands among its family.
#[test]
fn a_new_item_embeds_as_a_cold_item_of_the_same_text() {
    let (ds, cold, _) = two_families();
    let existing = item_embeddings(&ds, &config()).unwrap();
    let twin = Item { id: "new".into(), title: "star rocket orbit".into(), tags: vec!["space".into()] };
    let farm = Item { id: "new-farm".into(), title: "barn tractor".into(), tags: vec!["farm".into()] };
    let rows = embed_new_items(&existing, &ds.items, &[twin, farm], &config());
    let added = ItemEmbeddings { dim: 16, data: [existing.data.clone(), rows].concat() };
    let (twin, farm) = (existing.len(), existing.len() + 1);
    for row in [twin, farm] {
        let norm: f32 = added.row(row).iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
    }
    assert!(cosine(&added, twin, cold) > 0.95, "cosine to the cold twin {}", cosine(&added, twin, cold));
    let family = |row: usize, range: std::ops::Range<usize>| range.map(|i| cosine(&added, row, i)).sum::<f32>() / 10.0;
    assert!(family(twin, 0..10) > family(twin, 10..20) + 0.3);
    assert!(family(farm, 10..20) > family(farm, 0..10) + 0.3);
}
