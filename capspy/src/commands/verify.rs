//! `capspy verify -- docker run ... IMAGE CMD`: runs a workload under its profile
//! (`--cap-drop ALL --cap-add ...`) and reports whether it still works, i.e. exits with the same
//! status as the unrestricted run; with `--minimal`, also whether each capability is needed.
//! Verification beats inference: a denied check may precede a fallback, and Docker's seccomp
//! profile ties some syscalls to capabilities, which no tracer of `cap_capable` sees.

mod plan;

use std::ffi::OsString;
use std::fmt::Write as _;
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

use crate::commands::record::parse_duration;
use crate::model::caps::Capability;
use crate::model::text::{self, printable};
use crate::report::{Report, Verification, Verified};
use crate::trace::hook::HookChoice;

use crate::commands::docker_cli;
pub use crate::commands::docker_cli::{DockerArgsError, DockerRun};
use crate::commands::{self, Stream};
pub use plan::{Conclusion, Planner, ProfileUnderTest, Trial, TrialKind};

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

    let checked = runner
        .check(&run, &profile, args.expect_exit, args.minimal)
        .await?;
    let result = VerifyResult::new(&args, &run, &profile, source, checked);
    let text = match args.format {
        VerifyFormat::Text => result.text(),
        VerifyFormat::Json => {
            let mut s = serde_json::to_string_pretty(&result)?;
            s.push('\n');
            s
        }
    };
    commands::emit(&text, args.output.as_deref(), Stream::Stdout)?;
    Ok(result.exit_code)
}

/// `--verify` of `run` and `profile`: re-runs `run` under the report's profile, removing each
/// capability in turn (and completing a profile that fails), and says what the runs proved.
/// `recorded_exit` means "works"; without it, the command as written is run once to find out.
pub async fn prove(
    run: &DockerRun,
    report: &Report,
    recorded_exit: Option<i32>,
    timeout: Duration,
) -> Result<Verification> {
    let mut profile = ProfileUnderTest::from_report(&serde_json::to_value(report)?)?;
    profile.recorded_exit = recorded_exit;
    let mut runner = Runner::new(timeout, run)?;
    let checked = runner.check(run, &profile, None, true).await?;
    Ok(verification(&profile, &checked))
}

fn verification(profile: &ProfileUnderTest, c: &Checked) -> Verification {
    let v = &c.verdict;
    let reasoned = |caps: &[Capability], reason: &str| -> Vec<Verified> {
        caps.iter()
            .map(|&capability| Verified {
                capability,
                reason: reason.to_string(),
            })
            .collect()
    };
    let dropped = reasoned(
        &v.unneeded,
        &format!(
            "the workload passed without it (exited with {}, as {} did)",
            c.expected, c.expected_from
        ),
    );
    let mut added = reasoned(
        &v.needed_refused,
        "refused while recording; the workload failed without it and passed with it",
    );
    added.extend(reasoned(
        &v.missing,
        &format!(
            "the workload failed without it and passed with it back (found by bisecting the other capabilities of the {} the container had)",
            profile.pool().len()
        ),
    ));
    let failure = v.working.is_none().then(|| {
        let why = c
            .runs
            .iter()
            .find(|r| r.trial.kind == TrialKind::Profile)
            .and_then(|r| why_not(&r.stderr, &r.stdout))
            .map(|w| format!(" (under the profile: {})", truncate(&printable(&w), 160)))
            .unwrap_or_default();
        format!(
            "the workload did not exit with {} under the profile, nor with every capability the container had{why}",
            c.expected
        )
    });
    Verification {
        runs: c.runs.len(),
        expected_exit: c.expected,
        working: v.working.clone(),
        dropped,
        added,
        failure,
    }
}

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
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One finished run.
pub struct RunResult {
    trial: Trial,
    label: String,
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

/// What says why a run failed: docker's own error if it printed one, else the workload's lines
/// that name a refusal (EPERM, EACCES, "Operation not permitted", "Permission denied", `cap_`),
/// else its last line.
fn why_not(stderr: &str, stdout: &str) -> Option<String> {
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

fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|l| !l.is_empty())
}

