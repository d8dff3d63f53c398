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
