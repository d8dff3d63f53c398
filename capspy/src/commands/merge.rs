//! `capspy merge FILE...`: one profile per workload from the profiles of many nodes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::report::merge::Merger;
use crate::report::read::ProfileDoc;
use crate::report::{self, Format, Report};
use crate::watch::baseline;

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Profile files in capspy's JSON format (`capspy profile --format json`, with or without
    /// `--all`, `capspy run --format json`, `capspy baseline save`, or an earlier merge), from
    /// any number of nodes.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Report format, one per workload (JSON documents one after another).
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// Write one JSON file per workload to DIR instead (created if missing), named as `capspy
    /// baseline save` names them, so the folder serves as baselines.
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,
    /// Merge the profiles of a workload's different images into one (by default each image set
    /// gets its own profile).
    #[arg(long)]
    pub merge_images: bool,
}

pub fn merge(args: &MergeArgs) -> Result<i32> {
    let mut merger = Merger::new(args.merge_images);
    for file in &args.files {
        for doc in ProfileDoc::load_all(file)? {
            merger.add(doc)?;
        }
    }
    let reports = merger.finish()?;
    output(&reports, args.format, args.to.as_deref())?;
    Ok(0)
}

/// Prints `reports` in the format asked, or writes them to `--to DIR`.
pub fn output(reports: &[Report], format: Format, to: Option<&Path>) -> Result<()> {
    let mut per_key: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reports {
        *per_key
            .entry(r.subject.workload().unwrap_or_default())
            .or_default() += 1;
    }
    for (key, n) in per_key.iter().filter(|(_, n)| **n > 1) {
        eprintln!(
            "capspy: workload {} has profiles of {n} image sets, kept apart; --merge-images makes \
             one (a baseline folder takes one per workload)",
            crate::model::text::printable(key)
        );
    }
    let Some(dir) = to else {
        if format == Format::Compose {
            print!("{}", report::compose(reports));
        } else {
            for r in reports {
                print!("{}", r.render(format));
            }
        }
        return Ok(());
    };
    if format != Format::Json {
        bail!("--to writes JSON profiles; leave out --format or use --format json");
    }
    for r in reports {
        let key = r.subject.workload().unwrap_or_default();
        // Apart images of one workload cannot share its file name.
        let name = if per_key.get(key).copied().unwrap_or(0) > 1 {
            format!("{key}@{}", r.subject.images().join(","))
        } else {
            key.to_string()
        };
        let path = baseline::write(dir, &name, &r.render(Format::Json))?;
        saved(&path, key, r);
    }
    Ok(())
}

/// `PATH<TAB>WORKLOAD<TAB>required: A,B`, what `baseline save` and `--to` print per file.
pub fn saved(path: &Path, key: &str, report: &Report) {
    let required: Vec<String> = report
        .profile
        .required
        .iter()
        .map(ToString::to_string)
        .collect();
    println!(
        "{}\t{}\trequired: {}",
        path.display(),
        crate::model::text::printable(key),
        if required.is_empty() {
            "none".to_string()
        } else {
            required.join(",")
        }
    );
}
