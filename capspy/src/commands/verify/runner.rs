//! Running the workload's `docker run` line under a capability set: the container started,
//! waited for (with a timeout), its output tail kept and the error named, then removed.

use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum as _;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::model::caps::Capability;
use crate::trace::hook::HookChoice;

use super::plan::{Conclusion, Planner, ProfileUnderTest, Trial};
use super::{GRACE, TAIL_BYTES};
use crate::commands::docker_cli::DockerRun;

/// What the runs of a verification found.
pub struct Checked {
    /// The exit status that means "works", and where it came from.
    pub expected: i32,
    pub expected_from: String,
    pub runs: Vec<RunResult>,
    pub verdict: Conclusion,
}

/// Runs containers one at a time, each with its own cidfile in a private folder, so a run that
/// times out or is interrupted is removed by its id.
pub struct Runner {
    timeout: Duration,
    dir: Scratch,
    /// `docker` and its global options, for `docker rm`.
    client: Vec<OsString>,
    count: usize,
    /// Kept for the whole verification, so a Ctrl-C that arrives between runs is not lost.
    sigint: Signal,
    sigterm: Signal,
}

/// A private folder, removed on drop.
pub(super) struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One finished run.
pub struct RunResult {
    pub(super) trial: Trial,
    pub(super) label: String,
    pub(super) caps: Option<Vec<Capability>>,
    pub(super) argv: Vec<OsString>,
    /// `None`: timed out.
    pub(super) exit: Option<i32>,
    pub(super) stdout: String,
    pub(super) stderr: String,
}

