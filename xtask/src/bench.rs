//! `cargo xtask bench`: what capspy costs, measured side by side with the floor and its peers, all
//! figures from one run, printed as a table and written to `BENCHMARKS.md`.
//!
//! 1. Per-check cost: a `setuid(0)` loop (one CAP_SETUID check per call) under each variant
//!    (nothing, the floor, capspy's daemon, bpftrace, a streaming tracer), rounds rotated so
//!    drift hits every variant alike; an mmap loop (one advisory SYS_ADMIN check per call) as the
//!    common real-world check. Then the programs' own time per run from the kernel's BPF stats,
//!    and what each helper of the hot path costs here (bpftrace programs under the same stats).
//! 2. Daemon cost: its CPU and memory while the host makes ~100,000 checks per second.
//! 3. Scale: 1,000 concurrent fake containers (cgroups `/docker/<id>`), each with its own known
//!    checks, attributed exactly; the kernel maps' memory at that size.
//! 4. Reading: `capspy ls` and `capspy profile` over a store of 10,000 workloads.
//!
//! Everything the bench starts (processes, cgroups, files, the BPF stats switch) is undone by the
//! bench itself, by pid, on errors and Ctrl-C too.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead as _, BufReader, Read};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::cmd::{self, cargo};

/// The peer, exactly as the issue states it.
const BPFTRACE_ONE_LINER: &str =
    "tracepoint:capability:cap_capable { @[cgroup, args->cap, args->ret] = count(); }";
const CAP_SETUID: u32 = 7;

#[derive(clap::Args)]
pub struct Options {
    /// Few rounds and small counts: proves the bench runs, measures nothing worth keeping.
    /// Writes no report unless --output is given.
    #[arg(long)]
    quick: bool,
    /// Where to write the report [default: BENCHMARKS.md at the repository root].
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Measure this capspy binary instead of building target/release/capspy.
    #[arg(long, value_name = "PATH")]
    capspy: Option<PathBuf>,
}

/// Sizes of one run.
#[derive(Clone, Copy)]
struct Plan {
    rounds: usize,
    setuid_calls: u64,
    mmap_calls: u64,
    warmup_calls: u64,
    /// setuid calls per bpf_stats measurement.
    stats_calls: u64,
    load_per_sec: u64,
    load_secs: u64,
    cgroups: usize,
    scale_idle_secs: u64,
    workloads: usize,
    read_runs: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan {
                rounds: 2,
                setuid_calls: 200_000,
                mmap_calls: 50_000,
                warmup_calls: 10_000,
                stats_calls: 100_000,
                load_per_sec: 100_000,
                load_secs: 2,
                cgroups: 20,
                scale_idle_secs: 2,
                workloads: 500,
                read_runs: 3,
            }
        } else {
            Plan {
                rounds: 7,
                setuid_calls: 3_000_000,
                mmap_calls: 1_000_000,
                warmup_calls: 100_000,
                stats_calls: 1_000_000,
                load_per_sec: 100_000,
                load_secs: 10,
                cgroups: 1_000,
                scale_idle_secs: 5,
                workloads: 10_000,
                read_runs: 10,
            }
        }
    }
}

