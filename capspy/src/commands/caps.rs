//! `capspy caps --pid N | --container NAME`: the five capability sets of a process, or of every
//! process of a container, decoded (what `grep Cap /proc/1/status` and `capsh --decode` do).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::attribute::docker::Docker;
use crate::attribute::{Owner, owner_from_path};
use crate::commands::decode::name_list;
use crate::kernel::cgroup;
use crate::model::caps::CapSet;
use crate::report::workloads::{Inventory, Target};
use crate::store::{self, StoreReader};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["pid", "container"])))]
pub struct CapsArgs {
    /// A process id.
    #[arg(long)]
    pub pid: Option<u32>,
    /// A container name or id: looked up with Docker, else in the store, else as an id prefix
    /// in the cgroup tree.
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    /// The store to look container names up in when Docker does not know them.
    #[arg(long, value_name = "PATH", default_value = store::DEFAULT_PATH)]
    pub store: PathBuf,
}

/// The sets in the order `/proc/PID/status` lists them.
const SETS: [&str; 5] = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"];

#[derive(Debug, PartialEq, Eq)]
pub struct ProcessCaps {
    pub pid: u32,
    pub name: String,
    pub uid: Option<u32>,
    /// In the order of [`SETS`].
    pub sets: [CapSet; 5],
}

pub async fn caps(args: CapsArgs) -> Result<i32> {
    if let Some(pid) = args.pid {
        let p = read_process(pid)?;
        print!("{}", show(&p));
        return Ok(0);
    }
    let Some(name) = args.container.as_deref() else {
        bail!("give --pid N or --container NAME");
    };
    let (label, ids) = container_ids(name, &args.store).await?;
    let root = cgroup::v2_root()?;
    let pids = container_pids(&root, &ids)?;
    if pids.is_empty() {
        bail!("container {label} has no processes in its cgroup (is it running?)");
    }
    let mut out = format!("container {label}: {} process(es)\n", pids.len());
    for pid in pids {
        // A process may exit between the listing and the read.
        if let Ok(p) = read_process(pid) {
            out.push_str(&show(&p));
        }
    }
    print!("{out}");
    Ok(0)
}

fn read_process(pid: u32) -> Result<ProcessCaps> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("no process {pid}"))?;
    parse_status(pid, &text).with_context(|| format!("reading {path}"))
}

/// The capability lines of `/proc/PID/status`, with the name and real uid.
pub fn parse_status(pid: u32, text: &str) -> Result<ProcessCaps> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(str::trim)
    };
    let mut sets = [CapSet::default(); 5];
    for (set, key) in sets.iter_mut().zip(SETS) {
        let hex = field(key).with_context(|| format!("no {key} line"))?;
        *set = CapSet::from_hex(hex)?;
    }
    Ok(ProcessCaps {
        pid,
        name: field("Name").unwrap_or_default().to_string(),
        uid: field("Uid").and_then(|u| u.split_whitespace().next()?.parse().ok()),
        sets,
    })
}

pub fn show(p: &ProcessCaps) -> String {
    let name: String = p.name.chars().flat_map(char::escape_debug).collect();
    let mut out = format!("pid {} {name}", p.pid);
    if let Some(uid) = p.uid {
        let _ = write!(out, " (uid {uid})");
    }
    out.push('\n');
    for (set, key) in p.sets.iter().zip(SETS) {
        let names = name_list(*set);
        let _ = writeln!(
            out,
            "  {key}: {:016x}  {}",
            set.0,
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(",")
            }
        );
    }
    out
}

