//! Delimited text tables under a header row, and the interaction columns found in them.
//!
//! RecBole atomic files and CSV logs differ only in dialect and in how their columns are named,
//! so both read rows here and turn them into events with the same feedback rules.

use std::collections::VecDeque;
use std::fmt::Display;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use csv::{ReaderBuilder, StringRecord};

use super::{DatasetBuilder, Feedback, Origin, fields};
use crate::error::{Error, Result};

/// Bytes the reader buffers; large enough that a 10M-row log costs few system calls.
const BUFFER_BYTES: usize = 1 << 16;

/// A table read row by row into one reused record, so that rows cost no allocation.
pub(crate) struct Table {
    reader: csv::Reader<LineStarts<File>>,
    header: Vec<String>,
    row: StringRecord,
    origin: Origin,
}

impl Table {
    /// Opens `path` and reads its header row; `dialect` carries the format's delimiter and quoting.
    pub fn open(path: &Path, mut dialect: ReaderBuilder) -> Result<Table> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let reader =
            dialect.has_headers(false).flexible(true).buffer_capacity(BUFFER_BYTES).from_reader(LineStarts::new(file));
        let mut table = Table { reader, header: Vec::new(), row: StringRecord::new(), origin: Origin::new(path, 0) };
        if !table.advance()? {
            return Err(Error::invalid(path, "the file is empty; expected a header row"));
        }
        // Spreadsheets often start a CSV file with a byte-order mark, which is no part of the name.
        table.header = table.row.iter().map(|name| name.trim_start_matches('\u{feff}').to_string()).collect();
        Ok(table)
    }

    pub fn path(&self) -> &Path {
        &self.origin.path
    }

    /// The column names as the header row writes them.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// The index of a column that the caller was told to use, or an error listing the columns there are.
    pub fn require(&self, name: &str) -> Result<usize> {
        self.header.iter().position(|h| h == name).ok_or_else(|| {
            Error::invalid(self.path(), format!("no column {name:?}; the columns are: {}", self.header.join(", ")))
        })
    }

    /// An error about the header row (line 1), listing its columns.
    pub fn header_error(&self, message: impl Display) -> Error {
        Error::parse(self.path(), 1, format!("{message} (columns: {})", self.header.join(", ")))
    }

    /// The next row and where it is, or `None` at the end. Blank lines are skipped; a row with
    /// more or fewer fields than the header is an error.
    pub fn next_row(&mut self) -> Result<Option<(&StringRecord, &Origin)>> {
        if !self.advance()? {
            return Ok(None);
        }
        if self.row.len() != self.header.len() {
            let message = format!("expected {} fields, found {}", self.header.len(), self.row.len());
            return Err(self.origin.error(message));
        }
        Ok(Some((&self.row, &self.origin)))
    }

    fn advance(&mut self) -> Result<bool> {
        match self.reader.read_record(&mut self.row) {
            Ok(more) => {
                if let Some(position) = self.row.position() {
                    self.origin.line = self.reader.get_mut().line_at(position.byte());
                }
                Ok(more)
            }
            Err(err) => {
                let line = err.position().map_or(self.origin.line + 1, |p| self.reader.get_mut().line_at(p.byte()));
                Err(match err.into_kind() {
                    csv::ErrorKind::Io(source) => Error::io(self.path(), source),
                    csv::ErrorKind::Utf8 { err, .. } => {
                        Error::parse(self.path(), line, format!("field {} is not valid UTF-8", err.field() + 1))
                    }
                    other => Error::parse(self.path(), line, format!("{other:?}")),
                })
            }
        }
    }
}

/// Passes a file through while noting the byte offset and number of each line's first byte.
///
/// The CSV reader skips blank lines without counting them into a record's position (its start
/// is where the previous record ended), so the line of a record is looked up here instead: the
/// first line start at or after that offset.
struct LineStarts<R> {
    inner: R,
    offset: u64,
    line: usize,
    at_line_start: bool,
    /// Line starts read ahead of the CSV reader, oldest first.
    starts: VecDeque<(u64, usize)>,
}

