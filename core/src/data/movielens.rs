//! MovieLens-100K (`u.data`, `u.item`, `u.user`) and MovieLens-1M (`ratings.dat`, `movies.dat`,
//! `users.dat`) directories, as GroupLens distributes them.
//!
//! Their text is Latin-1, not UTF-8 (the "é" of "Misérables" is the single byte 0xE9), so every
//! line is decoded as Latin-1; ASCII lines, nearly all of them, are taken as they are.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::{Dataset, DatasetBuilder, Feedback, Item, Origin, User, fields};
use crate::error::{Error, Result};

/// ML-100K's genre flags in `u.item`, in column order.
const GENRES_100K: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// Loads an ML-100K directory: `u.item`, then `u.user` when present, then the `u.data` ratings.
/// The data set is named after the directory.
pub fn load_100k(dir: &Path) -> Result<Dataset> {
    load(dir, &ML_100K)
}

/// Loads an ML-1M directory: `movies.dat`, then `users.dat` when present, then `ratings.dat`.
/// The data set is named after the directory.
pub fn load_1m(dir: &Path) -> Result<Dataset> {
    load(dir, &ML_1M)
}

/// The files of one MovieLens release and how to read their lines.
struct Release {
    /// The data set's name when the directory has none (such as `.`).
    name: &'static str,
    items: &'static str,
    users: &'static str,
    ratings: &'static str,
    /// Separator of the fields of a rating line.
    separator: &'static str,
    item: fn(&str, &Origin) -> Result<Item>,
    user: fn(&str, &Origin) -> Result<User>,
}

const ML_100K: Release = Release {
    name: "ml-100k",
    items: "u.item",
    users: "u.user",
    ratings: "u.data",
    separator: "\t",
    item: item_100k,
    user: user_100k,
};

const ML_1M: Release = Release {
    name: "ml-1m",
    items: "movies.dat",
    users: "users.dat",
    ratings: "ratings.dat",
    separator: "::",
    item: item_1m,
    user: user_1m,
};

/// Reads the catalogue first, so that the builder reports ratings of unknown items.
fn load(dir: &Path, release: &Release) -> Result<Dataset> {
    let mut builder = DatasetBuilder::new();
    for_each_line(&dir.join(release.items), |line, origin| {
        builder.add_item((release.item)(line, origin)?, origin).map(drop)
    })?;
    let users = dir.join(release.users);
    if users.is_file() {
        for_each_line(&users, |line, origin| builder.add_user((release.user)(line, origin)?, origin).map(drop))?;
    }
    for_each_line(&dir.join(release.ratings), |line, origin| {
        let [user, item, rating, time] = split(line, release.separator, origin)?;
        let rating = Feedback::Rating(fields::number(rating, "rating", origin)?);
        let (user, item) = (fields::id(user, "user id", origin)?, fields::id(item, "item id", origin)?);
        builder.add_event(user, item, fields::timestamp(time, origin)?, rating, origin);
        Ok(())
    })?;
    let name = dir.file_name().map_or_else(|| release.name.to_string(), |n| n.to_string_lossy().into_owned());
    builder.finish(&name)
}

/// `id|title|release date|video release date|IMDb URL|` and 19 genre flags.
fn item_100k(line: &str, origin: &Origin) -> Result<Item> {
    let [id, title, _release, _video_release, _url, flags @ ..] = split::<24>(line, "|", origin)?;
    let mut tags = Vec::new();
    for (genre, flag) in GENRES_100K.iter().zip(flags) {
        match flag {
            "1" => tags.push(genre.to_string()),
            "0" => {}
            _ => return Err(origin.error(format!("the {genre} flag is {flag:?}, not 0 or 1"))),
        }
    }
    Ok(Item { id: fields::id(id, "item id", origin)?.to_string(), title: fields::display_title(title), tags })
}

/// `MovieID::Title::Genres`, genres separated by `|`.
fn item_1m(line: &str, origin: &Origin) -> Result<Item> {
    let [id, title, genres] = split(line, "::", origin)?;
    Ok(Item {
        id: fields::id(id, "item id", origin)?.to_string(),
        title: fields::display_title(title),
        tags: genres.split('|').filter(|g| !g.is_empty()).map(String::from).collect(),
    })
}

/// `id|age|gender|occupation|zip`.
fn user_100k(line: &str, origin: &Origin) -> Result<User> {
    let [id, age, gender, occupation, zip] = split(line, "|", origin)?;
    user(id, [("age", age), ("gender", gender), ("occupation", occupation), ("zip", zip)], origin)
}

/// `UserID::Gender::Age::Occupation::Zip-code`; age and occupation are ML-1M's codes (`25`, `12`).
fn user_1m(line: &str, origin: &Origin) -> Result<User> {
    let [id, gender, age, occupation, zip] = split(line, "::", origin)?;
    user(id, [("age", age), ("gender", gender), ("occupation", occupation), ("zip", zip)], origin)
}

/// A user with `name=value` features, leaving out blank values.
fn user(id: &str, features: [(&str, &str); 4], origin: &Origin) -> Result<User> {
    Ok(User {
        id: fields::id(id, "user id", origin)?.to_string(),
        features: (features.iter())
            .filter(|(_, value)| !value.trim().is_empty())
            .map(|(name, value)| format!("{name}={}", value.trim()))
            .collect(),
    })
}

