//! Sections 0 and 1: checks per call, counted by `capspy run`; the per-check cost of every
//! variant, in rounds.

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use super::inside::bpf_prog_fds;
use super::process::{Ctx, Proc};
use crate::cmd;

/// The peer, exactly as the issue states it.
const BPFTRACE_ONE_LINER: &str =
    "tracepoint:capability:cap_capable { @[cgroup, args->cap, args->ret] = count(); }";
const CAP_SETUID: u32 = 7;

pub(super) struct Counts {
    pub(super) setuid_calls: u64,
    pub(super) setuid_checks: u64,
    pub(super) mmap_calls: u64,
    /// SYS_ADMIN checks of the mmap loop minus those of an empty run (exec's own).
    pub(super) mmap_checks: u64,
}

pub(super) fn check_counts(ctx: &Ctx) -> Result<Counts> {
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
pub(super) enum Variant {
    Baseline,
    Floor,
    Capspy,
    Bpftrace,
    Stream,
    /// Only in section 5: `capspy watch` with baselines and metrics.
    Watch,
    /// Only in section 5: nothing attached, measured a second time each round. Its difference
    /// from the baseline is what the run cannot resolve (an A/A control).
    Control,
    /// Only in section 1c: capspy's aggregation alone, in its hash map.
    Hash,
    /// Only in section 1c: the same count in cgroup local storage.
    Cgrp,
    /// Only in section 1c: `capspy record` counting every check in its hash map, as on kernels
    /// without cgroup local storage.
    CapspyHash,
}

pub(super) const VARIANTS: [Variant; 5] = [
    Variant::Baseline,
    Variant::Floor,
    Variant::Capspy,
    Variant::Bpftrace,
    Variant::Stream,
];

impl Variant {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Floor => "floor",
            Self::Capspy => "capspy",
            Self::Bpftrace => "bpftrace",
            Self::Stream => "stream",
            Self::Watch => "capspy watch",
            Self::Control => "nothing, again",
            Self::Hash => "hash",
            Self::Cgrp => "cgrp",
            Self::CapspyHash => "capspy, hash only",
        }
    }

    pub(super) fn what(self) -> &'static str {
        match self {
            Self::Baseline => "nothing attached",
            Self::Control => "nothing attached, measured again in the same round (A/A control)",
            Self::Floor => "per-CPU array increment on tp_btf `cap_capable`",
            Self::Capspy => "`capspy record` daemon, in-kernel aggregation (tp_btf)",
            Self::Bpftrace => "bpftrace one-liner, classic tracepoint",
            Self::Stream => "ring buffer record per check, read by userspace (tp_btf)",
            Self::Watch => {
                "`capspy watch`: the daemon with every workload's baseline loaded, alerts to a \
                 file, metrics served"
            }
            Self::Hash => "cgroup id, hash lookup on capspy's 16-byte key, atomic add (tp_btf)",
            Self::Cgrp => {
                "`task->cgroups->dfl_cgrp`, `bpf_cgrp_storage_get`, atomic add at an index \
                 (tp_btf)"
            }
            Self::CapspyHash => {
                "`capspy record --no-cgroup-storage`: every check in the hash map, as on \
                 kernels before 6.2"
            }
        }
    }

    /// The mmap loop runs under these only: the row shows what capspy's call-site cache does
    /// with the most common check, next to the floor.
    pub(super) fn runs_mmap(self) -> bool {
        matches!(self, Self::Baseline | Self::Floor | Self::Capspy)
    }
}

/// A variant attached and ready to measure.
pub(super) struct Attached {
    pub(super) proc: Option<Proc>,
}

pub(super) fn attach(ctx: &Ctx, variant: Variant, tag: &str) -> Result<Attached> {
    let proc = match variant {
        Variant::Baseline | Variant::Control => None,
        Variant::Floor | Variant::Stream | Variant::Hash | Variant::Cgrp => {
            let name = variant.name();
            let mut probe = Proc::spawn(
                "capspy bench-probe",
                ctx.capspy().args(["bench-probe", "--variant", name]),
            )?;
            let line = format!("attached bench_{name}");
            probe.wait_for(|l| l == line, Duration::from_secs(30))?;
            Some(probe)
        }
        Variant::Capspy => Some(ctx.start_daemon(&ctx.scratch.join(format!("{tag}.db")), &[])?),
        Variant::CapspyHash => Some(ctx.start_daemon(
            &ctx.scratch.join(format!("{tag}.db")),
            &["--no-cgroup-storage"],
        )?),
        Variant::Bpftrace => Some(start_bpftrace(BPFTRACE_ONE_LINER)?),
        Variant::Watch => bail!("capspy watch needs baselines: see workloads::start_watch"),
    };
    // The same settling time for every variant, the baseline included.
    thread::sleep(Duration::from_millis(300));
    Ok(Attached { proc })
}

/// bpftrace prints "Attaching N probes..." just before it attaches and nothing after, so wait
/// for that line, then for its program fd, then a little; the map it prints at the end proves
/// it counted the whole measurement.
pub(super) fn start_bpftrace(program: &str) -> Result<Proc> {
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
pub(super) fn bpftrace_setuid_count(lines: &[String]) -> u64 {
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
pub(super) struct Cost {
    /// ns per setuid call, by variant, one per round.
    pub(super) setuid: BTreeMap<Variant, Vec<f64>>,
    pub(super) mmap: BTreeMap<Variant, Vec<f64>>,
    /// The stream variant's (events read, events lost) over all rounds.
    pub(super) stream_events: (u64, u64),
    /// Rounds whose bpftrace had to be killed, so its count could not prove it was attached.
    pub(super) bpftrace_unverified: usize,
}

pub(super) fn per_check(ctx: &Ctx) -> Result<Cost> {
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
pub(super) fn parse_events(line: &str) -> Option<(u64, u64)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    match fields.as_slice() {
        ["events", n, "lost", m] => Some((n.parse().ok()?, m.parse().ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_probe_and_bpftrace_output() {
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
    fn rounds_rotate_every_variant_through_every_position() {
        for (pos, _) in VARIANTS.iter().enumerate() {
            let at: std::collections::BTreeSet<Variant> = (0..VARIANTS.len())
                .map(|round| VARIANTS[(pos + round) % VARIANTS.len()])
                .collect();
            assert_eq!(at.len(), VARIANTS.len());
        }
    }
}