impl<R> LineStarts<R> {
    fn new(inner: R) -> Self {
        LineStarts { inner, offset: 0, line: 1, at_line_start: true, starts: VecDeque::new() }
    }

    /// The line of the first non-blank byte at or after `offset`; earlier line starts are forgotten.
    fn line_at(&mut self, offset: u64) -> usize {
        while self.starts.front().is_some_and(|&(start, _)| start < offset) {
            self.starts.pop_front();
        }
        self.starts.front().map_or(self.line, |&(_, line)| line)
    }
}

impl<R: Read> Read for LineStarts<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &byte in &buf[..n] {
            match byte {
                b'\n' => {
                    self.line += 1;
                    self.at_line_start = true;
                }
                b'\r' => {}
                _ if self.at_line_start => {
                    self.starts.push_back((self.offset, self.line));
                    self.at_line_start = false;
                }
                _ => {}
            }
            self.offset += 1;
        }
        Ok(n)
    }
}

/// The column that says what the user did, and how to read it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum FeedbackColumn {
    /// An explicit rating.
    Rating(usize),
    /// An event kind such as `click` or `like`, read by [`Feedback::from_kind`].
    Kind(usize),
    /// Seconds watched.
    WatchTime(usize),
    /// No such column: every row is an implicit click.
    Implicit,
}

impl FeedbackColumn {
    fn column(self) -> Option<usize> {
        match self {
            FeedbackColumn::Rating(c) | FeedbackColumn::Kind(c) | FeedbackColumn::WatchTime(c) => Some(c),
            FeedbackColumn::Implicit => None,
        }
    }

    fn read(self, row: &StringRecord, origin: &Origin) -> Result<Feedback> {
        Ok(match self {
            FeedbackColumn::Rating(c) => Feedback::Rating(fields::number(&row[c], "rating", origin)?),
            FeedbackColumn::Kind(c) => Feedback::from_kind(&row[c]).ok_or_else(|| {
                origin.error(format!(
                    "unknown event kind {:?}; expected impression, view, show, click, like, skip or dislike",
                    &row[c]
                ))
            })?,
            FeedbackColumn::WatchTime(c) => match fields::number(&row[c], "watch time", origin)? {
                seconds if seconds < 0.0 => return Err(origin.error(format!("negative watch time {seconds}"))),
                seconds => Feedback::WatchTime(seconds),
            },
            FeedbackColumn::Implicit => Feedback::Click,
        })
    }
}

/// Where the parts of an interaction sit in a table row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct InteractionColumns {
    pub user: usize,
    pub item: usize,
    /// Seconds since the epoch; without it, row order stands in for time.
    pub time: Option<usize>,
    pub feedback: FeedbackColumn,
}

impl InteractionColumns {
    /// Finds the columns by the names RecBole gives them: `user_id`, `item_id`, optional
    /// `timestamp`, and for feedback the first of `rating`, `label`/`event`/`kind`, or
    /// `watch_time`/`duration`. `names` are the column names without any type; `numeric(c)` says
    /// that column `c` holds numbers, which rules it out as an event kind.
    pub fn by_convention(table: &Table, names: &[&str], numeric: impl Fn(usize) -> bool) -> Result<Self> {
        let find = |candidates: &[&str], text_only: bool| {
            (0..names.len()).find(|&c| candidates.contains(&names[c]) && !(text_only && numeric(c)))
        };
        let required = |name: &str| find(&[name], false).ok_or_else(|| table.header_error(format!("no {name} column")));
        let feedback = if let Some(c) = find(&["rating"], false) {
            FeedbackColumn::Rating(c)
        } else if let Some(c) = find(&["label", "event", "kind"], true) {
            FeedbackColumn::Kind(c)
        } else if let Some(c) = find(&["watch_time", "duration"], false) {
            FeedbackColumn::WatchTime(c)
        } else {
            FeedbackColumn::Implicit
        };
        Ok(InteractionColumns {
            user: required("user_id")?,
            item: required("item_id")?,
            time: find(&["timestamp"], false),
            feedback,
        })
    }

