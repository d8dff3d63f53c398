//! Debian kernels for the VMs: which series, fetched with apt and kept in a cache between runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};

use crate::cmd;

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

/// Where apt finds a series' packages.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Archive {
    /// The machine's own apt sources (bookworm and bookworm-security).
    System,
    /// Debian 11, through a private apt configuration in the kernel cache that only this
    /// download uses: the machine's sources are left alone.
    Bullseye,
}

/// A Debian kernel series the matrix boots by default.
#[derive(Debug)]
pub(super) struct Series {
    /// The first two numbers of `uname -r`.
    pub(super) name: &'static str,
    /// The package measured in docs/kernel-matrix.md.
    pub(super) measured: &'static str,
    /// Packages of the series are named `<prefix><number>[+debNN]-cloud-amd64-unsigned`.
    pub(super) prefix: &'static str,
    pub(super) archive: Archive,
}

pub(super) const CLOUD_SUFFIX: &str = "-cloud-amd64-unsigned";

/// The default matrix, oldest first: Debian 11's 5.10, Debian 12's 6.1, and the 6.12 that
/// Debian 12 ships for its later point releases (bookworm-security carries the same linux-6.12
/// as bookworm-backports). If the archive drops a measured package, the newest package of its
/// series that downloads is booted instead.
pub(super) const SERIES: &[Series] = &[
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
    pub(super) fn of(package: &str) -> Option<&'static Self> {
        SERIES.iter().find(|s| s.number(package).is_some())
    }
}

/// What to boot: a series (its measured package, else its newest), or a named package.
pub(super) enum Request {
    Series(&'static Series),
    Package(String),
}

pub(super) struct Kernel {
    pub(super) package: String,
    pub(super) vmlinuz: PathBuf,
}

/// The kernels, kept between runs on this machine: one folder per package with its `vmlinuz`
/// and `config`, and the private apt state for Debian 11.
pub(super) struct KernelCache {
    pub(super) dir: PathBuf,
}

impl KernelCache {
    /// `$XDG_CACHE_HOME/capspy/vm-kernels` (`~/.cache/...`): outside the checkout, so that a
    /// fresh clone on the same machine does not download them again.
    pub(super) fn default_dir() -> PathBuf {
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
    pub(super) fn fetch(&self, request: &Request) -> Result<Kernel> {
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
    pub(super) options: Vec<String>,
}

impl Apt {
    pub(super) fn new(cache: &KernelCache, archive: Archive) -> Result<Self> {
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

    pub(super) fn command(&self, program: &str) -> Command {
        let mut apt = Command::new(program);
        // As root apt would drop to _apt, which cannot write in the cache, and warn about it.
        apt.args(["-o", "APT::Sandbox::User=root"])
            .args(&self.options);
        apt
    }

    pub(super) fn get(&self) -> Command {
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
    pub(super) _file: fs::File,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
