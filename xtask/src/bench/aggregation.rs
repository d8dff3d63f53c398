//! Section 1c, the aggregation: what capspy's hash lookup costs against cgroup local storage
//! (`BPF_MAP_TYPE_CGRP_STORAGE`, Linux >= 6.2), each alone on the hook beside the floor, and what
//! one hot key costs when both CPUs count on it at once. Times are inside the programs, from the
//! kernel's BPF stats: far steadier than the workload's CPU time on a shared machine, and the
//! differences between programs are what matter here.

use std::collections::BTreeMap;
use std::process::Command;
use std::thread;

use anyhow::{Context as _, Result, ensure};

use super::cost::{Variant, attach};
use super::inside::{BpfStats, time_inside};
use super::process::{Ctx, check_interrupted};

/// In the order of the first round.
pub(super) const AGG_VARIANTS: [Variant; 5] = [
    Variant::Floor,
    Variant::Hash,
    Variant::Cgrp,
    Variant::Capspy,
    Variant::CapspyHash,
];

/// ns per run inside each program, one value per round.
#[derive(Default)]
pub(super) struct Aggregation {
    pub(super) rounds: usize,
    pub(super) calls: u64,
    /// One workload process making its checks.
    pub(super) one: BTreeMap<Variant, Vec<f64>>,
    /// Two at once, on the same key (same cgroup, capability and verdict), one per CPU.
    pub(super) two: BTreeMap<Variant, Vec<f64>>,
}

impl Aggregation {
    /// Per round, `a - b` of the one-process figures.
    pub(super) fn diff(&self, a: Variant, b: Variant) -> Vec<f64> {
        match (self.one.get(&a), self.one.get(&b)) {
            (Some(a), Some(b)) => a.iter().zip(b).map(|(x, y)| x - y).collect(),
            _ => Vec::new(),
        }
    }

    /// Per round, ns per run with two processes over ns per run with one.
    pub(super) fn contention(&self, v: Variant) -> Vec<f64> {
        match (self.two.get(&v), self.one.get(&v)) {
            (Some(two), Some(one)) => two.iter().zip(one).map(|(x, y)| x / y).collect(),
            _ => Vec::new(),
        }
    }
}

pub(super) fn aggregation(ctx: &Ctx) -> Result<Aggregation> {
    let calls = ctx.plan.stats_calls;
    let rounds = ctx.plan.agg_rounds;
    let _stats = BpfStats::enable()?;
    let mut out = Aggregation {
        rounds,
        calls,
        ..Aggregation::default()
    };
    for round in 0..rounds {
        let n = AGG_VARIANTS.len();
        for variant in (0..n).map(|i| AGG_VARIANTS[(i + round) % n]) {
            let mut attached = attach(ctx, variant, "agg")?;
            let proc = attached
                .proc
                .as_mut()
                .context("variant without a process")?;
            ctx.timed("setuid", ctx.plan.warmup_calls)?;
            let (one, runs) = time_inside(proc.pid(), || ctx.timed("setuid", calls).map(drop))?;
            ensure!(runs >= calls, "{} ran {runs} times", variant.name());
            let (two, runs) = time_inside(proc.pid(), || two_at_once(ctx, calls))?;
            ensure!(runs >= 2 * calls, "{} ran {runs} times", variant.name());
            if let Err(e) = proc.stop() {
                eprintln!("bench: warning: {e:#}");
            }
            eprintln!(
                "bench: aggregation round {}/{rounds} {:<8} {one:6.1} ns/run alone, {two:6.1} \
                 with two processes",
                round + 1,
                variant.name()
            );
            out.one.entry(variant).or_default().push(one);
            out.two.entry(variant).or_default().push(two);
        }
        let _ = std::fs::remove_file(ctx.scratch.join("agg.db"));
    }
    Ok(out)
}

/// Two workload processes making `calls` checks each at the same time: on two CPUs, they count
/// on the same key.
fn two_at_once(ctx: &Ctx, calls: u64) -> Result<()> {
    check_interrupted()?;
    let spawn = || {
        Command::new(&ctx.workload)
            .args(["setuid", &calls.to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting a workload")
    };
    let mut a = spawn()?;
    let mut b = spawn()?;
    let (ra, rb) = (a.wait()?, b.wait()?);
    ensure!(ra.success() && rb.success(), "workload failed: {ra}, {rb}");
    thread::yield_now();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_and_contention_are_per_round() {
        let mut a = Aggregation::default();
        a.one.insert(Variant::Hash, vec![70.0, 80.0]);
        a.one.insert(Variant::Cgrp, vec![50.0, 50.0]);
        a.two.insert(Variant::Hash, vec![140.0, 80.0]);
        assert_eq!(a.diff(Variant::Hash, Variant::Cgrp), vec![20.0, 30.0]);
        assert_eq!(a.contention(Variant::Hash), vec![2.0, 1.0]);
        assert!(a.contention(Variant::Cgrp).is_empty());
    }
}
