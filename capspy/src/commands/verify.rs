//! `capspy verify -- docker run ... IMAGE CMD`: runs a workload under its profile
//! (`--cap-drop ALL --cap-add ...`) and reports whether it still works, i.e. exits with the same
//! status as the unrestricted run; with `--minimal`, also whether each capability is needed.
//! Verification beats inference: a denied check may precede a fallback, and Docker's seccomp
//! profile ties some syscalls to capabilities, which no tracer of `cap_capable` sees.

mod plan;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum as _;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::caps::Capability;
use crate::commands::record::parse_duration;
use crate::hook::HookChoice;

use crate::docker_cli;
pub use crate::docker_cli::{DockerArgsError, DockerRun};
pub use plan::{ProfileUnderTest, Trial, Verdict};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Take the profile from a JSON report (`capspy run --container --format json`, or
    /// `capspy profile --format json`). Default: record one first, with the command as written.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["cap_add", "no_caps"])]
    pub profile: Option<PathBuf>,
    /// Give the profile by hand: a capability to add (repeat, or separate with commas).
    #[arg(long = "cap-add", value_name = "CAP", value_delimiter = ',')]
    pub cap_add: Vec<Capability>,
    /// Give the profile by hand: no capability at all (`--cap-drop ALL` alone).
    #[arg(long, conflicts_with = "cap_add")]
    pub no_caps: bool,
    /// Also remove each added capability in turn and report which removals break the workload.
    #[arg(long)]
    pub minimal: bool,
    /// The exit status that means "works". Default: the recorded run's; with --profile or
    /// --cap-add, that of one run of the command as written.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub expect_exit: Option<i32>,
    /// Stop a run that takes longer (its container is removed); it counts as not working.
    #[arg(long, value_parser = parse_duration, default_value = "2m")]
    pub timeout: Duration,
    /// Result format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: VerifyFormat,
    /// Write the result to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// How to hook cap_capable when recording.
    #[arg(long, value_enum, default_value = "auto")]
    pub hook: HookChoice,
    /// `docker run [OPTIONS] IMAGE [COMMAND...]`, as you run the workload unrestricted.
    #[arg(required = true, trailing_var_arg = true, value_name = "DOCKER_RUN")]
    pub command: Vec<OsString>,
}

/// How long a stopped run's client gets to exit after its container was removed.
const GRACE: Duration = Duration::from_secs(10);
/// Bytes of each run's output kept for the result.
const TAIL_BYTES: usize = 4096;

/// Returns 0 if the profile works (and is minimal, with `--minimal`), 1 if not.
pub async fn verify(args: VerifyArgs) -> Result<i32> {
    let run = DockerRun::parse(&args.command)?;
    let mut runner = Runner::new(args.timeout, &run)?;

    let (profile, source) = if let Some(path) = &args.profile {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the profile {}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let p = ProfileUnderTest::from_report(&json).with_context(|| path.display().to_string())?;
        (p, format!("the report {}", path.display()))
    } else if args.no_caps || !args.cap_add.is_empty() {
        (
            ProfileUnderTest::given(args.cap_add.iter().copied()),
            "given on the command line".to_string(),
        )
    } else {
        let p = runner.record(&run, args.hook).await?;
        (p, "recorded just now".to_string())
    };

    let mut runs: Vec<RunResult> = Vec::new();
    let (expected, expected_from) = if let Some(n) = args.expect_exit {
        (n, "--expect-exit".to_string())
    } else if let Some(n) = profile.recorded_exit {
        (n, "the recorded run".to_string())
    } else {
        let baseline = runner.trial(&run, &profile, Trial::Baseline).await?;
        let code = baseline.exit.context("the command as written timed out")?;
        runs.push(baseline);
        (code, "the command as written".to_string())
    };

    let first = runner.trial(&run, &profile, Trial::Profile).await?;
    let works = first.exit == Some(expected);
    runs.push(first);
    for t in plan::follow_ups(&profile, works, args.minimal) {
        runs.push(runner.trial(&run, &profile, t).await?);
    }
    let outcomes: Vec<(Trial, Option<i32>)> = runs.iter().map(|r| (r.trial, r.exit)).collect();
    let verdict = plan::judge(expected, args.minimal, &outcomes);

    let result = VerifyResult::new(
        &args.command,
        &run,
        &profile,
        source,
        (expected, expected_from),
        runs,
        &verdict,
    );
    let text = match args.format {
        VerifyFormat::Text => result.text(&verdict),
        VerifyFormat::Json => {
            let mut s = serde_json::to_string_pretty(&result)?;
            s.push('\n');
            s
        }
    };
    match &args.output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("writing the result to {}", path.display()))?,
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(verdict.exit_code())
}

