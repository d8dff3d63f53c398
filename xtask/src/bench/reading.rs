//! Section 4, reading a big store: `capspy ls` and `capspy profile`, wall and CPU time.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, ensure};

use super::process::{Ctx, check_interrupted, children_cpu_secs};
use super::report::median;
use crate::cmd;

pub(super) struct Reading {
    pub(super) workloads: usize,
    pub(super) running: usize,
    pub(super) store_kib: u64,
    pub(super) build_secs: f64,
    /// (command shown, wall seconds per run, CPU seconds per run).
    pub(super) commands: Vec<(String, Vec<f64>, Vec<f64>)>,
}

pub(super) fn reading(ctx: &Ctx) -> Result<Reading> {
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
