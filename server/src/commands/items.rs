//! `onerec items add` and `onerec items retire`: change a trained snapshot's catalogue without
//! retraining (see `onerec_core::generator::catalogue`).

use std::fmt;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use onerec_core::generator::catalogue::AddedItem;
use onerec_core::generator::snapshot::Snapshot;
use serde::Serialize;

use super::{DataArgs, print_report};

#[derive(Subcommand, Debug)]
pub enum ItemsCommand {
    /// Give the items that `--data` lists after the snapshot's own semantic IDs and embeddings,
    /// so that the model can recommend them: append new items to the item file, then run this.
    Add(AddArgs),
    /// Retire items, so that they are never recommended again.
    Retire(RetireArgs),
}

#[derive(Args, Debug)]
pub struct AddArgs {
    #[arg(long)]
    pub snapshot: PathBuf,
    /// The catalogue: the snapshot's items, in the same order, then the new ones.
    #[command(flatten)]
    pub data: DataArgs,
    /// Where to write the new snapshot (it may be `--snapshot` itself).
    #[arg(long)]
    pub out: PathBuf,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RetireArgs {
    #[arg(long)]
    pub snapshot: PathBuf,
    /// Ids of the items to retire, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub ids: Vec<String>,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Serialize)]
struct Added {
    items: Vec<AddedItem>,
    output: PathBuf,
}

impl fmt::Display for Added {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in &self.items {
            writeln!(
                f,
                "{}: semantic ID {:?}, embedding from {} items sharing its first {} codes",
                item.id, item.semantic_id, item.neighbours, item.shared_codes
            )?;
        }
        write!(f, "added {} items; wrote {}", self.items.len(), self.output.display())
    }
}

pub fn run(command: ItemsCommand) -> anyhow::Result<()> {
    match command {
        ItemsCommand::Add(args) => {
            let mut snapshot = Snapshot::load(&args.snapshot)?;
            let dataset = args.data.load()?;
            let known = snapshot.tokenizer.item_ids.len();
            anyhow::ensure!(
                dataset.items.len() >= known,
                "{} lists {} items, fewer than the snapshot's {known}",
                dataset.name,
                dataset.items.len()
            );
            let (catalogue, new) = dataset.items.split_at(known);
            anyhow::ensure!(!new.is_empty(), "{} lists no items beyond the snapshot's {known}", dataset.name);
            let items = snapshot.add_items(catalogue, new)?;
            snapshot.save(&args.out)?;
            print_report(&Added { items, output: args.out }, args.json)
        }
        ItemsCommand::Retire(args) => {
            let mut snapshot = Snapshot::load(&args.snapshot)?;
            snapshot.retire_items(&args.ids)?;
            snapshot.save(&args.out)?;
            println!("retired {} items; wrote {}", args.ids.len(), args.out.display());
            Ok(())
        }
    }
}