/// A label for messages and the container ids (or id prefixes) NAME stands for.
async fn container_ids(name: &str, store_path: &Path) -> Result<(String, Vec<String>)> {
    if let Some(docker) = Docker::connect().await
        && let Some(info) = docker.inspect(name).await?
    {
        let short = crate::model::text::short_id(&info.id).to_string();
        return Ok((format!("{} ({short})", info.name), vec![info.id]));
    }
    if store_path.exists()
        && let Ok(store) = StoreReader::open(store_path)
        && let Ok(inventory) = Inventory::load(&store)
        && let Ok(target) = inventory.find(name)
    {
        let ids: Vec<String> = match target {
            Target::Container(c) => vec![c.key.clone()],
            Target::Workload { containers, .. } => containers
                .iter()
                .filter(|c| c.running)
                .map(|c| c.key.clone())
                .collect(),
            Target::HostGroup(_) => Vec::new(),
        };
        if !ids.is_empty() {
            return Ok((format!("{name:?}"), ids));
        }
    }
    if name.len() >= 4 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok((name.to_string(), vec![name.to_ascii_lowercase()]));
    }
    bail!(
        "no container {name:?}: Docker does not know it (or is not reachable), nor does the \
         store, and it is not a container id"
    )
}

/// Every process in the cgroups of these containers (nested cgroups included), each once.
fn container_pids(root: &Path, ids: &[String]) -> Result<BTreeSet<u32>> {
    let mut matched: BTreeSet<String> = BTreeSet::new();
    let mut pids = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
        let rel = format!("/{}", dir.strip_prefix(root).unwrap_or(&dir).display());
        let Owner::Container { id, .. } = owner_from_path(&rel) else {
            continue;
        };
        if !ids.iter().any(|want| id.starts_with(want.as_str())) {
            continue;
        }
        matched.insert(id);
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
    }
    if matched.len() > ids.len() {
        bail!(
            "{} is ambiguous: it matches containers {}",
            ids.join(", "),
            matched.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tping\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t1000\t1000\t1000\n\
        CapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\n\
        CapBnd:\t00002000a80425fb\nCapAmb:\t0000000000002000\nNoNewPrivs:\t0\n";

    #[test]
    fn parses_and_shows_the_five_sets() {
        let p = parse_status(7, STATUS).unwrap();
        assert_eq!(p.uid, Some(1000));
        assert_eq!(p.sets[1], CapSet(0xa804_25fb));
        let out = show(&p);
        assert!(out.starts_with("pid 7 ping (uid 1000)\n"), "{out}");
        assert!(out.contains("  CapInh: 0000000000000000  none\n"), "{out}");
        assert!(
            out.contains("  CapEff: 00000000a80425fb  CHOWN,DAC_OVERRIDE,"),
            "{out}"
        );
        assert!(out.contains("SETFCAP,bit 45 (unknown)\n"), "{out}");
        assert!(
            out.contains("  CapAmb: 0000000000002000  NET_RAW\n"),
            "{out}"
        );
    }

    #[test]
    fn a_status_without_cap_lines_is_an_error() {
        let err = parse_status(1, "Name:\tx\n").unwrap_err();
        assert!(format!("{err:#}").contains("no CapInh line"));
        let bad = STATUS.replace("00000000a80425fb", "zz");
        assert!(parse_status(1, &bad).is_err());
    }

    #[test]
    fn this_process_can_be_read() {
        let p = read_process(std::process::id()).unwrap();
        assert!(!p.name.is_empty());
        assert!(read_process(u32::MAX).is_err());
    }

    #[test]
    fn container_processes_are_found_by_cgroup_name() {
        let root = std::env::temp_dir().join(format!("capspy-caps-test-{}", std::process::id()));
        let id = "ab".repeat(32);
        let scope = root.join("system.slice").join(format!("docker-{id}.scope"));
        std::fs::create_dir_all(scope.join("nested")).unwrap();
        std::fs::write(scope.join("cgroup.procs"), "10\n11\n").unwrap();
        std::fs::write(scope.join("nested/cgroup.procs"), "12\n").unwrap();
        std::fs::write(root.join("cgroup.procs"), "1\n").unwrap();
        let pids = container_pids(&root, &["abab".into()]).unwrap();
        assert_eq!(pids.into_iter().collect::<Vec<_>>(), [10, 11, 12]);
        assert!(container_pids(&root, &["cdcd".into()]).unwrap().is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