pub fn bench(opts: &Options) -> Result<()> {
    ensure!(
        cmd::is_root(),
        "the benchmark loads BPF programs and makes cgroups: run it as root"
    );
    install_interrupt_handler();
    let capspy = if let Some(path) = &opts.capspy {
        path.clone()
    } else {
        crate::build::build()?;
        cmd::target_dir()?.join("release").join("capspy")
    };
    // Built now rather than in phase 4: a build waiting for cargo's lock or compiling must not
    // overlap a measurement.
    cmd::run(cargo().args([
        "build",
        "--release",
        "--package",
        "capspy",
        "--example",
        "bench_store",
    ]))?;
    let plan = Plan::new(opts.quick);
    let scratch = Scratch::new()?;
    let ctx = Ctx {
        workload: compile_workload(&scratch.0)?,
        capspy: capspy.canonicalize().context("capspy binary")?,
        scratch: scratch.0.clone(),
        plan,
    };
    let started = Instant::now();

    step("checks per call, counted by `capspy run`");
    let counts = check_counts(&ctx)?;
    step("per-check cost, rounds of every variant");
    let cost = per_check(&ctx)?;
    step("time inside the BPF programs (kernel BPF stats)");
    let inside = hot_path(&ctx)?;
    step("daemon CPU and memory under a steady load");
    let daemon = daemon_cost(&ctx)?;
    step(&format!("{} concurrent cgroups", plan.cgroups));
    let scale = scale(&ctx)?;
    step(&format!("reading a store of {} workloads", plan.workloads));
    let reading = reading(&ctx)?;

    let report = Report {
        plan,
        machine: Machine::probe(),
        counts,
        cost,
        inside,
        daemon,
        scale,
        reading,
        elapsed: started.elapsed(),
        quick: opts.quick,
    };
    let tables = report.tables();
    println!("{tables}");
    let output = match (&opts.output, opts.quick) {
        (Some(path), _) => Some(path.clone()),
        (None, false) => Some(cmd::workspace_root().join("BENCHMARKS.md")),
        (None, true) => None,
    };
    if let Some(path) = output {
        fs::write(&path, report.markdown(&tables))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

fn step(what: &str) {
    eprintln!("bench: == {what}");
}

// ---------------------------------------------------------------------------------------------
// Plumbing: interruption, scratch space, the workload, processes.

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Ctrl-C sets a flag instead of killing xtask, so the guards below still stop what the bench
/// started and remove its cgroups.
fn install_interrupt_handler() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// A private folder for the workload binary and the stores; removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("capspy-bench-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn compile_workload(dir: &Path) -> Result<PathBuf> {
    let source = cmd::workspace_root().join("xtask/bench/workload.c");
    let bin = dir.join("workload");
    cmd::output(
        Command::new("gcc")
            .args(["-O2", "-static", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&bin)
            .arg(&source),
    )
    .context("compiling the workload (needs gcc and static libc: build-essential)")?;
    Ok(bin)
}

struct Ctx {
    capspy: PathBuf,
    workload: PathBuf,
    scratch: PathBuf,
    plan: Plan,
}

impl Ctx {
    /// Runs a timed workload mode; returns CPU nanoseconds per call in the fastest tenth of the
    /// loop. CPU time rather than wall time: the BPF programs run in the calling task, so their
    /// cost is in it, while time other processes take on a shared machine is not; the fastest
    /// tenth because what such work still does to this task (caches, a busy sibling thread)
    /// only ever adds time.
    fn timed(&self, mode: &str, calls: u64) -> Result<f64> {
        check_interrupted()?;
        let out = cmd::output(
            Command::new(&self.workload)
                .arg(mode)
                .arg(calls.to_string()),
        )?;
        let t = parse_calls(&out)?;
        ensure!(
            t.calls == calls,
            "workload made {} calls, not {calls}",
            t.calls
        );
        let (ns, n) = t.best.filter(|b| b.1 > 0).unwrap_or((t.cpu_ns, t.calls));
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        Ok(ns as f64 / n.max(1) as f64)
    }

    fn capspy(&self) -> Command {
        let mut cmd = Command::new(&self.capspy);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Starts `capspy record` with a fresh store and waits until it has attached.
    fn start_daemon(&self, store: &Path) -> Result<Proc> {
        let mut daemon = Proc::spawn(
            "capspy record",
            self.capspy()
                .args(["record", "--interval", "1s", "--store"])
                .arg(store),
        )?;
        daemon.wait_for(
            |l| l.starts_with("capspy: recording with hook"),
            Duration::from_secs(30),
        )?;
        Ok(daemon)
    }
}

/// What a timed workload run reports.
#[derive(Debug, PartialEq, Eq)]
struct Timing {
    calls: u64,
    wall_ns: u64,
    cpu_ns: u64,
    /// CPU time of the fastest of the loop's equal chunks, and the chunk's calls (timed loops).
    best: Option<(u64, u64)>,
}

/// "calls C ns T cpu_ns U [best_cpu_ns B chunk_calls M]" from the workload.
fn parse_calls(out: &str) -> Result<Timing> {
    let fields: Vec<&str> = out.split_whitespace().collect();
    let (head, best) = match fields.as_slice() {
        [head @ .., "best_cpu_ns", b, "chunk_calls", m] => (head, Some((b.parse()?, m.parse()?))),
        all => (all, None),
    };
    match head {
        ["calls", c, "ns", t, "cpu_ns", u] => Ok(Timing {
            calls: c.parse()?,
            wall_ns: t.parse()?,
            cpu_ns: u.parse()?,
            best,
        }),
        _ => bail!("unexpected workload output {out:?}"),
    }
}

/// A child process whose stdout and stderr lines are collected, stopped by pid.
struct Proc {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    reaped: bool,
}

impl Proc {
    fn spawn(name: &'static str, command: &mut Command) -> Result<Self> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let (tx, lines) = mpsc::channel();
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child.stdout.take().map(|s| Box::new(s) as _),
            child.stderr.take().map(|s| Box::new(s) as _),
        ];
        for stream in streams.into_iter().flatten() {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Self {
            name,
            child,
            lines,
            seen: Vec::new(),
            reaped: false,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a line of output that satisfies `ready`.
    fn wait_for(&mut self, ready: impl Fn(&str) -> bool, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            check_interrupted()?;
            match self.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    let hit = ready(&line);
                    self.seen.push(line);
                    if hit {
                        return Ok(());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = self.child.try_wait()? {
                        self.reaped = true;
                        self.drain();
                        bail!(
                            "{} exited ({status}) before it was ready:\n{}",
                            self.name,
                            self.seen.join("\n")
                        );
                    }
                    ensure!(
                        Instant::now() < deadline,
                        "{} not ready after {timeout:?}:\n{}",
                        self.name,
                        self.seen.join("\n")
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    thread::sleep(Duration::from_millis(50));
                    if self.child.try_wait()?.is_some() {
                        self.reaped = true;
                        bail!("{} closed its output:\n{}", self.name, self.seen.join("\n"));
                    }
                }
            }
        }
    }

    fn drain(&mut self) {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(line);
        }
    }

    /// SIGINT (every program here stops cleanly on it), SIGKILL if it is still there after a
    /// minute (bpftrace takes about 2 s to detach here, more on a busy machine). Returns all its
    /// output.
    fn stop(&mut self) -> Result<Vec<String>> {
        if !self.reaped {
            signal(self.pid(), libc::SIGINT);
            let deadline = Instant::now() + Duration::from_mins(1);
            let status = loop {
                if let Some(status) = self.child.try_wait()? {
                    break status;
                }
                if Instant::now() > deadline {
                    // Where it hangs, for whoever reads the error.
                    let pid = self.pid();
                    let wchan =
                        fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
                    let stack =
                        fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
                    let _ = self.child.kill();
                    self.child.wait()?;
                    self.reaped = true;
                    bail!(
                        "{} did not stop on SIGINT in a minute (waiting in {wchan:?}); killed\n{}",
                        self.name,
                        stack.trim_end()
                    );
                }
                thread::sleep(Duration::from_millis(20));
            };
            self.reaped = true;
            self.drain();
            ensure!(
                status.success(),
                "{} failed ({status}):\n{}",
                self.name,
                self.seen.join("\n")
            );
        }
        Ok(std::mem::take(&mut self.seen))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: plain syscall on a child we spawned and have not reaped.
        unsafe { libc::kill(pid, sig) };
    }
}

// ---------------------------------------------------------------------------------------------
// 0. Checks per call, counted by capspy itself.

struct Counts {
    setuid_calls: u64,
    setuid_checks: u64,
    mmap_calls: u64,
    /// SYS_ADMIN checks of the mmap loop minus those of an empty run (exec's own).
    mmap_checks: u64,
}

fn check_counts(ctx: &Ctx) -> Result<Counts> {
    let report = ctx.scratch.join("run.json");
    let count = |mode: &str, calls: u64, cap: &str| -> Result<u64> {
        cmd::output(
            ctx.capspy()
                .args(["run", "--format", "json", "--output"])
                .arg(&report)
                .arg("--")
                .arg(&ctx.workload)
                .args([mode, &calls.to_string()]),
        )?;
        let report: Value = serde_json::from_str(&fs::read_to_string(&report)?)
            .context("capspy run --format json")?;
        Ok(report["checks"]
            .as_array()
            .context("no checks in capspy's report")?
            .iter()
            .filter(|c| c["capability"] == cap && c["verdict"] == "granted")
            .filter_map(|c| c["count"].as_u64())
            .sum())
    };
    let setuid_calls = 100_000;
    let mmap_calls = 100_000;
    let counts = Counts {
        setuid_calls,
        setuid_checks: count("setuid", setuid_calls, "SETUID")?,
        mmap_calls,
        mmap_checks: count("mmap", mmap_calls, "SYS_ADMIN")?.saturating_sub(count(
            "mmap",
            0,
            "SYS_ADMIN",
        )?),
    };
    eprintln!(
        "bench: {} calls of setuid(0) made {} CAP_SETUID checks; {} mmap calls made {} \
         CAP_SYS_ADMIN checks",
        counts.setuid_calls, counts.setuid_checks, counts.mmap_calls, counts.mmap_checks
    );
    ensure!(
        counts.setuid_checks == counts.setuid_calls,
        "the setuid loop must make exactly one CAP_SETUID check per call"
    );
    Ok(counts)
}

// ---------------------------------------------------------------------------------------------
// 1. Per-check cost.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Variant {
    Baseline,
    Floor,
    Capspy,
    Bpftrace,
    Stream,
}

const VARIANTS: [Variant; 5] = [
    Variant::Baseline,
    Variant::Floor,
    Variant::Capspy,
    Variant::Bpftrace,
    Variant::Stream,
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Floor => "floor",
            Self::Capspy => "capspy",
            Self::Bpftrace => "bpftrace",
            Self::Stream => "stream",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Baseline => "nothing attached",
            Self::Floor => "per-CPU array increment on tp_btf `cap_capable`",
            Self::Capspy => "`capspy record` daemon, in-kernel aggregation (tp_btf)",
            Self::Bpftrace => "bpftrace one-liner, classic tracepoint",
            Self::Stream => "ring buffer record per check, read by userspace (tp_btf)",
        }
    }

    /// The mmap loop runs under these only: the row shows what capspy's call-site cache does
    /// with the most common check, next to the floor.
    fn runs_mmap(self) -> bool {
        matches!(self, Self::Baseline | Self::Floor | Self::Capspy)
    }
}

/// A variant attached and ready to measure.
struct Attached {
    proc: Option<Proc>,
}

fn attach(ctx: &Ctx, variant: Variant, tag: &str) -> Result<Attached> {
    let proc = match variant {
        Variant::Baseline => None,
        Variant::Floor | Variant::Stream => {
            let name = variant.name();
            let mut probe = Proc::spawn(
                "capspy bench-probe",
                ctx.capspy().args(["bench-probe", "--variant", name]),
            )?;
            let line = format!("attached bench_{name}");
            probe.wait_for(|l| l == line, Duration::from_secs(30))?;
            Some(probe)
        }
        Variant::Capspy => Some(ctx.start_daemon(&ctx.scratch.join(format!("{tag}.db")))?),
        Variant::Bpftrace => Some(start_bpftrace(BPFTRACE_ONE_LINER)?),
    };
    // The same settling time for every variant, the baseline included.
    thread::sleep(Duration::from_millis(300));
    Ok(Attached { proc })
}

/// bpftrace prints "Attaching N probes..." just before it attaches and nothing after, so wait
/// for that line, then for its program fd, then a little; the map it prints at the end proves
/// it counted the whole measurement.
fn start_bpftrace(program: &str) -> Result<Proc> {
    let mut proc = Proc::spawn("bpftrace", Command::new("bpftrace").args(["-e", program]))
        .context("bpftrace (Debian package bpftrace)")?;
    proc.wait_for(|l| l.starts_with("Attaching"), Duration::from_mins(1))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while bpf_prog_fds(proc.pid()).is_empty() {
        ensure!(Instant::now() < deadline, "bpftrace loaded no program");
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(500));
    Ok(proc)
}

/// Checks of CAP_SETUID granted that bpftrace's map counted, from its exit output
/// (`@[cgroup, cap, ret]: count`).
fn bpftrace_setuid_count(lines: &[String]) -> u64 {
    lines
        .iter()
        .filter_map(|l| {
            let (key, count) = l.strip_prefix("@[")?.split_once("]: ")?;
            let key: Vec<&str> = key.split(", ").collect();
            (key.len() == 3 && key[1] == CAP_SETUID.to_string() && key[2] == "0")
                .then(|| count.trim().parse::<u64>().ok())?
        })
        .sum()
}

#[derive(Default)]
struct Cost {
    /// ns per setuid call, by variant, one per round.
    setuid: BTreeMap<Variant, Vec<f64>>,
    mmap: BTreeMap<Variant, Vec<f64>>,
    /// The stream variant's (events read, events lost) over all rounds.
    stream_events: (u64, u64),
    /// Rounds whose bpftrace had to be killed, so its count could not prove it was attached.
    bpftrace_unverified: usize,
}