/// Splits a line into exactly `N` fields.
fn split<'a, const N: usize>(line: &'a str, separator: &str, origin: &Origin) -> Result<[&'a str; N]> {
    let wrong_count = || {
        origin.error(format!("expected {N} fields separated by {separator:?}, found {}", line.split(separator).count()))
    };
    let mut parts = line.split(separator);
    let mut fields = [""; N];
    for field in &mut fields {
        *field = parts.next().ok_or_else(wrong_count)?;
    }
    match parts.next() {
        Some(_) => Err(wrong_count()),
        None => Ok(fields),
    }
}

/// Calls `each` with every non-blank line of a Latin-1 file, decoded, and where it is.
fn for_each_line(path: &Path, mut each: impl FnMut(&str, &Origin) -> Result<()>) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut origin = Origin::new(path, 0);
    let (mut bytes, mut text) = (Vec::new(), String::new());
    loop {
        bytes.clear();
        if reader.read_until(b'\n', &mut bytes).map_err(|e| Error::io(path, e))? == 0 {
            return Ok(());
        }
        origin.line += 1;
        let line = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        text.clear();
        match std::str::from_utf8(line) {
            Ok(ascii) if ascii.is_ascii() => text.push_str(ascii),
            // Latin-1 maps each byte to the code point of the same value.
            _ => text.extend(line.iter().map(|&b| char::from(b))),
        }
        each(&text, &origin)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ML_100K_MINI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ml-100k-mini");
    const ML_1M_MINI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ml-1m-mini");

    fn item_ids(ds: &Dataset, user: u32) -> Vec<&str> {
        ds.user_events(user).iter().map(|e| ds.items[e.item as usize].id.as_str()).collect()
    }

    #[test]
    fn loads_ml_100k() {
        let ds = load_100k(ML_100K_MINI.as_ref()).unwrap();
        assert_eq!(ds.name, "ml-100k-mini");
        // Item 99 is rated but missing from u.item; user 4 has no ratings.
        assert_eq!((ds.n_users(), ds.n_items(), ds.events.len()), (4, 6, 10));
        assert_eq!(ds.items[3].title, "Les Misérables (1995)");
        assert_eq!(ds.items[3].tags, ["Drama", "Musical"]);
        assert_eq!(ds.items[0].tags, ["Animation", "Children's", "Comedy"]);
        assert_eq!(ds.users[0].features, ["age=24", "gender=M", "occupation=technician", "zip=85711"]);
        assert_eq!(ds.users[3].features, ["age=24", "gender=M", "occupation=technician"]);
        // Items 4 and 3 were rated in the same second; file order breaks the tie.
        assert_eq!(item_ids(&ds, 0), ["2", "1", "4", "3"]);
        assert_eq!(ds.user_events(0)[1].feedback, Feedback::Rating(5.0));
        assert!(ds.user_events(3).is_empty());
        assert_eq!(ds.warnings.len(), 1);
        assert!(ds.warnings[0].contains("u.data:7 item \"99\""), "{:?}", ds.warnings);
    }

    #[test]
    fn loads_ml_1m() {
        let ds = load_1m(ML_1M_MINI.as_ref()).unwrap();
        assert_eq!((ds.n_users(), ds.n_items(), ds.events.len()), (2, 3, 5));
        assert_eq!(ds.items[2].title, "Les Misérables (1995)");
        assert_eq!(ds.items[1].tags, ["Adventure", "Children's", "Fantasy"]);
        assert_eq!(ds.users[1].features, ["age=56", "gender=M", "occupation=16", "zip=70072"]);
        assert_eq!(item_ids(&ds, 0), ["1", "2", "73"]);
        assert!(ds.warnings.is_empty(), "{:?}", ds.warnings);
    }

    #[test]
    fn bad_rows_name_their_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let flags = ["0"; 19].join("|");
        std::fs::write(dir.path().join("u.item"), format!("1|A|||url|{flags}\n")).unwrap();
        std::fs::write(dir.path().join("u.data"), "1\t1\t5\t10\n\n1\t1\t5\n").unwrap();
        let err = load_100k(dir.path()).unwrap_err().to_string();
        assert!(err.ends_with("u.data:3: expected 4 fields separated by \"\\t\", found 3"), "{err}");
        std::fs::write(dir.path().join("u.data"), "1\t1\tfive\t10\n").unwrap();
        let err = load_100k(dir.path()).unwrap_err().to_string();
        assert!(err.ends_with("u.data:1: rating \"five\" is not a finite number"), "{err}");
        std::fs::write(
            dir.path().join("u.item"),
            format!("1|A|||url|{flags}\r\n2|B|||url|{}|2\r\n", ["0"; 18].join("|")),
        )
        .unwrap();
        let err = load_100k(dir.path()).unwrap_err().to_string();
        assert!(err.ends_with("u.item:2: the Western flag is \"2\", not 0 or 1"), "{err}");
        let err = load_1m(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("movies.dat"), "{err}");
    }
}
