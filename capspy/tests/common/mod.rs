//! What the tests with real containers share: a Docker engine (the running one, or one started
//! here and stopped by pid on drop), the docker client, and images made with `docker import` from
//! busybox-static (no registry is reachable).

// Each test crate uses its own part of this module.
#![allow(dead_code, reason = "each test binary uses only some of the helpers")]

pub mod engines;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The engine the tests use; a dockerd started here is stopped on drop, by its pid.
pub struct Engine {
    dockerd: Option<Child>,
}

impl Engine {
    /// Uses the running engine, or starts one with loopback-only networking (log in `log_dir`).
    pub fn ensure(log_dir: &Path) -> Self {
        if docker_up() {
            return Self { dockerd: None };
        }
        let log = std::fs::File::create(log_dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd is installed");
        let engine = Self {
            dockerd: Some(child),
        };
        let start = Instant::now();
        while !docker_up() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "dockerd did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        engine
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(mut d) = self.dockerd.take() {
            signal(&d, libc::SIGTERM);
            let _ = d.wait();
        }
    }
}

/// What a test made: its containers (removed by id or name) and its scratch folder, then the
/// engine if it started one. Runs even when an assertion fails.
pub struct Cleanup {
    pub containers: Vec<String>,
    pub dir: PathBuf,
    /// Dropped after the containers are removed.
    _engine: Engine,
}

impl Cleanup {
    /// Ensures an engine (its log goes to `dir`, which must exist).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            _engine: Engine::ensure(&dir),
            containers: Vec::new(),
            dir,
        }
    }
}

impl Cleanup {
    /// `docker run -d --network none --name NAME IMAGE sh -c SCRIPT`, removed on drop: its id.
    pub fn run_detached(&mut self, image: &str, name: &str, script: &str) -> String {
        let out = docker(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            name,
            image,
            "sh",
            "-c",
            script,
        ]);
        let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
        self.containers.push(id.clone());
        id
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling a child we started, by pid.
    unsafe { libc::kill(i32::try_from(child.id()).unwrap(), sig) };
}