fn per_check(ctx: &Ctx) -> Result<Cost> {
    let plan = ctx.plan;
    let mut cost = Cost::default();
    for round in 0..plan.rounds {
        // Rotate the order each round: every variant runs early and late, after each other one.
        let order: Vec<Variant> = (0..VARIANTS.len())
            .map(|i| VARIANTS[(i + round) % VARIANTS.len()])
            .collect();
        for variant in order {
            let mut attached = attach(ctx, variant, &format!("cost-{round}"))?;
            ctx.timed("setuid", plan.warmup_calls)?;
            let setuid = ctx.timed("setuid", plan.setuid_calls)?;
            let mmap = if variant.runs_mmap() {
                ctx.timed("mmap", plan.warmup_calls)?;
                Some(ctx.timed("mmap", plan.mmap_calls)?)
            } else {
                None
            };
            let output = match (&mut attached.proc, variant) {
                // The measurement stands without bpftrace's exit output, only its proof of
                // attachment is lost (bpftrace hung on SIGINT once here, on a very busy machine).
                (Some(proc), Variant::Bpftrace) => proc.stop().unwrap_or_else(|e| {
                    eprintln!("bench: warning: {e:#}");
                    cost.bpftrace_unverified += 1;
                    Vec::new()
                }),
                (Some(proc), _) => proc.stop()?,
                (None, _) => Vec::new(),
            };
            match variant {
                Variant::Bpftrace if output.is_empty() => {}
                Variant::Bpftrace => {
                    let counted = bpftrace_setuid_count(&output);
                    ensure!(
                        counted >= plan.setuid_calls + plan.warmup_calls,
                        "bpftrace counted {counted} CAP_SETUID checks, fewer than the \
                         workload made: it was not attached throughout"
                    );
                }
                Variant::Stream => {
                    let (events, lost) = output
                        .iter()
                        .find_map(|l| parse_events(l))
                        .context("bench-probe printed no event count")?;
                    cost.stream_events.0 += events;
                    cost.stream_events.1 += lost;
                }
                _ => {}
            }
            eprintln!(
                "bench: round {}/{} {:<8} setuid {setuid:7.1} ns/call{}",
                round + 1,
                plan.rounds,
                variant.name(),
                mmap.map(|m| format!(", mmap {m:7.1} ns/call"))
                    .unwrap_or_default()
            );
            cost.setuid.entry(variant).or_default().push(setuid);
            if let Some(m) = mmap {
                cost.mmap.entry(variant).or_default().push(m);
            }
        }
        let _ = fs::remove_file(ctx.scratch.join(format!("cost-{round}.db")));
    }
    Ok(cost)
}

/// "events N lost M" from bench-probe.
fn parse_events(line: &str) -> Option<(u64, u64)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    match fields.as_slice() {
        ["events", n, "lost", m] => Some((n.parse().ok()?, m.parse().ok()?)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// 1b. Time inside the programs, from the kernel's BPF stats (kernel.bpf_stats_enabled).

/// Turns the kernel's BPF run-time accounting on for the guard's lifetime. Off during the timed
/// rounds: the accounting reads the clock twice per run.
struct BpfStats {
    previous: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Result<Self> {
        let previous = fs::read_to_string(BPF_STATS).context(BPF_STATS)?;
        fs::write(BPF_STATS, "1").context("enabling BPF stats")?;
        Ok(Self { previous })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, self.previous.trim());
    }
}

/// (run_time_ns, run_cnt) of every BPF program a process holds, by fd.
fn bpf_prog_stats(pid: u32) -> BTreeMap<String, (u64, u64)> {
    bpf_prog_fds(pid)
        .into_iter()
        .filter_map(|fd| {
            let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
            let field = |name: &str| -> Option<u64> {
                info.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse().ok())
            };
            Some((fd, (field("run_time_ns:")?, field("run_cnt:")?)))
        })
        .collect()
}

fn bpf_fds(pid: u32, kind: &str) -> Vec<String> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            fs::read_link(e.path())
                .is_ok_and(|target| target.to_string_lossy() == format!("anon_inode:{kind}"))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn bpf_prog_fds(pid: u32) -> Vec<String> {
    bpf_fds(pid, "bpf-prog")
}

/// Average ns per run of the busiest program of `pid` while `work` runs, and how many runs.
fn time_inside(pid: u32, work: impl FnOnce() -> Result<()>) -> Result<(f64, u64)> {
    let before = bpf_prog_stats(pid);
    work()?;
    let after = bpf_prog_stats(pid);
    let (ns, runs) = after
        .iter()
        .map(|(fd, (ns, runs))| {
            let (ns0, runs0) = before.get(fd).copied().unwrap_or_default();
            (ns - ns0, runs - runs0)
        })
        .max_by_key(|(_, runs)| *runs)
        .context("no BPF program with stats")?;
    ensure!(runs > 0, "the program did not run");
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    Ok((ns as f64 / runs as f64, runs))
}

