//! `capspy profile NAME`: the profile of a workload or a container from the store.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::commands::record::parse_duration;
use crate::commands::verify::{self, DockerRun};

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
    /// Then run the workload with the `docker run` command given after `--`: as written, then
    /// under the profile with each capability removed in turn, and report only what removal
    /// proved needed (`capspy verify --minimal`).
    #[arg(long, requires = "command")]
    pub verify: bool,
    /// With --verify: stop a run that takes longer (it counts as not working).
    #[arg(long, value_parser = parse_duration, default_value = "2m", requires = "verify")]
    pub timeout: Duration,
    /// With --verify: `docker run [OPTIONS] IMAGE [COMMAND...]`, as the workload runs.
    #[arg(last = true, value_name = "DOCKER_RUN", requires = "verify")]
    pub command: Vec<OsString>,
}

pub async fn profile(args: &ProfileArgs) -> Result<i32> {
    let rerun = if args.verify {
        Some(DockerRun::parse(&args.command)?)
    } else {
        None
    };
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
    if args.format == Format::Compose && rerun.is_none() {
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
    let mut report = report(&target)?;
    let mut status = 0;
    if let Some(rerun) = rerun {
        let v = verify::prove(&rerun, &report, None, args.timeout).await?;
        status = i32::from(v.working.is_none());
        report = report.with_verification(v);
    }
    print!("{}", report.render(args.format));
    Ok(status)
}
