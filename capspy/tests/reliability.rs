//! The daemon under kills, contention and load, with the real BPF program (root needed).
//!
//! Load comes from processes this test forks into cgroups it makes under the v2 root, named like
//! Docker's (`/docker/<64 hex>`) so the daemon attributes them as containers without an engine.

mod common;

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Daemon, alerts, capspy_on as capspy, v2_root};

/// A fake container cgroup (or a service's), removed (after killing what is left in it) on drop.
struct FakeContainer {
    id: String,
    path: PathBuf,
    children: Vec<i32>,
    /// A parent made for it (`system.slice` where systemd is absent), removed after it.
    made_parent: Option<PathBuf>,
}

impl FakeContainer {
    /// Container `n` of this process. Its short id (the daemon's workload, `container:` and 12
    /// hex digits) is `n`'s thousand and the pid, so that tests numbering their containers in
    /// other thousands never share a workload (nor with another test process).
    fn new(n: u32) -> Self {
        let id = format!(
            "{:04x}{:08x}{:0>44}{n:08x}",
            n / 1000,
            std::process::id(),
            ""
        );
        Self::at(v2_root().join("docker").join(&id), &id, None)
    }

    /// Where systemd puts service NAME: `system.slice/NAME.service`.
    fn service(name: &str) -> Self {
        let slice = v2_root().join("system.slice");
        let made_parent = (!slice.exists()).then(|| slice.clone());
        Self::at(slice.join(format!("{name}.service")), name, made_parent)
    }

    /// A cgroup of no container and no service, e.g. a transient scope: the host's.
    fn host(name: &str) -> Self {
        Self::at(v2_root().join(name), name, None)
    }

    fn at(path: PathBuf, name: &str, made_parent: Option<PathBuf>) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        Self {
            id: name.to_string(),
            path,
            children: Vec::new(),
            made_parent,
        }
    }

    /// Forks a child into this cgroup that makes `count` CAP_SETUID checks and then `forever`
    /// more SETGID checks until killed: `setfsuid(1)` as root makes exactly one (1 is none of
    /// its ids; `setuid(0)` would be a check for its own id, optional since capspy reads those),
    /// and `setfsuid(0)` back makes none.
    fn spawn(&mut self, count: u64, forever: bool) -> i32 {
        self.spawn_gated(count, forever, None)
    }

    /// Like `spawn`, but the child first blocks reading `gate` until its write end is closed,
    /// so that many children can start their checks at the same instant.
    fn spawn_gated(&mut self, count: u64, forever: bool, gate: Option<&Gate>) -> i32 {
        self.fork_in(gate, || {
            for _ in 0..count {
                // SAFETY: raw syscalls without memory arguments.
                unsafe {
                    libc::setfsuid(1);
                    libc::setfsuid(0);
                }
            }
            if forever {
                loop {
                    // SAFETY: as above.
                    unsafe {
                        libc::setfsgid(1);
                        libc::setfsgid(0);
                    }
                }
            }
        })
    }

    /// Forks a child into this cgroup that maps and unmaps a private writable page `count`
    /// times: one advisory CAP_SYS_ADMIN check each (the overcommit heuristic), in mmap.
    fn spawn_mmaps(&mut self, count: u64) -> i32 {
        self.fork_in(None, || {
            for _ in 0..count {
                // SAFETY: a fresh anonymous page, unmapped at once, never touched.
                unsafe {
                    let page = libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    );
                    if page == libc::MAP_FAILED {
                        libc::_exit(4);
                    }
                    libc::munmap(page, 4096);
                }
            }
        })
    }

    /// Forks a child that moves itself into this cgroup, waits at `gate` if given, does `work`
    /// and exits.
    fn fork_in(&mut self, gate: Option<&Gate>, work: impl FnOnce()) -> i32 {
        let procs =
            std::ffi::CString::new(self.path.join("cgroup.procs").to_str().unwrap().as_bytes())
                .unwrap();
        // SAFETY: the child only makes raw syscalls (open, write, read, and `work`'s) on memory
        // prepared before the fork.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    libc::_exit(3);
                }
                libc::close(fd);
                if let Some(gate) = gate {
                    // Our copy of the write end would keep the pipe open forever.
                    libc::close(gate.write);
                    let mut byte = 0u8;
                    libc::read(gate.read, (&raw mut byte).cast(), 1);
                }
                work();
                libc::_exit(0);
            }
            self.children.push(pid);
            pid
        }
    }

    fn wait_all(&mut self) {
        for pid in self.children.drain(..) {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &raw mut status, 0) };
        }
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        for &pid in &self.children {
            // SAFETY: killing and reaping our own children.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        for _ in 0..100 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(parent) = &self.made_parent {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// A pipe whose read end children block on until `open` closes the write end.
struct Gate {
    read: i32,
    write: i32,
}

impl Gate {
    fn new() -> Self {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two fds into the array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        Self {
            read: fds[0],
            write: fds[1],
        }
    }

    fn open(self) {
        // SAFETY: closing our own fds; children see EOF and go.
        unsafe {
            libc::close(self.write);
            libc::close(self.read);
        }
    }
}

/// The stored CAP_SETUID count of a container, or None if the store does not know it yet.
fn setuid_count(store: &Path, id: &str) -> Option<u64> {
    cap_count(store, id, "SETUID")
}

/// The app's checks of `capability` in `id`'s profile, all rows together.
fn cap_count(store: &Path, id: &str, capability: &str) -> Option<u64> {
    let out = capspy(store, &["profile", id, "--format", "json"]);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        v["checks"]
            .as_array()?
            .iter()
            .filter(|c| c["capability"] == capability && c["bucket"] == "app")
            .map(|c| c["count"].as_u64().unwrap_or(0))
            .sum(),
    )
}