/// What a process did: exit status (`None` if stopped at the timeout) and its output's tails.
pub(super) struct Finished {
    exit: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Runner {
    pub fn new(timeout: Duration, run: &DockerRun) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("capspy-verify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            timeout,
            dir: Scratch(dir),
            client: run.client(),
            count: 0,
            sigint: signal(SignalKind::interrupt())?,
            sigterm: signal(SignalKind::terminate())?,
        })
    }

    fn next_cidfile(&mut self) -> PathBuf {
        self.count += 1;
        self.dir.0.join(format!("run-{}.cid", self.count))
    }

    /// Records the command as written with `capspy run --container` (this same binary), so its
    /// output and Ctrl-C handling stay its own. The profile carries the command's status.
    pub(super) async fn record(
        &mut self,
        run: &DockerRun,
        hook: HookChoice,
    ) -> Result<ProfileUnderTest> {
        let report = self.dir.0.join("recorded.json");
        let cidfile = self.next_cidfile();
        let exe = std::env::current_exe().context("finding capspy's own executable")?;
        let mut argv: Vec<OsString> = vec![
            exe.into(),
            "run".into(),
            "--container".into(),
            "--format".into(),
            "json".into(),
            "--output".into(),
            report.clone().into(),
            "--hook".into(),
            hook.to_possible_value()
                .map_or("auto".into(), |v| v.get_name().into()),
            "--".into(),
        ];
        argv.extend(run.unchanged(&cidfile));
        let done = self.spawn(&argv, &cidfile).await?;
        let Ok(text) = std::fs::read_to_string(&report) else {
            bail!(
                "recording the workload failed: {}",
                last_line(&done.stderr).unwrap_or("capspy run wrote no report")
            );
        };
        let exit = done.exit.context("recording the workload timed out")?;
        if exit == 125 {
            bail!(
                "docker could not start the container as written (exit 125): {}",
                docker_error(&done.stderr)
            );
        }
        let json: serde_json::Value =
            serde_json::from_str(&text).context("the recorded report is not JSON")?;
        let mut profile =
            ProfileUnderTest::from_report(&json).context("reading the recorded report")?;
        profile.recorded_exit = Some(exit);
        Ok(profile)
    }

    /// Runs the command as written when nothing else says what "works" means, then the runs
    /// the plan asks for, one at a time, each judged by its exit status.
    pub async fn check(
        &mut self,
        run: &DockerRun,
        profile: &ProfileUnderTest,
        expect_exit: Option<i32>,
        minimal: bool,
    ) -> Result<Checked> {
        let mut runs: Vec<RunResult> = Vec::new();
        let (expected, expected_from) = if let Some(n) = expect_exit {
            (n, "--expect-exit".to_string())
        } else if let Some(n) = profile.recorded_exit {
            (n, "the recorded run".to_string())
        } else {
            let baseline = self.trial(run, profile, Trial::baseline()).await?;
            let code = baseline.exit.context("the command as written timed out")?;
            runs.push(baseline);
            (code, "the command as written".to_string())
        };
        let mut plan = Planner::new(profile.clone(), minimal, profile.pool());
        while let Some(trial) = plan.next() {
            let r = self.trial(run, profile, trial).await?;
            let works = r.exit == Some(expected);
            eprintln!(
                "capspy: verify run {}: {}: {}",
                runs.len() + 1,
                r.label,
                if works { "works" } else { "fails" }
            );
            plan.record(works);
            runs.push(r);
        }
        Ok(Checked {
            expected,
            expected_from,
            runs,
            verdict: plan.verdict(),
        })
    }

    async fn trial(
        &mut self,
        run: &DockerRun,
        profile: &ProfileUnderTest,
        trial: Trial,
    ) -> Result<RunResult> {
        let cidfile = self.next_cidfile();
        let caps: Option<Vec<Capability>> =
            trial.caps.as_ref().map(|c| c.iter().copied().collect());
        let argv = match &caps {
            None => run.unchanged(&cidfile),
            Some(c) => run.with_caps(c, &cidfile),
        };
        let done = self.spawn(&argv, &cidfile).await?;
        let label = trial.label(profile);
        // docker run's own failures (bad option, no such image, daemon down) are 125.
        if done.exit == Some(125) {
            bail!(
                "docker could not start the container for the run {label:?} (exit 125): {}",
                docker_error(&done.stderr)
            );
        }
        Ok(RunResult {
            trial,
            label,
            caps,
            argv,
            exit: done.exit,
            stdout: done.stdout,
            stderr: done.stderr,
        })
    }

    /// Runs `argv` with its output captured; at the timeout or on Ctrl-C, removes the container
    /// named in `cidfile`, then waits for (or kills) the process it started.
    async fn spawn(&mut self, argv: &[OsString], cidfile: &Path) -> Result<Finished> {
        // A Ctrl-C during the previous run may have ended it first: stop before the next.
        let pending = tokio::select! {
            biased;
            _ = self.sigint.recv() => true,
            _ = self.sigterm.recv() => true,
            () = std::future::ready(()) => false,
        };
        if pending {
            bail!("interrupted");
        }
        let mut child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", argv[0].to_string_lossy()))?;
        let out = tokio::spawn(tail(child.stdout.take()));
        let err = tokio::spawn(tail(child.stderr.take()));
        let mut interrupted = false;
        let status = tokio::select! {
            s = child.wait() => Some(s.context("waiting for docker")?),
            () = tokio::time::sleep(self.timeout) => None,
            _ = self.sigint.recv() => { interrupted = true; None }
            _ = self.sigterm.recv() => { interrupted = true; None }
        };
        if status.is_none() {
            self.remove_container(cidfile).await;
            if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
        if interrupted {
            bail!("interrupted");
        }
        let exit = status.map(|s| {
            s.code()
                .or_else(|| s.signal().map(|n| 128 + n))
                .unwrap_or(1)
        });
        Ok(Finished {
            exit,
            stdout: out.await.unwrap_or_default(),
            stderr: err.await.unwrap_or_default(),
        })
    }

    async fn remove_container(&self, cidfile: &Path) {
        let Ok(id) = std::fs::read_to_string(cidfile) else {
            return;
        };
        let id = id.trim();
        if id.is_empty() {
            return;
        }
        let _ = tokio::process::Command::new(&self.client[0])
            .args(&self.client[1..])
            .args(["rm", "-f", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
}

/// Reads a stream to its end, keeping the last `TAIL_BYTES`.
pub(super) async fn tail(stream: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * TAIL_BYTES {
            kept.drain(..kept.len() - TAIL_BYTES);
        }
    }
    if kept.len() > TAIL_BYTES {
        kept.drain(..kept.len() - TAIL_BYTES);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// docker's own error line (`docker: Error response from daemon: ...`), not its usage hint.
pub(super) fn docker_error(stderr: &str) -> &str {
    stderr
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("docker:") || l.contains("Error"))
        .or_else(|| last_line(stderr))
        .unwrap_or("no message")
}

/// What says why a run failed: docker's own error if it printed one, else the workload's lines
/// that name a refusal (EPERM, EACCES, "Operation not permitted", "Permission denied", `cap_`),
/// else its last line.
pub(super) fn why_not(stderr: &str, stdout: &str) -> Option<String> {
    if let Some(l) = stderr
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("docker:"))
    {
        return Some(l.to_string());
    }
    let refusal = |l: &&str| {
        let lower = l.to_ascii_lowercase();
        l.contains("EPERM")
            || l.contains("EACCES")
            || lower.contains("operation not permitted")
            || lower.contains("permission denied")
            || lower.contains("cap_")
    };
    let mut named: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .map(str::trim)
        .filter(refusal)
        .collect();
    named.dedup();
    if !named.is_empty() {
        // The first refusals are the cause; later ones are often its consequences.
        named.truncate(3);
        return Some(named.join(" | "));
    }
    last_line(stderr)
        .or_else(|| last_line(stdout))
        .map(ToString::to_string)
}

pub(super) fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|l| !l.is_empty())
}

pub(super) fn names<'a>(caps: impl IntoIterator<Item = &'a Capability>) -> Vec<String> {
    caps.into_iter().map(ToString::to_string).collect()
}

pub(super) fn lossy(argv: &[OsString]) -> Vec<String> {
    argv.iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect()
}
