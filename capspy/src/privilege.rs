//! capspy's own privileges.

use crate::caps::{CapSet, Capability};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "capspy needs root, or CAP_BPF and CAP_PERFMON, to load its kernel program (missing: {0})"
    )]
    Missing(String),
    #[error("reading /proc/self/status: {0}")]
    Status(#[from] std::io::Error),
    #[error("dropping capabilities: {0}")]
    Drop(std::io::Error),
}

/// The effective set of a process, from `/proc/PID/status` text.
pub fn effective_from_status(status: &str) -> Option<CapSet> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| CapSet::from_hex(v).ok())
}

/// Fails with the names of what is missing when this process cannot load and attach tracing
/// programs: CAP_BPF and CAP_PERFMON (Linux 5.8+), or CAP_SYS_ADMIN, which implies both.
pub fn require_tracing() -> Result<(), PrivilegeError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let eff = effective_from_status(&status).unwrap_or_default();
    missing_for_tracing(eff).map_or(Ok(()), |m| Err(PrivilegeError::Missing(m)))
}

fn missing_for_tracing(eff: CapSet) -> Option<String> {
    if eff.contains(Capability::SYS_ADMIN) {
        return None;
    }
    let missing: Vec<String> = [Capability::BPF, Capability::PERFMON]
        .into_iter()
        .filter(|c| !eff.contains(*c))
        .map(|c| format!("CAP_{c}"))
        .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_missing() {
        assert_eq!(
            missing_for_tracing(CapSet(0)).as_deref(),
            Some("CAP_BPF, CAP_PERFMON")
        );
        assert_eq!(
            missing_for_tracing(CapSet(1 << 39)).as_deref(),
            Some("CAP_PERFMON")
        );
        assert_eq!(missing_for_tracing(CapSet((1 << 39) | (1 << 38))), None);
        assert_eq!(missing_for_tracing(CapSet(1 << 21)), None);
    }

    #[test]
    fn reads_cap_eff_from_status() {
        let status = "Name:\tcat\nCapInh:\t0000000000000000\nCapEff:\t00000000a80425fb\n";
        assert_eq!(effective_from_status(status), Some(CapSet(0xa804_25fb)));
    }
}

/// `struct __user_cap_header_struct` and `__user_cap_data_struct` from
/// `include/uapi/linux/capability.h` (version 3: two data words for 64 capabilities).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Gives up every capability for good, once the kernel program is attached and every privileged
/// file is open: the daemon then only reads maps through fds it holds, `/proc` and cgroupfs, and
/// writes its own store, none of which needs a capability. Applies to the calling thread and the
/// threads it starts later, so call it while the process has a single thread.
pub fn drop_all() -> Result<(), PrivilegeError> {
    // SAFETY: plain prctl/capset calls with valid arguments; failures are checked.
    unsafe {
        // No exec can give anything back, even a setuid one.
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(PrivilegeError::Drop(std::io::Error::last_os_error()));
        }
        // The bounding set first: dropping from it needs CAP_SETPCAP, which goes last.
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                // EINVAL: past the kernel's last capability.
                break;
            }
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData::default(); 2];
        if libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) != 0 {
            return Err(PrivilegeError::Drop(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}
