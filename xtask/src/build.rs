//! `cargo xtask build` and `cargo xtask run`.

use std::os::unix::process::CommandExt as _;
use std::process::Stdio;

use anyhow::{Context as _, Result};

use crate::cmd::{self, cargo};
use crate::setup;

/// Set up, then build the capspy binary (its build script builds the eBPF object).
pub fn build() -> Result<()> {
    setup::setup(&setup::Options::default())?;
    build_capspy()
}

fn build_capspy() -> Result<()> {
    cmd::run(cargo().args(["build", "--release", "--package", "capspy"]))
}

/// Set up, build, then replace this process with `capspy ARGS...`. Exec rather than
/// spawn-and-wait: Ctrl-C and other signals reach capspy alone (xtask does not die first and
/// leave it writing to the terminal), and the caller sees capspy's own exit status, including
/// death by a signal (which shells report as 128+signal).
pub fn run(args: &[String]) -> Result<()> {
    setup::setup(&setup::Options::default())?;
    build_capspy()?;
    let bin = cmd::target_dir()?.join("release").join("capspy");
    let mut capspy = cmd::command(&bin);
    capspy.args(args).stdout(Stdio::inherit());
    eprintln!("+ {}", cmd::display(&capspy));
    let err = capspy.exec();
    Err(err).with_context(|| format!("cannot run {}", bin.display()))
}
