//! What a systemd service is allowed, from its unit's properties rather than its processes:
//! `systemctl show --property=CapabilityBoundingSet,AmbientCapabilities,User UNIT`. The unit's
//! settings stay readable after its processes exit (or before the first one is seen), where
//! `/proc` has nothing or a stale reading.
//!
//! `show` prints the resolved sets, never the `~` (inverted) form unit files may use: each set
//! as space-separated lowercase names (`cap_chown cap_net_raw`), a capability the systemd build
//! has no name for as its number, and an empty set as nothing after `=`.
//! <https://www.freedesktop.org/software/systemd/man/latest/systemd.exec.html#Capabilities>

use std::path::Path;
use std::time::Duration;

use crate::model::caps::{CapSet, Capability};

/// `systemctl` answers in milliseconds; a manager this slow is not waited for.
const TIMEOUT: Duration = Duration::from_secs(2);

/// What a unit's settings grant its processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitCaps {
    pub bounding: CapSet,
    /// What its main process holds effective at exec: the bounding set for root, else the
    /// ambient set (which the kernel keeps within the bounding set).
    pub effective: CapSet,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShowError {
    #[error("systemctl show printed no {0}= line")]
    Missing(&'static str),
    #[error("systemctl show {property}: unknown capability {name:?}")]
    UnknownCapability {
        property: &'static str,
        name: String,
    },
}

const BOUNDING: &str = "CapabilityBoundingSet";
const AMBIENT: &str = "AmbientCapabilities";
const USER: &str = "User";

/// Parses the `KEY=value` lines of `systemctl show --property=CapabilityBoundingSet,
/// AmbientCapabilities,User`. An empty `User=` is root (with `DynamicUser=` it is not, which
/// only overstates `effective`: the granted set, bounding | effective, is the bounding set).
pub fn parse_show(text: &str) -> Result<UnitCaps, ShowError> {
    let value = |key: &'static str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .ok_or(ShowError::Missing(key))
    };
    let set = |property: &'static str| {
        value(property)?
            .split_whitespace()
            .try_fold(CapSet(0), |set, name| {
                cap_of(name)
                    .map(|c| set.with(c))
                    .ok_or_else(|| ShowError::UnknownCapability {
                        property,
                        name: name.to_owned(),
                    })
            })
    };
    let bounding = set(BOUNDING)?;
    let ambient = set(AMBIENT)?;
    let user = value(USER)?.trim();
    let root = user.is_empty() || user == "root" || user == "0";
    Ok(UnitCaps {
        bounding,
        effective: if root {
            bounding
        } else {
            CapSet(ambient.0 & bounding.0)
        },
    })
}

/// A name as `show` prints it, or the number it prints for one it has no name for (decimal or
/// `0x` hex, by systemd version).
fn cap_of(name: &str) -> Option<Capability> {
    if let Ok(cap) = name.parse() {
        return Some(cap);
    }
    let n = match name.strip_prefix("0x") {
        Some(hex) => u8::from_str_radix(hex, 16).ok()?,
        None => name.parse().ok()?,
    };
    (n < 64).then_some(Capability(n))
}