fn names<'a>(caps: impl IntoIterator<Item = &'a Capability>) -> Vec<String> {
    caps.into_iter().map(ToString::to_string).collect()
}

fn lossy(argv: &[OsString]) -> Vec<String> {
    argv.iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect()
}

/// The `capspy verify` command line that checks `caps` for `command`, as a shell reads it.
fn verify_line(
    caps: &[Capability],
    minimal: bool,
    expected: Option<i32>,
    command: &[String],
) -> String {
    let mut words: Vec<String> = vec!["capspy".into(), "verify".into()];
    if minimal {
        words.push("--minimal".into());
    }
    if caps.is_empty() {
        words.push("--no-caps".into());
    } else {
        words.push("--cap-add".into());
        words.push(names(caps).join(","));
    }
    if let Some(n) = expected {
        words.push(format!("--expect-exit={n}"));
    }
    words.push("--".into());
    words.extend(command.iter().cloned());
    text::shell_line(&words)
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
    /// What says why it failed (`null` when it worked).
    why: Option<String>,
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
    /// Removed for good: the workload still worked without them.
    unneeded: Vec<String>,
    needed_refused: Vec<String>,
    /// Found missing by bisecting the rest of what the command as written has.
    missing: Vec<String>,
    /// The profile failed even with everything the command as written has.
    beyond_pool: bool,
    /// The smallest set that was run and worked (`null`: none did).
    working: Option<Vec<String>>,
    /// The profile's flags, as verified.
    docker_flags: String,
    /// The flags of `working`.
    working_flags: Option<String>,
    /// The command to run next, if any: it runs as printed.
    next: Option<String>,
    notes: Vec<String>,
    #[serde(skip)]
    exit_code: i32,
}

