//! Section 1b: time inside the programs, from the kernel's BPF stats (kernel.bpf_stats_enabled), and
//! what each helper of the hot path costs here.

use std::collections::BTreeMap;
use std::fs;

use anyhow::{Context as _, Result, ensure};

use super::cost::{Variant, attach, start_bpftrace};
use super::process::{Ctx, Proc};

/// Turns the kernel's BPF run-time accounting on for the guard's lifetime. Off during the timed
/// rounds: the accounting reads the clock twice per run.
pub(super) struct BpfStats {
    pub(super) previous: String,
}

pub(super) const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub(super) fn enable() -> Result<Self> {
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
pub(super) fn bpf_prog_stats(pid: u32) -> BTreeMap<String, (u64, u64)> {
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

pub(super) fn bpf_fds(pid: u32, kind: &str) -> Vec<String> {
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

pub(super) fn bpf_prog_fds(pid: u32) -> Vec<String> {
    bpf_fds(pid, "bpf-prog")
}

/// Average ns per run of the busiest program of `pid` while `work` runs, and how many runs.
pub(super) fn time_inside(pid: u32, work: impl FnOnce() -> Result<()>) -> Result<(f64, u64)> {
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

pub(super) struct Inside {
    /// ns per run inside each variant's program, for the setuid loop.
    pub(super) programs: Vec<(Variant, f64)>,
    pub(super) capspy_mmap: f64,
    /// Single helpers measured as bpftrace programs: (what, ns per run).
    pub(super) helpers: Vec<(&'static str, f64)>,
}

/// bpftrace programs that each add one piece of the hot path to an empty program, so that their
/// differences price the helpers capspy calls (bpftrace 0.17 has no tp_btf, hence the classic
/// tracepoint; the body time does not include the hook's own overhead).
pub(super) const HELPER_PROGRAMS: &[(&str, &str)] = &[
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
pub(super) fn stop_for_stats(proc: &mut Proc) {
    if let Err(e) = proc.stop() {
        eprintln!("bench: warning: {e:#}");
    }
}

pub(super) fn hot_path(ctx: &Ctx) -> Result<Inside> {
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
