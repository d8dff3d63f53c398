//! `cargo xtask setup`: what building and running the eBPF side needs. Idempotent; each step
//! checks first so that a second run only costs a few process spawns.

use std::env;
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, cargo, command, output, run};

/// The bpf-linker release that matches the aya set pinned in the workspace.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Where the classic tracepoint's tracefs lives.
const TRACEFS: &str = "/sys/kernel/tracing";

#[derive(clap::Args, Default)]
pub struct Options {
    /// Check and install bpf-linker in DIR/bin instead of PATH and ~/.cargo/bin (to try the
    /// install without touching the working one).
    #[arg(long, value_name = "DIR")]
    bpf_linker_root: Option<PathBuf>,
    /// Reinstall bpf-linker even if a usable one is found.
    #[arg(long)]
    force_bpf_linker: bool,
}

pub fn setup(opts: &Options) -> Result<()> {
    let start = Instant::now();
    report_path();
    ensure_rust_src()?;
    ensure_bpf_linker(opts)?;
    ensure_tracefs();
    eprintln!("setup: done in {:.2?}", start.elapsed());
    Ok(())
}

fn report_path() {
    let bin = cmd::cargo_bin_dir();
    if cmd::path_has_cargo_bin() {
        eprintln!("setup: PATH: {} already on it, skipped", bin.display());
    } else {
        eprintln!(
            "setup: PATH: prepended {} for child processes",
            bin.display()
        );
    }
}

