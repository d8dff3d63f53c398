//! `cargo xtask bench`: what capspy costs, measured side by side with the floor and its peers, all
//! figures from one run, printed as a table and written to `BENCHMARKS.md`.
//!
//! 1. Per-check cost: a `setuid(0)` loop (one CAP_SETUID check per call) under each variant
//!    (nothing, the floor, capspy's daemon, bpftrace, a streaming tracer), rounds rotated so
//!    drift hits every variant alike; an mmap loop (one advisory SYS_ADMIN check per call) as the
//!    common real-world check. Then the programs' own time per run from the kernel's BPF stats,
//!    and what each helper of the hot path costs here (bpftrace programs under the same stats).
//!    Then (1c) the aggregation alone: capspy's hash lookup against cgroup local storage, and one
//!    hot key counted by both CPUs at once; (1d) capspy's own program stopped after each stage
//!    of its hot path.
//! 2. Daemon cost: its CPU and memory while the host makes ~100,000 checks per second.
//! 3. Scale: 1,000 concurrent fake containers (cgroups `/docker/<id>`), each with its own known
//!    checks, attributed exactly; the kernel maps' memory at that size.
//! 4. Reading: `capspy ls` and `capspy profile` over a store of 10,000 workloads.
//! 5. Real work: a fork+exec loop, nginx under wrk and a `make -j2` build under nothing (twice a
//!    round: the second is an A/A control of the noise), `capspy watch`, bpftrace and a
//!    streaming tracer, in rounds.
//!
//! The stages, one module each: `process` (Ctrl-C, scratch folder, workload, child processes),
//! `cost` (sections 0 and 1), `inside` (1b, BPF stats), `aggregation` (1c), `stages` (1d), `daemon` (2), `scale` (3), `reading` (4),
//! `workloads` (5), then `report` (the run's figures, targets, number formatting, the document), `tables` and
//! `analysis` (the prose written from the figures).
//!
//! Everything the bench starts (processes, cgroups, files, the BPF stats switch) is undone by the
//! bench itself, by pid, on errors and Ctrl-C too.

mod aggregation;
mod analysis;
mod cost;
mod daemon;
mod inside;
mod process;
mod reading;
mod report;
mod scale;
mod stages;
mod tables;
mod workloads;

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result, ensure};

use crate::cmd::{self, cargo};
use cost::{check_counts, per_check};
use daemon::daemon_cost;
use inside::hot_path;
use process::{Ctx, Scratch, compile_workload, install_interrupt_handler};
use reading::reading;
use report::{LoadSampler, Machine, Report};
use scale::scale;

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
    /// Rounds of section 1c (aggregation alone, BPF stats).
    agg_rounds: usize,
    macro_rounds: usize,
    /// fork+execs per measurement of the shell loop.
    macro_execs: u64,
    /// C files of the generated project.
    macro_files: usize,
    wrk_secs: u64,
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
                agg_rounds: 1,
                macro_rounds: 1,
                macro_execs: 100,
                macro_files: 20,
                wrk_secs: 1,
            }
        } else {
            Plan {
                rounds: 21,
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
                agg_rounds: 9,
                macro_rounds: 8,
                macro_execs: 2_000,
                macro_files: 300,
                wrk_secs: 5,
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
    let capspy = binaries(opts)?;
    let plan = Plan::new(opts.quick);
    let scratch = Scratch::new()?;
    let ctx = Ctx {
        workload: compile_workload(&scratch.0)?,
        capspy: capspy.canonicalize().context("capspy binary")?,
        scratch: scratch.0.clone(),
        plan,
    };
    let started = Instant::now();
    let load = LoadSampler::start();

    step("checks per call, counted by `capspy run`");
    let counts = check_counts(&ctx)?;
    step("per-check cost, rounds of every variant");
    let cost = per_check(&ctx)?;
    step("time inside the BPF programs (kernel BPF stats)");
    let inside = hot_path(&ctx)?;
    step("the aggregation alone: hash map against cgroup storage, one and two CPUs");
    let aggregation = aggregation::aggregation(&ctx)?;
    step("capspy's program stage by stage (kernel BPF stats)");
    let stages = stages::stages(&ctx)?;
    step("daemon CPU and memory under a steady load");
    let daemon = daemon_cost(&ctx)?;
    step(&format!("{} concurrent cgroups", plan.cgroups));
    let scale = scale(&ctx)?;
    step(&format!("reading a store of {} workloads", plan.workloads));
    let reading = reading(&ctx)?;
    step("real workloads under every variant, in rounds");
    let workloads = workloads::macro_workloads(&ctx)?;

    let report = Report {
        plan,
        machine: Machine {
            load_samples: load.finish(),
            ..Machine::probe()
        },
        counts,
        cost,
        inside,
        aggregation,
        stages,
        daemon,
        scale,
        reading,
        workloads,
        elapsed: started.elapsed(),
        quick: opts.quick,
    };
    write_report(&report, opts)
}

/// The capspy binary to measure (built unless given) and the `bench_store` example, both
/// built before any measurement: a build waiting for cargo's lock or compiling must not
/// overlap one.
fn binaries(opts: &Options) -> Result<PathBuf> {
    let capspy = if let Some(path) = &opts.capspy {
        path.clone()
    } else {
        crate::build::build()?;
        cmd::target_dir()?.join("release").join("capspy")
    };
    cmd::run(cargo().args([
        "build",
        "--release",
        "--package",
        "capspy",
        "--example",
        "bench_store",
    ]))?;
    Ok(capspy)
}

/// Prints the tables, and writes them with the method to BENCHMARKS.md (or `--output`).
fn write_report(report: &Report, opts: &Options) -> Result<()> {
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
