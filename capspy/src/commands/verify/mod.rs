//! `capspy verify -- docker run ... IMAGE CMD`: runs a workload under its profile
//! (`--cap-drop ALL --cap-add ...`) and reports whether it still works, i.e. exits with the same
//! status as the unrestricted run; with `--minimal`, also whether each capability is needed.
//! Verification beats inference: a denied check may precede a fallback, and Docker's seccomp
//! profile ties some syscalls to capabilities, which no tracer of `cap_capable` sees.

mod plan;
mod runner;

pub use runner::{Checked, RunResult, Runner};
use runner::{lossy, names, why_not};

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::Serialize;

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

impl RunJson {
    /// One run, judged against the exit code that means "works".
    fn new(r: RunResult, expected: i32) -> Self {
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
                (false, None) => Some("timed out: its container was removed".to_string()),
                (false, Some(_)) => why_not(&r.stderr, &r.stdout),
            },
            stdout_tail: r.stdout,
            stderr_tail: r.stderr,
        }
    }
}

/// What the reader must know to read the verdict: a profile of the docker client rather than
/// its containers, and "works" meaning another exit code than 0.
fn notes(profile: &ProfileUnderTest, expected: i32, expected_from: &str) -> Vec<String> {
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
    notes
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
        let notes = notes(profile, expected, &expected_from);
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
                .map(|r| RunJson::new(r, expected))
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
