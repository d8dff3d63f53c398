//! Section 2, the daemon's own cost: CPU and memory under a steady load, and where its CPU goes.

use std::fs;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};

use super::process::{Ctx, Proc, Timing, check_interrupted, parse_calls};
use super::scale::{checks_entries, daemon_maps};
use crate::cmd;

pub(super) struct DaemonCost {
    pub(super) checks_per_sec: u64,
    /// Share of one core from utime+stime, and from the threads' schedstat (ns resolution).
    pub(super) cpu_ticks: f64,
    pub(super) cpu_sched: f64,
    pub(super) window_secs: f64,
    pub(super) rss_kib: u64,
    pub(super) hwm_kib: u64,
    pub(super) anon_kib: u64,
    pub(super) file_kib: u64,
    /// Keys in the CHECKS map at the end (the sweep's work grows with them); None without bpftool.
    pub(super) keys: Option<u64>,
    /// VmHWM right after attaching: tells a loading peak from one under the load.
    pub(super) attach_hwm_kib: u64,
    /// The daemon's hottest functions under the load.
    pub(super) profile: Profile,
}

/// utime+stime of a process in seconds, from /proc/PID/stat.
pub(super) fn cpu_seconds(pid: u32) -> Result<f64> {
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
pub(super) fn sched_seconds(pid: u32) -> Result<f64> {
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
pub(super) fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

pub(super) struct CpuWindow {
    pub(super) pid: u32,
    pub(super) ticks: f64,
    pub(super) sched: f64,
    pub(super) at: Instant,
}

impl CpuWindow {
    pub(super) fn start(pid: u32) -> Result<Self> {
        Ok(Self {
            pid,
            ticks: cpu_seconds(pid)?,
            sched: sched_seconds(pid)?,
            at: Instant::now(),
        })
    }

    /// (share of a core from utime+stime, from schedstat, window length in s).
    pub(super) fn end(&self) -> Result<(f64, f64, f64)> {
        let wall = self.at.elapsed().as_secs_f64();
        Ok((
            (cpu_seconds(self.pid)? - self.ticks) / wall,
            (sched_seconds(self.pid)? - self.sched) / wall,
            wall,
        ))
    }
}

pub(super) fn daemon_cost(ctx: &Ctx) -> Result<DaemonCost> {
    let plan = ctx.plan;
    let mut daemon = ctx.start_daemon(&ctx.scratch.join("daemon.db"), &[])?;
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
pub(super) fn perf_profile(ctx: &Ctx, pid: u32, secs: u64, load: bool) -> Result<Profile> {
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
pub(super) struct Profile {
    pub(super) samples: u64,
    /// (share of samples in %, function).
    pub(super) top: Vec<(f64, String)>,
}

impl Profile {
    /// "32% `f`, 14% `g` (of 489 samples)".
    pub(super) fn hottest(&self) -> String {
        let top: Vec<String> = self
            .top
            .iter()
            .map(|(pct, f)| format!("{pct:.0}% `{f}`"))
            .collect();
        format!("{} (of {} samples)", top.join(", "), self.samples)
    }
}
