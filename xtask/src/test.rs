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
    /// Skip the VM test matrix (`cargo xtask vm-test`), which the full run ends with.
    #[arg(long)]
    no_vm: bool,
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
            // The default members: capspy-ebpf only builds for the BPF target (build.rs does).
            .args(["test", "--release"])
            .args(&opts.cargo_test_args)
            .stdout(Stdio::inherit()),
    )?;
    if opts.no_vm {
        eprintln!("test: --no-vm: skipping the VM test matrix");
        return Ok(());
    }
    // fexit and kprobe can only be proven on another kernel (docs/kernel-matrix.md).
    crate::vm::vm_test_default()
}

/// Cheap checks first, so a formatting slip fails in seconds rather than after the build.
fn lint() -> Result<()> {
    crate::layers::check(cmd::workspace_root())?;
    cmd::run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    cmd::run(cargo().args([
        "clippy",
        "--all-targets",
        "--release",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The kernel program only compiles for BPF, with the nightly toolchain.
    let mut ebpf = cmd::command("rustup");
    ebpf.current_dir(cmd::workspace_root().join("capspy-ebpf"))
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--release",
            "--",
            "-D",
            "warnings",
        ]);
    cmd::run(&mut ebpf)
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
