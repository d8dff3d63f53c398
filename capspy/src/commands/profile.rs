//! `capspy profile NAME`: the profile of a workload or a container from the store.

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::collector::LossCounters;
use crate::render::{self, Format, Report};
use crate::store::{self, Store};
use crate::workloads::{Inventory, LookupError, Target};

#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    /// A workload key (as `capspy ls` prints it), a container name or id prefix; with
    /// `--format compose`, also a compose project (all its services).
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
    let report = |target: &Target<'_>| -> Result<Report> {
        Ok(Report::new(
            target.report_subject(),
            "store",
            target.profile(&store)?,
            LossCounters::default(),
        )
        .with_service_name(target.service_name()))
    };
    // `--format compose PROJECT`: every service of a compose project in one block.
    if args.format == Format::Compose {
        let services = inventory.compose_project(&args.name);
        if !services.is_empty() {
            let reports = services.iter().map(report).collect::<Result<Vec<_>>>()?;
            print!("{}", render::compose(&reports));
            return Ok(0);
        }
    }
    let target = match inventory.find(&args.name) {
        Ok(target) => target,
        Err(LookupError::NotFound { .. }) if !inventory.compose_project(&args.name).is_empty() => {
            anyhow::bail!(
                "{:?} is a compose project: use --format compose for all its services, or name \
                 one of them (capspy ls lists them)",
                args.name
            )
        }
        Err(e) => return Err(e.into()),
    };
    print!("{}", report(&target)?.render(args.format));
    Ok(0)
}
