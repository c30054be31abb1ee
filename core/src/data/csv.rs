//! CSV interaction logs, whose columns are named by a column map such as
//! `user=uid,item=movie,time=ts,rating=stars`, with an optional item CSV beside them.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use ::csv::{ReaderBuilder, Trim};

use super::table::{FeedbackColumn, InteractionColumns, Table};
use super::{Dataset, DatasetBuilder, Item, fields};
use crate::error::{Error, Result};

/// Which CSV column holds each part of an interaction. Written `user=uid,item=movie,time=ts,rating=stars`;
/// `user` and `item` are required. Feedback comes from the first of `rating`, `kind` (click, like…)
/// and `watch` (seconds) that is named; with none, every row is an implicit click. Without `time`,
/// row order stands in for time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnMap {
    pub user: String,
    pub item: String,
    pub time: Option<String>,
    pub rating: Option<String>,
    pub kind: Option<String>,
    pub watch: Option<String>,
}

impl FromStr for ColumnMap {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        let pairs = Pairs::parse(spec, &["user", "item", "time", "rating", "kind", "watch"])?;
        Ok(ColumnMap {
            user: pairs.required("user")?,
            item: pairs.required("item")?,
            time: pairs.take("time"),
            rating: pairs.take("rating"),
            kind: pairs.take("kind"),
            watch: pairs.take("watch"),
        })
    }
}

impl ColumnMap {
    fn resolve(&self, table: &Table) -> Result<InteractionColumns> {
        let optional = |name: &Option<String>| name.as_deref().map(|n| table.require(n)).transpose();
        let feedback = if let Some(c) = optional(&self.rating)? {
            FeedbackColumn::Rating(c)
        } else if let Some(c) = optional(&self.kind)? {
            FeedbackColumn::Kind(c)
        } else if let Some(c) = optional(&self.watch)? {
            FeedbackColumn::WatchTime(c)
        } else {
            FeedbackColumn::Implicit
        };
        Ok(InteractionColumns {
            user: table.require(&self.user)?,
            item: table.require(&self.item)?,
            time: optional(&self.time)?,
            feedback,
        })
    }
}

/// Which columns of an item CSV hold the id, the title and the tags, written `id=movie,title=name,tags=genres`.
/// Tags are split on `|` or `;`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemColumnMap {
    pub id: String,
    pub title: Option<String>,
    pub tags: Option<String>,
}

impl FromStr for ItemColumnMap {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        let pairs = Pairs::parse(spec, &["id", "title", "tags"])?;
        Ok(ItemColumnMap { id: pairs.required("id")?, title: pairs.take("title"), tags: pairs.take("tags") })
    }
}

/// An item catalogue in CSV, read before the log so that unknown items in the log are reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemCsv {
    pub path: PathBuf,
    pub columns: ItemColumnMap,
}

/// How to read a CSV log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvOptions {
    /// `None` finds the columns by RecBole's names: `user_id`, `item_id`, `timestamp`, `rating`, …
    pub columns: Option<ColumnMap>,
    /// The field delimiter of both the log and the item file.
    pub delimiter: u8,
    pub items: Option<ItemCsv>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions { columns: None, delimiter: b',', items: None }
    }
}

/// Loads a CSV log (which must have a header row) and its item file, if any. The data set is
/// named after the log's file stem.
pub fn load(path: &Path, options: &CsvOptions) -> Result<Dataset> {
    let mut builder = DatasetBuilder::new();
    if let Some(items) = &options.items {
        load_items(items, options.delimiter, &mut builder)?;
    }
    let mut table = Table::open(path, dialect(options.delimiter))?;
    let columns = match &options.columns {
        Some(map) => map.resolve(&table)?,
        None => {
            let names: Vec<&str> = table.header().iter().map(String::as_str).collect();
            let columns = InteractionColumns::by_convention(&table, &names, |_| false)?;
            columns.warn_unused(&table, &mut builder);
            columns
        }
    };
    columns.load(&mut table, &mut builder)?;
    builder.finish(&stem(path))
}

