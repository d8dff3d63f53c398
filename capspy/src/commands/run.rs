//! `capspy run -- CMD ARGS...`: trace one command and everything it starts, as strace would, and
//! print the capabilities it needed.

use std::ffi::CString;
use std::os::fd::AsFd as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::attribute::container_watch::ContainerWatch;
use crate::attribute::owner::CgroupIndex;
use crate::commands::docker_cli;
use crate::commands::record::parse_duration;
use crate::commands::verify::{self, DockerRun};
use crate::commands::{self, Stream};
use crate::kernel::cgroup::{self, OwnedCgroup};
use crate::kernel::privilege;
use crate::model::check::{Bucket, CheckRow};
use crate::model::text;
use crate::model::time::BootClock;
use crate::profile::Profile;
use crate::report::{self, Format, Report, Subject};
use crate::trace::collector::Collector;
use crate::trace::hook::{HookChoice, KernelInfo, Tracer};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// How to hook cap_capable.
    #[arg(long, value_enum, default_value = "auto")]
    pub hook: HookChoice,
    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Profile the container(s) the command starts (e.g. `docker run --rm IMAGE CMD`) instead of
    /// the command itself; waits until they exit.
    #[arg(long)]
    pub container: bool,
    /// Write the report to FILE instead of standard error (`-`: standard output).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Then re-run the container (`docker run` only) under the profile, each capability removed
    /// in turn, and report only what removal proved needed (`capspy verify --minimal`).
    #[arg(long, requires = "container")]
    pub verify: bool,
    /// With --verify: stop a re-run that takes longer (it counts as not working).
    #[arg(long, value_parser = parse_duration, default_value = "2m", requires = "verify")]
    pub timeout: Duration,
    /// The command to trace, and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

/// `capspy run`'s cgroups are named this plus capspy's pid.
const CGROUP_PREFIX: &str = "capspy-run-";

/// How long the processes left in the cgroup get to exit after an interrupt before SIGKILL.
const GRACE: Duration = Duration::from_secs(3);

/// Returns the exit code for capspy: the command's, as a shell would report it.
pub async fn run(args: RunArgs) -> Result<i32> {
    let rerun = rerunnable(&args)?;
    privilege::require_tracing()?;
    let root = cgroup::v2_root()?;
    let kernel = KernelInfo::probe();
    let mut tracer = Tracer::attach(args.hook, &kernel)?;
    let mut collector = Collector::new(&mut tracer)?;
    let clock = BootClock::now();

    cgroup::remove_stale(&root, CGROUP_PREFIX);
    let group = OwnedCgroup::create(&root, &format!("{CGROUP_PREFIX}{}", std::process::id()))?;
    let argv: Vec<String> = args
        .command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let (command, mut watch, scratch) = if args.container {
        let (command, watch, scratch) = watch_containers(&root, &args.command).await?;
        (command, Some(watch), Some(scratch))
    } else {
        (args.command.clone(), None, None)
    };
    // With the report on standard output, the command's own output goes to standard error, so
    // `$(capspy run --output - --format docker ...)` captures the report alone.
    let report_on_stdout = args.output.as_deref() == Some(std::path::Path::new("-"));
    // Before the command starts: an interrupt at any moment after is forwarded and still
    // reported, and the command, exec'd after capspy handles these signals, gets their default
    // action back (an inherited "ignore", as under a script's `&`, would outlive exec).
    let interrupts = Interrupts::listen()?;
    let supervised = match spawn_in(&group, &command, report_on_stdout) {
        Ok(child) => supervise(child, &group, &mut collector, watch.as_mut(), interrupts).await,
        Err(e) => {
            let code = match e.kind() {
                std::io::ErrorKind::NotFound => 127,
                _ => 126,
            };
            eprintln!("capspy: {}: {}", argv[0], describe_spawn_error(&e));
            return Ok(code);
        }
    };
    if let Some(w) = &mut watch {
        w.settle();
    }
    drop(scratch);
    let (exit_code, interrupted) = supervised?;

    let command_subject = Subject::Command {
        argv: argv.clone(),
        exit_code,
        interrupted,
    };
    let Some((subject, cgroups)) = traced(command_subject, group.id(), watch.as_ref(), &argv)
    else {
        return Ok(nothing_ran(&argv, exit_code, "it started no container"));
    };
    let mut symbols = kernel.symbols();
    let mut index = CgroupIndex::new(root.clone());
    let rows: Vec<CheckRow> = collector
        .sweep(
            |id| cgroups.contains(&id),
            |id| {
                let path = index.resolve(id)?;
                Some(root.join(path.trim_start_matches('/')))
            },
        )
        .iter()
        .map(|o| CheckRow::from_observation(o, &clock, symbols.as_mut()))
        .collect();
    drop(group);
    let granted = watch.as_ref().and_then(ContainerWatch::granted);
    let profile = Profile::from_checks(rows).with_granted(granted);
    if watch.is_some() && docker_could_not_start(exit_code, &profile) {
        return Ok(nothing_ran(
            &argv,
            exit_code,
            "docker could not start the container (see its error above)",
        ));
    }
    let mut report = Report::new(subject, tracer.method.name(), profile, collector.losses());
    if rerun.is_none() && args.container && !report.profile.unproven.is_empty() {
        report.verify_command = verify_command(&args.command);
    }
    finish(report, rerun, exit_code, &args).await
}

