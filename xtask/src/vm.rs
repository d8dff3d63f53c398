//! `cargo xtask vm-test`: prove the fexit and kprobe hooks on a real distribution kernel in a VM,
//! and the tracepoint hook natively, with the same scenarios, then compare the profiles.
//!
//! VMs boot Debian's 5.10, 6.1 and 6.12 cloud kernels (fexit, kprobe, BTF, no
//! `capability:cap_capable` tracepoint) under qemu's TCG with an initramfs of busybox, capspy and
//! `xtask/vm/capprobe.c`. Each `/init` (`xtask/vm/init`) runs `xtask/vm/scenarios.sh` once per
//! hook, in one boot, and prints one `CAPSPY-*` line per result on the serial console; this file
//! parses them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::build;
use crate::cmd;

/// Busybox applets the init script and the scenarios call.
const APPLETS: &[&str] = &[
    "cat", "chown", "echo", "grep", "ip", "kill", "mkdir", "mount", "ping", "poweroff", "printf",
    "rm", "sed", "sh", "sleep", "tr", "true", "umount", "uname",
];

/// Kernel options the VM cannot do without: no modules are loaded, so all must be built in.
/// (BTF, kprobes and the rest are what `capspy doctor` reports on.)
const REQUIRED_CONFIG: &[&str] = &[
    "CONFIG_BLK_DEV_INITRD",
    "CONFIG_RD_GZIP",
    "CONFIG_SERIAL_8250_CONSOLE",
    "CONFIG_DEVTMPFS",
    "CONFIG_TMPFS",
    "CONFIG_CGROUPS",
    "CONFIG_BPF_SYSCALL",
];

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

// --- tools ----------------------------------------------------------------------------------

/// Fails early, naming the Debian package, when a tool is missing. Returns busybox's path.
fn check_tools() -> Result<PathBuf> {
    let tools = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("cpio", "cpio"),
        ("gzip", "gzip"),
        ("gcc", "build-essential"),
        ("apt-get", "apt"),
        ("dpkg-deb", "dpkg"),
        ("mknod", "coreutils"),
        ("ldd", "libc-bin"),
    ];
    let missing: Vec<String> = tools
        .iter()
        .filter(|(tool, _)| cmd::which(tool).is_none())
        .map(|(tool, pkg)| format!("{tool} (package {pkg})"))
        .collect();
    ensure!(missing.is_empty(), "vm-test needs: {}", missing.join(", "));
    let busybox =
        cmd::which("busybox").context("vm-test needs busybox (package busybox-static)")?;
    let elf = fs::read(&busybox).with_context(|| format!("reading {}", busybox.display()))?;
    ensure!(
        !elf_has_interpreter(&elf),
        "{} is dynamically linked: the initramfs needs a static one (package busybox-static)",
        busybox.display()
    );
    Ok(busybox)
}

/// Whether a 64-bit little-endian ELF file has a PT_INTERP header (is dynamically linked).
fn elf_has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| u32_at(phoff + i * usize::from(phentsize)) == Some(PT_INTERP))
}

// --- kernel ---------------------------------------------------------------------------------

/// Where apt finds a series' packages.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Archive {
    /// The machine's own apt sources (bookworm and bookworm-security).
    System,
    /// Debian 11, through a private apt configuration in the kernel cache that only this
    /// download uses: the machine's sources are left alone.
    Bullseye,
}

/// A Debian kernel series the matrix boots by default.
#[derive(Debug)]
struct Series {
    /// The first two numbers of `uname -r`.
    name: &'static str,
    /// The package measured in docs/kernel-matrix.md.
    measured: &'static str,
    /// Packages of the series are named `<prefix><number>[+debNN]-cloud-amd64-unsigned`.
    prefix: &'static str,
    archive: Archive,
}

const CLOUD_SUFFIX: &str = "-cloud-amd64-unsigned";

/// The default matrix, oldest first: Debian 11's 5.10, Debian 12's 6.1, and the 6.12 that
/// Debian 12 ships for its later point releases (bookworm-security carries the same linux-6.12
/// as bookworm-backports). If the archive drops a measured package, the newest package of its
/// series that downloads is booted instead.
const SERIES: &[Series] = &[
    Series {
        name: "5.10",
        measured: "linux-image-5.10.0-43-cloud-amd64-unsigned",
        prefix: "linux-image-5.10.0-",
        archive: Archive::Bullseye,
    },
    Series {
        name: "6.1",
        measured: "linux-image-6.1.0-47-cloud-amd64-unsigned",
        prefix: "linux-image-6.1.0-",
        archive: Archive::System,
    },
    Series {
        name: "6.12",
        measured: "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
        prefix: "linux-image-6.12.",
        archive: Archive::System,
    },
];

impl Series {
    /// The number that orders the series' packages: 47 in
    /// `linux-image-6.1.0-47-cloud-amd64-unsigned`, 117 in `linux-image-6.12.117+deb12-...`.
    fn number(&self, package: &str) -> Option<u32> {
        let middle = package
            .strip_prefix(self.prefix)?
            .strip_suffix(CLOUD_SUFFIX)?;
        let (digits, tail) = match middle.split_once("+deb") {
            Some((digits, release)) => (digits, release),
            None => (middle, "0"),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(digits) || !all_digits(tail) {
            return None;
        }
        digits.parse().ok()
    }

    /// The `apt-cache search` pattern for the series' packages.
    fn pattern(&self) -> String {
        let prefix = self.prefix.replace('.', r"\.");
        format!(r"^{prefix}[0-9]+(\+deb[0-9]+)?{CLOUD_SUFFIX}$")
    }

    /// The series a package name belongs to.
    fn of(package: &str) -> Option<&'static Self> {
        SERIES.iter().find(|s| s.number(package).is_some())
    }
}

/// What to boot: a series (its measured package, else its newest), or a named package.
enum Request {
    Series(&'static Series),
    Package(String),
}

struct Kernel {
    package: String,
    vmlinuz: PathBuf,
}

/// The kernels, kept between runs on this machine: one folder per package with its `vmlinuz`
/// and `config`, and the private apt state for Debian 11.
struct KernelCache {
    dir: PathBuf,
}

impl KernelCache {
    /// `$XDG_CACHE_HOME/capspy/vm-kernels` (`~/.cache/...`): outside the checkout, so that a
    /// fresh clone on the same machine does not download them again.
    fn default_dir() -> PathBuf {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("capspy")
            .join("vm-kernels")
    }

