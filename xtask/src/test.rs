//! `cargo xtask test`: the project's test entry point (CI runs exactly this).

use std::process::Stdio;

use anyhow::Result;

use crate::cmd::{self, cargo};
use crate::setup;

#[derive(clap::Args)]
pub struct Options {
    /// Skip `cargo fmt --check` and `cargo clippy -D warnings`.
    #[arg(long)]
    no_lint: bool,
    /// Extra arguments for `cargo test` (after `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cargo_test_args: Vec<String>,
}

pub fn test(opts: &Options) -> Result<()> {
    setup::setup(&setup::Options::default())?;
    if opts.no_lint {
        eprintln!("test: --no-lint: skipping fmt and clippy");
    } else {
        lint()?;
    }
    report_root();
    // Release, so that `cargo xtask run` reuses the same build of the eBPF object.
    cmd::run(
        cargo()
            .args(["test", "--workspace", "--release"])
            .args(&opts.cargo_test_args)
            .stdout(Stdio::inherit()),
    )
}

/// Cheap checks first, so a formatting slip fails in seconds rather than after the build.
fn lint() -> Result<()> {
    cmd::run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    cmd::run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--release",
        "--",
        "-D",
        "warnings",
    ]))
}

fn report_root() {
    match cmd::euid() {
        Some(0) => eprintln!("test: running as root: root-only integration tests will run"),
        uid => eprintln!(
            "test: WARNING: not running as root (euid {}): the integration tests that load \
             eBPF programs or start containers need root and will fail",
            uid.map_or_else(|| "unknown".to_owned(), |u| u.to_string())
        ),
    }
}
