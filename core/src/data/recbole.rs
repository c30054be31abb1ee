//! RecBole atomic files: `<name>.inter`, with optional `<name>.item` and `<name>.user` beside it.
//!
//! Each is tab-separated UTF-8 under a typed header such as `user_id:token`, `item_id:token`, `rating:float`.
//! Reading them lets us evaluate on exactly the data RecBole's published baselines use (DESIGN.md §3).

use std::path::Path;

use ::csv::ReaderBuilder;

use super::table::{InteractionColumns, Table};
use super::{Dataset, DatasetBuilder, Item, User, fields};
use crate::error::Result;

/// Loads `<dir>/<name>.inter` and, when present, the `.item` and `.user` files of the same name.
/// The data set is called `name`.
pub fn load(dir: &Path, name: &str) -> Result<Dataset> {
    let mut builder = DatasetBuilder::new();
    let items = dir.join(format!("{name}.item"));
    if items.is_file() {
        load_items(&items, &mut builder)?;
    }
    let users = dir.join(format!("{name}.user"));
    if users.is_file() {
        load_users(&users, &mut builder)?;
    }
    let (mut table, schema) = open(&dir.join(format!("{name}.inter")))?;
    let names: Vec<&str> = schema.iter().map(|(name, _)| name.as_str()).collect();
    let columns = InteractionColumns::by_convention(&table, &names, |c| schema[c].1.is_numeric())?;
    columns.warn_unused(&table, &mut builder);
    columns.load(&mut table, &mut builder)?;
    builder.finish(name)
}

/// The value type of a column, written after the colon in the header.
#[derive(Clone, Copy, Debug, PartialEq)]
enum FieldType {
    Token,
    /// Space-separated tokens, such as a title or a list of genres.
    TokenSeq,
    Float,
    FloatSeq,
}

impl FieldType {
    fn is_numeric(self) -> bool {
        matches!(self, FieldType::Float | FieldType::FloatSeq)
    }
}

/// Column names with their types, in header order.
type Schema = Vec<(String, FieldType)>;

/// Opens an atomic file and reads its typed header.
fn open(path: &Path) -> Result<(Table, Schema)> {
    let mut dialect = ReaderBuilder::new();
    // RecBole writes fields verbatim: a quote is part of a title, not the start of a quoted field.
    dialect.delimiter(b'\t').quoting(false);
    let table = Table::open(path, dialect)?;
    let schema = (table.header().iter())
        .map(|column| {
            let (name, ty) = column.rsplit_once(':').unwrap_or((column, ""));
            let ty = match ty {
                "token" => FieldType::Token,
                "token_seq" => FieldType::TokenSeq,
                "float" => FieldType::Float,
                "float_seq" => FieldType::FloatSeq,
                _ => {
                    return Err(table.header_error(format!(
                        "column {column:?} needs a type: token, token_seq, float or float_seq"
                    )));
                }
            };
            Ok((name.to_string(), ty))
        })
        .collect::<Result<Schema>>()?;
    Ok((table, schema))
}

/// The index of a column every file of its kind must have.
fn required(table: &Table, schema: &Schema, name: &str) -> Result<usize> {
    schema.iter().position(|(n, _)| n == name).ok_or_else(|| table.header_error(format!("no {name} column")))
}

/// Items with a title (the first text column named like `title` or `name`) and tags: each word of
/// the other `token_seq` columns (genres, classes) and `column=value` for `token` columns.
fn load_items(path: &Path, builder: &mut DatasetBuilder) -> Result<()> {
    let (mut table, schema) = open(path)?;
    let id = required(&table, &schema, "item_id")?;
    let title = (0..schema.len()).find(|&c| {
        let (name, ty) = &schema[c];
        !ty.is_numeric() && (name.contains("title") || name.contains("name"))
    });
    while let Some((row, origin)) = table.next_row()? {
        let mut item = Item {
            id: fields::id(&row[id], "item id", origin)?.to_string(),
            title: title.map_or_else(String::new, |c| {
                fields::display_title(&row[c].split_whitespace().collect::<Vec<_>>().join(" "))
            }),
            tags: Vec::new(),
        };
        for (c, (name, ty)) in schema.iter().enumerate() {
            if c != id && Some(c) != title {
                push_tokens(&mut item.tags, name, *ty, &row[c], false);
            }
        }
        builder.add_item(item, origin)?;
    }
    Ok(())
}

/// Users with `name=value` features from every text column but the id.
fn load_users(path: &Path, builder: &mut DatasetBuilder) -> Result<()> {
    let (mut table, schema) = open(path)?;
    let id = required(&table, &schema, "user_id")?;
    while let Some((row, origin)) = table.next_row()? {
        let mut user = User { id: fields::id(&row[id], "user id", origin)?.to_string(), features: Vec::new() };
        for (c, (name, ty)) in schema.iter().enumerate() {
            if c != id {
                push_tokens(&mut user.features, name, *ty, &row[c], true);
            }
        }
        builder.add_user(user, origin)?;
    }
    Ok(())
}