    fn cached(&self, package: &str) -> Option<Kernel> {
        let vmlinuz = self.dir.join(package).join("vmlinuz");
        vmlinuz.is_file().then(|| Kernel {
            package: package.to_string(),
            vmlinuz,
        })
    }

    /// The newest cached package of a series.
    fn newest_cached(&self, series: &Series) -> Option<Kernel> {
        let mut cached: Vec<(u32, String)> = fs::read_dir(&self.dir)
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                Some((series.number(&name)?, name))
            })
            .filter(|(_, name)| self.cached(name).is_some())
            .collect();
        cached.sort();
        self.cached(&cached.pop()?.1)
    }

    /// The kernel from the cache, or downloaded with apt and unpacked into it. Other runs on
    /// the machine wait for the lock rather than download the same package at the same time.
    fn fetch(&self, request: &Request) -> Result<Kernel> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let _lock = Lock::exclusive(&self.dir.join("lock"))?;
        let (first, series, archive) = match request {
            Request::Series(s) => (s.measured.to_string(), Some(*s), s.archive),
            Request::Package(p) => (
                p.clone(),
                None,
                Series::of(p).map_or(Archive::System, |s| s.archive),
            ),
        };
        if let Some(kernel) = self.cached(&first) {
            eprintln!("vm-test: kernel {first} (cached in {})", self.dir.display());
            return Ok(kernel);
        }
        if let Some(kernel) = series.and_then(|s| self.newest_cached(s)) {
            eprintln!(
                "vm-test: kernel {} (cached in {})",
                kernel.package,
                self.dir.display()
            );
            return Ok(kernel);
        }
        let apt = Apt::new(self, archive)?;
        let mut errors = Vec::new();
        let mut candidates = vec![first];
        let mut updated = false;
        let mut discovered = false;
        while let Some(package) = candidates.pop() {
            let mut fetched = self.download(&apt, &package);
            if fetched.is_err() && !updated {
                // Stale or missing package lists are the usual reason on a fresh machine.
                updated = true;
                apt.update()?;
                fetched = self.download(&apt, &package);
            }
            match fetched {
                Ok(kernel) => {
                    if let Some(series) = series.filter(|s| s.measured != kernel.package) {
                        eprintln!(
                            "vm-test: NOTE: {} is not in the archive any more; booting the \
                             newest Linux {} there, {}",
                            series.measured, series.name, kernel.package
                        );
                    }
                    return Ok(kernel);
                }
                Err(e) => errors.push(format!("{package}: {e:#}")),
            }
            if let (Some(series), false) = (series, discovered) {
                discovered = true;
                // Oldest first: pop() tries the newest next.
                candidates = apt.search(series)?;
                candidates.retain(|p| p != series.measured);
            }
        }
        bail!(
            "no kernel package could be fetched:\n  {}",
            errors.join("\n  ")
        )
    }

    fn download(&self, apt: &Apt, package: &str) -> Result<Kernel> {
        let work = self.dir.join(format!("tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&work);
        let result = self.download_into(apt, package, &work);
        let _ = fs::remove_dir_all(&work);
        result
    }

    fn download_into(&self, apt: &Apt, package: &str, work: &Path) -> Result<Kernel> {
        let downloads = work.join("downloads");
        fs::create_dir_all(&downloads)?;
        cmd::run(
            apt.get()
                .args(["download", "-q", package])
                .current_dir(&downloads),
        )?;
        let deb = fs::read_dir(&downloads)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .context("apt-get download left no .deb")?;
        let unpacked = work.join("unpacked");
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
        let boot = unpacked.join("boot");
        let file_starting = |prefix: &str| -> Result<PathBuf> {
            fs::read_dir(&boot)
                .with_context(|| format!("reading {}", boot.display()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
                })
                .with_context(|| format!("{package} has no /boot/{prefix}*"))
        };
        let config = fs::read_to_string(file_starting("config-")?)?;
        let missing: Vec<&str> = REQUIRED_CONFIG
            .iter()
            .copied()
            .filter(|opt| !config.lines().any(|l| l == format!("{opt}=y")))
            .collect();
        ensure!(
            missing.is_empty(),
            "{package} lacks built-in {} (the VM loads no modules)",
            missing.join(", ")
        );
        // Only the image and its config are kept: the modules are not needed.
        let staging = work.join("kept");
        fs::create_dir_all(&staging)?;
        fs::rename(file_starting("vmlinuz-")?, staging.join("vmlinuz"))?;
        fs::write(staging.join("config"), config)?;
        let dir = self.dir.join(package);
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&staging, &dir)?;
        eprintln!("vm-test: kernel {package} cached in {}", dir.display());
        self.cached(package)
            .context("the kernel vanished from the cache")
    }
}

/// apt-get and apt-cache, with the machine's sources or a private configuration.
struct Apt {
    /// `-o` options that point apt at the private configuration; empty for the system's.
    options: Vec<String>,
}

impl Apt {
    fn new(cache: &KernelCache, archive: Archive) -> Result<Self> {
        let (sources, name) = match archive {
            Archive::System => {
                return Ok(Self {
                    options: Vec::new(),
                });
            }
            Archive::Bullseye => (BULLSEYE_SOURCES, "apt-bullseye"),
        };
        let root = cache.dir.join(name);
        for dir in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
            fs::create_dir_all(root.join(dir))?;
        }
        fs::write(root.join("debian.sources"), sources)?;
        let status = root.join("status");
        if !status.exists() {
            fs::write(&status, "")?;
        }
        let dir = |sub: &str| root.join(sub).display().to_string();
        let options = [
            ("Dir::Etc::SourceList", dir("debian.sources")),
            ("Dir::Etc::SourceParts", dir("sources.list.d")),
            ("Dir::State::Lists", dir("lists")),
            ("Dir::Cache", dir("cache")),
            ("Dir::State::Status", dir("status")),
        ];
        Ok(Self {
            options: options
                .iter()
                .flat_map(|(k, v)| ["-o".to_string(), format!("{k}={v}")])
                .collect(),
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut apt = Command::new(program);
        // As root apt would drop to _apt, which cannot write in the cache, and warn about it.
        apt.args(["-o", "APT::Sandbox::User=root"])
            .args(&self.options);
        apt
    }

    fn get(&self) -> Command {
        self.command("apt-get")
    }

    fn update(&self) -> Result<()> {
        cmd::run(self.get().args(["update", "-q"]))
    }

    /// The series' package names apt knows, oldest first.
    fn search(&self, series: &Series) -> Result<Vec<String>> {
        let out = cmd::output(
            self.command("apt-cache")
                .args(["search", "--names-only"])
                .arg(series.pattern()),
        )?;
        let mut names: Vec<(u32, String)> = out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|name| Some((series.number(name)?, name.to_string())))
            .collect();
        names.sort();
        Ok(names.into_iter().map(|(_, n)| n).collect())
    }
}

