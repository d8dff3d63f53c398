use std::process::ExitCode;

use clap::{Parser, Subcommand};

use capspy::commands::{bench_probe, doctor, ls, profile, record, run, verify};

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
    /// Run a container under its profile (and each capability removed): does it still work?
    Verify(verify::VerifyArgs),
    /// Attach a benchmark comparison program until stopped (used by `cargo xtask bench`).
    #[command(hide = true)]
    BenchProbe(bench_probe::BenchProbeArgs),
}

/// capspy's own failures exit with 2, as command line errors do; `run` otherwise exits with the
/// traced command's status.
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
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
            Command::Profile(args) => profile::profile(&args),
            Command::Doctor => doctor::doctor(),
            Command::Verify(args) => verify::verify(args).await,
            Command::BenchProbe(args) => bench_probe::bench_probe(&args).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(EXIT_ERROR)),
        Err(e) => {
            eprintln!("capspy: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