fn load_items(items: &ItemCsv, delimiter: u8, builder: &mut DatasetBuilder) -> Result<()> {
    let mut table = Table::open(&items.path, dialect(delimiter))?;
    let id = table.require(&items.columns.id)?;
    let title = items.columns.title.as_deref().map(|name| table.require(name)).transpose()?;
    let tags = items.columns.tags.as_deref().map(|name| table.require(name)).transpose()?;
    while let Some((row, origin)) = table.next_row()? {
        let item = Item {
            id: fields::id(&row[id], "item id", origin)?.to_string(),
            title: title.map_or_else(String::new, |c| row[c].to_string()),
            tags: tags.map_or_else(Vec::new, |c| {
                row[c].split(['|', ';']).map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect()
            }),
        };
        builder.add_item(item, origin)?;
    }
    Ok(())
}

/// Quoted fields as RFC 4180 writes them; spaces around fields are not part of the value.
fn dialect(delimiter: u8) -> ReaderBuilder {
    let mut dialect = ReaderBuilder::new();
    dialect.delimiter(delimiter).trim(Trim::All);
    dialect
}

fn stem(path: &Path) -> String {
    path.file_stem().map_or_else(|| "csv".to_string(), |s| s.to_string_lossy().into_owned())
}

/// The `key=column` pairs of a column map, checked against the keys it may use.
struct Pairs<'a> {
    spec: &'a str,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Pairs<'a> {
    fn parse(spec: &'a str, keys: &[&str]) -> Result<Self> {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, column)) = pair.split_once('=').map(|(k, c)| (k.trim(), c.trim())) else {
                return Err(Error::Config(format!("column map {spec:?}: {pair:?} is not key=column")));
            };
            if !keys.contains(&key) {
                return Err(Error::Config(format!(
                    "column map {spec:?}: unknown key {key:?}; the keys are {}",
                    keys.join(", ")
                )));
            }
            if column.is_empty() || pairs.iter().any(|&(k, _)| k == key) {
                return Err(Error::Config(format!("column map {spec:?}: give {key} one column name")));
            }
            pairs.push((key, column));
        }
        Ok(Pairs { spec, pairs })
    }

    fn take(&self, key: &str) -> Option<String> {
        self.pairs.iter().find(|&&(k, _)| k == key).map(|&(_, column)| column.to_string())
    }

    fn required(&self, key: &str) -> Result<String> {
        self.take(key).ok_or_else(|| Error::Config(format!("column map {:?} lacks {key}=<column>", self.spec)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Feedback;

    const LOG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mini.csv");
    const ITEMS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mini-items.csv");

    fn options(map: &str) -> CsvOptions {
        CsvOptions {
            columns: Some(map.parse().unwrap()),
            items: Some(ItemCsv { path: ITEMS.into(), columns: "id=movie,title=name,tags=genres".parse().unwrap() }),
            ..CsvOptions::default()
        }
    }

    #[test]
    fn column_maps_parse_and_refuse_unknown_keys() {
        let map: ColumnMap = " user=uid, item=movie,time=ts ,rating=stars".parse().unwrap();
        assert_eq!(map.user, "uid");
        assert_eq!(map.time.as_deref(), Some("ts"));
        assert_eq!(map.rating.as_deref(), Some("stars"));
        assert_eq!(map.kind, None);
        let err = "user=u,item=i,stars=r".parse::<ColumnMap>().unwrap_err().to_string();
        assert!(err.contains("unknown key \"stars\"; the keys are user, item, time, rating, kind, watch"), "{err}");
        let err = "item=i".parse::<ColumnMap>().unwrap_err().to_string();
        assert!(err.contains("lacks user=<column>"), "{err}");
        assert!("user=u,item=i,user=v".parse::<ColumnMap>().is_err());
        assert!("user=u,item".parse::<ColumnMap>().is_err());
        assert!("id=".parse::<ItemColumnMap>().is_err());
    }

    #[test]
    fn loads_a_log_and_its_items() {
        let ds = load(LOG.as_ref(), &options("user=uid,item=movie,time=ts,rating=stars")).unwrap();
        assert_eq!(ds.name, "mini");
        assert_eq!((ds.n_users(), ds.n_items(), ds.events.len()), (3, 5, 8));
        let m2 = &ds.items[1];
        assert_eq!((m2.id.as_str(), m2.title.as_str()), ("m2", "Heat, the remake"));
        assert_eq!(m2.tags, ["Action", "Crime", "Thriller"]);
        // Item m9 is in the log but not in the item file.
        assert_eq!(ds.items[4].id, "m9");
        assert!(ds.warnings[0].contains("mini.csv:9 item \"m9\""), "{:?}", ds.warnings);
        // u1's two events at time 200 keep their file order (m3 before m1).
        let u1: Vec<(&str, i64)> =
            ds.user_events(0).iter().map(|e| (ds.items[e.item as usize].id.as_str(), e.timestamp)).collect();
        assert_eq!(u1, [("m2", 100), ("m3", 200), ("m1", 200)]);
        assert_eq!(ds.user_events(0)[0].feedback, Feedback::Rating(5.0));
    }

    #[test]
    fn feedback_follows_the_mapped_column() {
        let ds = load(LOG.as_ref(), &options("user=uid,item=movie,kind=action,watch=secs")).unwrap();
        let kinds: Vec<Feedback> = ds.user_events(0).iter().map(|e| e.feedback).collect();
        // Without a time column, file order is time: m3, m2, m1 in rows 2, 4, 6.
        assert_eq!(kinds, [Feedback::Like, Feedback::Click, Feedback::Skip]);
        let ds = load(LOG.as_ref(), &options("user=uid,item=movie,watch=secs")).unwrap();
        assert_eq!(ds.user_events(0)[0].feedback, Feedback::WatchTime(40.0));
        let ds = load(LOG.as_ref(), &options("user=uid,item=movie")).unwrap();
        assert!(ds.events.iter().all(|e| e.feedback == Feedback::Click));
    }

    #[test]
    fn without_a_map_recbole_names_are_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.tsv");
        std::fs::write(&path, "user_id\titem_id\tevent\textra\nu\ti\tlike\tx\n").unwrap();
        let options = CsvOptions { delimiter: b'\t', ..CsvOptions::default() };
        let ds = load(&path, &options).unwrap();
        assert_eq!(ds.events[0].feedback, Feedback::Like);
        assert!(ds.warnings[0].ends_with("log.tsv: ignored column(s) extra"), "{:?}", ds.warnings);
    }

    #[test]
    fn a_missing_column_lists_the_columns_there_are() {
        let err = load(LOG.as_ref(), &options("user=user,item=movie")).unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }));
        let err = err.to_string();
        assert!(
            err.contains("mini.csv: no column \"user\"; the columns are: uid, movie, ts, stars, action, secs"),
            "{err}"
        );
    }

    #[test]
    fn bad_rows_name_their_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.csv");
        let map = CsvOptions { columns: Some("user=u,item=i,time=t".parse().unwrap()), ..CsvOptions::default() };
        std::fs::write(&path, "u,i,t\na,b,1\n\"a\",\"b\",\"2\"\na,b,noon\n").unwrap();
        let err = load(&path, &map).unwrap_err().to_string();
        assert!(err.ends_with("bad.csv:4: timestamp \"noon\" is not a number of seconds"), "{err}");
        std::fs::write(&path, "u,i,t\na,b,1\na,b\n").unwrap();
        let err = load(&path, &map).unwrap_err().to_string();
        assert!(err.ends_with("bad.csv:3: expected 3 fields, found 2"), "{err}");
        std::fs::write(&path, "u,i,t\n").unwrap();
        let err = load(&path, &map).unwrap_err().to_string();
        assert!(err.ends_with("bad.csv: no interactions after the header row"), "{err}");
        let err = load(&dir.path().join("absent.csv"), &map).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }
}
