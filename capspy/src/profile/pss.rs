//! Kubernetes Pod Security Standards (kubernetes.io/docs/concepts/security/pod-security-standards):
//! which level a profile's capabilities fit, and what would have to change for `restricted`.
//!
//! Only the capability and user controls are judged here; the other controls of each level
//! (host namespaces, volumes, seccomp, ...) are the pod spec's and are named, not checked.

use std::collections::BTreeSet;

use crate::model::caps::{CapSet, Capability};
use crate::model::check::Bucket;
use crate::profile::Profile;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Restricted,
    Baseline,
    Privileged,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Restricted => "restricted",
            Self::Baseline => "baseline",
            Self::Privileged => "privileged",
        }
    }
}

/// What `baseline` allows adding: Docker's default set without NET_RAW.
pub fn baseline_allowed() -> CapSet {
    CapSet(CapSet::DOCKER_DEFAULT.0 & !(1 << Capability::NET_RAW.0))
}

/// The level a profile's capabilities fit, and the changes `restricted` needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    pub level: Level,
    /// What would have to change for `restricted`, in words; empty when it is met.
    pub for_restricted: Vec<String>,
}

/// Whether the workload's own processes ran as root: Some(true) if any of its checks came from
/// uid 0, Some(false) if all came from other uids, None without checks of its own.
pub fn ran_as_root(profile: &Profile) -> Option<bool> {
    let mut uids = profile
        .checks
        .iter()
        .filter(|c| c.bucket == Bucket::App)
        .map(|c| c.example.uid)
        .peekable();
    uids.peek()?;
    Some(uids.any(|u| u == 0))
}

pub fn assess(profile: &Profile) -> Assessment {
    let required: &BTreeSet<Capability> = &profile.required;
    let baseline = baseline_allowed();
    let beyond_baseline: Vec<String> = required
        .iter()
        .filter(|c| !baseline.contains(**c))
        .map(ToString::to_string)
        .collect();
    let beyond_restricted: Vec<String> = required
        .iter()
        .filter(|c| **c != Capability::NET_BIND_SERVICE)
        .map(ToString::to_string)
        .collect();
    let root = ran_as_root(profile);
    let mut changes = Vec::new();
    if !beyond_restricted.is_empty() {
        changes.push(format!(
            "do without {} (restricted allows adding only NET_BIND_SERVICE)",
            beyond_restricted.join(", ")
        ));
    }
    match root {
        Some(true) => changes.push(
            "run as a non-root user (runAsNonRoot: true with a runAsUser, or a USER in the image): its processes ran as uid 0"
                .into(),
        ),
        None => changes.push(
            "run as a non-root user (runAsNonRoot: true): capspy saw none of its processes' uids"
                .into(),
        ),
        Some(false) => {}
    }
    if root == Some(false) && required.contains(&Capability::NET_BIND_SERVICE) {
        // allowPrivilegeEscalation: false sets no_new_privs, under which exec grants no file
        // capabilities (cap_bprm_creds_from_file:
        // https://github.com/torvalds/linux/blob/v6.18/security/commoncap.c), and Kubernetes
        // sets no ambient ones: a non-root process never holds the added capability.
        changes.push(
            "bind its port another way: as non-root with allowPrivilegeEscalation: false, NET_BIND_SERVICE is never effective (no_new_privs ignores file capabilities); set the pod sysctl net.ipv4.ip_unprivileged_port_start to the port, or listen above 1023"
                .into(),
        );
    }
    let level = if changes.is_empty() {
        Level::Restricted
    } else if beyond_baseline.is_empty() {
        Level::Baseline
    } else {
        Level::Privileged
    };
    Assessment {
        level,
        for_restricted: changes,
    }
}