/// Whether systemd is the service manager here (what `sd_booted()` checks).
pub fn booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The unit's granted sets; None (the reason logged) when systemd is not the service manager,
/// `systemctl` is absent, slow or fails, or its answer does not parse: the caller then reads
/// the unit's processes.
pub async fn unit_caps(unit: &str) -> Option<UnitCaps> {
    if !booted() || unit.starts_with('-') {
        return None;
    }
    let run = tokio::process::Command::new("systemctl")
        .args([
            "show",
            "--property",
            &format!("{BOUNDING},{AMBIENT},{USER}"),
        ])
        .arg("--")
        .arg(unit)
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(TIMEOUT, run).await {
        Ok(Ok(out)) if out.status.success() => out,
        Ok(Ok(out)) => {
            log::debug!(
                "systemctl show {unit}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Ok(Err(e)) => {
            log::debug!("systemctl show {unit}: {e}");
            return None;
        }
        Err(_) => {
            log::debug!("systemctl show {unit}: no answer within {TIMEOUT:?}");
            return None;
        }
    };
    parse_show(&String::from_utf8_lossy(&out.stdout))
        .inspect_err(|e| log::debug!("{unit}: {e}"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(set: CapSet) -> Vec<String> {
        set.iter().map(Capability::name).collect()
    }

    /// A unit without CapabilityBoundingSet= (systemd 252, kernel with 41 capabilities): the
    /// full set, run as root.
    const DEFAULT_UNIT: &str = "CapabilityBoundingSet=cap_chown cap_dac_override \
        cap_dac_read_search cap_fowner cap_fsetid cap_kill cap_setgid cap_setuid cap_setpcap \
        cap_linux_immutable cap_net_bind_service cap_net_broadcast cap_net_admin cap_net_raw \
        cap_ipc_lock cap_ipc_owner cap_sys_module cap_sys_rawio cap_sys_chroot cap_sys_ptrace \
        cap_sys_pacct cap_sys_admin cap_sys_boot cap_sys_nice cap_sys_resource cap_sys_time \
        cap_sys_tty_config cap_mknod cap_lease cap_audit_write cap_audit_control cap_setfcap \
        cap_mac_override cap_mac_admin cap_syslog cap_wake_alarm cap_block_suspend \
        cap_audit_read cap_perfmon cap_bpf cap_checkpoint_restore\nAmbientCapabilities=\nUser=\n";

    #[test]
    fn a_default_unit_is_everything_as_root() {
        let caps = parse_show(DEFAULT_UNIT).unwrap();
        assert_eq!(caps.bounding, CapSet::all());
        assert_eq!(caps.effective, CapSet::all());
    }

    #[test]
    fn a_hardened_unit_for_another_user() {
        // e.g. systemd-networkd.service; `show` prints the properties in its own order.
        let show = "User=systemd-network\nAmbientCapabilities=cap_net_bind_service cap_net_admin \
                    cap_net_broadcast cap_net_raw\nCapabilityBoundingSet=cap_net_bind_service \
                    cap_net_broadcast cap_net_admin cap_net_raw\n";
        let caps = parse_show(show).unwrap();
        assert_eq!(
            names(caps.bounding),
            ["NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW"]
        );
        assert_eq!(caps.effective, caps.bounding);
        // Not root and no ambient set: nothing effective, the bounding set as it is.
        let show =
            "CapabilityBoundingSet=cap_chown cap_setuid\nAmbientCapabilities=\nUser=www-data";
        let caps = parse_show(show).unwrap();
        assert_eq!(names(caps.bounding), ["CHOWN", "SETUID"]);
        assert_eq!(caps.effective, CapSet(0));
        // Ambient beyond the bounding set is not held.
        let show = "CapabilityBoundingSet=cap_chown\nAmbientCapabilities=cap_chown cap_net_raw\n\
                    User=1000";
        assert_eq!(names(parse_show(show).unwrap().effective), ["CHOWN"]);
    }

    #[test]
    fn an_empty_bounding_set_is_none_granted() {
        // CapabilityBoundingSet= (empty) in the unit; root keeps nothing either.
        let caps = parse_show("CapabilityBoundingSet=\nAmbientCapabilities=\nUser=root\n").unwrap();
        assert_eq!(caps.bounding, CapSet(0));
        assert_eq!(caps.effective, CapSet(0));
    }

    #[test]
    fn numbers_for_capabilities_systemd_cannot_name() {
        let caps =
            parse_show("CapabilityBoundingSet=cap_bpf 0x29 42\nAmbientCapabilities=\nUser=\n")
                .unwrap();
        assert_eq!(caps.bounding, CapSet(1 << 39 | 1 << 41 | 1 << 42));
    }

    #[test]
    fn what_is_not_show_output_is_an_error() {
        assert_eq!(
            parse_show("AmbientCapabilities=\nUser=\n"),
            Err(ShowError::Missing(BOUNDING))
        );
        assert_eq!(
            parse_show("CapabilityBoundingSet=~cap_chown\nAmbientCapabilities=\nUser=\n"),
            Err(ShowError::UnknownCapability {
                property: BOUNDING,
                name: "~cap_chown".into()
            })
        );
        // A property whose name only starts like one asked for is not it.
        assert_eq!(
            parse_show("CapabilityBoundingSetX=\nAmbientCapabilities=\nUser=\n"),
            Err(ShowError::Missing(BOUNDING))
        );
    }

    #[tokio::test]
    async fn without_systemd_as_manager_the_caller_falls_back() {
        if booted() {
            eprintln!("skipped: systemd manages this host");
            return;
        }
        assert_eq!(unit_caps("ssh.service").await, None);
    }
}
