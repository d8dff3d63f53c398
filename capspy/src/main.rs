use std::process::ExitCode;

use clap::{Parser, Subcommand};

use capspy::commands::{baseline, diff, merge, watch};

use capspy::commands::{bench_probe, caps, decode, doctor, ls, profile, record, run, verify};

/// Observe the Linux capability checks a command makes, and print the least privilege it needs.
#[derive(Debug, Parser)]
#[command(name = "capspy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run CMD, trace the capability checks of it and its descendants, print what it needed.
    Run(run::RunArgs),
    /// Record every capability check on the host into the store, until stopped.
    Record(record::RecordArgs),
    /// List workloads and running containers: granted, used, and droppable capabilities.
    Ls(ls::LsArgs),
    /// Print the profile of a workload or container from the store.
    Profile(profile::ProfileArgs),
    /// Report which hook methods load on this kernel, and why the others do not.
    Doctor,
    /// Print the capability names of a mask such as /proc/PID/status shows (e.g. 00000000a80425fb).
    Decode(decode::DecodeArgs),
    /// Show the five capability sets of a process, or of every process of a container.
    Caps(caps::CapsArgs),
    /// Record like `record`, and alert when a workload goes beyond its baseline.
    Watch(watch::WatchArgs),
    /// Save workloads' profiles from the store as baseline files, or check a folder of them.
    Baseline(baseline::BaselineArgs),
    /// Exit 0 when CURRENT needs nothing beyond BASELINE, 1 on drift, 2 on error.
    Diff(diff::DiffArgs),
    /// Merge profiles from many nodes into one per workload.
    Merge(merge::MergeArgs),
    /// Run a container under its profile (and each capability removed): does it still work?
    Verify(verify::VerifyArgs),
    /// Attach a benchmark comparison program until stopped (used by `cargo xtask bench`).
    #[command(hide = true)]
    BenchProbe(bench_probe::BenchProbeArgs),
}

/// capspy's own failures exit with 2, as command line errors do; `run` otherwise exits with the
/// traced command's status.
const EXIT_ERROR: u8 = 2;

/// Keeps large allocations (the kernel's BTF and symbol table, each megabytes, read at start-up)
/// in their own mappings, returned to the system when freed. glibc otherwise raises the threshold
/// to the largest block freed so far, after which such blocks are carved from the heap, whose
/// freed pages stay resident and fragment: measured, the start-up peak (VmHWM) of `capspy record`
/// fell from 31.3 to 28.5 MB.
fn fix_mmap_threshold() {
    const THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only tunes the allocator; called before any thread is started.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) };
}

fn main() -> ExitCode {
    fix_mmap_threshold();
    let cli = Cli::parse();
    if let Err(e) = capspy::commands::logger::init() {
        eprintln!("capspy: {e}");
        return ExitCode::from(EXIT_ERROR);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("capspy: starting the runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Record(args) => record::record(args).await,
            Command::Ls(args) => ls::ls(&args),
            Command::Profile(args) => profile::profile(&args).await,
            Command::Doctor => doctor::doctor(),
            Command::Decode(args) => decode::decode(&args),
            Command::Caps(args) => caps::caps(args).await,
            Command::Watch(args) => watch::watch(args).await,
            Command::Baseline(args) => baseline::baseline(&args),
            Command::Diff(args) => diff::diff(&args),
            Command::Merge(args) => merge::merge(&args),
            Command::Verify(args) => verify::verify(args).await,
            Command::BenchProbe(args) => bench_probe::bench_probe(&args).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(EXIT_ERROR)),
        Err(e) => {
            eprintln!("capspy: {}", one_line(&e));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// The error and its causes on one line, without repeating a cause its parent already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