/// Comment lines for `--format k8s`.
pub fn lines(profile: &Profile) -> Vec<String> {
    let a = assess(profile);
    let mut out = vec![match a.level {
        Level::Restricted => "Pod Security Standards: meets restricted for capabilities and user (also set allowPrivilegeEscalation: false and seccompProfile RuntimeDefault)".to_owned(),
        Level::Baseline => "Pod Security Standards: meets baseline (adds only capabilities baseline allows), not restricted".to_owned(),
        Level::Privileged => {
            let baseline = baseline_allowed();
            let beyond: Vec<String> = profile
                .required
                .iter()
                .filter(|c| !baseline.contains(**c))
                .map(ToString::to_string)
                .collect();
            format!(
                "Pod Security Standards: privileged only: baseline forbids adding {}",
                beyond.join(", ")
            )
        }
    }];
    if a.level != Level::Restricted {
        out.push("For restricted:".to_owned());
        out.extend(a.for_restricted.into_iter().map(|c| format!("  - {c}")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::check::{AuditClass, Verdict};
    use crate::profile::tests::row;

    /// A profile requiring `caps`, whose processes ran as `uid` (with one advisory check, so
    /// an empty `caps` still shows the uid).
    fn profile(caps: &[Capability], uid: u32) -> Profile {
        let advisory = row(
            Capability::SYS_ADMIN,
            Verdict::Denied,
            AuditClass::Advisory,
            3,
        );
        let rows = caps
            .iter()
            .map(|c| row(*c, Verdict::Granted, AuditClass::Audited, 1))
            .chain([advisory])
            .map(|mut r| {
                r.example.uid = uid;
                r
            })
            .collect();
        Profile::from_checks(rows)
    }

    #[test]
    fn levels_follow_the_required_set_and_the_user() {
        let a = assess(&profile(&[], 1000));
        assert_eq!(a.level, Level::Restricted);
        assert!(a.for_restricted.is_empty());

        let a = assess(&profile(&[Capability::NET_BIND_SERVICE], 0));
        assert_eq!(a.level, Level::Baseline);
        assert_eq!(a.for_restricted.len(), 1);
        assert!(a.for_restricted[0].contains("uid 0"));

        // Non-root with NET_BIND_SERVICE: restricted's no_new_privs defeats file capabilities.
        let a = assess(&profile(&[Capability::NET_BIND_SERVICE], 1000));
        assert_eq!(a.level, Level::Baseline);
        assert!(a.for_restricted[0].contains("ip_unprivileged_port_start"));

        let a = assess(&profile(&[Capability::CHOWN, Capability::SETUID], 0));
        assert_eq!(a.level, Level::Baseline);
        assert!(a.for_restricted[0].contains("CHOWN, SETUID"));

        // NET_RAW is in Docker's default set but not in baseline's.
        let a = assess(&profile(&[Capability::NET_RAW], 0));
        assert_eq!(a.level, Level::Privileged);
        let text = lines(&profile(&[Capability::NET_RAW, Capability::CHOWN], 0));
        assert_eq!(
            text[0],
            "Pod Security Standards: privileged only: baseline forbids adding NET_RAW"
        );
        assert_eq!(text[1], "For restricted:");
    }

    #[test]
    fn baseline_is_dockers_default_without_net_raw() {
        let allowed: Vec<String> = baseline_allowed().iter().map(|c| c.to_string()).collect();
        assert_eq!(
            allowed,
            [
                "CHOWN",
                "DAC_OVERRIDE",
                "FOWNER",
                "FSETID",
                "KILL",
                "SETGID",
                "SETUID",
                "SETPCAP",
                "NET_BIND_SERVICE",
                "SYS_CHROOT",
                "MKNOD",
                "AUDIT_WRITE",
                "SETFCAP"
            ]
        );
    }

    #[test]
    fn no_checks_means_the_user_is_unknown() {
        let none = Profile::from_checks(Vec::new());
        assert_eq!(ran_as_root(&none), None);
        let a = assess(&none);
        assert_eq!(a.level, Level::Baseline);
        assert!(a.for_restricted[0].contains("saw none"));
    }
}
