//! The items added and retired while serving, kept in the data directory (`catalogue.jsonl`, one
//! JSON [`Change`] per line) so that a restart and every later snapshot serve the same catalogue.
//!
//! A change is written and fsynced before it is acknowledged, so an acknowledged change survives
//! a crash. A crash while writing can leave only an unterminated last line, which was never
//! acknowledged: it is dropped with a warning (and overwritten by the next change). Any other
//! line that does not read is refused with its line number.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::engine::Change;

const FILE: &str = "catalogue.jsonl";

pub struct CatalogueLog {
    path: PathBuf,
}

impl CatalogueLog {
    /// The log of `data_dir` and the changes it holds, oldest first.
    pub fn open(data_dir: &Path) -> anyhow::Result<(CatalogueLog, Vec<Change>)> {
        let path = data_dir.join(FILE);
        let log = CatalogueLog { path };
        let changes = log.read()?;
        Ok((log, changes))
    }

    fn read(&self) -> anyhow::Result<Vec<Change>> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", self.path.display())),
        };
        let mut changes = Vec::new();
        let mut reader = BufReader::new(file);
        let mut line = String::new();
        let mut kept = 0u64;
        for number in 1.. {
            line.clear();
            let read = reader.read_line(&mut line).with_context(|| format!("cannot read {}", self.path.display()))?;
            if read == 0 {
                break;
            }
            if !line.ends_with('\n') {
                tracing::warn!(file = %self.path.display(), line = number, "dropped an unfinished last change, never acknowledged");
                self.truncate(kept)?;
                break;
            }
            let change = serde_json::from_str(&line)
                .with_context(|| format!("{}:{number}: not a catalogue change", self.path.display()))?;
            changes.push(change);
            kept += read as u64;
        }
        Ok(changes)
    }

    /// Cuts an unfinished last line, so that the next change starts a line of its own.
    fn truncate(&self, len: u64) -> anyhow::Result<()> {
        let file = OpenOptions::new().write(true).open(&self.path)?;
        file.set_len(len)?;
        file.sync_all()?;
        Ok(())
    }

    /// Appends `changes` and fsyncs them.
    pub fn append(&self, changes: &[Change]) -> anyhow::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for change in changes {
            let line = serde_json::to_string(change)?;
            if line.contains('\n') {
                bail!("a catalogue change serialised across lines");
            }
            text.push_str(&line);
            text.push('\n');
        }
        let write = || -> std::io::Result<()> {
            let created = !self.path.exists();
            let mut file = OpenOptions::new().create(true).append(true).open(&self.path)?;
            file.write_all(text.as_bytes())?;
            file.sync_data()?;
            if created && let Some(dir) = self.path.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().with_context(|| format!("cannot write {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use onerec_core::data::Item;

    use super::*;

    fn add(id: &str) -> Change {
        Change::Add { item: Item { id: id.into(), title: format!("{id} title"), tags: vec!["new".into()] }, at: 7 }
    }

    #[test]
    fn changes_read_back_in_order_and_an_unfinished_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (log, changes) = CatalogueLog::open(dir.path()).unwrap();
        assert!(changes.is_empty());
        let written = vec![add("a"), add("b"), Change::Retire { id: "a".into(), at: 9 }];
        log.append(&written[..2]).unwrap();
        log.append(&written[2..]).unwrap();
        assert_eq!(CatalogueLog::open(dir.path()).unwrap().1, written);
        // A crash in the middle of a write leaves part of a line: it was never acknowledged.
        let path = dir.path().join(FILE);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"add":{"item":{"id":"c""#).unwrap();
        let (log, changes) = CatalogueLog::open(dir.path()).unwrap();
        assert_eq!(changes, written);
        log.append(&[add("d")]).unwrap();
        let changes = CatalogueLog::open(dir.path()).unwrap().1;
        assert_eq!(changes.last(), Some(&add("d")));
        assert_eq!(changes.len(), 4);
        // A damaged line that is not the last is refused with its line number.
        let text = std::fs::read_to_string(&path).unwrap().replacen("\"b\"", "\"b", 1);
        std::fs::write(&path, text).unwrap();
        let err = CatalogueLog::open(dir.path()).err().unwrap();
        assert!(format!("{err:#}").contains("catalogue.jsonl:2: not a catalogue change"), "{err:#}");
    }
}