/// Runs containers one at a time, each with its own cidfile in a private folder, so a run that
/// times out or is interrupted is removed by its id.
struct Runner {
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
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One finished run.
struct RunResult {
    trial: Trial,
    caps: Option<Vec<Capability>>,
    argv: Vec<OsString>,
    /// `None`: timed out.
    exit: Option<i32>,
    stdout: String,
    stderr: String,
}

/// What a process did: exit status (`None` if stopped at the timeout) and its output's tails.
struct Finished {
    exit: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Runner {
    fn new(timeout: Duration, run: &DockerRun) -> Result<Self> {
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
    async fn record(&mut self, run: &DockerRun, hook: HookChoice) -> Result<ProfileUnderTest> {
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

    async fn trial(
        &mut self,
        run: &DockerRun,
        profile: &ProfileUnderTest,
        trial: Trial,
    ) -> Result<RunResult> {
        let cidfile = self.next_cidfile();
        let caps = trial.caps(profile);
        let argv = match &caps {
            None => run.unchanged(&cidfile),
            Some(c) => run.with_caps(c, &cidfile),
        };
        let done = self.spawn(&argv, &cidfile).await?;
        // docker run's own failures (bad option, no such image, daemon down) are 125.
        if done.exit == Some(125) {
            bail!(
                "docker could not start the container for the run {:?} (exit 125): {}",
                trial.label(),
                docker_error(&done.stderr)
            );
        }
        Ok(RunResult {
            trial,
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
async fn tail(stream: Option<impl AsyncRead + Unpin>) -> String {
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
fn docker_error(stderr: &str) -> &str {
    stderr
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("docker:") || l.contains("Error"))
        .or_else(|| last_line(stderr))
        .unwrap_or("no message")
}

/// The line that best says why a run failed: docker's own error if it printed one, else the
/// workload's last words.
fn why_not<'a>(stderr: &'a str, stdout: &'a str) -> Option<&'a str> {
    stderr
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("docker:"))
        .or_else(|| last_line(stderr))
        .or_else(|| last_line(stdout))
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|l| !l.is_empty())
}

fn names(caps: &[Capability]) -> Vec<String> {
    caps.iter().map(ToString::to_string).collect()
}

fn lossy(argv: &[OsString]) -> Vec<String> {
    argv.iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect()
}

#[derive(Serialize)]
struct ProfileJson {
    source: String,
    required: Vec<String>,
    refused: Vec<String>,
}

#[derive(Serialize)]
struct RunJson {
    run: &'static str,
    label: String,
    capability: Option<String>,
    /// `null` for the command as written.
    capabilities: Option<Vec<String>>,
    argv: Vec<String>,
    /// `null` when the run timed out.
    exit_code: Option<i32>,
    works: bool,
    stdout_tail: String,
    stderr_tail: String,
}

/// verify's result, as JSON or as text.
#[derive(Serialize)]
struct VerifyResult {
    command: Vec<String>,
    profile: ProfileJson,
    /// The command's own capability (and `--rm`/`--cidfile`) flags, replaced in restricted runs.
    replaced_flags: Vec<String>,
    expected_exit: i32,
    expected_from: String,
    runs: Vec<RunJson>,
    works: bool,
    minimal: Option<bool>,
    unneeded: Vec<String>,
    needed_refused: Vec<String>,
    /// The profile's flags, as verified.
    docker_flags: String,
    notes: Vec<String>,
}

impl VerifyResult {
    fn new(
        command: &[OsString],
        run: &DockerRun,
        profile: &ProfileUnderTest,
        source: String,
        (expected, expected_from): (i32, String),
        runs: Vec<RunResult>,
        verdict: &Verdict,
    ) -> Self {
        let required: Vec<Capability> = profile.required.iter().copied().collect();
        let mut notes = Vec::new();
        if profile.of_a_command {
            notes.push(
                "the report traced a command, not the containers it started: for `docker run` that is the docker client's profile (record with `capspy run --container`)".to_string(),
            );
        }
        if expected != 0 {
            notes.push(format!(
                "\"works\" means exiting with {expected}, as {expected_from} did, not with 0 (if that run failed, pass --expect-exit 0)"
            ));
        }
        let mut replaced_flags = run.capability_flags();
        replaced_flags.extend(run.housekeeping_flags());
        Self {
            command: lossy(command),
            profile: ProfileJson {
                source,
                required: names(&required),
                refused: profile.refused.iter().map(ToString::to_string).collect(),
            },
            replaced_flags,
            expected_exit: expected,
            expected_from,
            runs: runs
                .into_iter()
                .map(|r| RunJson {
                    run: r.trial.kind(),
                    label: r.trial.label(),
                    capability: r.trial.capability().map(|c| c.to_string()),
                    capabilities: r.caps.as_deref().map(names),
                    argv: lossy(&r.argv),
                    exit_code: r.exit,
                    works: r.exit == Some(expected),
                    stdout_tail: r.stdout,
                    stderr_tail: r.stderr,
                })
                .collect(),
            works: verdict.works,
            minimal: verdict.minimal,
            unneeded: names(&verdict.unneeded),
            needed_refused: names(&verdict.needed_refused),
            docker_flags: docker_cli::docker_flags(&required).join(" "),
            notes,
        }
    }

    fn text(&self, verdict: &Verdict) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "capspy verify: `{}`", self.command.join(" "));
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        let _ = writeln!(
            out,
            "Profile: {} ({}); only refused while recording: {}",
            list(&self.profile.required),
            self.profile.source,
            list(&self.profile.refused)
        );
        if !self.replaced_flags.is_empty() {
            let _ = writeln!(
                out,
                "Replaced in restricted runs: {}",
                self.replaced_flags.join(" ")
            );
        }
        let _ = writeln!(
            out,
            "Works = exit status {} (from {})",
            self.expected_exit, self.expected_from
        );
        let _ = writeln!(
            out,
            "\n{:<30} {:<34} {:>7}  RESULT",
            "RUN", "CAPABILITIES", "EXIT"
        );
        for r in &self.runs {
            let caps = r
                .capabilities
                .as_ref()
                .map_or_else(|| "(as written)".to_string(), |c| list(c));
            let exit = r
                .exit_code
                .map_or_else(|| "timeout".to_string(), |c| c.to_string());
            let result = match (r.run, r.works) {
                ("baseline", _) => "reference",
                ("without", true) => "still works: not needed",
                ("without", false) => "breaks: needed",
                (_, true) => "works",
                (_, false) => "fails",
            };
            let why = if r.works {
                String::new()
            } else if r.exit_code.is_none() {
                "  (timed out: its container was removed)".to_string()
            } else {
                why_not(&r.stderr_tail, &r.stdout_tail)
                    .map(|l| format!("  ({})", truncate(l, 100)))
                    .unwrap_or_default()
            };
            let _ = writeln!(out, "{:<30} {:<34} {exit:>7}  {result}{why}", r.label, caps);
        }
        out.push('\n');
        self.conclusion(&mut out, verdict);
        for note in &self.notes {
            let _ = writeln!(out, "Note: {note}");
        }
        out
    }

    fn conclusion(&self, out: &mut String, verdict: &Verdict) {
        let _ = match (verdict.works, verdict.minimal) {
            (true, Some(true)) => writeln!(
                out,
                "The profile works and is minimal: removing any of its capabilities breaks the workload."
            ),
            (true, Some(false)) => writeln!(
                out,
                "The profile works but is not minimal: without {} the workload still works (each removed alone; check the rest again with --minimal).",
                self.unneeded.join(", ")
            ),
            (true, None) => writeln!(
                out,
                "The profile works{}.",
                if self.profile.required.is_empty() {
                    ""
                } else {
                    " (add --minimal to check that each capability is needed)"
                }
            ),
            (false, _) => writeln!(
                out,
                "The profile does not work: the workload did not exit with {}.",
                self.expected_exit
            ),
        };
        if !verdict.needed_refused.is_empty() {
            let mut with: Vec<Capability> = verdict.needed_refused.clone();
            with.extend(
                self.profile
                    .required
                    .iter()
                    .filter_map(|c| c.parse::<Capability>().ok()),
            );
            with.sort();
            with.dedup();
            let _ = writeln!(
                out,
                "It works with {} added (refused while recording, so not in the profile): {}",
                self.needed_refused.join(", "),
                docker_cli::docker_flags(&with).join(" ")
            );
        }
        if verdict.exit_code() == 0 {
            let _ = writeln!(out, "Apply: {}", self.docker_flags);
        } else {
            let _ = writeln!(out, "Tested: {}", self.docker_flags);
        }
        if verdict.minimal == Some(false) {
            let rest: Vec<Capability> = self
                .profile
                .required
                .iter()
                .filter(|c| !self.unneeded.contains(c))
                .filter_map(|c| c.parse().ok())
                .collect();
            let _ = writeln!(
                out,
                "Next: verify {} (the removals above were tried one at a time)",
                docker_cli::docker_flags(&rest).join(" ")
            );
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}...")
    }
}