/// Appends the tokens of one field: `name=value` for a `token`, each word of a `token_seq` (as
/// `name=word` when `name_words`), nothing for numbers, which are no text.
fn push_tokens(out: &mut Vec<String>, name: &str, ty: FieldType, field: &str, name_words: bool) {
    match ty {
        FieldType::Token if !field.is_empty() => out.push(format!("{name}={field}")),
        FieldType::TokenSeq if name_words => out.extend(field.split_whitespace().map(|w| format!("{name}={w}"))),
        FieldType::TokenSeq => out.extend(field.split_whitespace().map(String::from)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Feedback;
    use crate::error::Error;

    const MINI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/recbole-mini");

    /// Writes `<dir>/t.inter` and loads it.
    fn load_inter(text: &str) -> Result<Dataset> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.inter"), text).unwrap();
        load(dir.path(), "t")
    }

    #[test]
    fn loads_interactions_items_and_users() {
        let ds = load(MINI.as_ref(), "mini").unwrap();
        assert_eq!(ds.name, "mini");
        assert_eq!((ds.n_users(), ds.n_items(), ds.events.len()), (3, 4, 9));
        assert!(ds.warnings.is_empty(), "{:?}", ds.warnings);
        let toy = &ds.items[0];
        assert_eq!((toy.id.as_str(), toy.title.as_str()), ("1", "Toy Story"));
        assert_eq!(toy.tags, ["release_year=1995", "Animation", "Children's", "Comedy"]);
        assert_eq!(ds.items[2].title, "Les Misérables");
        assert_eq!(ds.users[0].features, ["age=24", "gender=M", "occupation=technician"]);
        // User 1 rated items 3 and 2 in the same second: file order breaks the tie.
        let u1: Vec<(&str, i64, Feedback)> = (ds.user_events(0).iter())
            .map(|e| (ds.items[e.item as usize].id.as_str(), e.timestamp, e.feedback))
            .collect();
        assert_eq!(
            u1,
            [
                ("1", 874_965_758, Feedback::Rating(5.0)),
                ("3", 880_000_000, Feedback::Rating(4.0)),
                ("2", 880_000_000, Feedback::Rating(3.0))
            ]
        );
    }

    #[test]
    fn feedback_comes_from_the_conventional_columns() {
        let ds = load_inter("user_id:token\titem_id:token\tlabel:token\nu\ta\tlike\nu\tb\tskip\n\n\n").unwrap();
        let kinds: Vec<Feedback> = ds.events.iter().map(|e| e.feedback).collect();
        assert_eq!(kinds, [Feedback::Like, Feedback::Skip]);
        // Without a timestamp, row order is time.
        assert_eq!(ds.events[1].timestamp, 1);
        let ds = load_inter("item_id:token\tuser_id:token\twatch_time:float\na\tu\t12.5\n").unwrap();
        assert_eq!(ds.events[0].feedback, Feedback::WatchTime(12.5));
        // A numeric label is no event kind: the column is reported and the rows are implicit clicks.
        let ds = load_inter("user_id:token\titem_id:token\tlabel:float\nu\ta\t1\n").unwrap();
        assert_eq!(ds.events[0].feedback, Feedback::Click);
        assert!(ds.warnings[0].ends_with("t.inter: ignored column(s) label:float"), "{:?}", ds.warnings);
    }

    #[test]
    fn bad_files_name_their_line() {
        let err = load_inter("user_id:token\titem_id:token\tlabel:token\nu\ta\tlike\nu\tb\tpurchase\n").unwrap_err();
        assert!(err.to_string().contains("t.inter:3: unknown event kind \"purchase\""), "{err}");
        let err = load_inter("user_id:token\titem_id:token\trating:float\nu\ta\t4\n\nu\tb\n").unwrap_err();
        assert!(err.to_string().ends_with("t.inter:4: expected 3 fields, found 2"), "{err}");
        let err = load_inter("user_id:token\titem_id:token\ttimestamp:float\nu\ta\tyesterday\n").unwrap_err();
        assert!(err.to_string().ends_with("t.inter:2: timestamp \"yesterday\" is not a number of seconds"), "{err}");
        let err = load_inter("user:token\titem_id:token\n").unwrap_err();
        assert!(matches!(err, Error::Parse { line: 1, .. }));
        assert!(
            err.to_string().ends_with("t.inter:1: no user_id column (columns: user:token, item_id:token)"),
            "{err}"
        );
        let err = load_inter("user_id\titem_id:token\n").unwrap_err();
        assert!(err.to_string().contains("t.inter:1: column \"user_id\" needs a type"), "{err}");
        let err = load_inter("user_id:token\titem_id:token\n\n").unwrap_err();
        assert!(err.to_string().ends_with("t.inter: no interactions after the header row"), "{err}");
        let err = load(MINI.as_ref(), "absent").unwrap_err();
        assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("absent.inter"), "{err}");
    }

    #[test]
    fn unknown_items_in_the_log_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.item"), "item_id:token\ttitle:token_seq\na\tA film\n").unwrap();
        std::fs::write(dir.path().join("t.inter"), "user_id:token\titem_id:token\nu\ta\nu\tz\n").unwrap();
        let ds = load(dir.path(), "t").unwrap();
        assert_eq!(ds.n_items(), 2);
        assert!(ds.warnings[0].contains("t.inter:3 item \"z\""), "{:?}", ds.warnings);
    }
}
