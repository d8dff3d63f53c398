//! `cargo xtask vm-test`: prove the fexit and kprobe hooks on a real distribution kernel in a VM,
//! and the tracepoint hook natively, with the same scenarios, then compare the profiles.
//!
//! VMs boot Debian's 5.10, 6.1 and 6.12 cloud kernels (fexit, kprobe, BTF, no
//! `capability:cap_capable` tracepoint) under qemu's TCG with an initramfs of busybox, capspy and
//! `xtask/vm/capprobe.c`. Each `/init` (`xtask/vm/init`) runs `xtask/vm/scenarios.sh` once per
//! hook, in one boot, and prints one `CAPSPY-*` line per result on the serial console.
//!
//! The stages, one module each: `kernel` (which Debian kernels, fetched and cached), `initramfs`,
//! `qemu` (running the VMs and the native side), `console` (the protocol lines), `expect` (what
//! each scenario must show, as measured) and `evaluate` (the checks and the comparison).

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

use crate::build;
use crate::cmd;

mod console;
mod evaluate;
mod expect;
mod initramfs;
mod kernel;
mod qemu;

use evaluate::evaluate;
use initramfs::{build_initramfs, check_tools};
use kernel::{Kernel, KernelCache, Request, SERIES};
use qemu::{boot_all, run_native};

#[derive(clap::Args)]
pub struct Options {
    /// Debian kernel package to boot; repeat to boot several [default:
    /// the 5.10, 6.1 and 6.12 cloud kernels of docs/kernel-matrix.md, or the newest of each
    /// series that apt has].
    #[arg(long = "kernel-package", value_name = "PACKAGE")]
    kernel_packages: Vec<String>,
    /// Where downloaded kernels are kept between runs [default: ~/.cache/capspy/vm-kernels].
    #[arg(long, value_name = "DIR")]
    kernel_cache: Option<PathBuf>,
    /// Hard time limit for each VM, in seconds; qemu is killed when it runs out.
    #[arg(long, default_value_t = 360)]
    timeout: u64,
    /// Skip the native tracepoint run (and so the comparison with it).
    #[arg(long)]
    no_native: bool,
}

/// Wall-clock time per phase, for the closing line.
struct Timings {
    phases: Vec<(String, Duration)>,
    start: Instant,
}

impl Timings {
    fn lap(&mut self, name: impl Into<String>) {
        self.phases.push((name.into(), self.start.elapsed()));
        self.start = Instant::now();
    }
}

/// The matrix as `cargo xtask test` runs it: the default kernel, and the native side.
pub fn vm_test_default() -> Result<()> {
    vm_test(&Options {
        kernel_packages: Vec::new(),
        kernel_cache: None,
        timeout: 360,
        no_native: false,
    })
}

pub fn vm_test(opts: &Options) -> Result<()> {
    ensure!(
        cmd::is_root(),
        "vm-test needs root: it makes /dev/console for the initramfs and runs capspy natively"
    );
    let busybox = check_tools()?;
    let mut timings = Timings {
        phases: Vec::new(),
        start: Instant::now(),
    };

    build::build()?;
    let target = cmd::target_dir()?;
    let capspy = target.join("release").join("capspy");
    timings.lap("build");

    let cache = target.join("vm-cache");
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let stage = cache.join("initramfs");
    let initrd = cache.join("initrd.gz");
    build_initramfs(&stage, &initrd, &capspy, &busybox)?;
    timings.lap("initramfs");

    let requests: Vec<Request> = if opts.kernel_packages.is_empty() {
        SERIES.iter().map(Request::Series).collect()
    } else {
        opts.kernel_packages
            .iter()
            .map(|p| Request::Package(p.clone()))
            .collect()
    };
    let kernels = KernelCache {
        dir: opts
            .kernel_cache
            .clone()
            .unwrap_or_else(KernelCache::default_dir),
    };
    let fetched = requests
        .iter()
        .map(|request| kernels.fetch(request))
        .collect::<Result<Vec<Kernel>>>()?;
    timings.lap("fetch");
    let logs: Vec<PathBuf> = fetched
        .iter()
        .map(|k| cache.join(format!("console-{}.log", k.package)))
        .collect();
    let vms = boot_all(&fetched, &initrd, &logs, Duration::from_secs(opts.timeout))?;
    timings.lap("VMs");

    let native = if opts.no_native {
        None
    } else {
        let log = cache.join("native.log");
        let lines = run_native(&stage, &capspy, &log)?;
        timings.lap("native");
        Some(lines)
    };

    let report = evaluate(&vms, native.as_ref());
    eprint!("{}", report.text);
    let summary = cache.join("summary.md");
    fs::write(&summary, &report.markdown)
        .with_context(|| format!("writing {}", summary.display()))?;
    eprintln!("\nvm-test: Markdown summary in {}", summary.display());
    for log in &logs {
        eprintln!("vm-test: VM console in {}", log.display());
    }
    let timing: Vec<String> = timings
        .phases
        .iter()
        .map(|(name, d)| format!("{name} {:.1} s", d.as_secs_f64()))
        .collect();
    eprintln!("vm-test: timings: {}", timing.join(", "));
    if report.failures > 0 {
        bail!("vm-test: {} check(s) failed", report.failures);
    }
    eprintln!("vm-test: all checks passed");
    Ok(())
}
