//! Developer tasks for capspy: `cargo xtask <setup|build|run|test|stress|vm-test|bench>`.

mod bench;
mod build;
mod cmd;
mod layers;
mod setup;
mod stress;
mod test;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Build, run and test capspy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building the eBPF side needs (rust-src, bpf-linker) and mount tracefs.
    Setup(setup::Options),
    /// Set up, then build capspy (release).
    Build,
    /// Set up, build, then run target/release/capspy with the given arguments.
    Run {
        /// Arguments for capspy (put them after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Check that capspy/src imports follow the data path's stages (also run by `test`).
    Layers,
    /// Set up, lint (fmt, clippy, layers), then `cargo test --workspace --release`.
    Test(test::Options),
    /// Run the reliability and container tests N times in a row under CPU and fork load.
    Stress(stress::Options),
    /// Build, then prove the fexit and kprobe hooks in a Debian 6.1 VM and the tracepoint natively.
    VmTest(vm::Options),
    /// Build, then measure capspy's cost against the floor and its peers; writes BENCHMARKS.md.
    Bench(bench::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(opts) => setup::setup(&opts),
        Command::Build => build::build(),
        Command::Run { args } => build::run(&args),
        Command::Layers => layers::check(cmd::workspace_root()),
        Command::Test(opts) => test::test(&opts),
        Command::Stress(opts) => stress::stress(&opts),
        Command::VmTest(opts) => vm::vm_test(&opts),
        Command::Bench(opts) => bench::bench(&opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