/// Debian 11 and its security updates, where its 5.10 kernels are. Package lists only.
const BULLSEYE_SOURCES: &str = "\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bullseye
Components: main
Targets: Packages
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bullseye-security
Components: main
Targets: Packages
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

/// An exclusive `flock` on a file, released when dropped (or when the process dies).
struct Lock {
    _file: fs::File,
}

impl Lock {
    fn exclusive(path: &Path) -> Result<Self> {
        let file =
            fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        // SAFETY: flock(2) on a descriptor we own.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("locking {}", path.display()));
        }
        Ok(Self { _file: file })
    }
}

// --- initramfs ------------------------------------------------------------------------------

fn vm_dir() -> PathBuf {
    cmd::workspace_root().join("xtask").join("vm")
}

fn build_initramfs(stage: &Path, initrd: &Path, capspy: &Path, busybox: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(stage);
    for dir in ["bin", "dev", "proc", "sys", "tmp"] {
        fs::create_dir_all(stage.join(dir))?;
    }
    let bin = stage.join("bin");
    copy(busybox, &bin.join("busybox"))?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet))?;
    }
    copy(capspy, &bin.join("capspy"))?;
    // capspy links glibc dynamically: its libraries go where ldd found them.
    let ldd = cmd::output(Command::new("ldd").arg(capspy))?;
    for lib in shared_libraries(&ldd) {
        let inside = stage.join(lib.strip_prefix("/").unwrap_or(&lib));
        fs::create_dir_all(inside.parent().unwrap_or(stage))?;
        copy(&lib, &inside)?;
    }
    let source = vm_dir().join("capprobe.c");
    cmd::run(
        Command::new("gcc")
            .args(["-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(bin.join("capprobe"))
            .arg(&source),
    )?;
    copy(&vm_dir().join("init"), &stage.join("init"))?;
    fs::set_permissions(stage.join("init"), fs::Permissions::from_mode(0o755))?;
    copy(&vm_dir().join("scenarios.sh"), &stage.join("scenarios.sh"))?;
    // The kernel opens /dev/console for init's stdio before init can mount devtmpfs.
    cmd::run(
        Command::new("mknod")
            .arg(stage.join("dev/console"))
            .args(["c", "5", "1"]),
    )?;

    let cpio = initrd.with_extension("cpio");
    pack_cpio(stage, &cpio)?;
    let _ = fs::remove_file(initrd);
    cmd::run(Command::new("gzip").args(["-1", "-n", "-f"]).arg(&cpio))?;
    fs::rename(cpio.with_extension("cpio.gz"), initrd)?;
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// The absolute paths in `ldd` output: `libc.so.6 => /lib/.../libc.so.6 (0x...)` and the loader,
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`. The vDSO has no file.
fn shared_libraries(ldd: &str) -> Vec<PathBuf> {
    ldd.lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            }?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// `find . | cpio -o -H newc` in `stage`, with the file list made here.
fn pack_cpio(stage: &Path, out: &Path) -> Result<()> {
    let mut list = String::new();
    let mut dirs = vec![PathBuf::from(".")];
    while let Some(dir) = dirs.pop() {
        let _ = writeln!(list, "{}", dir.display());
        for entry in fs::read_dir(stage.join(&dir))? {
            let entry = entry?;
            let rel = dir.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                dirs.push(rel);
            } else {
                let _ = writeln!(list, "{}", rel.display());
            }
        }
    }
    let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(stage)
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .context("starting cpio")?;
    let written = cpio
        .stdin
        .take()
        .context("cpio's stdin")?
        .write_all(list.as_bytes());
    let status = cpio.wait()?;
    written.context("writing the file list to cpio")?;
    ensure!(status.success(), "cpio failed: {status}");
    Ok(())
}

// --- running the VM and the native side -----------------------------------------------------

/// Boots every kernel (each boot runs all of its scenarios), as many at a time as there are CPUs:
/// TCG runs a one-CPU VM on one host thread. Prints each kernel's time; the console lines come
/// back in the order of `kernels`, or the first failure once all have stopped.
fn boot_all(
    kernels: &[Kernel],
    initrd: &Path,
    logs: &[PathBuf],
    limit: Duration,
) -> Result<Vec<Vec<String>>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .clamp(1, kernels.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let (Some(kernel), Some(log)) = (kernels.get(i), logs.get(i)) else {
                        break;
                    };
                    let started = Instant::now();
                    let result = boot(kernel, initrd, limit, log);
                    eprintln!(
                        "vm-test: TIME {}: {} in {:.1} s",
                        kernel.package,
                        if result.is_ok() {
                            "booted and ran every scenario"
                        } else {
                            "failed"
                        },
                        started.elapsed().as_secs_f64()
                    );
                    if tx.send((i, result)).is_err() {
                        break;
                    }
                }
            });
        }
    });
    drop(tx);
    let mut results: Vec<(usize, Result<Vec<String>>)> = rx.into_iter().collect();
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

fn boot(kernel: &Kernel, initrd: &Path, limit: Duration, log: &Path) -> Result<Vec<String>> {
    eprintln!(
        "vm-test: booting {} under TCG (limit {} s)",
        kernel.package,
        limit.as_secs()
    );
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        "1024",
        "-nographic",
        "-no-reboot",
    ])
    // No NIC: the scenarios use loopback only, and the NIC's boot ROM costs time.
    .args(["-nic", "none", "-kernel"])
    .arg(&kernel.vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    // loglevel=4 keeps routine kernel messages off the console but shows warnings.
    .args(["-append", "console=ttyS0 panic=-1 loglevel=4"]);
    let label = kernel
        .package
        .trim_start_matches("linux-image-")
        .trim_end_matches(CLOUD_SUFFIX);
    let (lines, status) = run_bounded(qemu, limit, log, label)?;
    if !lines.iter().any(|l| l.contains("CAPSPY-VM-END")) {
        let tail: Vec<&str> = lines
            .iter()
            .rev()
            .take(30)
            .rev()
            .map(String::as_str)
            .collect();
        bail!(
            "the VM stopped ({status}) before its init finished; last console lines:\n{}",
            tail.join("\n")
        );
    }
    Ok(lines)
}

/// The same scenarios on this machine's kernel with `--hook tracepoint`, with the initramfs's
/// busybox and capprobe first in PATH.
fn run_native(stage: &Path, capspy: &Path, log: &Path) -> Result<Vec<String>> {
    let work = std::env::temp_dir().join(format!("capspy-vm-test-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let path = std::env::join_paths(
        std::iter::once(stage.join("bin")).chain(std::env::split_paths(cmd::child_path())),
    )?;
    let mut sh = Command::new(stage.join("bin/busybox"));
    sh.args(["sh"])
        .arg(stage.join("scenarios.sh"))
        .arg("tracepoint")
        .env("PATH", path)
        .env("CAPSPY", capspy)
        .env("WORK", &work);
    eprintln!("vm-test: running the scenarios natively with --hook tracepoint");
    let result = run_bounded(sh, Duration::from_mins(2), log, "native");
    let _ = fs::remove_dir_all(&work);
    let (mut lines, status) = result?;
    ensure!(status.success(), "the native scenarios failed: {status}");
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")?;
    lines.insert(0, format!("CAPSPY-NATIVE-BEGIN {}", release.trim()));
    Ok(lines)
}

/// Kills the process group it leads when dropped: on timeouts, errors and panics alike.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            if let Ok(pgid) = i32::try_from(self.0.id()) {
                // SAFETY: kill(2) on the process group this program created for the child.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Runs `cmd` in a process group of its own with stdout captured line by line (echoed briefly
/// and written to `log`), and kills the group when `limit` runs out.
fn run_bounded(
    mut cmd: Command,
    limit: Duration,
    log: &Path,
    label: &str,
) -> Result<(Vec<String>, ExitStatus)> {
    let deadline = Instant::now() + limit;
    let mut log_file =
        fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0);
    // Its own group keeps Ctrl-C from reaching it: it dies with xtask instead.
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let shown = cmd::display(&cmd);
    eprintln!("+ {shown}");
    let mut child = KillOnDrop(
        cmd.spawn()
            .with_context(|| format!("cannot start `{shown}`"))?,
    );
    let stdout = child.0.stdout.take().context("child stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let line = line.trim_end_matches('\r').to_string();
                writeln!(log_file, "{line}")?;
                echo(label, &line);
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                drop(child);
                bail!(
                    "{label}: no end within {} s: killed it (output so far in {})",
                    limit.as_secs(),
                    log.display()
                );
            }
        }
    }
    // Output closed: the process is exiting, but still only wait until the deadline.
    loop {
        if let Some(status) = child.0.try_wait()? {
            return Ok((lines, status));
        }
        if Instant::now() >= deadline {
            drop(child);
            bail!("{label}: closed its output but did not exit within the limit: killed it");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Progress on the terminal: the protocol lines in short, the rest (kernel, init) as is.
fn echo(label: &str, line: &str) {
    let Some(at) = line.find("CAPSPY-") else {
        let printable = strip_escapes(line);
        if !printable.trim().is_empty() {
            eprintln!("{label}| {printable}");
        }
        return;
    };
    let line = &line[at..];
    if let Some(rest) = line.strip_prefix("CAPSPY-RESULT ") {
        let mut f = rest.splitn(4, ' ');
        let (scenario, hook, status) = (f.next(), f.next(), f.next());
        eprintln!(
            "{label}| {} --hook {}: exit {}",
            scenario.unwrap_or("?"),
            hook.unwrap_or("?"),
            status.unwrap_or("?")
        );
    } else if line.starts_with("CAPSPY-VM-") || line.starts_with("CAPSPY-DOCTOR-EXIT") {
        eprintln!("{label}| {line}");
    }
}

/// The text of a console line without terminal escape sequences (`ESC [ ... letter`) and other
/// control characters, which the firmware prints.
fn strip_escapes(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if !ch.is_control() {
            out.push(ch);
        }
    }
    out
}

// --- parsing --------------------------------------------------------------------------------

struct Run {
    scenario: String,
    hook: String,
    status: i32,
    report: Option<Value>,
    /// What capspy and the command printed.
    log: Vec<String>,
}

#[derive(Default)]
struct Doctor {
    lines: Vec<String>,
    status: Option<i32>,
}

#[derive(Default)]
struct Session {
    release: String,
    runs: Vec<Run>,
    doctors: BTreeMap<String, Doctor>,
    /// Lines that looked like results but could not be read (a garbled console line).
    garbled: Vec<String>,
}

impl Session {
    fn run(&self, scenario: &str, hook: &str) -> Option<&Run> {
        self.runs
            .iter()
            .find(|r| r.scenario == scenario && r.hook == hook)
    }
}

fn parse(lines: &[String]) -> Session {
    let mut s = Session::default();
    let mut logs: HashMap<(String, String), Vec<String>> = HashMap::new();
    for line in lines {
        // Firmware escape sequences can precede the first line on the console.
        let Some(at) = line.find("CAPSPY-") else {
            continue;
        };
        let line = &line[at..];
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        match tag {
            "CAPSPY-VM-BEGIN" | "CAPSPY-NATIVE-BEGIN" => s.release = rest.trim().to_string(),
            "CAPSPY-LOG" => {
                let mut f = rest.splitn(3, ' ');
                if let (Some(scenario), Some(hook)) = (f.next(), f.next()) {
                    logs.entry((scenario.into(), hook.into()))
                        .or_default()
                        .push(f.next().unwrap_or("").to_string());
                }
            }
            "CAPSPY-RESULT" => {
                let mut f = rest.splitn(4, ' ');
                let (Some(scenario), Some(hook), Some(Ok(status)), Some(json)) =
                    (f.next(), f.next(), f.next().map(str::parse), f.next())
                else {
                    s.garbled.push(line.to_string());
                    continue;
                };
                let report = if json == "-" {
                    None
                } else if let Ok(v) = serde_json::from_str(json) {
                    Some(v)
                } else {
                    s.garbled.push(line.to_string());
                    continue;
                };
                s.runs.push(Run {
                    scenario: scenario.into(),
                    hook: hook.into(),
                    status,
                    report,
                    log: logs
                        .remove(&(scenario.to_string(), hook.to_string()))
                        .unwrap_or_default(),
                });
            }
            "CAPSPY-DOCTOR" => {
                let (label, text) = rest.split_once(' ').unwrap_or((rest, ""));
                s.doctors
                    .entry(label.into())
                    .or_default()
                    .lines
                    .push(text.to_string());
            }
            "CAPSPY-DOCTOR-EXIT" => {
                let mut f = rest.split_whitespace();
                if let Some(label) = f.next() {
                    s.doctors.entry(label.into()).or_default().status =
                        f.next().and_then(|v| v.parse().ok());
                }
            }
            _ => {}
        }
    }
    s
}

// --- expectations ---------------------------------------------------------------------------

/// The `capspy run` scenarios of scenarios.sh, and what each needs whatever the hook sees.
const SCENARIOS: &[(&str, &[&str])] = &[
    ("ping", &["NET_RAW"]),
    ("chown", &["CHOWN"]),
    ("true", &[]),
    ("children", &["CHOWN", "NET_RAW"]),
    ("proc-stat", &[]),
    ("bset-drop", &[]),
    ("securebits", &[]),
    ("capset", &[]),
    ("mmap-zero", &[]),
];

/// One capability check made through a known caller of `cap_capable`.
struct Probe {
    scenario: &'static str,
    cap: &'static str,
    /// Whether the check, once seen, belongs in the profile.
    required: bool,
    /// Where the kernel makes the check.
    site: &'static str,
}

const PROBES: &[Probe] = &[
    Probe {
        scenario: "true",
        cap: "SYS_ADMIN",
        required: false,
        site: "cap_vm_enough_memory (overcommit heuristic, noaudit)",
    },
    Probe {
        scenario: "bset-drop",
        cap: "SETPCAP",
        required: true,
        site: "prctl(PR_CAPBSET_DROP): cap_task_prctl -> ns_capable",
    },
    Probe {
        scenario: "securebits",
        cap: "SETPCAP",
        required: true,
        site: "prctl(PR_SET_SECUREBITS): cap_task_prctl itself",
    },
    Probe {
        scenario: "capset",
        cap: "SETPCAP",
        required: false,
        site: "capset(2): cap_capset (cap_inh_is_capped)",
    },
    Probe {
        scenario: "mmap-zero",
        cap: "SYS_RAWIO",
        required: true,
        site: "mmap below vm.mmap_min_addr: cap_mmap_addr",
    },
];

/// Measured by this test: the probes a hook on the `cap_capable` symbol (fexit, kprobe) does not
/// see, per kernel series, because the compiler inlined `cap_capable` into the caller
/// (the disassembly of cap_vm_enough_memory, cap_task_prctl, cap_capset and cap_mmap_addr has no
/// reference to cap_capable on 6.1.0-47 and 6.12.117+deb12; 5.10.0-43 shows the same four by
/// this test). The tracepoint is inside `cap_capable` and sees them all.
const MEASURED_BLIND_SPOTS: &[(&str, &[&str])] = &[
    ("5.10", &["true", "securebits", "capset", "mmap-zero"]),
    ("6.1", &["true", "securebits", "capset", "mmap-zero"]),
    ("6.12", &["true", "securebits", "capset", "mmap-zero"]),
];

/// Whether `hook` should see `probe` on kernel `release`; None when not measured there.
fn expected_visibility(hook: &str, release: &str, probe: &Probe) -> Option<bool> {
    if hook == "tracepoint" {
        return Some(true);
    }
    let series = kernel_series(release);
    MEASURED_BLIND_SPOTS
        .iter()
        .find(|(s, _)| *s == series)
        .map(|(_, missed)| !missed.contains(&probe.scenario))
}

/// "6.1.0-47-cloud-amd64" -> "6.1".
fn kernel_series(release: &str) -> String {
    release.split('.').take(2).collect::<Vec<_>>().join(".")
}

fn kernel_version(release: &str) -> (u32, u32) {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn expected_classifier(hook: &str) -> &'static str {
    if hook == "tracepoint" {
        "call_path"
    } else {
        "opts"
    }
}

fn hook_matches(requested: &str, reported: &str) -> bool {
    match requested {
        "tracepoint" => matches!(reported, "tp_btf" | "raw_tracepoint" | "tracepoint"),
        other => other == reported,
    }
}

// --- evaluation -----------------------------------------------------------------------------

struct Outcome {
    text: String,
    markdown: String,
    failures: usize,
}

/// Collects check results: `fail` lines count, `note` lines inform.
#[derive(Default)]
struct Checks {
    text: String,
    failures: usize,
}

impl Checks {
    fn check(&mut self, subject: &str, ok: bool, what: &str) {
        if ok {
            let _ = writeln!(self.text, "  PASS  {subject}: {what}");
        } else {
            self.failures += 1;
            let _ = writeln!(self.text, "  FAIL  {subject}: {what}");
        }
    }

    fn note(&mut self, subject: &str, what: &str) {
        let _ = writeln!(self.text, "  NOTE  {subject}: {what}");
    }
}

/// One hook on one kernel: a column of the comparison.
struct Column<'a> {
    hook: &'static str,
    session: &'a Session,
}

impl Column<'_> {
    fn label(&self) -> String {
        format!("{} on {}", self.hook, self.session.release)
    }
}

/// Required set per column, per scenario (in SCENARIOS order); None where there is no report.
type Profiles = Vec<Vec<Option<BTreeSet<String>>>>;

fn evaluate(vms: &[Vec<String>], native_lines: Option<&Vec<String>>) -> Outcome {
    let mut c = Checks::default();
    let vms: Vec<Session> = vms.iter().map(|l| parse(l)).collect();
    let native = native_lines.map(|l| parse(l));
    let mut columns = Vec::new();
    for vm in &vms {
        let _ = writeln!(
            c.text,
            "
== VM: Linux {}",
            vm.release
        );
        check_garbled(&mut c, vm);
        let _ = writeln!(c.text, "capspy doctor:");
        check_doctors(&mut c, vm);
        columns.extend(["fexit", "kprobe"].map(|hook| Column { hook, session: vm }));
    }
    if let Some(native) = &native {
        let _ = writeln!(
            c.text,
            "
== this machine: Linux {}",
            native.release
        );
        check_garbled(&mut c, native);
        columns.push(Column {
            hook: "tracepoint",
            session: native,
        });
    }

    let mut profiles: Profiles = Vec::new();
    for column in &columns {
        let _ = writeln!(
            c.text,
            "
capspy run --hook {}:",
            column.label()
        );
        profiles.push(
            SCENARIOS
                .iter()
                .map(|(scenario, base)| {
                    check_run(&mut c, column.session, scenario, column.hook, base)
                })
                .collect(),
        );
    }

    let _ = writeln!(
        c.text,
        "
same profile from every hook:"
    );
    compare(&mut c, &columns, &profiles);

    let markdown = markdown(&columns, &profiles);
    let _ = writeln!(
        c.text,
        "
{} failed check(s)",
        c.failures
    );
    Outcome {
        text: c.text,
        markdown,
        failures: c.failures,
    }
}

fn check_garbled(c: &mut Checks, session: &Session) {
    for line in &session.garbled {
        c.check(
            "console",
            false,
            &format!("unreadable result line: {line:.200}"),
        );
    }
}

fn check_doctors(c: &mut Checks, vm: &Session) {
    let Some(doctor) = vm.doctors.get("btf") else {
        c.check("doctor", false, "no output from `capspy doctor` in the VM");
        return;
    };
    let has_tracepoint = kernel_version(&vm.release) >= (6, 13);
    c.check(
        "doctor",
        doctor.status == Some(0),
        &format!("exits with 0 (got {:?})", doctor.status),
    );
    for (method, should_load) in [
        ("fexit", true),
        ("kprobe", true),
        ("tp_btf", has_tracepoint),
        ("raw_tracepoint", has_tracepoint),
        ("tracepoint", has_tracepoint),
    ] {
        let line = doctor
            .lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(method));
        let loads = line.is_some_and(|l| l.contains("loads and attaches"));
        let verb = if should_load { "loads" } else { "fails" };
        c.check(
            "doctor",
            line.is_some() && loads == should_load,
            &format!(
                "{method} {verb}: {}",
                line.map_or("(no line)", |l| l.trim())
            ),
        );
    }
    c.check(
        "doctor",
        doctor
            .lines
            .iter()
            .any(|l| l.contains("cap_capable's last argument: unsigned int opts")),
        "reads `unsigned int opts` from cap_capable's BTF",
    );
    // Linux 5.11 added bpf_get_current_task_btf; before it capspy reads the task another way and
    // doctor says so.
    let fallback = doctor
        .lines
        .iter()
        .find(|l| l.starts_with("bpf_get_current_task_btf: not available"));
    let expect_fallback = kernel_version(&vm.release) < (5, 11);
    c.check(
        "doctor",
        fallback.is_some() == expect_fallback,
        &fallback.map_or_else(
            || "bpf_get_current_task_btf available (no fallback reported)".to_string(),
            |l| l.trim().to_string(),
        ),
    );

    check_no_btf(c, vm);
}

/// With /sys/kernel/btf hidden, capspy must say that BTF is missing, wherever it cannot go on.
fn check_no_btf(c: &mut Checks, vm: &Session) {
    let Some(no_btf) = vm.doctors.get("no-btf") else {
        c.check(
            "no BTF",
            false,
            "no output from `capspy doctor` without BTF",
        );
        return;
    };
    c.check(
        "no BTF",
        no_btf
            .lines
            .iter()
            .any(|l| l.starts_with("BTF: not available")),
        "doctor says `BTF: not available`",
    );
    for method in ["fexit", "kprobe"] {
        if let Some(line) = no_btf
            .lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(method))
        {
            c.note("no BTF", &format!("doctor: {}", line.trim()));
        }
        let Some(run) = vm.run("no-btf", method) else {
            c.check(
                "no BTF",
                false,
                &format!("no result for `run --hook {method}`"),
            );
            continue;
        };
        let says_btf = run.log.iter().any(|l| l.contains("BTF"));
        if method == "fexit" || run.report.is_none() {
            c.check(
                "no BTF",
                run.status != 0 && says_btf,
                &format!(
                    "`run --hook {method}` fails (exit {}) naming BTF as the reason",
                    run.status
                ),
            );
        } else {
            c.note(
                "no BTF",
                &format!("`run --hook {method}` works without BTF"),
            );
        }
    }
}

/// Checks one run; returns its required set when it produced a report.
fn check_run(
    c: &mut Checks,
    session: &Session,
    scenario: &str,
    hook: &str,
    base: &[&str],
) -> Option<BTreeSet<String>> {
    let subject = format!("{scenario} --hook {hook}");
    let Some(run) = session.run(scenario, hook) else {
        c.check(&subject, false, "no result");
        return None;
    };
    let Some(report) = &run.report else {
        let output = run.log.join("\n");
        c.check(
            &subject,
            false,
            &format!("no report (exit {}); output:\n{output}", run.status),
        );
        return None;
    };
    let required: BTreeSet<String> = strings(&report["required"]);
    let checks = ReportChecks::new(report);
    let mut problems = common_problems(run, report, &checks, hook);

    let mut expected: BTreeSet<String> = base.iter().map(ToString::to_string).collect();
    let mut visibility = String::new();
    if let Some(probe) = PROBES.iter().find(|p| p.scenario == scenario) {
        let seen = checks.cap(probe.cap);
        if !seen.is_empty() && probe.required {
            expected.insert(probe.cap.to_string());
        }
        if !probe.required && seen.iter().any(|ch| ch["audit"] != "advisory") {
            problems.push(format!(
                "{} checks not all advisory: {}",
                probe.cap,
                list(&seen)
            ));
        }
        match probe_visibility(probe, hook, &session.release, !seen.is_empty()) {
            Visibility::AsMeasured(text) => visibility = format!("; {text}"),
            Visibility::Unexpected(text) => problems.push(text),
            Visibility::Unmeasured(text) => c.note(&subject, &text),
        }
    }
    if required != expected {
        problems.push(format!("required {required:?}, expected {expected:?}"));
    }
    problems.extend(scenario_problems(scenario, &checks));
    if problems.is_empty() {
        let advisory: BTreeSet<String> = checks
            .0
            .iter()
            .filter(|ch| ch["audit"] == "advisory")
            .map(|ch| {
                format!(
                    "{} by {}",
                    ch["capability"].as_str().unwrap_or("?"),
                    ch["classified_by"].as_str().unwrap_or("?")
                )
            })
            .collect();
        if !advisory.is_empty() {
            let list: Vec<String> = advisory.into_iter().collect();
            let _ = write!(visibility, "; advisory: {}", list.join(", "));
        }
        c.check(
            &subject,
            true,
            &format!("required {}{visibility}", names(&required)),
        );
    } else {
        c.check(&subject, false, &problems.join("; "));
    }
    Some(required)
}

/// The `checks` array of a report.
struct ReportChecks<'a>(Vec<&'a Value>);

impl<'a> ReportChecks<'a> {
    fn new(report: &'a Value) -> Self {
        Self(
            report["checks"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default(),
        )
    }

    fn cap(&self, cap: &str) -> Vec<&'a Value> {
        self.0
            .iter()
            .copied()
            .filter(|ch| ch["capability"] == cap)
            .collect()
    }
}

/// What every run must satisfy: success, the hook asked for, classification by the hook's own
/// means (opts or call path), nothing lost.
fn common_problems(run: &Run, report: &Value, checks: &ReportChecks, hook: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if run.status != 0 {
        problems.push(format!(
            "exit {} (output: {})",
            run.status,
            run.log.join(" | ")
        ));
    }
    let reported_hook = report["hook"].as_str().unwrap_or("");
    if !hook_matches(hook, reported_hook) {
        problems.push(format!("report says hook {reported_hook}"));
    }
    let classifier = expected_classifier(hook);
    for ch in &checks.0 {
        if ch["classified_by"] != classifier {
            problems.push(format!(
                "{} classified by {} (expected {classifier})",
                ch["capability"], ch["classified_by"]
            ));
        }
    }
    let losses = &report["losses"];
    for counter in ["sightings_lost", "checks_overflow", "unclassified"] {
        if losses[counter].as_u64().unwrap_or(0) != 0 {
            problems.push(format!("losses.{counter} = {}", losses[counter]));
        }
    }
    problems
}

enum Visibility {
    /// As this test measured before: the text says seen or which blind spot.
    AsMeasured(String),
    Unexpected(String),
    /// No measurement for this kernel series.
    Unmeasured(String),
}

fn probe_visibility(probe: &Probe, hook: &str, release: &str, seen: bool) -> Visibility {
    let word = if seen { "seen" } else { "NOT seen" };
    let series = kernel_series(release);
    match expected_visibility(hook, release, probe) {
        Some(want) if want == seen => Visibility::AsMeasured(format!(
            "{} from {} {word}{}",
            probe.cap,
            probe.site,
            if seen {
                ""
            } else {
                " (known blind spot: cap_capable inlined there)"
            }
        )),
        Some(want) => Visibility::Unexpected(format!(
            "{} from {} {word}, but this test measured it {} on Linux {series}",
            probe.cap,
            probe.site,
            if want { "seen" } else { "missed" },
        )),
        None => Visibility::Unmeasured(format!(
            "{} from {} {word} (no measurement recorded for Linux {series})",
            probe.cap, probe.site
        )),
    }
}

/// Scenario-specific evidence beyond the required set.
fn scenario_problems(scenario: &str, checks: &ReportChecks) -> Vec<String> {
    let mut problems = Vec::new();
    match scenario {
        "ping" => {
            let ok = checks.cap("NET_RAW").iter().any(|ch| {
                ch["verdict"] == "granted"
                    && ch["audit"] == "audited"
                    && ch["example"]["comm"] == "ping"
            });
            if !ok {
                problems.push("no granted, audited NET_RAW check by ping".into());
            }
        }
        "children" => {
            for (cap, comm) in [("CHOWN", "chown"), ("NET_RAW", "ping")] {
                if !checks
                    .cap(cap)
                    .iter()
                    .any(|ch| ch["example"]["comm"] == comm)
                {
                    problems.push(format!("no {cap} check by {comm}"));
                }
            }
        }
        "proc-stat" => {
            let ptrace = checks.cap("SYS_PTRACE");
            if ptrace.is_empty() || ptrace.iter().any(|ch| ch["audit"] != "advisory") {
                problems.push(format!(
                    "expected advisory SYS_PTRACE checks, got {}",
                    list(&ptrace)
                ));
            }
        }
        _ => {}
    }
    problems
}

fn list(checks: &[&Value]) -> String {
    Value::Array(checks.iter().map(|&v| v.clone()).collect()).to_string()
}

fn names(caps: &BTreeSet<String>) -> String {
    if caps.is_empty() {
        "none".to_string()
    } else {
        caps.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The required sets must match across hooks, except where a hook missed a probe this test
/// measured as a blind spot; then they must differ by exactly that capability.
fn compare(c: &mut Checks, columns: &[Column], profiles: &Profiles) {
    for (i, (scenario, _)) in SCENARIOS.iter().enumerate() {
        let sets: Vec<(&Column, &BTreeSet<String>)> = columns
            .iter()
            .zip(profiles)
            .filter_map(|(column, p)| Some((column, p[i].as_ref()?)))
            .collect();
        if sets.len() < columns.len() {
            c.check(
                scenario,
                false,
                "not every hook produced a profile to compare",
            );
            continue;
        }
        let probe = PROBES.iter().find(|p| p.scenario == *scenario);
        // The profile each hook would give had it seen the probe.
        let normalised: BTreeSet<BTreeSet<String>> = sets
            .iter()
            .map(|(column, set)| {
                let mut set = (*set).clone();
                if let Some(p) = probe
                    && p.required
                    && expected_visibility(column.hook, &column.session.release, p) == Some(false)
                {
                    set.insert(p.cap.to_string());
                }
                set
            })
            .collect();
        let raw: BTreeSet<&BTreeSet<String>> = sets.iter().map(|(_, s)| *s).collect();
        let listing: Vec<String> = sets
            .iter()
            .map(|(column, s)| format!("{}: {}", column.label(), names(s)))
            .collect();
        let listing = listing.join("; ");
        if raw.len() == 1 {
            c.check(scenario, true, &format!("identical ({listing})"));
        } else if normalised.len() == 1 {
            let site = probe.map_or("", |p| p.site);
            c.check(
                scenario,
                true,
                &format!("differ only by the known blind spot, {site} ({listing})"),
            );
        } else {
            c.check(scenario, false, &format!("differ ({listing})"));
        }
    }
}

fn markdown(columns: &[Column], profiles: &Profiles) -> String {
    let mut md = String::from("| scenario |");
    let mut rule = String::from("|---|");
    for column in columns {
        let _ = write!(md, " `{}` on {} |", column.hook, column.session.release);
        rule.push_str("---|");
    }
    let _ = writeln!(md, "\n{rule}");
    for (i, (scenario, _)) in SCENARIOS.iter().enumerate() {
        let _ = write!(md, "| {scenario} |");
        for p in profiles {
            let cell = p[i].as_ref().map_or_else(|| "no report".to_string(), names);
            let _ = write!(md, " {cell} |");
        }
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_library_paths() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            shared_libraries(ldd),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn elf_interpreter_is_detected() {
        let mut elf = vec![0u8; 0x100];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20] = 0x40; // e_phoff
        elf[0x36] = 0x38; // e_phentsize
        elf[0x38] = 2; // e_phnum
        elf[0x40] = 1; // PT_LOAD
        assert!(!elf_has_interpreter(&elf));
        elf[0x40 + 0x38] = 3; // PT_INTERP
        assert!(elf_has_interpreter(&elf));
        assert!(!elf_has_interpreter(b"#!/bin/sh"));
    }

    #[test]
    fn console_lines_are_parsed() {
        let lines: Vec<String> = [
            "\u{1b}[2JCAPSPY-VM-BEGIN 6.1.0-47-cloud-amd64",
            "CAPSPY-LOG ping fexit PING 127.0.0.1",
            r#"CAPSPY-RESULT ping fexit 0 {  "required": [    "NET_RAW"  ],  "hook": "fexit"}"#,
            "CAPSPY-RESULT no-btf kprobe 2 -",
            "CAPSPY-RESULT true fexit 0 {\"trunc",
            "CAPSPY-DOCTOR btf   fexit           loads and attaches",
            "CAPSPY-DOCTOR-EXIT btf 0",
            "[   15.9] reboot: Power down",
        ]
        .map(String::from)
        .to_vec();
        let s = parse(&lines);
        assert_eq!(s.release, "6.1.0-47-cloud-amd64");
        let ping = s.run("ping", "fexit").unwrap();
        assert_eq!(ping.status, 0);
        assert_eq!(ping.log, ["PING 127.0.0.1"]);
        assert_eq!(strings(&ping.report.as_ref().unwrap()["required"]).len(), 1);
        assert!(s.run("no-btf", "kprobe").unwrap().report.is_none());
        assert_eq!(s.garbled.len(), 1);
        let doctor = &s.doctors["btf"];
        assert_eq!(doctor.status, Some(0));
        assert_eq!(doctor.lines, ["  fexit           loads and attaches"]);
    }

    #[test]
    fn escapes_are_stripped() {
        assert_eq!(
            strip_escapes("c\u{1b}[?7l\u{1b}[2J\u{1b}[0mSeaBIOS (version 1.16)\r"),
            "cSeaBIOS (version 1.16)"
        );
    }

    #[test]
    fn debian_cloud_kernel_names_by_series() {
        let series = |name| SERIES.iter().find(|s| s.name == name).unwrap();
        let (s510, s61, s612) = (series("5.10"), series("6.1"), series("6.12"));
        assert_eq!(
            s61.number("linux-image-6.1.0-47-cloud-amd64-unsigned"),
            Some(47)
        );
        assert_eq!(s61.number("linux-image-6.1.0-47-cloud-amd64"), None);
        assert_eq!(
            s61.number("linux-image-6.12.117+deb12-cloud-amd64-unsigned"),
            None
        );
        assert_eq!(
            s612.number("linux-image-6.12.117+deb12-cloud-amd64-unsigned"),
            Some(117)
        );
        assert_eq!(
            s612.number("linux-image-6.12.117+bpo-cloud-amd64-unsigned"),
            None
        );
        assert_eq!(
            s510.number("linux-image-5.10.0-43-cloud-amd64-unsigned"),
            Some(43)
        );
        for s in SERIES {
            assert_eq!(Series::of(s.measured).map(|s| s.name), Some(s.name));
        }
        assert!(Series::of("linux-image-6.1.0-47-amd64-unsigned").is_none());
        assert_eq!(
            s612.pattern(),
            r"^linux-image-6\.12\.[0-9]+(\+deb[0-9]+)?-cloud-amd64-unsigned$"
        );
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_series("6.1.0-47-cloud-amd64"), "6.1");
        assert_eq!(kernel_version("6.18.44-fc-v669"), (6, 18));
        assert_eq!(kernel_version("6.1.0-47-cloud-amd64"), (6, 1));
        let securebits = PROBES.iter().find(|p| p.scenario == "securebits").unwrap();
        assert_eq!(
            expected_visibility("fexit", "6.1.0-50-cloud-amd64", securebits),
            Some(false)
        );
        assert_eq!(
            expected_visibility("tracepoint", "6.18.44", securebits),
            Some(true)
        );
        assert_eq!(
            expected_visibility("kprobe", "5.10.0-43-cloud-amd64", securebits),
            Some(false)
        );
        assert_eq!(
            expected_visibility("kprobe", "5.4.0-30-amd64", securebits),
            None
        );
    }
}