fn wait_for_count(store: &Path, id: &str, want: u64) {
    wait_for_cap_count(store, id, "SETUID", want);
}

fn wait_for_cap_count(store: &Path, id: &str, capability: &str, want: u64) {
    let start = Instant::now();
    loop {
        let got = cap_count(store, id, capability);
        if got == Some(want) {
            return;
        }
        // Generous: a loaded machine (`cargo xtask stress`) delays sweeps by seconds.
        if start.elapsed() > Duration::from_mins(1) {
            // What the store made of it, for the failure message.
            let profile = capspy(store, &["profile", id, "--format", "json"]);
            let ls = capspy(store, &["ls", "--format", "json"]);
            let others: Vec<Value> = serde_json::from_slice::<Vec<Value>>(&ls.stdout)
                .unwrap_or_default()
                .into_iter()
                .filter(|l| l["kind"] != "workload" && l["kind"] != "container")
                .collect();
            panic!(
                "store has {got:?} {capability} checks for {id}, expected {want}; profile: {}; not containers: {others:?}",
                String::from_utf8_lossy(&profile.stderr).trim()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether every instance of a workload in the store has ended.
fn workload_ended(store: &Path, workload: &str) -> bool {
    let ls = capspy(store, &["ls", "--format", "json"]);
    serde_json::from_slice::<Vec<Value>>(&ls.stdout)
        .unwrap_or_default()
        .iter()
        .any(|l| l["kind"] == "workload" && l["workload"] == workload && l["running"] == false)
}

/// The seed of a test's random choices: `CAPSPY_TEST_SEED` (which `cargo xtask stress` sets),
/// else one from the pid; printed, so that a failure can be replayed with it.
fn seed() -> u32 {
    let seed = std::env::var("CAPSPY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| u64::from(std::process::id()));
    eprintln!("seed {seed} (replay with CAPSPY_TEST_SEED={seed})");
    // xorshift needs a state other than zero.
    let folded = u32::try_from((seed ^ (seed >> 32)) & 0xffff_ffff).unwrap_or(1);
    folded.wrapping_mul(2_654_435_761).max(1)
}

/// Every daemon counts the checks of every cgroup on the host, so a test of the kernel map's
/// capacity runs alone: the other tests' cgroups would take entries of its small map.
static HOST: RwLock<()> = RwLock::new(());

/// Held by a test that makes cgroups.
fn sharing_the_host() -> RwLockReadGuard<'static, ()> {
    HOST.read().unwrap_or_else(PoisonError::into_inner)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("capspy-rel-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_daemon_runs_without_any_capability() {
    let _host = sharing_the_host();
    let dir = scratch("caps");
    let daemon = Daemon::record(&dir.join("s.db"));
    let pid = daemon.pid();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        for set in ["CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"] {
            assert!(
                status.contains(&format!("{set}:\t0000000000000000")),
                "{set} not empty: {status}"
            );
        }
    }
    // And it still records: a container's checks reach the store.
    let mut c = FakeContainer::new(1);
    c.spawn(5, false);
    c.wait_all();
    wait_for_count(&dir.join("s.db"), &c.id, 5);
    assert!(daemon.stop().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_daemon_on_the_same_store_is_refused() {
    let _host = sharing_the_host();
    let dir = scratch("lock");
    let store = dir.join("s.db");
    let first = Daemon::record(&store);
    let second = capspy(&store, &["record"]);
    assert_eq!(second.status.code(), Some(2), "{second:?}");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("lock") || err.contains("in use"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // The first one is unharmed: it still records.
    let mut c = FakeContainer::new(2);
    c.spawn(7, false);
    c.wait_all();
    wait_for_count(&store, &c.id, 7);
    assert!(first.stop().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// 20 SIGKILLs at random moments while 6 cgroups hammer the daemon with checks; each round
/// makes a known number of SETUID checks in one more cgroup and waits until the store has them.
/// Afterwards the store must hold exactly the sum: nothing lost, nothing counted twice.
#[test]
fn sigkill_at_random_moments_loses_and_doubles_nothing() {
    let _host = sharing_the_host();
    let dir = scratch("kill");
    let store = dir.join("s.db");
    let mut noise: Vec<FakeContainer> = (100..106).map(FakeContainer::new).collect();
    for c in &mut noise {
        c.spawn(0, true);
    }
    let mut counted = FakeContainer::new(99);
    let per_round = 1000;
    let mut rng = seed();
    for round in 1..=20u64 {
        let daemon = Daemon::record(&store);
        counted.spawn(per_round, false);
        counted.wait_all();
        wait_for_count(&store, &counted.id, per_round * round);
        // xorshift: a random moment within the next few flushes.
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        std::thread::sleep(Duration::from_millis(u64::from(rng % 700)));
        daemon.kill();
        let ls = capspy(&store, &["ls", "--format", "json"]);
        assert!(
            ls.status.success(),
            "round {round}: store does not open: {ls:?}"
        );
        let _ = std::io::stderr().write_all(format!("round {round} ok\n").as_bytes());
    }
    let daemon = Daemon::record(&store);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(setuid_count(&store, &counted.id), Some(per_round * 20));
    assert!(daemon.stop().success());
    drop(noise);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The ring buffer made tiny (one page) and 200 cgroups starting at the same instant: most
/// first-sighting records are lost, yet every key reaches the store with its exact count
/// (the map sweep recovers them), and the loss is counted and reported.
#[test]
fn a_flood_loses_ring_buffer_records_but_no_checks() {
    let _host = sharing_the_host();
    let dir = scratch("flood");
    let store = dir.join("s.db");
    let daemon = Daemon::record_with(&store, &["--ring-buffer-bytes", "4096"]);
    let gate = Gate::new();
    let mut containers: Vec<FakeContainer> = (1000..1200).map(FakeContainer::new).collect();
    for (i, c) in (0u64..).zip(&mut containers) {
        c.spawn_gated(10_000 + i, false, Some(&gate));
    }
    gate.open();
    for c in &mut containers {
        c.wait_all();
    }
    for (i, c) in (0u64..).zip(&containers) {
        wait_for_count(&store, &c.id, 10_000 + i);
    }
    assert!(daemon.stop().success());
    let ls = capspy(&store, &["ls"]);
    let err = String::from_utf8_lossy(&ls.stderr);
    assert!(err.contains("first-sighting records were lost"), "{err}");
    drop(containers);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A kernel map of 512 entries (the host's own keys take some) and 700 cgroups: what does not
/// fit is counted as overflow and reported. Once those cgroups are gone, their entries are flushed and freed: new cgroups fit
/// again and are attributed exactly.
#[test]
fn a_full_map_is_reported_and_freed_when_cgroups_go() {
    let _alone = HOST.write().unwrap_or_else(PoisonError::into_inner);
    let dir = scratch("full");
    let store = dir.join("s.db");
    let daemon = Daemon::record_with(&store, &["--map-entries", "512"]);
    let mut first: Vec<FakeContainer> = (2000..2700).map(FakeContainer::new).collect();
    for c in &mut first {
        c.spawn(3, false);
        c.wait_all();
    }
    std::thread::sleep(Duration::from_millis(600));
    let workload = format!("container:{}", &first[0].id[..12]);
    drop(first);
    // A flush notices the cgroups are gone, frees their entries and marks them ended: the second
    // batch fits only after that (a fixed wait was too short under load).
    let start = Instant::now();
    while !workload_ended(&store, &workload) {
        assert!(
            start.elapsed() < Duration::from_mins(1),
            "the first cgroups were never retired"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut second: Vec<FakeContainer> = (2700..2740).map(FakeContainer::new).collect();
    for (i, c) in (0u64..).zip(&mut second) {
        c.spawn(5 + i, false);
        c.wait_all();
    }
    for (i, c) in (0u64..).zip(&second) {
        wait_for_count(&store, &c.id, 5 + i);
    }
    assert!(daemon.stop().success());
    let ls = capspy(&store, &["ls"]);
    let err = String::from_utf8_lossy(&ls.stderr);
    assert!(err.contains("did not fit the kernel map"), "{err}");
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}

/// 1,000 cgroups started and removed while the daemon runs: every one's checks are stored
/// exactly, and the daemon's memory returns to about where it started.
#[test]
fn churn_of_a_thousand_cgroups_is_recorded_and_leaves_no_growth() {
    let _host = sharing_the_host();
    let dir = scratch("churn");
    let store = dir.join("s.db");
    let daemon = Daemon::record(&store);
    let rss = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap()
    };
    let pid = daemon.pid();
    let mut ids = Vec::new();
    for batch in 0..10u32 {
        let mut batch_containers: Vec<FakeContainer> = (0..100)
            .map(|i| FakeContainer::new(3000 + batch * 100 + i))
            .collect();
        for c in &mut batch_containers {
            c.spawn(2, false);
        }
        for c in &mut batch_containers {
            c.wait_all();
            ids.push(c.id.clone());
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let after_churn = rss(pid);
    for id in &ids {
        wait_for_count(&store, id, 2);
    }
    // Steady state after the churn, and again after more of it: no growth per cgroup.
    for batch in 10..15u32 {
        let mut more: Vec<FakeContainer> = (0..100)
            .map(|i| FakeContainer::new(3000 + batch * 100 + i))
            .collect();
        for c in &mut more {
            c.spawn(2, false);
            c.wait_all();
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let later = rss(pid);
    assert!(
        later < after_churn + 4 * 1024,
        "daemon RSS grew from {after_churn} kB to {later} kB over 500 more cgroups"
    );
    // The kernel map holds only what still exists (the host's own keys), not 1,500 cgroups'.
    let (status, lines) = daemon.stop_with_lines();
    assert!(status.success());
    let err = lines.join("\n");
    let entries: usize = err
        .split(" kernel map entries")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no map entry count in {err:?}"));
    assert!(entries < 200, "{entries} map entries left after the churn");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Where the kernel has cgroup local storage (Linux 6.2+), every check of a key after its first
/// in a cgroup is counted in the cgroup's storage, which the kernel frees with the cgroup. Here
/// the cgroups are removed right after their checks, long before the daemon's next sweep could
/// read their storage: their counts must have been copied out at removal.
#[test]
fn checks_counted_in_cgroup_storage_survive_its_removal() {
    let dir = scratch("fold");
    let store = dir.join("s.db");
    // Sweeps far apart: the cgroups are gone long before one could read their storage.
    let daemon = Daemon::record_every(&store, "3s", &[]);
    let mut ids = Vec::new();
    for n in 0..20u64 {
        let mut c = FakeContainer::new(9000 + u32::try_from(n).unwrap());
        c.spawn(1000 + n, false);
        c.wait_all();
        ids.push((c.id.clone(), 1000 + n));
        drop(c);
    }
    for (id, count) in &ids {
        wait_for_count(&store, id, *count);
    }
    // Linux 6.2+ has the storage: the daemon must have used it, or this tested nothing new.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut version = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (version.next().unwrap_or(0), version.next().unwrap_or(0));
    if (major, minor) >= (6, 2) {
        assert!(
            daemon.said("aggregation: cgroup local storage"),
            "{:?}",
            daemon.lines()
        );
    }
    assert!(daemon.stop().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The overcommit heuristic's advisory SYS_ADMIN check, the check real work makes most (every
/// private writable mapping), is counted exactly per container: on tracepoints the kernel keeps
/// it per syscall, in cgroup storage cells of their own where the kernel has the storage, and
/// the cells of a removed cgroup are still read.
#[test]
fn overcommit_checks_are_counted_exactly_per_container() {
    let dir = scratch("overcommit");
    let store = dir.join("s.db");
    let daemon = Daemon::record_every(&store, "2s", &[]);
    let mut ids = Vec::new();
    for n in 0..6u64 {
        let mut c = FakeContainer::new(9100 + u32::try_from(n).unwrap());
        c.spawn_mmaps(700 + n);
        c.wait_all();
        ids.push((c.id.clone(), 700 + n));
        // Half of them read while the cgroup lives (its storage), half removed at once (the
        // cells copied out on removal).
        if n % 2 == 1 {
            wait_for_cap_count(&store, &c.id, "SYS_ADMIN", 700 + n);
        }
        drop(c);
    }
    for (id, count) in &ids {
        wait_for_cap_count(&store, id, "SYS_ADMIN", *count);
    }
    assert!(daemon.stop().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Cgroups that live a few milliseconds, each made, entered by one process that makes two checks
/// and exits, and removed at once, hundreds in a row while the daemon sweeps: every one's checks
/// reach the store under its container. A hundred idle containers (their process gone, so the
/// daemon looks at them again every sweep) make each sweep long, as a busy host does. (A cgroup
/// made while a sweep read the kernel map used to have its `cgroup_mkdir` record read a sweep
/// late; looked for by a walk once the sweep got to it, after it was removed, it was not found
/// and its checks were stored under no container.)
#[test]
fn cgroups_removed_at_once_are_attributed() {
    let _host = sharing_the_host();
    let dir = scratch("brief");
    let store = dir.join("s.db");
    let daemon = Daemon::record(&store);
    let mut idle: Vec<FakeContainer> = (5000..5100).map(FakeContainer::new).collect();
    for c in &mut idle {
        c.spawn(1, false);
        c.wait_all();
    }
    let ids: Vec<String> = (0..400)
        .map(|i| {
            let mut c = FakeContainer::new(6000 + i);
            c.spawn(2, false);
            c.wait_all();
            c.id.clone()
        })
        .collect();
    for id in &ids {
        wait_for_count(&store, id, 2);
    }
    assert!(daemon.stop().success());
    drop(idle);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Services and the host's other processes are recorded like containers and profiled by name
/// (`capspy profile nginx` or `nginx.service`, `capspy profile host`), and `capspy ls` lists
/// them after the containers, never merged into a container workload.
#[test]
fn services_and_the_host_are_profiled_by_name() {
    let _host = sharing_the_host();
    let dir = scratch("services");
    let store = dir.join("s.db");
    let daemon = Daemon::record(&store);
    let name = format!("capspy-t-svc-{}", std::process::id());
    let mut service = FakeContainer::service(&name);
    // Still running (SETGID checks until killed) when capspy reads what it holds.
    service.spawn(7, true);
    let mut host = FakeContainer::host(&format!("capspy-t-host-{}", std::process::id()));
    host.spawn(3, false);
    host.wait_all();
    wait_for_count(&store, &name, 7);
    let start = Instant::now();
    // Other host processes may add their own checks.
    while setuid_count(&store, "host").is_none_or(|n| n < 3) {
        assert!(
            start.elapsed() < Duration::from_mins(1),
            "no host checks stored"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(daemon.stop().success());

    let out = capspy(
        &store,
        &["profile", &format!("{name}.service"), "--format", "json"],
    );
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["subject"]["kind"], "workload", "{report:#}");
    assert_eq!(report["subject"]["key"], format!("service:{name}.service"));
    let both = serde_json::json!(["SETGID", "SETUID"]);
    assert_eq!(report["required"], both, "{report:#}");
    let unit = capspy(&store, &["profile", &name, "--format", "systemd"]);
    let unit = String::from_utf8_lossy(&unit.stdout);
    assert!(
        unit.contains("CapabilityBoundingSet=CAP_SETGID CAP_SETUID"),
        "{unit}"
    );

    // What the service's process held (root's whole set) against what it used.
    let ls = capspy(&store, &["ls", "--format", "json"]);
    let lines: Value = serde_json::from_slice(&ls.stdout).unwrap();
    let line = lines
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == "service" && l["name"] == format!("{name}.service"))
        .unwrap_or_else(|| panic!("{lines:#}"));
    let granted = line["granted"].as_array().unwrap();
    assert!(granted.len() > 30, "{line:#}");
    assert_eq!(line["used"], both, "{line:#}");
    assert_eq!(line["droppable"], granted.len() - 2, "{line:#}");
    let ls = capspy(&store, &["ls"]);
    let text = String::from_utf8_lossy(&ls.stdout);
    let title = format!("service {name}.service\n    granted: {} (", granted.len());
    assert!(text.contains(&title), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines
            .windows(2)
            .any(|w| w[0] == "host" && w[1].starts_with("    used: ")),
        "{text}"
    );
    drop(service);
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Cgroups made and removed while the daemon is held (SIGSTOP; the kernel counts on) with a
/// one-page `cgroup_mkdir` ring: most records find the ring full, and those cgroups are gone
/// before a walk could find them. Each one's checks are stored exactly, under its container when
/// its record came through, else under `cgroup:<id>` of kind unattributed, never under the host;
/// the lost records and the unattributed cgroups are counted in `/metrics`, `ls` and the report.
#[test]
fn cgroups_whose_mkdir_record_was_lost_are_stored_as_unattributed() {
    let _host = sharing_the_host();
    let dir = scratch("unattributed");
    let store = dir.join("s.db");
    let baselines = dir.join("baselines");
    std::fs::create_dir_all(&baselines).unwrap();
    let watch = Daemon::watch(
        &store,
        &baselines,
        &dir.join("alerts.jsonl"),
        &["--cgroups-ring-bytes", "4096", "--metrics", "127.0.0.1:0"],
    );
    watch.signal(libc::SIGSTOP);
    // (container id, key if unattributed); a one-page ring holds about 15 records.
    let made: Vec<(String, String)> = (7000..7040)
        .map(|n| {
            let mut c = FakeContainer::new(n);
            let ino = std::fs::metadata(&c.path).unwrap().ino();
            c.spawn(3, false);
            c.wait_all();
            (c.id.clone(), format!("cgroup:{ino}"))
        })
        .collect();
    watch.signal(libc::SIGCONT);
    let mut unattributed = Vec::new();
    for (id, key) in &made {
        let start = Instant::now();
        loop {
            if setuid_count(&store, id) == Some(3) {
                break;
            }
            if setuid_count(&store, key) == Some(3) {
                unattributed.push(key.clone());
                break;
            }
            assert!(
                start.elapsed() < Duration::from_mins(1),
                "checks of {id} ({key}) not stored"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(!unattributed.is_empty(), "no record was lost");

    let body = common::get_metrics(&watch.metrics_url());
    let sample = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {body}"))
    };
    // Other cgroups of this machine may have lost records too.
    let ours = f64::from(u32::try_from(unattributed.len()).unwrap());
    assert!(
        sample(r#"capspy_ringbuf_lost_total{ring="cgroups"}"#) >= ours,
        "{body}"
    );
    assert!(
        sample("capspy_unattributed_cgroups_total") >= ours,
        "{body}"
    );
    assert!(watch.stop().success());

    let ls = capspy(&store, &["ls", "--format", "json"]);
    let lines: Vec<Value> = serde_json::from_slice(&ls.stdout).unwrap();
    for key in &unattributed {
        let line = lines
            .iter()
            .find(|l| l["name"] == *key)
            .unwrap_or_else(|| panic!("{key} not listed: {lines:#?}"));
        assert_eq!(line["kind"], "unattributed", "{line:#}");
        assert_eq!(line["used"], serde_json::json!(["SETUID"]), "{line:#}");
    }
    let err = String::from_utf8_lossy(&ls.stderr);
    assert!(
        err.contains("were removed before their path could be learnt")
            && err.contains("cgroup creation records were lost"),
        "{err}"
    );
    let report = capspy(&store, &["profile", &unattributed[0], "--format", "json"]);
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    assert!(
        report["losses"]["cgroups_lost"].as_u64() >= Some(unattributed.len() as u64),
        "{report:#}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `capspy watch` keeps what it alerted on in its store: restarted, it does not alert again for
/// the same workload, kind and capability, and still alerts on a capability it has not seen.
#[test]
fn a_restarted_watch_does_not_alert_again() {
    let _host = sharing_the_host();
    let dir = scratch("dedupe");
    let store = dir.join("s.db");
    let baselines = dir.join("baselines");
    std::fs::create_dir_all(&baselines).unwrap();
    let file = dir.join("alerts.jsonl");
    let mut c = FakeContainer::new(8000);
    let workload = format!("container:{}", &c.id[..12]);
    let of = |kind: &str, cap: Option<&str>| -> usize {
        alerts(&file)
            .iter()
            .filter(|a| a["workload"] == workload.as_str() && a["kind"] == kind)
            .filter(|a| cap.is_none_or(|cap| a["capability"] == cap))
            .count()
    };
    let wait_for_alert = |kind: &str, cap: &str| {
        let start = Instant::now();
        while of(kind, Some(cap)) == 0 {
            assert!(
                start.elapsed() < Duration::from_mins(1),
                "no {kind} alert for {cap}: {:#?}",
                alerts(&file)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // No baseline: a new workload, and SETUID is drift.
    let watch = Daemon::watch(&store, &baselines, &file, &[]);
    c.spawn(3, false);
    c.wait_all();
    wait_for_alert("drift", "SETUID");
    assert!(watch.stop().success());
    assert_eq!(of("new_workload", None), 1);

    let watch = Daemon::watch(&store, &baselines, &file, &[]);
    c.spawn(3, false);
    c.wait_all();
    // Stored means judged: the sweep judges a key before it writes it.
    wait_for_count(&store, &c.id, 6);
    // SETGID (until killed) is new to this workload: alerted.
    c.spawn(0, true);
    wait_for_alert("drift", "SETGID");
    assert!(watch.stop().success());
    assert_eq!(of("drift", Some("SETUID")), 1, "{:#?}", alerts(&file));
    assert_eq!(of("new_workload", None), 1, "{:#?}", alerts(&file));
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}
