//! `capspy baseline save|check`: baseline files from the store, one per workload, and their
//! validation.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

use crate::report::Format;
use crate::report::workloads::{Inventory, Target};
use crate::store::{self, StoreReader};
use crate::watch::baseline::{self, Baselines};

#[derive(Debug, clap::Args)]
pub struct BaselineArgs {
    #[command(subcommand)]
    pub command: BaselineCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum BaselineCommand {
    /// Write the profile of each WORKLOAD (default: every workload in the store) to DIR, one
    /// JSON file per workload, named after its key.
    Save(SaveArgs),
    /// Load every baseline in DIR as `capspy watch` would, and report the first error.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct SaveArgs {
    /// Workload keys (as `capspy ls` prints them), container names or id prefixes; a container
    /// stands for its workload.
    pub workloads: Vec<String>,
    /// The folder to write to (created if missing); files there of other workloads are kept.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// The store to read.
    #[arg(long, value_name = "PATH", default_value = store::DEFAULT_PATH)]
    pub store: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The folder of baselines.
    pub dir: PathBuf,
}

pub fn baseline(args: &BaselineArgs) -> Result<i32> {
    match &args.command {
        BaselineCommand::Save(a) => save(a),
        BaselineCommand::Check(a) => check(a),
    }
}

fn save(args: &SaveArgs) -> Result<i32> {
    let store = StoreReader::open(&args.store)
        .with_context(|| format!("opening the store {}", args.store.display()))?;
    let inventory = Inventory::load(&store)?;
    let keys: Vec<String> = if args.workloads.is_empty() {
        inventory.workloads.keys().cloned().collect()
    } else {
        let mut keys = Vec::new();
        for name in &args.workloads {
            let key = match inventory.find(name)? {
                Target::Workload { key, .. } => key.to_string(),
                Target::Container(c) => c
                    .workload
                    .clone()
                    .with_context(|| format!("container {name:?} has no workload"))?,
                Target::HostGroup(_) => {
                    bail!("{name:?} is a service or the host: baselines cover container workloads")
                }
            };
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys
    };
    if keys.is_empty() {
        bail!(
            "no workloads in the store {} (is `capspy record` running?)",
            args.store.display()
        );
    }
    for key in keys {
        let target = inventory
            .find(&key)
            .with_context(|| format!("workload {key:?}"))?;
        let report = target.report(&store)?;
        let path = baseline::write(&args.to, &key, &report.render(Format::Json))?;
        crate::commands::merge::saved(&path, &key, &report);
    }
    Ok(0)
}

fn check(args: &CheckArgs) -> Result<i32> {
    let all = Baselines::load_dir(&args.dir)?;
    for b in all.by_workload.values() {
        println!(
            "{}\t{}",
            b.file.display(),
            crate::model::text::printable(&b.workload)
        );
    }
    eprintln!(
        "capspy: {} baseline(s) in {} are valid",
        all.len(),
        args.dir.display()
    );
    Ok(0)
}