/// The `docker run` that --verify will run again; a command it cannot re-run is refused
/// before anything runs.
fn rerunnable(args: &RunArgs) -> Result<Option<DockerRun>> {
    if !args.verify {
        return Ok(None);
    }
    let run = DockerRun::parse(&args.command)?;
    anyhow::ensure!(
        !run.leaves_a_named_container(),
        "--verify runs the container again, and the recorded one would still hold its --name: add --rm"
    );
    Ok(Some(run))
}

/// Starts watching for the containers `command` will start; returns the command to run (with
/// a `--cidfile` when it is a `docker run`, so that only its container is taken) and the
/// folder that holds the cidfile.
async fn watch_containers(
    root: &std::path::Path,
    command: &[std::ffi::OsString],
) -> Result<(Vec<std::ffi::OsString>, ContainerWatch, ScratchDir)> {
    let mut watch = ContainerWatch::begin(root.to_path_buf()).await?;
    let dir = ScratchDir::create(&format!("{CGROUP_PREFIX}{}", std::process::id()))?;
    let command = match docker_cli::with_cidfile(command, &dir.0.join("cid")) {
        Some((with, cidfile)) => {
            watch.only_from(cidfile);
            with
        }
        None => command.to_vec(),
    };
    Ok((command, watch, dir))
}

/// Whose checks the profile is of, and the cgroups that hold them: the command's own cgroup,
/// or the containers it started (None if it started none).
fn traced(
    command: Subject,
    cgroup_id: u64,
    watch: Option<&ContainerWatch>,
    argv: &[String],
) -> Option<(Subject, Vec<u64>)> {
    match watch {
        None => Some((command, vec![cgroup_id])),
        Some(watch) => containers_subject(watch, argv),
    }
}

/// docker run exits with 125 for its own errors (no such image, a bad option, a user the
/// image lacks): the container never ran its entrypoint, and made no check of its own.
fn docker_could_not_start(exit_code: i32, profile: &Profile) -> bool {
    exit_code == 125 && !profile.checks.iter().any(|c| c.bucket == Bucket::App)
}

/// `capspy run --container --verify -- COMMAND` for a `docker run` command it can re-run.
fn verify_command(command: &[std::ffi::OsString]) -> Option<String> {
    let words = DockerRun::parse(command).ok()?.rerunnable()?;
    let mut line: Vec<String> = ["capspy", "run", "--container", "--verify", "--"]
        .map(String::from)
        .to_vec();
    line.extend(
        words
            .iter()
            .map(|w| w.to_str().map(String::from))
            .collect::<Option<Vec<_>>>()?,
    );
    Some(text::shell_line(&line))
}

/// The subject for the containers the command started, and their cgroup ids; None if it
/// started none.
fn containers_subject(watch: &ContainerWatch, argv: &[String]) -> Option<(Subject, Vec<u64>)> {
    let first = watch.started.values().next()?;
    let subject = if watch.started.len() == 1 {
        Subject::Container {
            id: first.id.clone(),
            name: first.name.clone(),
            image: first.image.clone(),
            workload: first.workload.clone(),
        }
    } else {
        Subject::Workload {
            key: format!("started by `{}`", argv.join(" ")),
            containers: watch.started.values().map(|s| s.id.clone()).collect(),
            images: Vec::new(),
        }
    };
    Some((subject, watch.started.keys().copied().collect()))
}