impl VerifyResult {
    fn new(
        args: &VerifyArgs,
        run: &DockerRun,
        profile: &ProfileUnderTest,
        source: String,
        checked: Checked,
    ) -> Self {
        let Checked {
            expected,
            expected_from,
            runs,
            verdict,
        } = checked;
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
        let command = lossy(&args.command);
        let working: Option<Vec<Capability>> = verdict
            .working
            .as_ref()
            .map(|w| w.iter().copied().collect());
        // Without --minimal, a set that works may hold more than it needs: say how to check.
        let next = match &working {
            Some(w) if !args.minimal && !w.is_empty() => Some(verify_line(
                w,
                true,
                (expected != 0).then_some(expected),
                &command,
            )),
            _ => None,
        };
        Self {
            command,
            profile: ProfileJson {
                source,
                required: names(&required),
                refused: names(&profile.refused),
            },
            replaced_flags,
            expected_exit: expected,
            expected_from,
            runs: runs
                .into_iter()
                .map(|r| {
                    let works = r.exit == Some(expected);
                    RunJson {
                        run: r.trial.kind(),
                        label: r.label,
                        capability: r.trial.capability().map(|c| c.to_string()),
                        capabilities: r.caps.as_deref().map(names),
                        argv: lossy(&r.argv),
                        exit_code: r.exit,
                        works,
                        why: match (works, r.exit) {
                            (true, _) => None,
                            (false, None) => {
                                Some("timed out: its container was removed".to_string())
                            }
                            (false, Some(_)) => why_not(&r.stderr, &r.stdout),
                        },
                        stdout_tail: r.stdout,
                        stderr_tail: r.stderr,
                    }
                })
                .collect(),
            works: verdict.works,
            minimal: verdict.minimal,
            unneeded: names(&verdict.unneeded),
            needed_refused: names(&verdict.needed_refused),
            missing: names(&verdict.missing),
            beyond_pool: verdict.beyond_pool,
            working_flags: working
                .as_deref()
                .map(|w| docker_cli::docker_flags(w).join(" ")),
            working: working.as_deref().map(names),
            docker_flags: docker_cli::docker_flags(&required).join(" "),
            next,
            notes,
            exit_code: verdict.exit_code(),
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "capspy verify: `{}`", text::shell_line(&self.command));
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
            let why = r
                .why
                .as_deref()
                .map(|l| format!("  ({})", truncate(&printable(l), 160)))
                .unwrap_or_default();
            let _ = writeln!(out, "{:<30} {:<34} {exit:>7}  {result}{why}", r.label, caps);
        }
        out.push('\n');
        self.conclusion(&mut out);
        for note in &self.notes {
            let _ = writeln!(out, "Note: {note}");
        }
        out
    }

    fn conclusion(&self, out: &mut String) {
        let _ = match (self.works, self.minimal) {
            (true, Some(true)) => writeln!(
                out,
                "The profile works and is minimal: removing any of its capabilities breaks the workload."
            ),
            (true, Some(false)) => writeln!(
                out,
                "The profile works but is not minimal: the workload still worked without {} (each removal kept for the next run).",
                self.unneeded.join(", ")
            ),
            (true, None) => writeln!(out, "The profile works."),
            (false, _) => writeln!(
                out,
                "The profile does not work: the workload did not exit with {}.",
                self.expected_exit
            ),
        };
        if !self.needed_refused.is_empty() {
            let _ = writeln!(
                out,
                "It works with {} added (refused while recording, so not in the profile).",
                self.needed_refused.join(", ")
            );
        }
        if !self.missing.is_empty() {
            let _ = writeln!(
                out,
                "Missing: {}: without each, the workload failed; with them back, it worked (found by bisecting the rest of what the command as written has).",
                self.missing.join(", ")
            );
        }
        if self.beyond_pool {
            let _ = writeln!(
                out,
                "It fails even with every capability the command as written has: what it lacks is not one of them (compare the runs' output)."
            );
        }
        if !self.works && !self.unneeded.is_empty() {
            let _ = writeln!(
                out,
                "Not needed: {} (the workload still worked without it).",
                self.unneeded.join(", ")
            );
        }
        match &self.working_flags {
            Some(flags) => {
                let _ = writeln!(out, "Apply: {flags}");
            }
            None => {
                let _ = writeln!(out, "Tested: {}", self.docker_flags);
            }
        }
        if let Some(next) = &self.next {
            let _ = writeln!(out, "Next, to check that each is needed: {next}");
        }
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_excerpt_names_the_refusal_not_the_last_line() {
        let stderr = "starting\nbind: Permission denied\ncleanup done\nexiting\n";
        assert_eq!(
            why_not(stderr, "").as_deref(),
            Some("bind: Permission denied")
        );
        let stderr = "ping: socket: Operation not permitted\n";
        let stdout = "capset(cap_net_raw) failed: EPERM\nbye\n";
        assert_eq!(
            why_not(stderr, stdout).as_deref(),
            Some("ping: socket: Operation not permitted | capset(cap_net_raw) failed: EPERM")
        );
        // docker's own error first; else the last words.
        assert_eq!(
            why_not("docker: Error response from daemon: x\nbind: EACCES\n", "").as_deref(),
            Some("docker: Error response from daemon: x")
        );
        assert_eq!(why_not("a\nlast\n\n", "out").as_deref(), Some("last"));
        assert_eq!(why_not("", "out\n").as_deref(), Some("out"));
        assert_eq!(why_not("", ""), None);
    }

    #[test]
    fn suggested_verify_lines_are_shell_words() {
        let cmd: Vec<String> = ["docker", "run", "img", "sh", "-c", "ping -c1 x; exit 3"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            verify_line(
                &[Capability::NET_RAW, Capability::CHOWN],
                true,
                Some(3),
                &cmd
            ),
            "capspy verify --minimal --cap-add NET_RAW,CHOWN --expect-exit=3 -- docker run img sh -c 'ping -c1 x; exit 3'"
        );
        assert_eq!(
            verify_line(&[], false, None, &cmd[..3]),
            "capspy verify --no-caps -- docker run img"
        );
    }
}
