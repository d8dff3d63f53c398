//! Section 3, scale: many concurrent fake containers, each with its own checks, attributed
//! exactly; the kernel maps' memory at that size.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

use super::daemon::{CpuWindow, Profile, perf_profile, status_kib};
use super::inside::bpf_fds;
use super::process::{Ctx, check_interrupted};
use crate::cmd;

/// The cgroup v2 hierarchy: `/sys/fs/cgroup/unified` on hybrid hosts, `/sys/fs/cgroup` on
/// unified ones.
pub(super) fn cgroup_v2_root() -> Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .context("no cgroup v2 hierarchy mounted")
}

/// The fake containers, with their processes; on drop, the processes are killed (by pid) and
/// reaped, then the cgroups removed, then `/docker` if the bench made it.
pub(super) struct FakeContainers {
    pub(super) parent: PathBuf,
    pub(super) made_parent: bool,
    pub(super) dirs: Vec<PathBuf>,
    pub(super) workers: Vec<Child>,
}

impl FakeContainers {
    pub(super) fn kill_workers(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
        }
        for w in &mut self.workers {
            let _ = w.wait();
        }
        self.workers.clear();
    }
}

impl Drop for FakeContainers {
    fn drop(&mut self) {
        self.kill_workers();
        for dir in self.dirs.drain(..) {
            // A reaped process leaves its cgroup asynchronously; retry briefly.
            for _ in 0..100 {
                if fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        if self.made_parent {
            let _ = fs::remove_dir(&self.parent);
        }
    }
}

/// Container id of fake container `i`: 64 lowercase hex, unique in its first 12 digits (the
/// workload key of a container without an engine is `container:<first 12>`).
pub(super) fn fake_id(i: usize) -> String {
    format!("{i:08x}be4c{:052x}", std::process::id())
}

/// What fake container `i` does: setuid or setgid, `i + 1` times. Every count is distinct, so a
/// check attributed to the wrong cgroup changes two of them.
pub(super) fn fake_use(i: usize) -> (&'static str, &'static str, u64) {
    let n = i as u64 + 1;
    if i.is_multiple_of(2) {
        ("setuid", "SETUID", n)
    } else {
        ("setgid", "SETGID", n)
    }
}

pub(super) struct MapInfo {
    pub(super) name: String,
    pub(super) kind: String,
    pub(super) key: u64,
    pub(super) value: u64,
    pub(super) max_entries: u64,
    pub(super) memlock: u64,
    pub(super) entries: Option<u64>,
}

pub(super) struct Scale {
    pub(super) cgroups: usize,
    pub(super) exact: usize,
    pub(super) errors: Vec<String>,
    pub(super) listed: usize,
    /// Total checks the fake containers made.
    pub(super) checks: u64,
    pub(super) maps: Vec<MapInfo>,
    pub(super) idle_cpu: f64,
    pub(super) idle_secs: f64,
    pub(super) rss_kib: u64,
    pub(super) verify_secs: f64,
    /// The idle daemon's hottest functions at this size.
    pub(super) profile: Profile,
    /// CHECKS entries two sweeps after the cgroups were removed (needs bpftool).
    pub(super) keys_after_removal: Option<u64>,
}

pub(super) fn scale(ctx: &Ctx) -> Result<Scale> {
    let n = ctx.plan.cgroups;
    let parent = cgroup_v2_root()?.join("docker");
    let store = ctx.scratch.join("scale.db");
    let mut fakes = FakeContainers {
        made_parent: !parent.exists(),
        parent: parent.clone(),
        dirs: Vec::new(),
        workers: Vec::new(),
    };
    if fakes.made_parent {
        fs::create_dir(&parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut daemon = ctx.start_daemon(&store, &[])?;

    // One pipe shared by all workers: each writes a byte once its checks are made.
    let (done_r, done_w) = pipe()?;
    for i in 0..n {
        check_interrupted()?;
        let dir = parent.join(fake_id(i));
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fakes.dirs.push(dir.clone());
        let (mode, _, count) = fake_use(i);
        let worker = Command::new(&ctx.workload)
            .arg("cgroup")
            .arg(&dir)
            .args([mode, &count.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(done_w.try_clone()?))
            .spawn()
            .context("starting a worker")?;
        fakes.workers.push(worker);
    }
    drop(done_w);
    wait_for_bytes(&done_r, n, Duration::from_mins(2))
        .with_context(|| format!("waiting for {n} workers"))?;
    eprintln!("bench: {n} cgroups made their checks; waiting for the daemon's sweeps");
    // Two sweeps: the one in progress may have started before the last worker's checks.
    thread::sleep(Duration::from_millis(2_500));
    let maps = daemon_maps(daemon.pid());
    let window = CpuWindow::start(daemon.pid())?;
    thread::sleep(Duration::from_secs(ctx.plan.scale_idle_secs));
    let (idle_cpu, _, idle_secs) = window.end()?;
    let rss_kib = status_kib(daemon.pid(), "VmRSS:")?;
    let profile = perf_profile(ctx, daemon.pid(), ctx.plan.scale_idle_secs, false)?;
    // What becomes of their keys once the cgroups are gone (container churn).
    fakes.kill_workers();
    drop(fakes);
    thread::sleep(Duration::from_millis(2_500));
    let keys_after_removal = checks_entries(&daemon_maps(daemon.pid()));
    daemon.stop()?;

    let started = Instant::now();
    let (exact, errors, listed) = verify_attribution(ctx, &store, n)?;
    let verify_secs = started.elapsed().as_secs_f64();
    let _ = fs::remove_file(&store);
    eprintln!(
        "bench: {exact}/{n} cgroups attributed exactly ({listed} listed by `capspy ls`); daemon \
         idle CPU {:.2}% at this size",
        idle_cpu * 100.0
    );
    Ok(Scale {
        cgroups: n,
        exact,
        errors,
        listed,
        checks: (0..n).map(|i| fake_use(i).2).sum(),
        maps,
        idle_cpu,
        idle_secs,
        rss_kib,
        verify_secs,
        profile,
        keys_after_removal,
    })
}

pub(super) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: both fds are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads `n` bytes from `fd`, giving up at the timeout or on Ctrl-C.
pub(super) fn wait_for_bytes(fd: &OwnedFd, n: usize, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut got = 0;
    let mut buf = [0u8; 4096];
    while got < n {
        check_interrupted()?;
        ensure!(
            Instant::now() < deadline,
            "only {got} of {n} after {timeout:?}"
        );
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&raw mut pfd, 1, 200) } <= 0 {
            continue;
        }
        // SAFETY: reading into a buffer of the given size from an fd we own.
        let r = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        ensure!(
            r > 0,
            "workers closed the pipe after {got} of {n} (one failed?)"
        );
        got += r.unsigned_abs();
    }
    Ok(())
}

/// The daemon's BPF maps from its fds' fdinfo; names and entry counts from bpftool if it is
/// installed.
pub(super) fn daemon_maps(pid: u32) -> Vec<MapInfo> {
    let bpftool = cmd::which("bpftool");
    let mut maps = Vec::new();
    // A map may have several descriptors (the daemon keeps a second one of CHECKS for batch
    // lookups): each map is listed, and its memory counted, once.
    let mut seen = std::collections::HashSet::new();
    for fd in bpf_fds(pid, "bpf-map") {
        let Ok(info) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
            continue;
        };
        let field = |name: &str| -> u64 {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let id = field("map_id:");
        if !seen.insert(id) {
            continue;
        }
        let mut map = MapInfo {
            name: format!("id {id}"),
            kind: map_type_name(field("map_type:")).to_owned(),
            key: field("key_size:"),
            value: field("value_size:"),
            max_entries: field("max_entries:"),
            memlock: field("memlock:"),
            entries: None,
        };
        if let Some(bpftool) = &bpftool {
            let show = cmd::output(
                Command::new(bpftool)
                    .args(["-j", "map", "show", "id"])
                    .arg(id.to_string()),
            );
            let shown: Value = show
                .ok()
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default();
            if let Some(name) = shown["name"].as_str() {
                name.clone_into(&mut map.name);
            }
            if map.kind == "hash" {
                let dump = cmd::output(
                    Command::new(bpftool)
                        .args(["-j", "map", "dump", "id"])
                        .arg(id.to_string()),
                );
                map.entries = dump
                    .ok()
                    .and_then(|s| serde_json::from_str::<Value>(&s).ok())
                    .and_then(|v| v.as_array().map(|a| a.len() as u64));
            }
        }
        maps.push(map);
    }
    maps.sort_by_key(|m| std::cmp::Reverse(m.memlock));
    maps
}

pub(super) fn checks_entries(maps: &[MapInfo]) -> Option<u64> {
    maps.iter()
        .find(|m| m.name == "CHECKS")
        .and_then(|m| m.entries)
}

pub(super) fn map_type_name(t: u64) -> &'static str {
    match t {
        1 => "hash",
        2 => "array",
        6 => "percpu_array",
        27 => "ringbuf",
        _ => "other",
    }
}

/// Reads the store the way users do: `capspy ls --format json` for the list, `capspy profile
/// ID --format json` for each fake container's counts. Returns (exact, first errors, listed).
pub(super) fn verify_attribution(
    ctx: &Ctx,
    store: &Path,
    n: usize,
) -> Result<(usize, Vec<String>, usize)> {
    let ls = cmd::output(
        ctx.capspy()
            .args(["ls", "--format", "json", "--store"])
            .arg(store),
    )?;
    let ls: Value = serde_json::from_str(&ls).context("capspy ls --format json")?;
    let workloads: BTreeMap<String, Vec<String>> = ls
        .as_array()
        .context("capspy ls: not a list")?
        .iter()
        .filter(|l| l["kind"] == "workload")
        .filter_map(|l| {
            let used = l["used"]
                .as_array()?
                .iter()
                .filter_map(|u| u.as_str().map(String::from));
            Some((l["workload"].as_str()?.to_owned(), used.collect()))
        })
        .collect();
    let listed = (0..n)
        .filter(|&i| workloads.contains_key(&format!("container:{}", &fake_id(i)[..12])))
        .count();

    // One profile per container, two at a time (this machine's cores).
    let results: Vec<Result<(), String>> = thread::scope(|s| {
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let workloads = &workloads;
                s.spawn(move || {
                    (t..n)
                        .step_by(2)
                        .map(|i| check_one(ctx, store, i, workloads))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_default())
            .collect()
    });
    let exact = results.iter().filter(|r| r.is_ok()).count();
    let errors: Vec<String> = results
        .into_iter()
        .filter_map(Result::err)
        .take(5)
        .collect();
    Ok((exact, errors, listed))
}

pub(super) fn check_one(
    ctx: &Ctx,
    store: &Path,
    i: usize,
    workloads: &BTreeMap<String, Vec<String>>,
) -> Result<(), String> {
    let id = fake_id(i);
    let (_, cap, expected) = fake_use(i);
    let key = format!("container:{}", &id[..12]);
    // setuid(0)/setgid(0) as root asks for the caller's own id: an optional check, so `used`
    // may leave it out (dfa9518); the counts below are what attribution is judged on.
    match workloads.get(&key) {
        Some(used) if used.iter().all(|u| u == cap) => {}
        other => {
            return Err(format!(
                "{key}: `capspy ls` says used {other:?}, expected [{cap}] or []"
            ));
        }
    }
    let json = cmd::output(
        ctx.capspy()
            .args(["profile", &id, "--format", "json", "--store"])
            .arg(store),
    )
    .map_err(|e| format!("{id}: {e:#}"))?;
    let report: Value = serde_json::from_str(&json).map_err(|e| format!("{id}: {e}"))?;
    let rows: Vec<(String, String, u64)> = report["checks"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["capability"].as_str().unwrap_or("?").to_owned(),
                        c["verdict"].as_str().unwrap_or("?").to_owned(),
                        c["count"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if rows == [(cap.to_owned(), "granted".to_owned(), expected)] {
        Ok(())
    } else {
        Err(format!(
            "{key}: expected {cap} granted x{expected}, store has {rows:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_ids_are_container_ids_with_distinct_workload_keys() {
        let ids: std::collections::BTreeSet<String> =
            (0..1000).map(|i| fake_id(i)[..12].to_owned()).collect();
        assert_eq!(ids.len(), 1000);
        for i in [0, 999] {
            let id = fake_id(i);
            assert_eq!(id.len(), 64);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
        }
        let counts: std::collections::BTreeSet<u64> = (0..1000).map(|i| fake_use(i).2).collect();
        assert_eq!(counts.len(), 1000);
    }
}
