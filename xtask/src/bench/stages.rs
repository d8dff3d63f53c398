//! Section 1d, capspy's own program stage by stage: the hot path stopped after each of its
//! stages (`capspy record --bench-stop-after N` loads the cgroup storage object built with the
//! stage cuts; capspy itself runs the object without them), beside the floor. Times are inside
//! the programs (kernel BPF stats), rounds rotated as in section 1c; what each stage adds is
//! the difference to the stage before it in the same round.

use anyhow::{Context as _, Result, ensure};

use super::cost::{Variant, attach};
use super::inside::{BpfStats, time_inside};
use super::process::Ctx;

/// What the hot path has done when it stops after each stage (`BENCH_STOP_AFTER`), then the
/// whole program as capspy loads it. For `setuid(0)` as root on tp_btf every stage does its
/// work: the call-site class comes from the cache, the check is an own-id one, its cell exists.
pub(super) const STAGES: [&str; 7] = [
    "`bpf_get_current_pid_tgid`, the self-tgid check",
    "+ the current task, `bpf_task_pt_regs`, `orig_ax`, the call-site class (array lookup)",
    "+ the user-namespace class (`INIT_USER_NS` lookup)",
    "+ the bucket (`task->real_cred`, `task->comm` head, runtime prefixes)",
    "+ the setid origin (syscall number and arguments, the cred's ids)",
    "+ the cgroup storage cell (`task->cgroups->dfl_cgrp`, `bpf_cgrp_storage_get`)",
    "+ the count (read the cell, atomic add): capspy as loaded",
];

/// ns per run inside each program, one value per round.
#[derive(Default)]
pub(super) struct Stages {
    pub(super) rounds: usize,
    pub(super) calls: u64,
    pub(super) floor: Vec<f64>,
    /// By stage, 1 to [`STAGES`]`.len()` at index 0 to 6.
    pub(super) by_stage: Vec<Vec<f64>>,
}

impl Stages {
    /// Per round, what stage `i` (0-based) adds to the one before it (the floor for the first).
    pub(super) fn increment(&self, i: usize) -> Vec<f64> {
        let before = if i == 0 {
            &self.floor
        } else {
            &self.by_stage[i - 1]
        };
        self.by_stage[i]
            .iter()
            .zip(before)
            .map(|(x, y)| x - y)
            .collect()
    }

    /// Per round, the whole program over the floor.
    pub(super) fn over_floor(&self) -> Vec<f64> {
        self.by_stage.last().map_or_else(Vec::new, |full| {
            full.iter().zip(&self.floor).map(|(x, y)| x - y).collect()
        })
    }
}

pub(super) fn stages(ctx: &Ctx) -> Result<Stages> {
    let calls = ctx.plan.stats_calls;
    let rounds = ctx.plan.agg_rounds;
    let _stats = BpfStats::enable()?;
    let mut out = Stages {
        rounds,
        calls,
        by_stage: vec![Vec::new(); STAGES.len()],
        ..Stages::default()
    };
    // 0 is the floor, n the hot path stopped after stage n (the last: not stopped).
    let n = STAGES.len() + 1;
    for round in 0..rounds {
        for program in (0..n).map(|i| (i + round) % n) {
            let mut proc = if program == 0 {
                attach(ctx, Variant::Floor, "stages")?
                    .proc
                    .context("the floor without a process")?
            } else {
                let stop = program.to_string();
                let extra: &[&str] = if program < n - 1 {
                    &["--bench-stop-after", &stop]
                } else {
                    &[]
                };
                let store = ctx.scratch.join(format!("stages-{program}.db"));
                let daemon = ctx.start_daemon(&store, extra)?;
                std::thread::sleep(std::time::Duration::from_millis(300));
                daemon
            };
            ctx.timed("setuid", ctx.plan.warmup_calls)?;
            let (ns, runs) = time_inside(proc.pid(), || ctx.timed("setuid", calls).map(drop))?;
            if let Err(e) = proc.stop() {
                eprintln!("bench: warning: {e:#}");
            }
            ensure!(runs >= calls, "stage {program} ran {runs} times");
            eprintln!(
                "bench: stages round {}/{rounds} {} {ns:6.1} ns/run",
                round + 1,
                if program == 0 {
                    "floor  ".to_owned()
                } else {
                    format!("stage {program}")
                }
            );
            if program == 0 {
                out.floor.push(ns);
            } else {
                out.by_stage[program - 1].push(ns);
            }
        }
        for program in 1..n {
            let _ = std::fs::remove_file(ctx.scratch.join(format!("stages-{program}.db")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_are_per_round_over_the_stage_before() {
        let mut s = Stages {
            floor: vec![30.0, 40.0],
            by_stage: vec![vec![31.0, 42.0]; STAGES.len()],
            ..Stages::default()
        };
        s.by_stage[1] = vec![41.0, 45.0];
        s.by_stage[6] = vec![60.0, 70.0];
        assert_eq!(s.increment(0), vec![1.0, 2.0]);
        assert_eq!(s.increment(1), vec![10.0, 3.0]);
        assert_eq!(s.over_floor(), vec![30.0, 30.0]);
    }
}
