//! `capspy profile NAME`: the profile of a workload or a container from the store.

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::collector::LossCounters;
use crate::render::{Format, Report};
use crate::store::{self, Store};
use crate::workloads::Inventory;

#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    /// A workload key (as `capspy ls` prints it), a container name or id prefix.
    pub name: String,
    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// The store to read.
    #[arg(long, value_name = "PATH", default_value = store::DEFAULT_PATH)]
    pub store: PathBuf,
}

pub fn profile(args: &ProfileArgs) -> Result<i32> {
    let store = Store::open_reader(&args.store)
        .with_context(|| format!("opening the store {}", args.store.display()))?;
    let inventory = Inventory::load(&store)?;
    let target = inventory.find(&args.name)?;
    let profile = target.profile(&store)?;
    let report = Report::new(
        target.report_subject(),
        "store",
        profile,
        LossCounters::default(),
    );
    print!("{}", report.render(args.format));
    Ok(0)
}
