//! `cargo xtask stress [--rounds N]`: the reliability and container integration tests N times in
//! a row under a CPU and fork load that keeps every core busy, so that a race shows up here rather
//! than on a user's host. For changes to the daemon's loop, attribution and store; CI runs the
//! tests once.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, cargo};
use crate::setup;

/// The test targets stressed (`capspy/tests/<name>.rs`).
const TARGETS: [&str; 2] = ["reliability", "containers"];
/// The variable tests that use randomness read their seed from.
const SEED_VAR: &str = "CAPSPY_TEST_SEED";

#[derive(clap::Args)]
pub struct Options {
    /// How many times to run every target.
    #[arg(long, default_value_t = 10)]
    rounds: u32,
    /// The first round's seed (each round adds one); default: from the clock.
    #[arg(long)]
    seed: Option<u64>,
}

/// One test binary run that failed.
struct Failure {
    round: u32,
    target: &'static str,
    seed: u64,
    log: PathBuf,
    status: String,
}

pub fn stress(opts: &Options) -> Result<()> {
    if opts.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if !cmd::is_root() {
        bail!("the stressed tests load BPF programs and start containers: run as root");
    }
    setup::setup(&setup::Options::default())?;
    let binaries = build_tests()?;
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let first_seed = opts.seed.unwrap_or(started);
    let logs = cmd::target_dir()?.join("stress").join(format!("{started}"));
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;

    let load = Load::start()?;
    eprintln!(
        "stress: {} rounds of {} under load (pids {}); logs in {}",
        opts.rounds,
        TARGETS.join(", "),
        load.pids(),
        logs.display()
    );
    let began = Instant::now();
    let mut failures = Vec::new();
    let mut runs = 0;
    for round in 1..=opts.rounds {
        let seed = first_seed.wrapping_add(u64::from(round - 1));
        for (target, exe) in &binaries {
            let log = logs.join(format!("round-{round:03}-{target}.log"));
            let t = Instant::now();
            let status = run_logged(exe, seed, &log)?;
            runs += 1;
            let took = t.elapsed().as_secs();
            if status.success() {
                eprintln!("stress: round {round} {target}: ok ({took} s)");
            } else {
                eprintln!(
                    "stress: round {round} {target}: FAILED ({status}, {took} s), seed {seed}, log {}",
                    log.display()
                );
                failures.push(Failure {
                    round,
                    target,
                    seed,
                    log,
                    status: status.to_string(),
                });
            }
        }
    }
    drop(load);

    let summary = logs.join("failures.txt");
    fs::write(&summary, failure_list(&failures))
        .with_context(|| format!("writing {}", summary.display()))?;
    eprintln!(
        "stress: {} of {runs} test runs passed in {} rounds ({} min); failures: {} (listed in {})",
        runs - failures.len(),
        opts.rounds,
        began.elapsed().as_secs() / 60,
        failures.len(),
        summary.display()
    );
    if failures.is_empty() {
        Ok(())
    } else {
        bail!(
            "{} test run(s) failed under stress; rerun one with {SEED_VAR}=SEED and the test binary, see {}",
            failures.len(),
            summary.display()
        )
    }
}

/// One line per failure: round, target, seed, exit status, log.
fn failure_list(failures: &[Failure]) -> String {
    let mut out = String::new();
    for f in failures {
        let _ = writeln!(
            out,
            "round {} {} seed {} {} log {}",
            f.round,
            f.target,
            f.seed,
            f.status,
            f.log.display()
        );
    }
    out
}

/// Builds the stressed test binaries once; returns (target, executable).
fn build_tests() -> Result<Vec<(&'static str, PathBuf)>> {
    let mut build = cargo();
    build.args([
        "test",
        "--release",
        "-p",
        "capspy",
        "--no-run",
        "--message-format=json",
    ]);
    for target in TARGETS {
        build.args(["--test", target]);
    }
    let json = cmd::output(&mut build)?;
    TARGETS
        .iter()
        .map(|target| {
            test_executable(&json, target)
                .map(|exe| (*target, exe))
                .with_context(|| format!("cargo built no test binary for {target}"))
        })
        .collect()
}

/// The executable of integration test `target` in cargo's JSON messages.
fn test_executable(messages: &str, target: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .filter(|m| {
            m["target"]["name"] == target
                && m["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "test"))
        })
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
}

/// Runs one test binary with its output (both streams) in `log`.
fn run_logged(exe: &Path, seed: u64, log: &Path) -> Result<std::process::ExitStatus> {
    let file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = file.try_clone()?;
    Command::new(exe)
        .current_dir(cmd::workspace_root().join("capspy"))
        .env(SEED_VAR, seed.to_string())
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .status()
        .with_context(|| format!("running {}", exe.display()))
}

/// A busy loop per core and a loop that forks and execs without pause; stopped by pid on drop,
/// and killed by the kernel should xtask die first.
struct Load(Vec<Child>);

impl Load {
    fn start() -> Result<Self> {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let mut load = Self(Vec::new());
        for _ in 0..cores {
            load.0.push(spawn_sh("while :; do :; done")?);
        }
        load.0.push(spawn_sh("while :; do /bin/true; done")?);
        Ok(load)
    }

    fn pids(&self) -> String {
        let pids: Vec<String> = self.0.iter().map(|c| c.id().to_string()).collect();
        pids.join(" ")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // Our own children, by pid.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_sh(script: &str) -> Result<Child> {
    let mut sh = Command::new("sh");
    sh.args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: prctl is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        sh.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    sh.spawn().context("starting the load (sh)")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn finds_the_test_executable_among_cargo_messages() {
        let messages = [
            r#"{"reason":"compiler-artifact","target":{"name":"capspy","kind":["bin"]},"profile":{"test":false},"executable":"/t/release/capspy"}"#,
            r#"{"reason":"compiler-artifact","target":{"name":"reliability","kind":["test"]},"profile":{"test":true},"executable":"/t/release/deps/reliability-0a1b"}"#,
            r#"{"reason":"build-finished","success":true}"#,
            "not json",
        ]
        .join("\n");
        assert_eq!(
            test_executable(&messages, "reliability"),
            Some(PathBuf::from("/t/release/deps/reliability-0a1b"))
        );
        assert_eq!(test_executable(&messages, "containers"), None);
        assert_eq!(test_executable(&messages, "capspy"), None);
    }

    #[test]
    fn failures_are_listed_with_seed_and_log() {
        let list = failure_list(&[Failure {
            round: 3,
            target: "reliability",
            seed: 1_700_000_002,
            log: PathBuf::from("/t/stress/1/round-003-reliability.log"),
            status: "exit status: 101".into(),
        }]);
        assert_eq!(
            list,
            "round 3 reliability seed 1700000002 exit status: 101 log /t/stress/1/round-003-reliability.log\n"
        );
    }

    #[test]
    fn the_load_keeps_every_core_busy_and_stops_on_drop() {
        let load = Load::start().unwrap();
        let pids: Vec<u32> = load.0.iter().map(Child::id).collect();
        assert!(pids.len() >= 3, "{pids:?}");
        std::thread::sleep(Duration::from_millis(300));
        for pid in &pids {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            assert!(!stat.contains(") Z "), "{pid} already exited: {stat}");
        }
        drop(load);
        for pid in &pids {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "{pid} still running"
            );
        }
    }
}
