//! The cgroup v2 hierarchy: where it is mounted, and a private cgroup for `capspy run`.
//!
//! The kernel program keys checks by cgroup v2 id, which is the inode number of the cgroup's
//! folder, so a fresh cgroup is an exact filter for "this command and everything it starts".

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::ffi::OsStringExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no cgroup v2 hierarchy is mounted (looked for a cgroup2 entry in /proc/self/mountinfo)"
    )]
    NoV2,
    #[error("reading /proc/self/mountinfo: {0}")]
    MountInfo(io::Error),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io {
        action,
        path,
        source,
    }
}

/// The mount point of the cgroup v2 hierarchy: `/sys/fs/cgroup` on unified hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones.
pub fn v2_root() -> Result<PathBuf, CgroupError> {
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::MountInfo)?;
    v2_root_from_mountinfo(&text).ok_or(CgroupError::NoV2)
}

/// Picks the cgroup2 mount from mountinfo text, preferring `/sys/fs/cgroup` itself.
pub fn v2_root_from_mountinfo(text: &str) -> Option<PathBuf> {
    let mut mounts = text.lines().filter_map(|line| {
        // Fields: id parent major:minor root mount-point options [optional...] - fstype source ...
        let (pre, post) = line.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        let mount_point = pre.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| unescape_mount_path(mount_point))
    });
    let all: Vec<PathBuf> = mounts.by_ref().collect();
    all.iter()
        .find(|p| p.as_path() == Path::new("/sys/fs/cgroup"))
        .or_else(|| all.first())
        .cloned()
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mount_path(s: &str) -> PathBuf {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
            && bytes[i + 1] <= b'3'
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Whether `cgroup.events` says processes remain (`populated 1`).
pub fn parse_populated(events: &str) -> Option<bool> {
    events.lines().find_map(|l| match l.split_once(' ') {
        Some(("populated", v)) => Some(v.trim() == "1"),
        _ => None,
    })
}

/// The union of `CapEff` and of `CapBnd` over the workload's processes in a cgroup (a
/// container's or a service's); a container runtime's own setup processes (which still hold
/// everything) are skipped, so (None, None) until the entrypoint runs.
pub fn granted_caps(v2_root: &Path, cgroup_path: &str) -> (Option<u64>, Option<u64>) {
    let procs = v2_root
        .join(cgroup_path.trim_start_matches('/'))
        .join("cgroup.procs");
    let Ok(text) = std::fs::read_to_string(procs) else {
        return (None, None);
    };
    let mut eff = None;
    let mut bnd = None;
    for pid in text.lines().filter(|l| !l.is_empty()) {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let name = status.lines().find_map(|l| l.strip_prefix("Name:"));
        if name.is_some_and(|n| crate::model::check::is_runtime_comm(n.trim())) {
            continue;
        }
        for line in status.lines() {
            let slot = if line.starts_with("CapEff:") {
                &mut eff
            } else if line.starts_with("CapBnd:") {
                &mut bnd
            } else {
                continue;
            };
            if let Ok(set) = crate::model::caps::CapSet::from_hex(&line[7..]) {
                *slot = Some(slot.unwrap_or(0) | set.0);
            }
        }
    }
    (eff, bnd)
}

/// Removes the empty cgroups left by `capspy run` processes that were killed before they could
/// clean up (their names end in a pid that no longer exists).
pub fn remove_stale(root: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            // Fails harmlessly if processes remain in it.
            let _ = fs::remove_dir(entry.path());
        }
    }
}

/// A cgroup capspy made, removed on drop.
pub struct OwnedCgroup {
    path: PathBuf,
    id: u64,
}

impl OwnedCgroup {
    pub fn create(parent: &Path, name: &str) -> Result<Self, CgroupError> {
        let path = parent.join(name);
        fs::create_dir(&path).map_err(io_err("creating cgroup", &path))?;
        let id = fs::metadata(&path)
            .map_err(io_err("reading cgroup", &path))?
            .ino();
        Ok(Self { path, id })
    }

    /// The cgroup v2 id, as `bpf_get_current_cgroup_id()` returns it.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn procs_path(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    pub fn populated(&self) -> Result<bool, CgroupError> {
        let events = self.path.join("cgroup.events");
        let text = fs::read_to_string(&events).map_err(io_err("reading", &events))?;
        Ok(parse_populated(&text).unwrap_or(false))
    }

    /// Sends `signal` to every process in the cgroup.
    pub fn signal_all(&self, signal: i32) -> Result<(), CgroupError> {
        let procs = self.procs_path();
        let text = fs::read_to_string(&procs).map_err(io_err("reading", &procs))?;
        for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill has no memory-safety preconditions; a vanished pid is harmless.
            unsafe { libc::kill(pid, signal) };
        }
        Ok(())
    }

    /// Kills everything in the cgroup at once (Linux 5.14+ `cgroup.kill`), else one by one.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        let kill = self.path.join("cgroup.kill");
        match fs::OpenOptions::new().write(true).open(&kill) {
            Ok(mut f) => f.write_all(b"1").map_err(io_err("writing", &kill)),
            Err(_) => self.signal_all(libc::SIGKILL),
        }
    }
}

impl Drop for OwnedCgroup {
    fn drop(&mut self) {
        // rmdir fails while the last processes are still being reaped: retry briefly.
        for _ in 0..50 {
            match fs::remove_dir(&self.path) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:7 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
";
    const UNIFIED: &str = "\
31 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn finds_the_v2_mount_on_hybrid_and_unified_hosts() {
        assert_eq!(
            v2_root_from_mountinfo(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            v2_root_from_mountinfo(UNIFIED),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn no_v2_mount_is_none() {
        let v1_only = "27 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(v2_root_from_mountinfo(v1_only), None);
        assert_eq!(v2_root_from_mountinfo(""), None);
        assert_eq!(v2_root_from_mountinfo("garbage line\n - \n"), None);
    }

    #[test]
    fn escaped_mount_points_are_decoded() {
        let line = "40 23 0:30 / /mnt/my\\040cgroup rw - cgroup2 none rw\n";
        assert_eq!(
            v2_root_from_mountinfo(line),
            Some(PathBuf::from("/mnt/my cgroup"))
        );
        // Past \377 is no byte: kept as written (found by fuzz/, target cgroup_files).
        let line = "2 1 0 / /\\542 - cgroup2\n";
        assert_eq!(v2_root_from_mountinfo(line), Some(PathBuf::from("/\\542")));
    }

    #[test]
    fn populated_is_read_from_cgroup_events() {
        assert_eq!(parse_populated("populated 1\nfrozen 0\n"), Some(true));
        assert_eq!(parse_populated("populated 0\nfrozen 0\n"), Some(false));
        assert_eq!(parse_populated("frozen 0\n"), None);
    }
}
