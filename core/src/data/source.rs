//! Picks the loader for a path: by the format the user names, or by looking at what is there.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::csv::CsvOptions;
use super::{Dataset, csv, movielens, recbole};
use crate::error::{Error, Result};

/// The formats the loaders read. `Auto` looks at the path to choose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DataFormat {
    #[default]
    Auto,
    /// A MovieLens-100K directory (`u.data`, `u.item`, `u.user`).
    Ml100k,
    /// A MovieLens-1M directory (`ratings.dat`, `movies.dat`, `users.dat`).
    Ml1m,
    /// RecBole atomic files: a `.inter` file, or a directory holding one.
    RecBole,
    /// A CSV log, read with [`DataSource::csv`].
    Csv,
}

impl DataFormat {
    const ALL: [DataFormat; 5] =
        [DataFormat::Auto, DataFormat::Ml100k, DataFormat::Ml1m, DataFormat::RecBole, DataFormat::Csv];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DataFormat::Auto => "auto",
            DataFormat::Ml100k => "ml-100k",
            DataFormat::Ml1m => "ml-1m",
            DataFormat::RecBole => "recbole",
            DataFormat::Csv => "csv",
        }
    }
}

impl fmt::Display for DataFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DataFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        Self::ALL.into_iter().find(|f| f.name().eq_ignore_ascii_case(s)).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|f| f.name()).collect();
            Error::Config(format!("unknown data format {s:?}; expected one of {}", names.join(", ")))
        })
    }
}

/// Where a data set is and how to read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataSource {
    /// A directory (MovieLens, RecBole) or a file (`.inter`, `.csv`).
    pub path: PathBuf,
    pub format: DataFormat,
    /// Used by the CSV format only.
    pub csv: CsvOptions,
}

/// What automatic detection looks for, for errors that must say so.
const LOOKED_FOR: &str = "a directory holding u.data (MovieLens-100K), ratings.dat (MovieLens-1M) or one *.inter \
                          file (RecBole), or a .inter or .csv file";

impl DataSource {
    /// A source whose format is detected from what is at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DataSource { path: path.into(), ..DataSource::default() }
    }

    /// The format this source will be read as: the one given, or the one detected for `Auto`.
    pub fn detect(&self) -> Result<DataFormat> {
        match self.format {
            DataFormat::Auto => detect(&self.path),
            format => Ok(format),
        }
    }

    /// Reads the data set with the loader of its format.
    pub fn load(&self) -> Result<Dataset> {
        self.load_as(self.format)
    }

    fn load_as(&self, format: DataFormat) -> Result<Dataset> {
        let path = &self.path;
        match format {
            DataFormat::Auto => self.load_as(detect(path)?),
            DataFormat::Ml100k => movielens::load_100k(path),
            DataFormat::Ml1m => movielens::load_1m(path),
            DataFormat::Csv => csv::load(path, &self.csv),
            DataFormat::RecBole => {
                let inter = recbole_inter(path)?
                    .ok_or_else(|| Error::invalid(path, "expected a .inter file or a directory holding one"))?;
                let name = inter.file_stem().unwrap_or_default().to_string_lossy();
                recbole::load(inter.parent().unwrap_or(Path::new("")), &name)
            }
        }
    }
}

/// The format of what is at `path`; never `Auto`.
fn detect(path: &Path) -> Result<DataFormat> {
    if path.is_dir() {
        if path.join("u.data").is_file() {
            return Ok(DataFormat::Ml100k);
        }
        if path.join("ratings.dat").is_file() {
            return Ok(DataFormat::Ml1m);
        }
    } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
        return Ok(DataFormat::Csv);
    } else if !path.exists() {
        return Err(Error::invalid(path, format!("nothing is there; expected {LOOKED_FOR}")));
    }
    match recbole_inter(path)? {
        Some(_) => Ok(DataFormat::RecBole),
        None => Err(Error::invalid(path, format!("cannot tell the data format; expected {LOOKED_FOR}"))),
    }
}

/// The `.inter` file a RecBole path stands for: the path itself, or the only one in a directory.
/// Several in one directory is an error, since choosing among them would be a guess.
fn recbole_inter(path: &Path) -> Result<Option<PathBuf>> {
    let is_inter = |p: &Path| p.extension().is_some_and(|e| e == "inter");
    if !path.is_dir() {
        return Ok(is_inter(path).then(|| path.to_path_buf()));
    }
    let mut found = Vec::new();
    for entry in path.read_dir().map_err(|e| Error::io(path, e))? {
        let entry = entry.map_err(|e| Error::io(path, e))?.path();
        if is_inter(&entry) && entry.is_file() {
            found.push(entry);
        }
    }
    if found.len() > 1 {
        found.sort();
        let names: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::invalid(path, format!("several .inter files ({}); name the one to load", names.join(", "))));
    }
    Ok(found.pop())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
    }

    #[test]
    fn format_names_round_trip() {
        for format in DataFormat::ALL {
            assert_eq!(format.to_string().parse::<DataFormat>().unwrap(), format);
        }
        assert_eq!("ML-100K".parse::<DataFormat>().unwrap(), DataFormat::Ml100k);
        let err = "parquet".parse::<DataFormat>().unwrap_err().to_string();
        assert!(err.contains("expected one of auto, ml-100k, ml-1m, recbole, csv"), "{err}");
    }

    #[test]
    fn detects_each_format() {
        let cases = [
            ("ml-100k-mini", DataFormat::Ml100k, 10),
            ("ml-1m-mini", DataFormat::Ml1m, 5),
            ("recbole-mini", DataFormat::RecBole, 9),
            ("recbole-mini/mini.inter", DataFormat::RecBole, 9),
            ("mini.csv", DataFormat::Csv, 8),
        ];
        for (name, format, events) in cases {
            let mut source = DataSource::new(fixture(name));
            if format == DataFormat::Csv {
                source.csv.columns = Some("user=uid,item=movie,time=ts".parse().unwrap());
            }
            assert_eq!(source.detect().unwrap(), format, "{name}");
            assert_eq!(source.load().unwrap().events.len(), events, "{name}");
        }
    }

    #[test]
    fn explicit_formats_are_not_second_guessed() {
        let source = DataSource { format: DataFormat::Ml1m, ..DataSource::new(fixture("ml-100k-mini")) };
        let err = source.load().unwrap_err().to_string();
        assert!(err.contains("movies.dat"), "{err}");
    }

    #[test]
    fn undetectable_paths_say_what_was_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        let err = DataSource::new(dir.path()).load().unwrap_err().to_string();
        assert!(err.contains("cannot tell the data format; expected a directory holding u.data"), "{err}");
        let err = DataSource::new(dir.path().join("absent")).load().unwrap_err().to_string();
        assert!(err.contains("absent: nothing is there; expected"), "{err}");
        std::fs::write(dir.path().join("a.inter"), "").unwrap();
        std::fs::write(dir.path().join("b.inter"), "").unwrap();
        let err = DataSource::new(dir.path()).load().unwrap_err().to_string();
        assert!(err.contains("several .inter files") && err.contains("b.inter"), "{err}");
    }
}
