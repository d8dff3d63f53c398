//! Writes a store of N container workloads through capspy's store API, for `cargo xtask bench`
//! to time `capspy ls` and `capspy profile` on it.
//!
//! Usage: `bench_store PATH N`. Workload i is `image:bench/w<i>` with one container; one in ten
//! containers is still running (so `ls` lists it too). Each has four check rows, with call paths
//! as long as real ones.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use capspy::store::{CheckRecord, StoreWriter, Subject, SubjectKind};

/// Docker's default capability set.
const DOCKER_DEFAULT_CAPS: u64 = 0xa804_25fb;
/// (capability, verdict, audit, call path) of each workload's rows: SETUID and NET_RAW granted
/// and audited, CHOWN denied, the overcommit SYS_ADMIN check advisory.
const ROWS: [(u8, u8, u8, &[&str]); 4] = [
    (
        7,
        0,
        0,
        &[
            "security_capable+0x3b",
            "ns_capable_setid+0x2d",
            "__sys_setuid+0x61",
            "do_syscall_64+0x71",
        ],
    ),
    (
        13,
        0,
        0,
        &[
            "security_capable+0x3b",
            "ns_capable+0x2d",
            "inet_create+0x10b",
            "__sock_create+0x1e9",
        ],
    ),
    (
        0,
        1,
        0,
        &[
            "security_capable+0x3b",
            "capable_wrt_inode_uidgid+0x4a",
            "chown_ok+0x5c",
            "notify_change+0x1f2",
        ],
    ),
    (
        21,
        1,
        1,
        &[
            "security_vm_enough_memory_mm+0x36",
            "mmap_region+0x2a1",
            "do_mmap+0x3f6",
            "vm_mmap_pgoff+0xe4",
        ],
    ),
];

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(n)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: bench_store PATH N");
    };
    let path = PathBuf::from(path);
    let n: u64 = n.parse().context("N")?;
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;

    let mut store = StoreWriter::open(&path)?;
    let session = store.begin_session("tp_btf", now)?;
    let mut running = 0;
    let mut checks = Vec::new();
    for i in 0..n {
        let cgroup_id = 100_000 + i;
        let is_running = i % 10 == 0;
        running += u64::from(is_running);
        let subject = Subject {
            kind: SubjectKind::Container,
            key: format!("{i:08x}{}", "c0ffee00".repeat(7)),
            runtime: Some("docker".into()),
            name: Some(format!("bench-w{i}")),
            image: Some(format!("bench/w{i}:latest")),
            workload: Some(format!("image:bench/w{i}")),
            labels: BTreeMap::new(),
            cap_eff: Some(DOCKER_DEFAULT_CAPS),
            cap_bnd: Some(DOCKER_DEFAULT_CAPS),
            first_seen_ms: now,
            last_seen_ms: now,
            running: is_running,
            ended_ms: (!is_running).then_some(now),
        };
        store.upsert_subject(cgroup_id, &subject)?;
        for (cap, verdict, audit, call_path) in ROWS {
            checks.push(CheckRecord {
                cgroup_id,
                cap,
                verdict,
                audit,
                userns: 0,
                bucket: 0,
                origin: 0,
                classifier: 1,
                count: i + u64::from(cap) + 1,
                first_seen_ms: now,
                last_seen_ms: now,
                pid: 1000,
                tgid: 1000,
                uid: 0,
                comm: "app".into(),
                call_path: call_path.iter().map(|f| (*f).to_owned()).collect(),
                exe: None,
            });
        }
    }
    // One sweep, as the daemon writes them.
    store.write_checks(session, &checks)?;
    store.end_session(session, now)?;
    println!("workloads={n} running={running}");
    Ok(())
}
