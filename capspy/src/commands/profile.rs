//! `capspy profile NAME`: the profile of a workload or a container from the store; from several
//! stores (copied from several nodes), one merged profile; with `--all`, every workload's.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::commands::record::parse_duration;
use crate::commands::verify::{self, DockerRun};
use crate::report::read::ProfileDoc;
use crate::report::workloads::{Inventory, LookupError};
use crate::report::{self, Format, Report};
use crate::store::{self, StoreReader};

#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    /// A workload key (as `capspy ls` prints it), a container name or id prefix; with
    /// `--format compose`, also a compose project (all its services).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub name: Option<String>,
    /// Every container workload in the store(s), one profile each.
    #[arg(long)]
    pub all: bool,
    /// Report format [default: text; json with --to].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// The store to read; given several times (stores copied from several nodes), the profiles
    /// are merged as `capspy merge` does.
    #[arg(long, value_name = "PATH", default_value = store::DEFAULT_PATH)]
    pub store: Vec<PathBuf>,
    /// Write one JSON file per workload to DIR (created if missing), named as `capspy baseline
    /// save` names them.
    #[arg(long, value_name = "DIR", conflicts_with = "verify")]
    pub to: Option<PathBuf>,
    /// With several stores: merge the profiles of a workload's different images into one.
    #[arg(long)]
    pub merge_images: bool,
    /// Then run the workload with the `docker run` command given after `--`: as written, then
    /// under the profile with each capability removed in turn, and report only what removal
    /// proved needed (`capspy verify --minimal`).
    #[arg(long, requires = "command", conflicts_with = "all")]
    pub verify: bool,
    /// With --verify: stop a run that takes longer (it counts as not working).
    #[arg(long, value_parser = parse_duration, default_value = "2m", requires = "verify")]
    pub timeout: Duration,
    /// With --verify: `docker run [OPTIONS] IMAGE [COMMAND...]`, as the workload runs.
    #[arg(last = true, value_name = "DOCKER_RUN", requires = "verify")]
    pub command: Vec<OsString>,
}

pub async fn profile(args: &ProfileArgs) -> Result<i32> {
    let open = |path: &PathBuf| -> Result<(StoreReader, Inventory)> {
        let store = StoreReader::open(path)
            .with_context(|| format!("opening the store {}", path.display()))?;
        let inventory = Inventory::load(&store)?;
        Ok((store, inventory))
    };
    let (reports, merged) = match (&args.name, args.store.as_slice()) {
        (Some(name), [one]) if args.to.is_none() => {
            let (store, inventory) = open(one)?;
            return one_store(args, name, &store, &inventory).await;
        }
        (Some(name), stores) => {
            if args.verify {
                bail!("--verify reads one store");
            }
            let mut reports = Vec::new();
            let mut missing = Vec::new();
            for path in stores {
                let (store, inventory) = open(path)?;
                match inventory.find(name) {
                    Ok(target) => reports.push((path, target.report(&store)?)),
                    Err(LookupError::NotFound { .. }) if stores.len() > 1 => {
                        missing.push(path.display().to_string());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if reports.is_empty() {
                bail!("no workload or container named {name:?} in any of the stores");
            }
            if !missing.is_empty() {
                eprintln!(
                    "capspy: {name:?} is not in {} (left out)",
                    missing.join(", ")
                );
            }
            (reports, stores.len() > 1)
        }
        (None, stores) => {
            let mut reports = Vec::new();
            for path in stores {
                let (store, inventory) = open(path)?;
                for key in inventory.workloads.keys() {
                    let target = inventory.find(key)?;
                    reports.push((path, target.report(&store)?));
                }
            }
            if reports.is_empty() {
                bail!("no container workloads in the store(s) (is `capspy record` running?)");
            }
            (reports, stores.len() > 1)
        }
    };
    let reports: Vec<Report> = if merged {
        let docs = reports
            .iter()
            .map(|(path, r)| ProfileDoc::from_report(path.display().to_string(), r))
            .collect();
        crate::report::merge::merge(docs, args.merge_images)?
    } else {
        reports.into_iter().map(|(_, r)| r).collect()
    };
    let format = args.format.unwrap_or(if args.to.is_some() {
        Format::Json
    } else {
        Format::Text
    });
    crate::commands::merge::output(&reports, format, args.to.as_deref())?;
    Ok(0)
}

/// NAME's profile from one store, as `capspy profile NAME` always printed it (and verified it
/// with `--verify`).
async fn one_store(
    args: &ProfileArgs,
    name: &str,
    store: &StoreReader,
    inventory: &Inventory,
) -> Result<i32> {
    let format = args.format.unwrap_or(Format::Text);
    let rerun = if args.verify {
        Some(DockerRun::parse(&args.command)?)
    } else {
        None
    };
    // `--format compose PROJECT`: every service of a compose project in one block.
    if format == Format::Compose && rerun.is_none() {
        let services = inventory.compose_project(name);
        if !services.is_empty() {
            let reports = services
                .iter()
                .map(|t| t.report(store))
                .collect::<Result<Vec<_>, _>>()?;
            print!("{}", report::compose(&reports));
            return Ok(0);
        }
    }
    let target = match inventory.find(name) {
        Ok(target) => target,
        Err(LookupError::NotFound { .. }) if !inventory.compose_project(name).is_empty() => {
            bail!(
                "{name:?} is a compose project: use --format compose for all its services, or \
                 name one of them (capspy ls lists them)"
            )
        }
        Err(e) => return Err(e.into()),
    };
    let mut report = target.report(store)?;
    let mut status = 0;
    if let Some(rerun) = rerun {
        let v = verify::prove(&rerun, &report, None, args.timeout).await?;
        status = i32::from(v.working.is_none());
        report = report.with_verification(v);
    }
    print!("{}", report.render(format));
    // The flags alone must stay usable as `$(capspy profile --format docker ...)`.
    if format == Format::Docker {
        for line in report::non_root_lines(&report) {
            eprintln!("capspy: {}", line.trim_start());
        }
    }
    Ok(status)
}
