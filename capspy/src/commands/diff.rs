//! `capspy diff BASELINE CURRENT`: does CURRENT need anything beyond BASELINE? For CI pipelines:
//! exit 0 when it does not, 1 when it does (drift), 2 on any error.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use crate::report::read::{DocSubject, ProfileDoc};
use crate::report::workloads::Inventory;
use crate::store::StoreReader;
use crate::watch::baseline::Diff;

/// Exit status when CURRENT needs a capability BASELINE does not.
pub const EXIT_DRIFT: i32 = 1;

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// A profile file (`capspy baseline save`, `capspy profile --format json`, `capspy run
    /// --format json`), or with --store a workload or container name.
    pub baseline: String,
    /// The same kinds as BASELINE: the profile to check against it.
    pub current: String,
    #[arg(long, value_enum, default_value = "text")]
    pub format: DiffFormat,
    /// Resolve arguments that are not existing files as names in this store.
    #[arg(long, value_name = "PATH")]
    pub store: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffFormat {
    Text,
    Json,
}

#[derive(Serialize)]
struct Side<'a> {
    source: &'a str,
    subject: &'a DocSubject,
    required: Vec<String>,
}

fn side(p: &ProfileDoc) -> Side<'_> {
    Side {
        source: &p.source,
        subject: &p.subject,
        required: p.required.iter().map(ToString::to_string).collect(),
    }
}

#[derive(Serialize)]
struct Output<'a> {
    drift: bool,
    baseline: Side<'a>,
    current: Side<'a>,
    #[serde(flatten)]
    diff: &'a Diff,
}

pub fn diff(args: &DiffArgs) -> Result<i32> {
    let baseline = load(&args.baseline, args.store.as_deref())?;
    let current = load(&args.current, args.store.as_deref())?;
    let d = Diff::between(&baseline, &current);
    let out = match args.format {
        DiffFormat::Json => {
            let doc = Output {
                drift: d.is_drift(),
                baseline: side(&baseline),
                current: side(&current),
                diff: &d,
            };
            format!("{}\n", serde_json::to_string_pretty(&doc)?)
        }
        DiffFormat::Text => text(&baseline, &current, &d),
    };
    print!("{out}");
    Ok(if d.is_drift() { EXIT_DRIFT } else { 0 })
}

/// A file when the argument names one (or when there is no store to look in), else a name in
/// the store.
fn load(arg: &str, store: Option<&Path>) -> Result<ProfileDoc> {
    let path = Path::new(arg);
    if path.is_dir() {
        bail!("{arg} is a folder; name one profile file");
    }
    let Some(store_path) = store.filter(|_| !path.exists()) else {
        return Ok(ProfileDoc::load(path)?);
    };
    let store = StoreReader::open(store_path)
        .with_context(|| format!("opening the store {}", store_path.display()))?;
    let inventory = Inventory::load(&store)?;
    let report = inventory.find(arg)?.report(&store)?;
    Ok(ProfileDoc::from_report(format!("store:{arg}"), &report))
}

fn text(baseline: &ProfileDoc, current: &ProfileDoc, d: &Diff) -> String {
    let list = |caps: &std::collections::BTreeSet<crate::model::caps::Capability>| {
        if caps.is_empty() {
            "none".to_string()
        } else {
            caps.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "baseline: {} ({}), required: {}",
        baseline.source,
        baseline.subject.describe(),
        list(&baseline.required)
    );
    let _ = writeln!(
        out,
        "current:  {} ({}), required: {}",
        current.source,
        current.subject.describe(),
        list(&current.required)
    );
    if d.is_drift() {
        let _ = writeln!(out, "drift: needs {} beyond the baseline", list(&d.added));
    }
    if !d.attempted.is_empty() {
        let _ = writeln!(
            out,
            "attempted (denied, not needed): {}",
            list(&d.attempted)
        );
    }
    if !d.unused.is_empty() {
        let _ = writeln!(out, "unused from the baseline: {}", list(&d.unused));
    }
    let _ = writeln!(
        out,
        "{}",
        if d.is_drift() {
            "result: drift"
        } else {
            "result: no drift"
        }
    );
    out
}