struct Inside {
    /// ns per run inside each variant's program, for the setuid loop.
    programs: Vec<(Variant, f64)>,
    capspy_mmap: f64,
    /// Single helpers measured as bpftrace programs: (what, ns per run).
    helpers: Vec<(&'static str, f64)>,
}

/// bpftrace programs that each add one piece of the hot path to an empty program, so that their
/// differences price the helpers capspy calls (bpftrace 0.17 has no tp_btf, hence the classic
/// tracepoint; the body time does not include the hook's own overhead).
const HELPER_PROGRAMS: &[(&str, &str)] = &[
    ("empty program", ""),
    ("pid/tgid", "$x = pid;"),
    ("cgroup id", "$x = cgroup;"),
    ("comm", "$x = comm;"),
    ("ktime", "$x = nsecs;"),
    ("probe_read (task->real_cred)", "$x = curtask->real_cred;"),
    ("hash map add, one global key", "@x = count();"),
    (
        "the one-liner: key (cgroup, cap, ret), hash map add",
        "@[cgroup, args->cap, args->ret] = count();",
    ),
];

/// The stats were read before the stop and the output is not needed: a program that does not
/// stop cleanly (bpftrace has hung on SIGINT once here, on a very busy machine) is killed and the
/// run goes on.
fn stop_for_stats(proc: &mut Proc) {
    if let Err(e) = proc.stop() {
        eprintln!("bench: warning: {e:#}");
    }
}

fn hot_path(ctx: &Ctx) -> Result<Inside> {
    let calls = ctx.plan.stats_calls;
    let _stats = BpfStats::enable()?;
    let run = || ctx.timed("setuid", calls).map(drop);
    let mut programs = Vec::new();
    let mut capspy_mmap = f64::NAN;
    for variant in [
        Variant::Floor,
        Variant::Capspy,
        Variant::Stream,
        Variant::Bpftrace,
    ] {
        let mut attached = attach(ctx, variant, "stats")?;
        let proc = attached
            .proc
            .as_mut()
            .context("variant without a process")?;
        ctx.timed("setuid", ctx.plan.warmup_calls)?;
        let (ns, runs) = time_inside(proc.pid(), run)?;
        ensure!(
            runs >= calls,
            "{} ran {runs} times for {calls} checks",
            variant.name()
        );
        if variant == Variant::Capspy {
            ctx.timed("mmap", ctx.plan.warmup_calls)?;
            capspy_mmap = time_inside(proc.pid(), || ctx.timed("mmap", calls / 2).map(drop))?.0;
        }
        stop_for_stats(proc);
        eprintln!("bench: inside {:<8} {ns:6.1} ns/run", variant.name());
        programs.push((variant, ns));
    }
    let _ = fs::remove_file(ctx.scratch.join("stats.db"));
    let mut helpers = Vec::new();
    for (what, body) in HELPER_PROGRAMS {
        let mut proc = start_bpftrace(&format!("tracepoint:capability:cap_capable {{ {body} }}"))?;
        let (ns, runs) = time_inside(proc.pid(), run)?;
        ensure!(
            runs >= calls,
            "bpftrace `{body}` ran {runs} times for {calls} checks"
        );
        stop_for_stats(&mut proc);
        eprintln!("bench: helper {what:<52} {ns:6.1} ns/run");
        helpers.push((*what, ns));
    }
    Ok(Inside {
        programs,
        capspy_mmap,
        helpers,
    })
}

// ---------------------------------------------------------------------------------------------
// 2. The daemon's own cost.

struct DaemonCost {
    checks_per_sec: u64,
    /// Share of one core from utime+stime, and from the threads' schedstat (ns resolution).
    cpu_ticks: f64,
    cpu_sched: f64,
    window_secs: f64,
    rss_kib: u64,
    hwm_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    /// Keys in the CHECKS map at the end (the sweep's work grows with them); None without bpftool.
    keys: Option<u64>,
    /// VmHWM right after attaching: tells a loading peak from one under the load.
    attach_hwm_kib: u64,
    /// The daemon's hottest functions under the load.
    profile: Profile,
}

/// utime+stime of a process in seconds, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may contain spaces: state is field 3, utime 14.
    let rest = &stat[stat.rfind(')').context("malformed stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    #[expect(clippy::cast_precision_loss, reason = "small numbers")]
    Ok(ticks as f64 / hz as f64)
}

/// CPU time of all threads in seconds, from their schedstat (nanoseconds).
fn sched_seconds(pid: u32) -> Result<f64> {
    let mut ns = 0u64;
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let text = fs::read_to_string(task?.path().join("schedstat")).unwrap_or_default();
        ns += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    #[expect(clippy::cast_precision_loss, reason = "small numbers")]
    Ok(ns as f64 / 1e9)
}

/// A `kB` field of /proc/PID/status.
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

struct CpuWindow {
    pid: u32,
    ticks: f64,
    sched: f64,
    at: Instant,
}

impl CpuWindow {
    fn start(pid: u32) -> Result<Self> {
        Ok(Self {
            pid,
            ticks: cpu_seconds(pid)?,
            sched: sched_seconds(pid)?,
            at: Instant::now(),
        })
    }

    /// (share of a core from utime+stime, from schedstat, window length in s).
    fn end(&self) -> Result<(f64, f64, f64)> {
        let wall = self.at.elapsed().as_secs_f64();
        Ok((
            (cpu_seconds(self.pid)? - self.ticks) / wall,
            (sched_seconds(self.pid)? - self.sched) / wall,
            wall,
        ))
    }
}

fn daemon_cost(ctx: &Ctx) -> Result<DaemonCost> {
    let plan = ctx.plan;
    let mut daemon = ctx.start_daemon(&ctx.scratch.join("daemon.db"))?;
    let attach_hwm_kib = status_kib(daemon.pid(), "VmHWM:")?;
    // Let the first sweeps (every key the host made so far) pass before measuring.
    thread::sleep(Duration::from_millis(2_500));
    check_interrupted()?;
    let window = CpuWindow::start(daemon.pid())?;
    let out = cmd::output(Command::new(&ctx.workload).args([
        "rate",
        &plan.load_per_sec.to_string(),
        &plan.load_secs.to_string(),
    ]))?;
    let (cpu_ticks, cpu_sched, window_secs) = window.end()?;
    let Timing {
        calls, wall_ns: ns, ..
    } = parse_calls(&out)?;
    let rss_kib = status_kib(daemon.pid(), "VmRSS:")?;
    let hwm_kib = status_kib(daemon.pid(), "VmHWM:")?;
    let anon_kib = status_kib(daemon.pid(), "RssAnon:")?;
    let file_kib = status_kib(daemon.pid(), "RssFile:")?;
    let keys = checks_entries(&daemon_maps(daemon.pid()));
    // Where its CPU goes, in a second window so that perf's sampling is not in the figures.
    let profile = perf_profile(ctx, daemon.pid(), plan.load_secs.min(5), true)?;
    daemon.stop()?;
    let _ = fs::remove_file(ctx.scratch.join("daemon.db"));
    let checks_per_sec =
        u64::try_from(u128::from(calls) * 1_000_000_000 / u128::from(ns.max(1))).unwrap_or(0);
    eprintln!(
        "bench: {checks_per_sec} checks/s: daemon CPU {:.2}% (schedstat {:.2}%), RSS {rss_kib} \
         KiB, peak {hwm_kib} KiB",
        cpu_ticks * 100.0,
        cpu_sched * 100.0
    );
    Ok(DaemonCost {
        checks_per_sec,
        cpu_ticks,
        cpu_sched,
        window_secs,
        rss_kib,
        hwm_kib,
        anon_kib,
        file_kib,
        keys,
        attach_hwm_kib,
        profile,
    })
}

/// The daemon's hottest functions over `secs`, with the load generator running if `load`, from
/// `perf record -e cpu-clock` (a software clock: no PMU in this guest). Empty without perf.
fn perf_profile(ctx: &Ctx, pid: u32, secs: u64, load: bool) -> Result<Profile> {
    let Some(perf) = cmd::which("perf") else {
        eprintln!("bench: no perf: skipping the daemon's profile");
        return Ok(Profile::default());
    };
    let data = ctx.scratch.join("perf.data");
    let mut record = Proc::spawn(
        "perf record",
        Command::new(&perf)
            .args(["record", "-e", "cpu-clock", "-F", "1999", "-o"])
            .arg(&data)
            .args([
                "-p",
                &pid.to_string(),
                "--",
                "sleep",
                &(secs + 1).to_string(),
            ]),
    )?;
    thread::sleep(Duration::from_millis(300));
    let load = if load {
        cmd::output(Command::new(&ctx.workload).args([
            "rate",
            &ctx.plan.load_per_sec.to_string(),
            &secs.to_string(),
        ]))
        .map(drop)
    } else {
        Ok(())
    };
    // perf stops by itself when `sleep` ends; wait for it rather than interrupt it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while record.child.try_wait()?.is_none() {
        ensure!(Instant::now() < deadline, "perf record did not end");
        thread::sleep(Duration::from_millis(50));
    }
    record.reaped = true;
    load?;
    let report = cmd::output(
        Command::new(&perf)
            .args([
                "report",
                "--no-children",
                "--sort",
                "symbol",
                "--stdio",
                "-i",
            ])
            .arg(&data),
    )?;
    let _ = fs::remove_file(&data);
    // "# Samples: 489  of event 'cpu-clock'", then lines like
    // "    32.52%  [.] capspy::kallsyms::Kallsyms::symbolize".
    let samples = report
        .lines()
        .find_map(|l| l.strip_prefix("# Samples: "))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let top = report
        .lines()
        .filter_map(|l| {
            let (pct, rest) = l.trim_start().split_once("%  ")?;
            // The symbol, without the empty source/line columns perf pads it with.
            let symbol = rest.split_once("] ")?.1.split("  ").next()?.trim();
            Some((pct.parse().ok()?, symbol.to_owned()))
        })
        .take(8)
        .collect();
    Ok(Profile { samples, top })
}

/// The hottest functions of a perf profile.
#[derive(Default)]
struct Profile {
    samples: u64,
    /// (share of samples in %, function).
    top: Vec<(f64, String)>,
}

impl Profile {
    /// "32% `f`, 14% `g` (of 489 samples)".
    fn hottest(&self) -> String {
        let top: Vec<String> = self
            .top
            .iter()
            .map(|(pct, f)| format!("{pct:.0}% `{f}`"))
            .collect();
        format!("{} (of {} samples)", top.join(", "), self.samples)
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Scale: many concurrent cgroups, each with its own checks.

/// The cgroup v2 hierarchy: `/sys/fs/cgroup/unified` on hybrid hosts, `/sys/fs/cgroup` on
/// unified ones.
fn cgroup_v2_root() -> Result<PathBuf> {
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
struct FakeContainers {
    parent: PathBuf,
    made_parent: bool,
    dirs: Vec<PathBuf>,
    workers: Vec<Child>,
}

impl FakeContainers {
    fn kill_workers(&mut self) {
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
fn fake_id(i: usize) -> String {
    format!("{i:08x}be4c{:052x}", std::process::id())
}

/// What fake container `i` does: setuid or setgid, `i + 1` times. Every count is distinct, so a
/// check attributed to the wrong cgroup changes two of them.
fn fake_use(i: usize) -> (&'static str, &'static str, u64) {
    let n = i as u64 + 1;
    if i.is_multiple_of(2) {
        ("setuid", "SETUID", n)
    } else {
        ("setgid", "SETGID", n)
    }
}

struct MapInfo {
    name: String,
    kind: String,
    key: u64,
    value: u64,
    max_entries: u64,
    memlock: u64,
    entries: Option<u64>,
}

struct Scale {
    cgroups: usize,
    exact: usize,
    errors: Vec<String>,
    listed: usize,
    /// Total checks the fake containers made.
    checks: u64,
    maps: Vec<MapInfo>,
    idle_cpu: f64,
    idle_secs: f64,
    rss_kib: u64,
    verify_secs: f64,
    /// The idle daemon's hottest functions at this size.
    profile: Profile,
    /// CHECKS entries two sweeps after the cgroups were removed (needs bpftool).
    keys_after_removal: Option<u64>,
}

fn scale(ctx: &Ctx) -> Result<Scale> {
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
    let mut daemon = ctx.start_daemon(&store)?;

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

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: both fds are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads `n` bytes from `fd`, giving up at the timeout or on Ctrl-C.
fn wait_for_bytes(fd: &OwnedFd, n: usize, timeout: Duration) -> Result<()> {
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
fn daemon_maps(pid: u32) -> Vec<MapInfo> {
    let bpftool = cmd::which("bpftool");
    let mut maps = Vec::new();
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

fn checks_entries(maps: &[MapInfo]) -> Option<u64> {
    maps.iter()
        .find(|m| m.name == "CHECKS")
        .and_then(|m| m.entries)
}

fn map_type_name(t: u64) -> &'static str {
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
fn verify_attribution(ctx: &Ctx, store: &Path, n: usize) -> Result<(usize, Vec<String>, usize)> {
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

fn check_one(
    ctx: &Ctx,
    store: &Path,
    i: usize,
    workloads: &BTreeMap<String, Vec<String>>,
) -> Result<(), String> {
    let id = fake_id(i);
    let (_, cap, expected) = fake_use(i);
    let key = format!("container:{}", &id[..12]);
    match workloads.get(&key) {
        Some(used) if used.len() == 1 && used[0] == cap => {}
        other => {
            return Err(format!(
                "{key}: `capspy ls` says used {other:?}, expected [{cap}]"
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

// ---------------------------------------------------------------------------------------------
// 4. Reading a big store.

struct Reading {
    workloads: usize,
    running: usize,
    store_kib: u64,
    build_secs: f64,
    /// (command shown, wall seconds per run, CPU seconds per run).
    commands: Vec<(String, Vec<f64>, Vec<f64>)>,
}

/// user+sys CPU of all reaped children so far: around one child's run, its own CPU time.
fn children_cpu_secs() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &raw mut usage);
        usage
    };
    let secs = |t: libc::timeval| {
        #[expect(clippy::cast_precision_loss, reason = "small numbers")]
        let s = t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        s
    };
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn reading(ctx: &Ctx) -> Result<Reading> {
    let n = ctx.plan.workloads;
    let example = cmd::target_dir()?.join("release/examples/bench_store");
    let store = ctx.scratch.join("reading.db");
    let started = Instant::now();
    let out = cmd::output(Command::new(&example).arg(&store).arg(n.to_string()))?;
    let build_secs = started.elapsed().as_secs_f64();
    let running: usize = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("running=")?.parse().ok())
        .context("bench_store printed no running= count")?;
    let store_kib = fs::metadata(&store)?.len() / 1024;
    let one = format!("image:bench/w{}", n / 2);
    let runs: [(String, Vec<String>); 3] = [
        ("capspy ls".into(), vec!["ls".into()]),
        (
            "capspy ls --format json".into(),
            vec!["ls".into(), "--format".into(), "json".into()],
        ),
        (
            format!("capspy profile {one}"),
            vec!["profile".into(), one.clone()],
        ),
    ];
    let mut commands = Vec::new();
    for (shown, args) in runs {
        let mut times = Vec::new();
        let mut cpu = Vec::new();
        for _ in 0..ctx.plan.read_runs {
            check_interrupted()?;
            let cpu_before = children_cpu_secs();
            let t = Instant::now();
            let status = ctx
                .capspy()
                .args(&args)
                .arg("--store")
                .arg(&store)
                .stdout(Stdio::null())
                .status()?;
            times.push(t.elapsed().as_secs_f64());
            cpu.push(children_cpu_secs() - cpu_before);
            ensure!(status.success(), "`{shown}` failed: {status}");
        }
        eprintln!(
            "bench: {shown}: median {:.0} ms wall, {:.0} ms CPU over {} runs",
            median(&times) * 1e3,
            median(&cpu) * 1e3,
            times.len()
        );
        commands.push((shown, times, cpu));
    }
    let _ = fs::remove_file(&store);
    Ok(Reading {
        workloads: n,
        running,
        store_kib,
        build_secs,
        commands,
    })
}

// ---------------------------------------------------------------------------------------------
// The report.

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
    }
}

fn min_max(xs: &[f64]) -> (f64, f64) {
    xs.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// "median (min–max)".
fn spread(xs: &[f64], digits: usize) -> String {
    let (lo, hi) = min_max(xs);
    format!("{:.digits$} ({lo:.digits$}–{hi:.digits$})", median(xs))
}

struct Machine {
    kernel: String,
    cpus: usize,
    cpu_model: String,
    memory: String,
    revision: String,
    bpftrace: String,
    /// 1, 5 and 15 minute load averages when the run ended: other work on the machine shows
    /// up as noise in every figure.
    loadavg: String,
}

impl Machine {
    fn probe() -> Self {
        let quiet = |cmd: &mut Command| cmd::output(cmd).map(|s| s.trim().to_owned()).ok();
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let git = |args: &[&str]| {
            quiet(
                Command::new("git")
                    .current_dir(cmd::workspace_root())
                    .args(args),
            )
            .unwrap_or_default()
        };
        // BENCHMARKS.md itself is the previous run's output, not a change to what is measured.
        let dirty = if git(&[
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":(exclude)BENCHMARKS.md",
        ])
        .is_empty()
        {
            ""
        } else {
            " with uncommitted changes"
        };
        Self {
            kernel: quiet(Command::new("uname").arg("-r")).unwrap_or_default(),
            cpus: thread::available_parallelism().map_or(0, std::num::NonZero::get),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                .unwrap_or_default(),
            memory: format!("{} GiB", mem_kib / (1024 * 1024)),
            revision: format!("{}{dirty}", git(&["rev-parse", "--short", "HEAD"])),
            bpftrace: quiet(Command::new("bpftrace").arg("--version")).unwrap_or_default(),
            loadavg: fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

struct Report {
    plan: Plan,
    machine: Machine,
    counts: Counts,
    cost: Cost,
    inside: Inside,
    daemon: DaemonCost,
    scale: Scale,
    reading: Reading,
    elapsed: Duration,
    quick: bool,
}

/// Per-round figures derived from the rounds.
struct Derived {
    /// Added ns per check over the same round's baseline.
    added: BTreeMap<Variant, Vec<f64>>,
    capspy_floor: Vec<f64>,
    capspy_bpftrace: Vec<f64>,
    mmap_added: BTreeMap<Variant, Vec<f64>>,
}

fn added_over_baseline(rounds: &BTreeMap<Variant, Vec<f64>>) -> BTreeMap<Variant, Vec<f64>> {
    let base = rounds.get(&Variant::Baseline).cloned().unwrap_or_default();
    rounds
        .iter()
        .filter(|(v, _)| **v != Variant::Baseline)
        .map(|(v, xs)| (*v, xs.iter().zip(&base).map(|(x, b)| x - b).collect()))
        .collect()
}

fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x / y).collect()
}

const FLOOR_TARGET: f64 = 2.0;
const BPFTRACE_TARGET: f64 = 1.0 / 3.0;
const CPU_TARGET: f64 = 0.01;
/// 30 MB, in the KiB that /proc reports.
const RSS_TARGET_KIB: u64 = 30_000_000 / 1024;
const READ_TARGET_SECS: f64 = 1.0;

fn met(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**missed**" }
}

impl Derived {
    fn median_added(&self, v: Variant) -> f64 {
        self.added.get(&v).map_or(f64::NAN, |x| median(x))
    }

    fn floor_ratio(&self) -> f64 {
        self.median_added(Variant::Capspy) / self.median_added(Variant::Floor)
    }

    fn bpftrace_ratio(&self) -> f64 {
        self.median_added(Variant::Capspy) / self.median_added(Variant::Bpftrace)
    }
}

impl Report {
    fn derived(&self) -> Derived {
        let added = added_over_baseline(&self.cost.setuid);
        let get = |v| added.get(&v).cloned().unwrap_or_default();
        Derived {
            capspy_floor: ratios(&get(Variant::Capspy), &get(Variant::Floor)),
            capspy_bpftrace: ratios(&get(Variant::Capspy), &get(Variant::Bpftrace)),
            mmap_added: added_over_baseline(&self.cost.mmap),
            added,
        }
    }

    /// The tables, as printed and as in BENCHMARKS.md.
    #[expect(clippy::too_many_lines, reason = "one table after the other")]
    fn tables(&self) -> String {
        let d = self.derived();
        let p = &self.plan;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "### 1. Per-check cost\n\n`setuid(0)` loop as root, {} calls per measurement, {} rounds, \
             the variants' order rotated every round; min/median/max over rounds. Times are the \
             workload's CPU time per call (CLOCK_PROCESS_CPUTIME_ID) in the fastest tenth of \
             each measurement: the programs run in the calling task, so their cost is in it, \
             while the time other work on a shared machine takes is not, and what that work \
             still does to the task (caches, a busy sibling thread) only ever adds time. `capspy run` \
             counted {} CAP_SETUID checks for {} calls ({:.3} per call).\n",
            group(p.setuid_calls),
            p.rounds,
            group(self.counts.setuid_checks),
            group(self.counts.setuid_calls),
            ratio_u(self.counts.setuid_checks, self.counts.setuid_calls),
        );
        s.push_str("| variant | what | CPU ns per call, median (min–max) | added ns per check, median (min–max) |\n|---|---|---|---|\n");
        for v in VARIANTS {
            let per_call = self
                .cost
                .setuid
                .get(&v)
                .map_or_else(String::new, |x| spread(x, 1));
            let added = d.added.get(&v).map_or_else(|| "—".into(), |x| spread(x, 1));
            let _ = writeln!(s, "| {} | {} | {per_call} | {added} |", v.name(), v.what());
        }
        let (events, lost) = self.cost.stream_events;
        if self.cost.bpftrace_unverified > 0 {
            let _ = writeln!(
                s,
                "\nbpftrace hung on SIGINT and was killed in {} of {} rounds: its count could not \
                 confirm it was attached throughout those rounds.",
                self.cost.bpftrace_unverified, p.rounds
            );
        }
        let _ = writeln!(
            s,
            "\nstream: userspace read {} records, the ring buffer dropped {} ({:.2}%).\n",
            group(events),
            group(lost),
            100.0 * ratio_u(lost, events + lost)
        );
        // Judged on the ratio of the medians: a per-round ratio divides by the floor's few
        // nanoseconds, which round-to-round noise of the same size can make near zero.
        let floor_ratio = d.floor_ratio();
        let bpftrace_ratio = d.bpftrace_ratio();
        s.push_str(
            "| ratio of added cost | of the medians | per round, median (min–max) | target | |\n\
             |---|---|---|---|---|\n",
        );
        let _ = writeln!(
            s,
            "| capspy / floor | {floor_ratio:.2} | {} | ≤ 2 | {} |",
            spread(&d.capspy_floor, 2),
            met(floor_ratio <= FLOOR_TARGET)
        );
        let _ = writeln!(
            s,
            "| capspy / bpftrace | {bpftrace_ratio:.2} | {} | ≤ 0.33 | {} |",
            spread(&d.capspy_bpftrace, 2),
            met(bpftrace_ratio <= BPFTRACE_TARGET)
        );
        let _ = writeln!(
            s,
            "\nThe common real-world check: mmap+munmap of a private writable page, {} calls per \
             measurement; each makes {:.3} advisory CAP_SYS_ADMIN check (the overcommit \
             heuristic; counted by `capspy run`: {} for {} calls).\n",
            group(p.mmap_calls),
            ratio_u(self.counts.mmap_checks, self.counts.mmap_calls),
            group(self.counts.mmap_checks),
            group(self.counts.mmap_calls),
        );
        s.push_str("| variant | CPU ns per call, median (min–max) | added ns per check, median (min–max) |\n|---|---|---|\n");
        for v in VARIANTS.into_iter().filter(|v| v.runs_mmap()) {
            let per_call = self
                .cost
                .mmap
                .get(&v)
                .map_or_else(String::new, |x| spread(x, 1));
            let added = d
                .mmap_added
                .get(&v)
                .map_or_else(|| "—".into(), |x| spread(x, 1));
            let _ = writeln!(s, "| {} | {per_call} | {added} |", v.name());
        }
        let _ = writeln!(
            s,
            "\nTime inside the BPF program per run (kernel BPF stats, {} setuid calls; the stats \
             add their own two clock reads to every figure, so compare differences):\n",
            group(p.stats_calls)
        );
        s.push_str("| program | ns per run |\n|---|---|\n");
        for (v, ns) in &self.inside.programs {
            let _ = writeln!(s, "| {} | {ns:.1} |", v.name());
        }
        let _ = writeln!(
            s,
            "| capspy, mmap loop (SYS_ADMIN, cached call site) | {:.1} |",
            self.inside.capspy_mmap
        );
        s.push_str(
            "\nWhat the hot path's pieces cost here: bpftrace programs on the same tracepoint, \
             each adding one piece to an empty program (same stats):\n\n| program body | ns per \
             run | over empty |\n|---|---|---|\n",
        );
        let empty = self.inside.helpers.first().map_or(0.0, |h| h.1);
        for (what, ns) in &self.inside.helpers {
            let _ = writeln!(s, "| {what} | {ns:.1} | {:+.1} |", ns - empty);
        }

        let dc = &self.daemon;
        let cpu_ok = dc.cpu_ticks < CPU_TARGET && dc.cpu_sched < CPU_TARGET;
        let _ = writeln!(
            s,
            "\n### 2. The daemon's own cost\n\n`capspy record` (sweep every 1 s) while a load \
             generator makes {} CAP_SETUID checks per second for {:.1} s:\n\n| figure | value \
             | target | |\n|---|---|---|---|\n| CPU, utime+stime | {:.2}% of one core | < 1% | {} \
             |\n| CPU, threads' schedstat | {:.2}% of one core | < 1% | |\n| VmRSS at the end \
             (anonymous + file) | {:.1} MB ({:.1} + {:.1}) | < 30 MB | {} |\n| VmHWM (peak since \
             start) | {:.1} MB | < 30 MB | {} |\n| keys in the CHECKS map (each swept every \
             second) | {} | | |",
            group(dc.checks_per_sec),
            dc.window_secs,
            dc.cpu_ticks * 100.0,
            met(cpu_ok),
            dc.cpu_sched * 100.0,
            mb(dc.rss_kib),
            mb(dc.anon_kib),
            mb(dc.file_kib),
            met(dc.rss_kib < RSS_TARGET_KIB),
            mb(dc.hwm_kib),
            met(dc.hwm_kib < RSS_TARGET_KIB),
            dc.keys.map_or_else(|| "— (needs bpftool)".into(), group),
        );

        let sc = &self.scale;
        let _ = writeln!(
            s,
            "\n### 3. Scale\n\n{} concurrent cgroups `/docker/<fake 64-hex id>` under the cgroup v2 \
             root, each with one process that made its own checks (cgroup i: setuid(0) or \
             setgid(0), i+1 times; {} checks in all), the daemon running; then read back from the \
             store with `capspy ls --format json` and one `capspy profile ID --format json` per \
             cgroup ({:.1} s for all).\n\n| figure | value | target | |\n|---|---|---|---|\n| \
             cgroups listed by `capspy ls` | {} / {} | all | |\n| attributed exactly (one row, \
             right capability, exact count) | {} / {} | all | {} |\n| daemon CPU, idle, holding \
             them ({:.0} s) | {:.2}% of one core | | |\n| daemon VmRSS | {:.1} MB | | |\n| \
             CHECKS entries two sweeps after the cgroups were removed | {} | | |",
            group(sc.cgroups as u64),
            group(sc.checks),
            sc.verify_secs,
            sc.listed,
            sc.cgroups,
            sc.exact,
            sc.cgroups,
            met(sc.exact == sc.cgroups && sc.listed == sc.cgroups),
            sc.idle_secs,
            sc.idle_cpu * 100.0,
            mb(sc.rss_kib),
            sc.keys_after_removal
                .map_or_else(|| "— (needs bpftool)".into(), group),
        );
        for e in &sc.errors {
            let _ = writeln!(s, "\nattribution error: {e}");
        }
        s.push_str("\nThe daemon's kernel maps at that size (fdinfo `memlock`; names and entries from bpftool):\n\n| map | type | key B | value B | max entries | entries in use | memlock |\n|---|---|---|---|---|---|---|\n");
        for m in &sc.maps {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {:.1} KiB |",
                m.name,
                m.kind,
                m.key,
                m.value,
                group(m.max_entries),
                m.entries.map_or_else(|| "—".into(), group),
                kib(m.memlock)
            );
        }
        let total: u64 = sc.maps.iter().map(|m| m.memlock).sum();
        let _ = writeln!(s, "| all | | | | | | {:.1} MiB |", kib(total) / 1024.0);

        let r = &self.reading;
        let _ = writeln!(
            s,
            "\n### 4. Reading\n\nA store of {} container workloads ({} of them running, 4 check \
             rows each; {:.1} MiB, written in {:.1} s by `capspy/examples/bench_store.rs`), {} \
             runs each. Wall time is what a user waits; CPU time (user+sys) is what it takes \
             when the machine is not shared (the commands are single-threaded):\n\n| command | \
             wall ms, median (min–max) | CPU ms, median (min–max) | target (wall) | \
             |\n|---|---|---|---|---|",
            group(r.workloads as u64),
            group(r.running as u64),
            kib_to_mib(r.store_kib),
            r.build_secs,
            p.read_runs,
        );
        for (shown, times, cpu) in &r.commands {
            let ms = |xs: &[f64]| xs.iter().map(|t| t * 1e3).collect::<Vec<f64>>();
            let _ = writeln!(
                s,
                "| `{shown}` | {} | {} | < 1 s | {} |",
                spread(&ms(times), 0),
                spread(&ms(cpu), 0),
                met(median(times) < READ_TARGET_SECS)
            );
        }
        let _ = write!(
            s,
            "\nWhole benchmark: {:.0} s{}.",
            self.elapsed.as_secs_f64(),
            if self.quick {
                " (--quick: smoke test, not a measurement)"
            } else {
                ""
            }
        );
        s
    }

    fn markdown(&self, tables: &str) -> String {
        let m = &self.machine;
        format!(
            "# capspy benchmarks\n\n\
             What capspy costs on the host it watches, measured by `cargo xtask bench` against the \
             floor (the least a program on the same hook can cost) and its peers. Every figure \
             below comes from one run; the analysis under the tables is written by the same run \
             from its own figures.\n\n\
             ## Machine\n\n\
             - kernel {kernel}, {cpus} CPUs ({model}), {memory} RAM (a Firecracker guest on the \
             project's machines)\n\
             - capspy {revision}, hook tp_btf (the only one this kernel allows; see \
             `capspy doctor`)\n\
             - {bpftrace}\n\
             - load average at the end of the run (1, 5, 15 min): {loadavg}; anything above \
             the bench's own ~1 means other work shared the CPUs and widened the spreads\n\n\
             ## Reproduce\n\n\
             As root, from a clone (needs gcc with a static libc and `bpftrace`; `bpftool` adds \
             map names and entry counts, `perf` the daemon's profile):\n\n\
             ```sh\ncargo xtask bench           # about {minutes} minutes; writes BENCHMARKS.md\n\
             cargo xtask bench --quick   # smoke test: small counts, prints the tables only\n```\n\n\
             `cargo test -p xtask --release --test bench` runs the quick one and checks that every \
             table is printed and every fake container attributed (no timing is asserted).\n\n\
             ## Results\n\n{tables}\n\n\
             ## Analysis\n\n{analysis}",
            kernel = m.kernel,
            cpus = m.cpus,
            model = m.cpu_model,
            memory = m.memory,
            revision = m.revision,
            bpftrace = m.bpftrace,
            loadavg = m.loadavg,
            minutes = self.elapsed.as_secs().div_ceil(60),
            analysis = self.analysis(),
        )
    }

    fn reading_note(&self) -> String {
        let mut out = String::from(
            "`capspy ls` computes one profile per workload and per running container, one \
             indexed query each, so it grows with the number of workloads; `capspy profile` \
             reads one workload.",
        );
        for (shown, times, cpu) in &self.reading.commands {
            let (wall, cpu) = (median(times), median(cpu));
            if wall >= READ_TARGET_SECS && cpu < READ_TARGET_SECS {
                let _ = write!(
                    out,
                    " `{shown}` missed the target in wall time ({:.0} ms) while its CPU time was \
                     {:.0} ms: the machine was shared (see the load average above), so on an idle \
                     machine it answers in about its CPU time.",
                    wall * 1e3,
                    cpu * 1e3
                );
            } else if cpu >= READ_TARGET_SECS {
                let _ = write!(
                    out,
                    " `{shown}` needs {:.0} ms of CPU: a single query for all workloads (the \
                     store has `checks_by_workload` for that) instead of one per workload would \
                     remove most of it.",
                    cpu * 1e3
                );
            }
        }
        out
    }

    fn inside(&self, v: Variant) -> f64 {
        self.inside
            .programs
            .iter()
            .find(|(p, _)| *p == v)
            .map_or(f64::NAN, |p| p.1)
    }

    /// A hot-path piece's cost over the empty bpftrace program.
    fn helper(&self, name: &str) -> f64 {
        let empty = self.inside.helpers.first().map_or(0.0, |h| h.1);
        self.inside
            .helpers
            .iter()
            .find(|h| h.0 == name)
            .map_or(f64::NAN, |h| (h.1 - empty).max(0.0))
    }

    /// The prose under the tables; its numbers and verdicts are this run's.
    #[expect(clippy::too_many_lines, reason = "one document")]
    fn analysis(&self) -> String {
        let d = self.derived();
        let verdict = |ok: bool| if ok { "met" } else { "missed" };
        let (floor, capspy) = (
            d.median_added(Variant::Floor),
            d.median_added(Variant::Capspy),
        );
        let extra = self.inside(Variant::Capspy) - self.inside(Variant::Floor);
        let pieces = [
            ("`bpf_get_current_cgroup_id`", self.helper("cgroup id")),
            ("`bpf_get_current_pid_tgid`", self.helper("pid/tgid")),
        ];
        // The hash lookup on capspy's 16-byte key lies between a map add on one trivial key and
        // bpftrace's lookup-and-update on its (cgroup, cap, ret) key less the cgroup id.
        let hash_low = self.helper("hash map add, one global key");
        let hash_high = (self.helper("the one-liner: key (cgroup, cap, ret), hash map add")
            - self.helper("cgroup id"))
        .max(hash_low);
        let others: f64 = pieces.iter().map(|p| p.1).sum();
        let mut ranked = pieces.to_vec();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut list = String::new();
        let _ = writeln!(
            list,
            "- the CHECKS hash lookup on the 16-byte key, then the atomic add: ~{hash_low:.0}–\
             {hash_high:.0} ns (a map add on one trivial key; bpftrace's lookup and update on its \
             (cgroup, cap, ret) key, less the cgroup id)"
        );
        for (what, ns) in &ranked {
            let _ = writeln!(list, "- {what}: ~{ns:.0} ns");
        }
        let priced = format!("{:.0}–{:.0}", others + hash_low, others + hash_high);
        let core_low = self.helper("cgroup id") + hash_low;
        let core_high = self.helper("cgroup id") + hash_high;
        let dc = &self.daemon;
        let profile = if dc.profile.top.is_empty() {
            "(perf was not installed, so no profile)".to_owned()
        } else {
            format!(
                "its hottest functions under the load were {}.",
                dc.profile.hottest()
            )
        };
        let scale_profile = if self.scale.profile.top.is_empty() {
            String::new()
        } else {
            format!("; hottest there: {}", self.scale.profile.hottest())
        };
        let checks_map = self.scale.maps.iter().find(|m| m.name == "CHECKS");
        format!(
            "**Per check.** capspy adds {capspy:.0} ns to a check; the floor adds {floor:.0} ns, \
             bpftrace {bpftrace:.0} ns and per-event streaming {stream:.0} ns. capspy/floor is \
             {fr:.1} (target ≤ 2: {fv}); capspy/bpftrace is {br:.2} (target ≤ 0.33: {bv}). The \
             floor's added cost is almost only the hook itself (the tp_btf trampoline around a \
             one-instruction program), so 2× the floor leaves capspy about {budget:.0} ns for all \
             its work; bpftrace's one-liner pays the classic tracepoint (the event record is built \
             before the program runs) and a hash update, which sets a third of it at {third:.0} ns.\
             {third_note}\n\n\
             **Where capspy's time goes.** Inside its program a check takes {ic:.0} ns against \
             {ifl:.0} ns for the floor's (kernel BPF stats; both include the stats' own two \
             clock reads), so about {extra:.0} ns of capspy's work per check. Its hot path calls, \
             with what each costs on this machine (bpftrace bodies over an empty one, same \
             stats; together ~{priced} ns, the rest being the program's own instructions: \
             building the key, branches, bounds checks):\n\n{list}\
             - `bpf_get_current_task_btf` and `bpf_task_pt_regs`, then plain loads through \
             those BTF pointers of `task->real_cred` (borrowed credentials), the first 8 bytes \
             of `task->comm` (runtime bucket) and `orig_ax` (syscall number for the call-site \
             class): instructions the verifier guards, not helper calls (a \
             `bpf_probe_read_kernel` would cost ~{probe:.0} ns each)\n\
             - two inlined array lookups (call-site class, user namespace) and the \
             runtime-comm compare: ~1 ns each\n\n\
             The clock (`bpf_ktime_get_boot_ns`, ~{ktime:.0} ns here) and the whole process name \
             (`bpf_get_current_comm`, ~{comm:.0} ns) are read only for a key's first check: the \
             daemon dates the latest check by the sweep that sees its count change.\n\n\
             What is left is the aggregation itself: the cgroup id and the hash update stay; \
             a per-CPU hash would drop the atomic, which only matters with many CPUs sharing a \
             hot key. {reach}\n\n\
             **The common check.** The overcommit check made by every private writable mmap \
             costs {mmap:.0} ns added with capspy ({im:.0} ns inside the program): its call-site \
             cache answers the audit class from an array, so it costs what a setuid check does. \
             A tracer that read the stack on every check to tell advisory from audited checks \
             would pay `bpf_get_stack` every time.\n\n\
             **The daemon.** {cpu:.2}% of a core at {rate} checks per second (target < 1%: \
             {cv}); its CPU does not depend on the check rate (the kernel aggregates) but on \
             what it does once per sweep: read every key of the map and write (and symbolize) only the \
             keys whose count changed since the last sweep; {profile} Holding the keys of {n} \
             containers, the idle daemon took {idle:.2}% of a core{scale_profile}: reading the \
             map key by key (one syscall each) and checking that each cgroup still exists. \
             Resident memory {rss:.1} MB ({anon:.1} \
             MB anonymous, {file:.1} MB of mapped binary), peak {hwm:.1} MB (target < 30 MB: \
             steady {rv}, peak {hv}); {peak_note}\n\n\
             **Scale and full maps.** {exact} of {n} concurrent cgroups were attributed exactly. \
             CHECKS is a preallocated hash: {memlock} whatever the number of containers, {max} \
             keys, one per (cgroup, capability, verdict, audit class, user namespace, bucket) \
             seen; a container makes a handful, so thousands of live containers fit. {churn} \
             When it is full, a check whose key is new is \
             not stored: the kernel counts it in COUNTERS (`CHECKS_OVERFLOW`), which `capspy \
             run` reports as `losses.checks_overflow`; keys already in the map keep counting. \
             The daemon keeps the same counters for \
             each session in the store. \
             KPROBE_ARGS has one entry unless the kprobe method is the one attached.\n\n\
             **Reading.** {reading}\n",
            bpftrace = d.median_added(Variant::Bpftrace),
            ktime = self.helper("ktime"),
            probe = self.helper("probe_read (task->real_cred)"),
            comm = self.helper("comm"),
            stream = d.median_added(Variant::Stream),
            reach = if d.floor_ratio() <= FLOOR_TARGET {
                format!(
                    "Those two cost ~{core_low:.0}–{core_high:.0} ns here against the floor's \
                     {floor:.0} ns; the rest of capspy's work fits the ≤ 2× budget in this run."
                )
            } else if core_low >= floor {
                format!(
                    "Those two cost at least ~{core_low:.0} ns here, as much as the floor's whole \
                     {floor:.0} ns, so ≤ 2× the floor is out of reach for a tracer that \
                     aggregates by cgroup in the kernel."
                )
            } else if core_high >= floor {
                format!(
                    "Those two cost ~{core_low:.0}–{core_high:.0} ns here against the floor's \
                     {floor:.0} ns: ≤ 2× the floor leaves almost no room for the key's \
                     classification (audit class, bucket, user namespace)."
                )
            } else {
                format!(
                    "Those two cost ~{core_low:.0}–{core_high:.0} ns here against the floor's \
                     {floor:.0} ns; the rest of the excess is the key's classification (audit \
                     class, bucket, user namespace)."
                )
            },
            fr = d.floor_ratio(),
            br = d.bpftrace_ratio(),
            fv = verdict(d.floor_ratio() <= FLOOR_TARGET),
            bv = verdict(d.bpftrace_ratio() <= BPFTRACE_TARGET),
            budget = 2.0 * floor,
            third = d.median_added(Variant::Bpftrace) / 3.0,
            third_note = if floor >= d.median_added(Variant::Bpftrace) / 3.0 {
                format!(
                    " That is less than the floor itself adds ({floor:.0} ns): on this machine no \
                     program on capspy's hook, however small, can be within a third of \
                     bpftrace's cost, so the two targets cannot both be met here{}.",
                    if d.floor_ratio() <= FLOOR_TARGET {
                        "; capspy meets the one measured against its own hook"
                    } else {
                        ""
                    }
                )
            } else {
                String::new()
            },
            ic = self.inside(Variant::Capspy),
            ifl = self.inside(Variant::Floor),
            mmap = d
                .mmap_added
                .get(&Variant::Capspy)
                .map_or(f64::NAN, |x| median(x)),
            im = self.inside.capspy_mmap,
            cpu = dc.cpu_ticks * 100.0,
            rate = group(dc.checks_per_sec),
            cv = verdict(dc.cpu_ticks < CPU_TARGET && dc.cpu_sched < CPU_TARGET),
            idle = self.scale.idle_cpu * 100.0,
            rss = mb(dc.rss_kib),
            anon = mb(dc.anon_kib),
            file = mb(dc.file_kib),
            hwm = mb(dc.hwm_kib),
            rv = verdict(dc.rss_kib < RSS_TARGET_KIB),
            hv = verdict(dc.hwm_kib < RSS_TARGET_KIB),
            peak_note = if dc.attach_hwm_kib + 1024 >= dc.hwm_kib {
                format!(
                    "the peak was already reached when it had attached ({:.1} MB), so it comes \
                     from starting up (the kernel's BTF and symbol table are read then), not \
                     from the load.",
                    mb(dc.attach_hwm_kib)
                )
            } else {
                format!(
                    "the peak grew after attaching ({:.1} MB then), under the load.",
                    mb(dc.attach_hwm_kib)
                )
            },
            exact = self.scale.exact,
            n = self.scale.cgroups,
            memlock = checks_map.map_or_else(
                || "its memory is fixed at load".to_owned(),
                |m| format!("{:.1} MiB of kernel memory", kib(m.memlock) / 1024.0)
            ),
            max = group(checks_map.map_or(32_768, |m| m.max_entries)),
            reading = self.reading_note(),
            churn = match (
                checks_map.and_then(|m| m.entries),
                self.scale.keys_after_removal
            ) {
                (Some(before), Some(after)) if after < before / 2 => format!(
                    "The daemon frees the keys of removed cgroups once their final counts are \
                     stored ({} keys with the cgroups, {} two sweeps after they were removed), \
                     so container churn does not fill it.",
                    group(before),
                    group(after)
                ),
                (Some(before), Some(after)) => format!(
                    "The keys of removed cgroups stay ({} keys with the cgroups, {} two sweeps \
                     after they were removed), so a host with container churn fills it over time.",
                    group(before),
                    group(after)
                ),
                _ => "(Without bpftool the bench cannot count entries to see whether removed \
                      cgroups' keys are freed.)"
                    .to_owned(),
            },
        )
    }
}

fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[expect(clippy::cast_precision_loss, reason = "display only")]
fn ratio_u(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

#[expect(clippy::cast_precision_loss, reason = "display only")]
fn kib_to_mib(k: u64) -> f64 {
    k as f64 / 1024.0
}

/// KiB (as /proc reports) to decimal MB, the unit of the target.
#[expect(clippy::cast_precision_loss, reason = "display only")]
fn mb(k: u64) -> f64 {
    k as f64 * 1024.0 / 1e6
}

#[expect(clippy::cast_precision_loss, reason = "display only")]
fn kib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < 1e-9);
        assert!((median(&[4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < 1e-9);
        assert_eq!(min_max(&[2.0, -1.0, 5.0]), (-1.0, 5.0));
        assert_eq!(spread(&[1.0, 2.0, 10.0], 1), "2.0 (1.0–10.0)");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(999), "999");
    }

    #[test]
    fn parses_tool_output() {
        let t = parse_calls("calls 10 ns 2000 cpu_ns 1500\n").unwrap();
        assert_eq!(
            (t.calls, t.wall_ns, t.cpu_ns, t.best),
            (10, 2000, 1500, None)
        );
        let t = parse_calls("calls 10 ns 2000 cpu_ns 1500 best_cpu_ns 140 chunk_calls 1").unwrap();
        assert_eq!(t.best, Some((140, 1)));
        assert!(parse_calls("oops").is_err());
        assert_eq!(parse_events("events 5 lost 2"), Some((5, 2)));
        let lines: Vec<String> = [
            "Attaching 1 probe...",
            "",
            "@[1, 7, 0]: 100",
            "@[9, 7, 0]: 5",
            "@[1, 21, 1]: 3",
            "@[1, 7, 1]: 4",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(bpftrace_setuid_count(&lines), 105);
    }

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

    #[test]
    fn rounds_rotate_every_variant_through_every_position() {
        for (pos, _) in VARIANTS.iter().enumerate() {
            let at: std::collections::BTreeSet<Variant> = (0..VARIANTS.len())
                .map(|round| VARIANTS[(pos + round) % VARIANTS.len()])
                .collect();
            assert_eq!(at.len(), VARIANTS.len());
        }
    }
}