/// `-Z build-std=core` for the BPF target needs the nightly's library sources.
fn ensure_rust_src() -> Result<()> {
    let installed = output(command("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if installed.lines().any(|l| l.trim() == "rust-src") {
        eprintln!("setup: rust-src (nightly): installed, skipped");
        return Ok(());
    }
    eprintln!("setup: rust-src (nightly): installing");
    run(command("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// The LLVM that the nightly toolchain ships as a shared library.
struct NightlyLlvm {
    major: u32,
    /// `<sysroot>/lib/libLLVM.so.<version>-rust-<release>`
    lib: PathBuf,
}

impl NightlyLlvm {
    fn file_name(&self) -> &str {
        self.lib
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    }
}

fn nightly_llvm() -> Result<NightlyLlvm> {
    let vv = output(command("rustc").args(["+nightly", "-vV"]))?;
    let version = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .context("`rustc +nightly -vV` reports no LLVM version")?
        .trim();
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("unexpected LLVM version {version:?}"))?;

    let sysroot = output(command("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let mut libs: Vec<PathBuf> = fs::read_dir(&lib_dir)
        .with_context(|| format!("cannot list {}", lib_dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("libLLVM.so."))
        .map(|e| e.path())
        .collect();
    libs.sort();
    match libs.as_slice() {
        [lib] => Ok(NightlyLlvm {
            major,
            lib: lib.clone(),
        }),
        [] => bail!("no libLLVM.so.* in {}", lib_dir.display()),
        _ => bail!("several libLLVM.so.* in {}: {libs:?}", lib_dir.display()),
    }
}

/// bpf-linker must load the very LLVM the nightly compiles with, or it may reject the bitcode.
fn ensure_bpf_linker(opts: &Options) -> Result<()> {
    let llvm = nightly_llvm()?;
    let found = match &opts.bpf_linker_root {
        Some(root) => Some(root.join("bin").join("bpf-linker")).filter(|p| p.is_file()),
        None => cmd::which("bpf-linker"),
    };
    if let Some(bin) = &found
        && !opts.force_bpf_linker
    {
        match check_bpf_linker(bin, &llvm) {
            Ok(()) => {
                eprintln!(
                    "setup: bpf-linker {BPF_LINKER_VERSION} on nightly's LLVM {}: {} fine, skipped",
                    llvm.major,
                    bin.display()
                );
                return Ok(());
            }
            Err(why) => eprintln!("setup: bpf-linker: {} unusable: {why:#}", bin.display()),
        }
    }

    eprintln!(
        "setup: bpf-linker {BPF_LINKER_VERSION}: building against nightly's LLVM {} (about a minute)",
        llvm.major
    );
    let prefix = llvm_prefix(&llvm)?;
    let feature = format!("llvm-{}", llvm.major);
    let install = |locked: bool| {
        let mut cmd = cargo();
        cmd.env("LLVM_PREFIX", &prefix).args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            &feature,
        ]);
        if locked {
            cmd.arg("--locked");
        }
        if let Some(root) = &opts.bpf_linker_root {
            cmd.arg("--root").arg(root);
        }
        run(&mut cmd)
    };
    if let Err(err) = install(true) {
        eprintln!("setup: bpf-linker: install with --locked failed ({err:#}); retrying without");
        install(false)?;
    }

    let bin = match &opts.bpf_linker_root {
        Some(root) => root.join("bin").join("bpf-linker"),
        None => cmd::which("bpf-linker").context("bpf-linker installed but not found on PATH")?,
    };
    check_bpf_linker(&bin, &llvm).with_context(|| {
        format!(
            "{} is still unusable (another bpf-linker earlier on PATH?)",
            bin.display()
        )
    })?;
    eprintln!("setup: bpf-linker: installed {}", bin.display());
    Ok(())
}

/// Checks that `bin` runs (so its libLLVM resolves), is the expected release, and links the
/// nightly's libLLVM by name.
fn check_bpf_linker(bin: &Path, llvm: &NightlyLlvm) -> Result<()> {
    let version = output(command(bin).arg("--version"))?;
    let expected = format!("bpf-linker {BPF_LINKER_VERSION}");
    if version.trim() != expected {
        bail!("it is {:?}, want {expected:?}", version.trim());
    }
    // The DT_NEEDED names sit in .dynstr, within the first pages of the ELF file: reading 1 MiB
    // is enough and avoids reading the whole 40 MB binary on every run.
    let mut head = Vec::with_capacity(1 << 20);
    fs::File::open(bin)
        .and_then(|f| f.take(1 << 20).read_to_end(&mut head))
        .with_context(|| format!("cannot read {}", bin.display()))?;
    let name = llvm.file_name().as_bytes();
    if !head.windows(name.len()).any(|w| w == name) {
        bail!("it does not link {}", llvm.file_name());
    }
    Ok(())
}

/// Makes PREFIX/lib with `libLLVM.so` and the nightly's libLLVM file name, both symlinks to
/// the nightly's library, as bpf-linker's build script expects in `LLVM_PREFIX`. The prefix is
/// kept in the user's cache, not target/: the installed binary's RUNPATH points into it, so it
/// must survive `cargo clean` and /tmp cleanups.
fn llvm_prefix(llvm: &NightlyLlvm) -> Result<PathBuf> {
    let cache = env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set")?;
    let prefix = cache.join("capspy").join("llvm-prefix");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    // Drop links left by an older nightly.
    for entry in fs::read_dir(&lib)?.filter_map(Result::ok) {
        if entry.file_name().to_string_lossy().starts_with("libLLVM") {
            fs::remove_file(entry.path())?;
        }
    }
    for name in ["libLLVM.so", llvm.file_name()] {
        let link = lib.join(name);
        symlink(&llvm.lib, &link)
            .with_context(|| format!("cannot link {} to {}", link.display(), llvm.lib.display()))?;
    }
    eprintln!(
        "setup: LLVM prefix {} -> {}",
        prefix.display(),
        llvm.lib.display()
    );
    Ok(prefix)
}

/// The classic tracepoint needs tracefs; a fresh machine does not mount it. Only a warning on
/// failure: the other attach types work without it.
fn ensure_tracefs() {
    let mounted = fs::read_to_string("/proc/self/mounts").is_ok_and(|mounts| {
        mounts.lines().any(|line| {
            let mut fields = line.split_whitespace().skip(1);
            fields.next() == Some(TRACEFS) && fields.next() == Some("tracefs")
        })
    });
    if mounted {
        eprintln!("setup: tracefs at {TRACEFS}: mounted, skipped");
    } else if !cmd::is_root() {
        eprintln!("setup: warning: tracefs not mounted at {TRACEFS} and not root: not mounting");
    } else {
        match output(command("mount").args(["-t", "tracefs", "nodev", TRACEFS])) {
            Ok(_) => eprintln!("setup: tracefs: mounted at {TRACEFS}"),
            Err(err) => eprintln!("setup: warning: cannot mount tracefs at {TRACEFS}: {err:#}"),
        }
    }
}