    /// Reports the columns these leave unread, so that a misnamed column does not pass unnoticed.
    pub fn warn_unused(&self, table: &Table, builder: &mut DatasetBuilder) {
        let used = [Some(self.user), Some(self.item), self.time, self.feedback.column()];
        let unused: Vec<&str> = (table.header.iter().enumerate())
            .filter(|&(c, _)| !used.contains(&Some(c)))
            .map(|(_, name)| name.as_str())
            .collect();
        if !unused.is_empty() {
            builder.warn(format!("{}: ignored column(s) {}", table.path().display(), unused.join(", ")));
        }
    }

    /// Adds every remaining row of `table` to `builder` as an event. A log with no rows is an
    /// error named after its file.
    pub fn load(&self, table: &mut Table, builder: &mut DatasetBuilder) -> Result<()> {
        let mut rows: i64 = 0;
        while let Some((row, origin)) = table.next_row()? {
            let user = fields::id(&row[self.user], "user id", origin)?;
            let item = fields::id(&row[self.item], "item id", origin)?;
            let timestamp = match self.time {
                Some(c) => fields::timestamp(&row[c], origin)?,
                None => rows,
            };
            let feedback = self.feedback.read(row, origin)?;
            builder.add_event(user, item, timestamp, feedback, origin);
            rows += 1;
        }
        if rows == 0 {
            return Err(Error::invalid(table.path(), "no interactions after the header row"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> std::path::PathBuf {
        let path = dir.join("t.csv");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn names(table: &Table) -> Vec<&str> {
        table.header().iter().map(String::as_str).collect()
    }

    #[test]
    fn rows_carry_their_line_numbers_past_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "a,b\r\n1,2\r\n\r\n\"3\n\nx\",4\n\n\n5,6");
        let mut table = Table::open(&path, ReaderBuilder::new()).unwrap();
        let mut rows = Vec::new();
        while let Some((row, origin)) = table.next_row().unwrap() {
            rows.push((row[0].to_string(), origin.line));
        }
        assert_eq!(rows, [("1".to_string(), 2), ("3\n\nx".to_string(), 4), ("5".to_string(), 9)]);
    }

    #[test]
    fn invalid_utf8_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, b"a,b\n1,2\n3,\xe9\n").unwrap();
        let mut table = Table::open(&path, ReaderBuilder::new()).unwrap();
        table.next_row().unwrap();
        let err = table.next_row().unwrap_err().to_string();
        assert!(err.ends_with("t.csv:3: field 2 is not valid UTF-8"), "{err}");
    }

    #[test]
    fn conventional_names_pick_the_feedback_column_by_priority() {
        let dir = tempfile::tempdir().unwrap();
        let table = Table::open(&write(dir.path(), "kind,item_id,user_id,duration\n"), ReaderBuilder::new()).unwrap();
        let columns = InteractionColumns::by_convention(&table, &names(&table), |_| false).unwrap();
        assert_eq!(columns, InteractionColumns { user: 2, item: 1, time: None, feedback: FeedbackColumn::Kind(0) });
        // A numeric `kind` column cannot hold event names, so watch time is used instead.
        let columns = InteractionColumns::by_convention(&table, &names(&table), |c| c == 0).unwrap();
        assert_eq!(columns.feedback, FeedbackColumn::WatchTime(3));
    }

    #[test]
    fn feedback_values_are_checked() {
        let o = Origin::new("f", 5);
        let row = StringRecord::from(vec!["4", "purchase", "-3", "like"]);
        assert_eq!(FeedbackColumn::Rating(0).read(&row, &o).unwrap(), Feedback::Rating(4.0));
        assert_eq!(FeedbackColumn::Kind(3).read(&row, &o).unwrap(), Feedback::Like);
        assert_eq!(FeedbackColumn::Implicit.read(&row, &o).unwrap(), Feedback::Click);
        let err = FeedbackColumn::Kind(1).read(&row, &o).unwrap_err().to_string();
        assert!(err.starts_with("f:5: unknown event kind \"purchase\""), "{err}");
        let err = FeedbackColumn::WatchTime(2).read(&row, &o).unwrap_err().to_string();
        assert_eq!(err, "f:5: negative watch time -3");
    }
}