/// With `--verify`, re-runs the container and keeps what removal proved; writes the report.
/// Returns capspy's status: the command's, or 1 when it exited with 0 but no set verified.
async fn finish(
    mut report: Report,
    rerun: Option<DockerRun>,
    exit_code: i32,
    args: &RunArgs,
) -> Result<i32> {
    let mut status = exit_code;
    if let Some(rerun) = rerun {
        let v = verify::prove(&rerun, &report, Some(exit_code), args.timeout).await?;
        if v.working.is_none() && status == 0 {
            status = 1;
        }
        report = report.with_verification(v);
    }
    commands::emit(
        &report.render(args.format),
        args.output.as_deref(),
        Stream::Stderr,
    )?;
    // The flags alone must stay usable as `$(capspy run --format docker ...)`.
    if args.format == Format::Docker {
        for line in report::non_root_lines(&report) {
            eprintln!("capspy: {}", line.trim_start());
        }
    }
    Ok(status)
}

/// Says that the workload never ran, so there is no profile to print; returns the command's
/// status, or 2 when it exited with 0.
fn nothing_ran(argv: &[String], exit_code: i32, why: &str) -> i32 {
    eprintln!(
        "capspy: `{}` exited with {exit_code}, and no container ran its command: {why}. Nothing ran, so there is no profile.",
        text::shell_line(argv)
    );
    if exit_code == 0 { 2 } else { exit_code }
}

fn describe_spawn_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "command not found".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Starts the command inside `group`, so that its first instruction already runs there.
fn spawn_in(
    group: &OwnedCgroup,
    command: &[std::ffi::OsString],
    stdout_to_stderr: bool,
) -> std::io::Result<tokio::process::Child> {
    let procs = CString::new(group.procs_path().as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("cgroup path contains a NUL byte"))?;
    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    if stdout_to_stderr {
        cmd.stdout(std::io::stderr().as_fd().try_clone_to_owned()?);
    }
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe syscalls
    // (open, write, close) on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // "0" moves the writing process: the child itself.
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if written != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// SIGINT and SIGTERM, handled by capspy from its creation on.
struct Interrupts {
    int: Signal,
    term: Signal,
}

impl Interrupts {
    fn listen() -> std::io::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }
}

/// Waits for the command and all its descendants; forwards SIGINT/SIGTERM to them.
/// Returns the command's exit code and whether tracing was interrupted.
async fn supervise(
    mut child: tokio::process::Child,
    group: &OwnedCgroup,
    collector: &mut Collector,
    mut watch: Option<&mut ContainerWatch>,
    Interrupts {
        int: mut sigint,
        term: mut sigterm,
    }: Interrupts,
) -> Result<(i32, bool)> {
    let mut interrupted = false;
    // A container's sets are readable only while its processes live: look often.
    let mut look = tokio::time::interval(Duration::from_millis(50));
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.context("waiting for the command")?,
            _ = look.tick(), if watch.is_some() => {
                if let Some(w) = watch.as_deref_mut() {
                    w.read_granted();
                }
            }
            _ = sigint.recv() => { interrupted = true; group.signal_all(libc::SIGINT)?; }
            _ = sigterm.recv() => { interrupted = true; group.signal_all(libc::SIGTERM)?; }
            // Draining as records arrive keeps the ring buffer from filling up.
            r = collector.next_sightings() => {
                r.context("reading the ring buffer")?;
                if let Some(w) = watch.as_deref_mut() {
                    w.observe(collector.take_made_cgroups(), collector.take_new_cgroups())
                        .await;
                }
            }
        }
    };
    let exit_code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);

    // Descendants that outlive the command are part of it: wait for the cgroup to empty (and
    // for the containers it started, e.g. with `docker run -d`).
    let mut deadline = None;
    // After an interrupt, containers are left to their engine: only the command is stopped.
    while group.populated()?
        || (!interrupted && watch.as_deref().is_some_and(ContainerWatch::any_running))
    {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = sigint.recv() => { interrupted = true; group.signal_all(libc::SIGINT)?; }
            _ = sigterm.recv() => { interrupted = true; group.signal_all(libc::SIGTERM)?; }
        }
        if interrupted {
            let at = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + GRACE);
            if tokio::time::Instant::now() >= at {
                group.kill_all()?;
            }
        }
        collector.drain_sightings();
        if let Some(w) = watch.as_deref_mut() {
            w.observe(collector.take_made_cgroups(), collector.take_new_cgroups())
                .await;
        }
    }
    Ok((exit_code, interrupted))
}

/// A private folder under the temp dir (for the client's cidfile), removed on drop.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn create(name: &str) -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        let path = std::env::temp_dir().join(name);
        // A leftover from a killed run of the same pid.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
