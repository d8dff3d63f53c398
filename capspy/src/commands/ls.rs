//! `capspy ls`: one line per workload and per running container, with what it was granted,
//! what it used, and how much it could drop; then the services and the host, with what they used.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::model::caps::Capability;
use crate::model::text::{printable, short_id};
use crate::report::workloads::{Inventory, Target, droppable, granted_of};
use crate::store::{self, StoreReader, Subject, SubjectKind};

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// The store to read.
    #[arg(long, value_name = "PATH", default_value = store::DEFAULT_PATH)]
    pub store: PathBuf,
    /// `text` (a table) or `json`.
    #[arg(long, value_enum, default_value = "text")]
    pub format: LsFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LsFormat {
    Text,
    Json,
}

#[derive(Debug, Serialize)]
struct Line {
    /// "workload", "container", "service", "host" or "unattributed" (a cgroup, `cgroup:<id>`).
    kind: &'static str,
    name: String,
    /// Kubernetes workloads: the namespace of their pods.
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    workload: String,
    image: String,
    /// Container instances merged in this line.
    instances: usize,
    running: bool,
    /// None when the granted set could not be read (the container ended before it was seen).
    granted: Option<Vec<String>>,
    /// What its own granted, audited checks used.
    used: Vec<String>,
    /// What its profile adds after `--cap-drop ALL` (`capspy profile NAME` says why).
    required: Vec<String>,
    droppable: Option<usize>,
}

pub fn ls(args: &LsArgs) -> Result<i32> {
    let store = StoreReader::open(&args.store)
        .with_context(|| format!("opening the store {}", args.store.display()))?;
    let inventory = Inventory::load(&store)?;
    let mut lines = Vec::new();
    for (key, containers) in &inventory.workloads {
        let target = Target::Workload { key, containers };
        let mut l = line("workload", key, containers, &target, &store)?;
        l.namespace = Inventory::namespace(key, containers);
        lines.push(l);
        for c in containers.iter().filter(|c| c.running) {
            let name = c.name.clone().unwrap_or_else(|| short_id(&c.key).into());
            lines.push(line(
                "container",
                &name,
                std::slice::from_ref(c),
                &Target::Container(c),
                &store,
            )?);
        }
    }
    for group in &inventory.others {
        lines.push(line(
            group.kind.as_str(),
            &group.key,
            std::slice::from_ref(group),
            &Target::HostGroup(group),
            &store,
        )?);
    }
    let out = match args.format {
        LsFormat::Json => serde_json::to_string_pretty(&lines)? + "\n",
        LsFormat::Text => table(&lines),
    };
    print!("{out}");
    // Never a silent loss: say what the kernel program could not keep.
    let lost = store.losses()?;
    if lost.checks_overflow > 0 {
        eprintln!(
            "capspy: warning: {} checks did not fit the kernel map and are only counted, not attributed (map full)",
            lost.checks_overflow
        );
    }
    for note in inventory.missing_names(&store)? {
        eprintln!("capspy: note: {note}");
    }
    if lost.sightings_lost > 0 {
        eprintln!(
            "capspy: note: {} first-sighting records were lost; their counts were recovered from the map",
            lost.sightings_lost
        );
    }
    let unattributed = inventory
        .others
        .iter()
        .filter(|s| s.kind == SubjectKind::Unattributed)
        .count();
    if unattributed > 0 {
        eprintln!(
            "capspy: warning: {unattributed} cgroups were removed before their path could be learnt; their checks are listed as unattributed cgroup:<id>, in no workload"
        );
    }
    if lost.cgroups_lost > 0 {
        eprintln!(
            "capspy: note: {} cgroup creation records were lost (ring buffer full); a cgroup removed before capspy walked the hierarchy is listed as unattributed",
            lost.cgroups_lost
        );
    }
    Ok(0)
}

fn line(
    kind: &'static str,
    name: &str,
    containers: &[Subject],
    target: &Target<'_>,
    store: &StoreReader,
) -> Result<Line> {
    let profile = target.profile(store)?;
    let granted = granted_of(containers);
    Ok(Line {
        kind,
        name: name.to_string(),
        namespace: None,
        workload: containers
            .first()
            .and_then(|c| c.workload.clone())
            .unwrap_or_default(),
        image: containers
            .first()
            .and_then(|c| c.image.clone())
            .unwrap_or_default(),
        instances: containers.len(),
        running: containers.iter().any(|c| c.running),
        granted: granted.map(|g| g.iter().map(|c: Capability| c.to_string()).collect()),
        used: profile.used().iter().map(ToString::to_string).collect(),
        required: profile.required.iter().map(ToString::to_string).collect(),
        droppable: granted.map(|g| droppable(g, &profile).len()),
    })
}

fn table(lines: &[Line]) -> String {
    let mut out = String::new();
    if lines.is_empty() {
        out.push_str("Nothing recorded yet.\n");
    }
    let names = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(",")
        }
    };
    let mut namespace = None;
    for l in lines {
        // Kubernetes workloads come sorted by key, so by namespace: one heading each.
        if l.kind == "workload" && l.namespace != namespace {
            if let Some(ns) = &l.namespace {
                let _ = writeln!(out, "namespace {}", printable(ns));
            }
            namespace.clone_from(&l.namespace);
        }
        // What was used, then what the profile asks for: they differ when DAC_READ_SEARCH
        // stands in for a DAC_OVERRIDE that only served reads.
        let indent = if l.kind == "container" { "  " } else { "" };
        let uses = format!(
            "used: {}\n{indent}    required: {}",
            names(&l.used),
            names(&l.required)
        );
        if matches!(l.kind, "service" | "host" | "unattributed") {
            // No image nor instances; the host, a group of unrelated processes, has no granted
            // set (nor has a service whose processes were gone before capspy looked).
            let title = if l.name == l.kind {
                l.kind.to_string()
            } else {
                format!("{} {}", l.kind, printable(&l.name))
            };
            match (&l.granted, l.droppable) {
                (Some(g), Some(drop)) => {
                    let _ = writeln!(
                        out,
                        "{title}\n    granted: {} ({})\n    {uses}\n    can drop: {drop}",
                        g.len(),
                        g.join(",")
                    );
                }
                _ => {
                    let _ = writeln!(out, "{title}\n    {uses}");
                }
            }
            continue;
        }
        let granted = l.granted.as_ref().map_or_else(
            || "unknown".to_string(),
            |g| format!("{} ({})", g.len(), g.join(",")),
        );
        let drop = l.droppable.map_or_else(|| "?".into(), |d| d.to_string());
        let _ = writeln!(
            out,
            "{indent}{} {}  image={}  instances={}{}\n{indent}    granted: {granted}\n{indent}    {uses}\n{indent}    can drop: {drop}",
            l.kind,
            printable(&l.name),
            if l.image.is_empty() {
                "?".into()
            } else {
                printable(&l.image)
            },
            l.instances,
            if l.running { " (running)" } else { "" },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_stay_on_their_line() {
        let l = Line {
            kind: "workload",
            name: "compose:evil\nworkload fake".into(),
            namespace: None,
            workload: String::new(),
            image: "img\u{1b}[2J".into(),
            instances: 1,
            running: false,
            granted: None,
            used: vec![],
            required: vec![],
            droppable: None,
        };
        let out = table(&[l]);
        assert_eq!(out.lines().count(), 5, "{out}");
        assert!(out.starts_with("workload compose:evil\\nworkload fake  image=img\\u{1b}[2J"));
        assert!(!out.contains('\u{1b}'));
    }
}