/// Waits (up to 60 s) until a descendant of `pid` runs a program named `comm`: the moment a
/// command under `capspy run` has really started, however slow the machine is.
pub fn wait_for_descendant(pid: u32, comm: &str) {
    let parent_of = |p: u32| -> Option<(u32, String)> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
        Some((rest.split(' ').nth(1)?.parse().ok()?, name.to_string()))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
    while std::time::Instant::now() < deadline {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(mut p) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Some((_, name)) = parent_of(p) else {
                continue;
            };
            if name != comm {
                continue;
            }
            while let Some((ppid, _)) = parent_of(p) {
                if ppid == pid {
                    return;
                }
                if ppid <= 1 {
                    break;
                }
                p = ppid;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("no {comm} under pid {pid} after 60 s");
}

/// Runs the docker client; fails the test if it fails.
pub fn docker(args: &[&str]) -> Output {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker client");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn docker_up() -> bool {
    quietly_succeeds(Command::new("docker").arg("info"))
}

pub fn image_exists(image: &str) -> bool {
    quietly_succeeds(Command::new("docker").args(["image", "inspect", image]))
}

fn quietly_succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `dir/rootfs` with busybox-static in `/bin`, `applets` linked to it, and an empty `/tmp`.
pub fn busybox_rootfs(dir: &Path, applets: &[&str]) -> PathBuf {
    let root = dir.join("rootfs");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static installed");
    for applet in applets {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    root
}

/// `dir/rootfs.tar` of `root`, file capabilities (`security.capability`) kept.
pub fn rootfs_tarball(root: &Path, dir: &Path) -> PathBuf {
    let tarball = dir.join("rootfs.tar");
    let tar = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=security.capability"])
        .arg("-C")
        .arg(root)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    tarball
}

/// Imports `root` as `image` (with `PATH=/bin:/usr/bin:/usr/sbin`), through a tarball in `dir`; returns its id.
/// File capabilities (`security.capability`) are kept.
pub fn import_rootfs(root: &Path, dir: &Path, image: &str) -> String {
    let tarball = rootfs_tarball(root, dir);
    let out = docker(&[
        "import",
        "--change",
        "ENV PATH=/bin:/usr/bin:/usr/sbin",
        tarball.to_str().unwrap(),
        image,
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A JSON list of strings (a report's `required`, say).
pub fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// A report's `required` capabilities, by name.
pub fn required(report: &serde_json::Value) -> Vec<String> {
    strings(&report["required"])
}

/// The image of real Debian daemons (`tests/daemons/build-rootfs.sh`), tagged with a hash of
/// that script. Imported from the rootfs tarball cached in `/var/cache/capspy-test/`, which is
/// built first when missing (a few minutes; needs debootstrap and the Debian archive). Tests and
/// test processes running at the same time wait for one build.
pub fn daemons_image() -> String {
    static IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    IMAGE.get_or_init(build_daemons_image).clone()
}

fn build_daemons_image() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/daemons/build-rootfs.sh");
    let sum = Command::new("sha256sum").arg(&script).output().unwrap();
    assert!(sum.status.success(), "sha256sum {}", script.display());
    let hash = String::from_utf8_lossy(&sum.stdout)[..12].to_string();
    let image = format!("capspy-test/daemons:{hash}");
    if image_exists(&image) {
        return image;
    }
    let cache = Path::new("/var/cache/capspy-test");
    std::fs::create_dir_all(cache).unwrap();
    let lock = std::fs::File::create(cache.join("daemons.lock")).unwrap();
    // SAFETY: flock on a file we hold open; released when it is closed.
    let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    assert_eq!(locked, 0, "flock {}", cache.join("daemons.lock").display());
    if image_exists(&image) {
        return image;
    }
    let tarball = cache.join(format!("daemons-{hash}.tar"));
    if !tarball.exists() {
        let out = Command::new(&script).arg(&tarball).output().unwrap();
        assert!(
            out.status.success(),
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    docker(&[
        "import",
        "--change",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        tarball.to_str().unwrap(),
        &image,
    ]);
    image
}

/// `image`, made from busybox-static with `applets`, unless the engine has it already.
pub fn ensure_image(dir: &Path, image: &str, applets: &[&str]) {
    if !image_exists(image) {
        let root = busybox_rootfs(dir, applets);
        import_rootfs(&root, dir, image);
    }
}

/// The busybox image of the container tests. One list of applets for all: an image of this name
/// made with fewer would fail the tests that call more.
pub const BUSYBOX: &str = "capspy-test/busybox:2";

pub fn ensure_busybox(dir: &Path) {
    ensure_image(
        dir,
        BUSYBOX,
        &["sh", "ping", "chown", "touch", "sleep", "true", "cat", "id"],
    );
}

/// A capspy daemon (record or watch) whose stderr lines are collected as they come.
pub struct Daemon {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Collects `stderr` until the daemon closes it.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts it and waits (up to a minute: loading the program takes seconds on a loaded
    /// machine) for its "recording/watching with hook" line, which it prints once its program is
    /// attached and its capabilities are dropped.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_capspy"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut daemon = Self {
            child,
            stderr,
            reader: Some(reader),
        };
        let start = Instant::now();
        while !daemon.said(" with hook ") {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("capspy {args:?} exited ({status}): {:?}", daemon.lines());
            }
            assert!(
                start.elapsed() < Duration::from_mins(1),
                "capspy {args:?} did not start: {:?}",
                daemon.lines()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// `http://127.0.0.1:PORT/metrics`, from the start-up line of `watch --metrics 127.0.0.1:0`.
    pub fn metrics_url(&self) -> String {
        self.lines()
            .iter()
            .find_map(|l| {
                let start = l.find("http://127.0.0.1:")?;
                Some(l[start..].split(';').next()?.trim().to_string())
            })
            .expect("the metrics address in the start-up line")
    }

    /// Sends `sig` (e.g. SIGSTOP, to hold the daemon while the kernel keeps counting).
    pub fn signal(&self, sig: i32) {
        signal(&self.child, sig);
    }

    pub fn said(&self, needle: &str) -> bool {
        self.lines().iter().any(|l| l.contains(needle))
    }

    /// `capspy record` into `store`, sweeping every 200 ms, once its program is attached.
    pub fn record(store: &Path) -> Self {
        Self::record_with(store, &[])
    }

    /// `capspy record` as `record`, with `extra` options.
    pub fn record_with(store: &Path, extra: &[&str]) -> Self {
        Self::record_every(store, "200ms", extra)
    }

    /// `capspy record` into `store`, sweeping every `interval`, with `extra` options.
    pub fn record_every(store: &Path, interval: &str, extra: &[&str]) -> Self {
        let mut args = vec![
            "record",
            "--interval",
            interval,
            "--store",
            store.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    /// `capspy watch` into `store`, sweeping every 200 ms, with the baselines in `baselines` and
    /// its alerts to `alerts`, and `extra` options (`--metrics 127.0.0.1:0`, say).
    pub fn watch(store: &Path, baselines: &Path, alerts: &Path, extra: &[&str]) -> Self {
        let mut args = vec![
            "watch",
            "--interval",
            "200ms",
            "--baseline",
            baselines.to_str().unwrap(),
            "--alerts",
            alerts.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    /// SIGINT, and the daemon's exit status.
    pub fn stop(self) -> std::process::ExitStatus {
        self.stop_with_lines().0
    }

    /// SIGINT; the daemon's exit status and all it wrote to stderr, its last words included.
    pub fn stop_with_lines(mut self) -> (std::process::ExitStatus, Vec<String>) {
        signal(&self.child, libc::SIGINT);
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (status, self.lines())
    }

    /// SIGKILL: the daemon dies between two sweeps, as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `capspy ARGS --store STORE`, its output collected.
pub fn capspy_on(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capspy"))
        .args(args)
        .arg("--store")
        .arg(store)
        .output()
        .unwrap()
}

/// `capspy profile NAME --format json --store STORE`; fails the test if it fails.
pub fn profile(store: &Path, name: &str) -> serde_json::Value {
    let out = capspy_on(store, &["profile", name, "--format", "json"]);
    assert!(
        out.status.success(),
        "profile {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // `Child::kill` sends nothing to a child already waited for, whose pid may be reused.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The alerts `capspy watch --alerts FILE` wrote so far, one JSON object per line.
pub fn alerts(file: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("alert line {l:?}: {e}")))
        .collect()
}

/// `capspy run --format json --output REPORT EXTRA -- CMD`: its output and the report.
pub fn capspy_run(report: &Path, extra: &[&str], cmd: &[&str]) -> (Output, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_capspy"))
        .args(["run", "--format", "json", "--output"])
        .arg(report)
        .args(extra)
        .arg("--")
        .args(cmd)
        .output()
        .expect("capspy runs");
    let text = std::fs::read_to_string(report).unwrap_or_else(|e| {
        panic!(
            "no report from {cmd:?} ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, serde_json::from_str(&text).expect("report is JSON"))
}

/// The cgroup v2 root (`/sys/fs/cgroup/unified` on a hybrid host).
pub fn v2_root() -> PathBuf {
    let unified = Path::new("/sys/fs/cgroup/unified");
    if unified.join("cgroup.procs").exists() {
        unified.to_path_buf()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

/// This test process's pid in letters, to name containers uniquely: a trailing `-N` would be
/// read as a replica index.
pub fn letters_tag() -> String {
    std::process::id()
        .to_string()
        .bytes()
        .map(|d| char::from(b'a' + (d - b'0')))
        .collect()
}

/// A real HTTP client for loopback only (no proxy from the environment), 5 s a request at most,
/// that returns a response whatever its status.
fn loopback_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

/// `GET url` over loopback: the status and body, or None if no answer came.
pub fn http_get(url: &str) -> Option<(u16, String)> {
    let mut response = loopback_agent().get(url).call().ok()?;
    let code = response.status().as_u16();
    Some((code, response.body_mut().read_to_string().ok()?))
}

/// `GET /metrics` at `url` (see `Daemon::metrics_url`) over loopback: the body, once the status
/// is 200 and the content type OpenMetrics 1.0.
pub fn get_metrics(url: &str) -> String {
    let mut response = loopback_agent()
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(response.status(), 200, "GET {url}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    response.body_mut().read_to_string().unwrap()
}
