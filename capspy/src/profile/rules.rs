//! Rules that read a check's call path beyond its audit class: checks whose denial fails no
//! syscall (behaviour-only), the audit class the call path shows, and the required capabilities
//! whose need a trace cannot prove.

use crate::model::caps::Capability;
use crate::model::check::AuditClass;
use crate::trace::call_path::frame_names;

/// A kind of check whose denial fails no syscall: the kernel only does something else.
#[derive(Debug, PartialEq, Eq)]
pub struct BehaviourOnly {
    pub capability: Capability,
    /// The first caller past the capability plumbing (`capable`, `capable_wrt_inode_uidgid`):
    /// any of these.
    pub callers: &'static [&'static str],
    /// What denying the check changes, as the report says it.
    pub effect: &'static str,
}

/// Every behaviour-only kind capspy knows. A check from another caller stays a need, even of
/// the same capability (a filesystem's own FSETID check may do anything).
pub const BEHAVIOUR_ONLY: &[BehaviourOnly] = &[
    // The set-group-ID bit of a file whose group the caller is not in survives a chmod, a
    // setattr or a create in a set-group-ID directory only with FSETID; otherwise it is
    // stripped and the call succeeds. `in_group_or_capable` is inlined into its callers on some
    // builds (6.18 here: setattr_prepare, setattr_copy, mode_strip_sgid).
    // https://github.com/torvalds/linux/blob/v6.18/fs/inode.c (in_group_or_capable,
    // mode_strip_sgid, inode_init_owner), https://github.com/torvalds/linux/blob/v6.18/fs/attr.c
    // (setattr_prepare, setattr_copy, setattr_should_drop_sgid),
    // https://github.com/torvalds/linux/blob/v6.18/fs/posix_acl.c (posix_acl_update_mode).
    BehaviourOnly {
        capability: Capability::FSETID,
        callers: &[
            "in_group_or_capable",
            "setattr_prepare",
            "setattr_copy",
            "setattr_should_drop_sgid",
            "mode_strip_sgid",
            "inode_init_owner",
            "posix_acl_update_mode",
        ],
        effect: "without FSETID, the kernel clears the set-group-ID bit of files the workload \
                 chmods or creates in a set-group-ID directory (when it is not in the file's \
                 group); the call succeeds either way",
    },
    // A write or truncate by a caller without FSETID clears the file's set-user-ID and
    // set-group-ID bits (file_remove_privs); the write succeeds either way. Before 6.2 the
    // function was should_remove_suid.
    // https://github.com/torvalds/linux/blob/v6.18/fs/attr.c (setattr_should_drop_suidgid),
    // https://github.com/torvalds/linux/blob/v6.18/fs/inode.c (file_remove_privs_flags).
    BehaviourOnly {
        capability: Capability::FSETID,
        callers: &["setattr_should_drop_suidgid", "should_remove_suid"],
        effect: "without FSETID, the kernel clears the set-user-ID and set-group-ID bits of \
                 files the workload writes or truncates; the write succeeds either way",
    },
    // pagemap_read asks SYS_ADMIN to decide whether to show page frame numbers; without it the
    // read succeeds with them zeroed.
    // https://github.com/torvalds/linux/blob/v6.18/fs/proc/task_mmu.c (pagemap_read).
    BehaviourOnly {
        capability: Capability::SYS_ADMIN,
        callers: &["pagemap_read"],
        effect: "without SYS_ADMIN, reads of /proc/PID/pagemap show page frame numbers as zero; \
                 the read succeeds either way",
    },
];

/// SETUID and SETGID checks that the kernel program marked as asking only for ids the caller
/// already holds (`capspy_common::own_id_check`, which cites the kernel): `setuid` and
/// `setgid` check the capability first and succeed without it for the real or saved id, then
/// leaving the real and saved ids as they were. The call path cannot tell them apart from a
/// needed `setgid(www-data)` (both are `ns_capable_setid <- __sys_setgid`); the syscall's
/// argument can.
pub const OWN_ID: &[BehaviourOnly] = &[
    BehaviourOnly {
        capability: Capability::SETUID,
        callers: &["__sys_setuid", "__sys_setresuid"],
        effect: "without SETUID, setuid(2) to the process's own real or saved user still \
                 succeeds, leaving its real and saved users as they were (a set-user-ID program \
                 keeps its saved user)",
    },
    BehaviourOnly {
        capability: Capability::SETGID,
        callers: &["__sys_setgid", "__sys_setresgid"],
        effect: "without SETGID, setgid(2) to the process's own real or saved group still \
                 succeeds, leaving its real and saved groups as they were (a set-group-ID \
                 program keeps its saved group)",
    },
];

/// The behaviour-only kind of a check of `cap` with this call path, if it is one; `own_id`
/// when the kernel program marked it as asking only for ids the caller holds ([`OWN_ID`]).
/// Otherwise an empty call path is none: unclassified checks stay needs.
pub fn behaviour_only(
    cap: Capability,
    own_id: bool,
    call_path: &[String],
) -> Option<&'static BehaviourOnly> {
    if own_id {
        return OWN_ID.iter().find(|b| b.capability == cap);
    }
    let caller = crate::trace::call_path::first_caller(call_path)?;
    BEHAVIOUR_ONLY
        .iter()
        .find(|b| b.capability == cap && b.callers.contains(&caller))
}

/// The audit class a call path shows: advisory when it passes through a function that makes
/// noaudit checks (the list the kernel program classifies with), audited otherwise; `None`
/// without a call path.
pub fn class_from_evidence(call_path: &[String]) -> Option<AuditClass> {
    if call_path.is_empty() {
        return None;
    }
    let advisory =
        frame_names(call_path).any(|f| crate::trace::hook::ADVISORY_FUNCTIONS.contains(&f));
    Some(if advisory {
        AuditClass::Advisory
    } else {
        AuditClass::Audited
    })
}

/// Required capabilities whose failure programs commonly ignore, so that a granted check does
/// not prove the workload needs them.
const UNPROVEN: &[(Capability, &str)] = &[
    (
        Capability::AUDIT_WRITE,
        "programs that write audit records (sshd, login, sudo, PAM's pam_loginuid, su) go on \
         when the kernel refuses them",
    ),
    // dnsmasq, still root, fchowns its pid file to its service user and only warns when that
    // fails; nginx's chown of its temporary folders, from the same call path
    // (`capable_wrt_inode_uidgid <- setattr_prepare <- chown_common`), is needed.
    (
        Capability::CHOWN,
        "programs starting as root often chown a pid or log file to their service user and \
         only warn when that fails (dnsmasq does); the kernel check is the same as for a chown \
         the program needs, so only a run without it tells",
    ),
    (
        Capability::FSETID,
        "FSETID checks usually only decide whether a set-user-ID or set-group-ID bit is cleared \
         (those capspy recognises are listed as optional); this one came from another caller",
    ),
];

/// Why a required capability is not proven needed, if it is not: a fixed list of capabilities
/// programs often do without, and capabilities whose every requiring check lacks a call path
/// (so capspy could not tell whether it only chose a behaviour). `call_paths` are those of the
/// requiring checks; `kept` says whether a capability kept without a check (capset, ambient
/// raise, file capabilities) requires it too: such a need fails a syscall when the capability
/// is missing, with or without a call path.
pub fn unproven(cap: Capability, call_paths: &[&[String]], kept: bool) -> Option<String> {
    if let Some((_, why)) = UNPROVEN.iter().find(|(c, _)| *c == cap) {
        return Some((*why).to_string());
    }
    (!kept && call_paths.iter().all(|p| p.is_empty())).then(|| {
        "no call path was recorded for its checks, so capspy could not tell whether they only \
         chose a behaviour"
            .to_string()
    })
}

/// What to tell the user about a capability needed by a process that ran as a non-root uid:
/// Docker and Kubernetes set no ambient capabilities, so `--cap-add` only bounds such a process;
/// file capabilities on its binary (or starting as root and dropping privileges while keeping
/// the capability) put it in the effective set.
pub fn setcap_line(cap: Capability, exe: &str) -> Option<String> {
    // A path with shell metacharacters would not survive a Dockerfile RUN line as printed.
    let plain = exe.starts_with('/')
        && exe
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+@".contains(&b));
    plain.then(|| format!("RUN setcap {}+ep {exe}", cap_flag_name(cap)))
}

/// `cap_net_bind_service`: the name setcap(8) and libcap take.
fn cap_flag_name(cap: Capability) -> String {
    format!("cap_{}", cap.name().to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(frames: &[&str]) -> Vec<String> {
        frames.iter().map(|f| (*f).to_string()).collect()
    }

    #[test]
    fn set_id_clearing_paths_are_behaviour_only() {
        // Stacks measured on 6.18 (in_group_or_capable inlined).
        for frames in [
            &[
                "security_capable+0x3b",
                "capable_wrt_inode_uidgid+0x39",
                "setattr_prepare+0x1dc",
                "ext4_setattr+0x71",
            ][..],
            &[
                "security_capable+0x3b",
                "capable_wrt_inode_uidgid+0x39",
                "mode_strip_sgid+0x86",
                "path_openat+0xc8b",
            ],
            &[
                "security_capable+0x3b",
                "capable+0x2e",
                "setattr_should_drop_suidgid+0xa3",
                "file_remove_privs_flags+0xba",
            ],
            &[
                "security_capable+0x3b",
                "capable_wrt_inode_uidgid+0x39",
                "in_group_or_capable+0x20",
                "setattr_prepare+0x1dc",
            ],
        ] {
            let b = behaviour_only(Capability::FSETID, false, &path(frames));
            assert!(b.is_some(), "{frames:?}");
            assert!(b.unwrap().effect.starts_with("without FSETID"));
        }
        let pagemap = path(&[
            "security_capable+0x3b",
            "file_ns_capable+0x15",
            "pagemap_read+0x7b",
        ]);
        assert!(behaviour_only(Capability::SYS_ADMIN, false, &pagemap).is_some());
    }

    #[test]
    fn other_callers_and_missing_call_paths_stay_needs() {
        // CHOWN from setattr_prepare fails chown(2) when denied.
        let chown = path(&[
            "security_capable+0x3b",
            "capable_wrt_inode_uidgid+0x39",
            "setattr_prepare+0x1a0",
        ]);
        assert_eq!(behaviour_only(Capability::CHOWN, false, &chown), None);
        // An FSETID check from a filesystem's own code: not known to be behaviour-only.
        let xfs = path(&[
            "security_capable+0x3b",
            "capable+0x2e",
            "xfs_setattr_nonsize+0x1",
        ]);
        assert_eq!(behaviour_only(Capability::FSETID, false, &xfs), None);
        assert_eq!(behaviour_only(Capability::FSETID, false, &[]), None);
        // SYS_ADMIN elsewhere (proc_pid_stack fails the read when denied).
        let stack = path(&[
            "security_capable+0x3b",
            "file_ns_capable+0x15",
            "proc_pid_stack+0x2a",
        ]);
        assert_eq!(behaviour_only(Capability::SYS_ADMIN, false, &stack), None);
    }

    #[test]
    fn evidence_classes() {
        let ps = path(&[
            "security_capable+0x3b",
            "ns_capable_noaudit+0x2d",
            "pid_table_root_permissions+0x23",
            "sysctl_perm+0x1e",
        ]);
        assert_eq!(class_from_evidence(&ps), Some(AuditClass::Advisory));
        let overcommit = path(&["security_vm_enough_memory_mm+0x36", "do_brk_flags+0xb6"]);
        assert_eq!(class_from_evidence(&overcommit), Some(AuditClass::Advisory));
        let stack = path(&[
            "security_capable+0x3b",
            "file_ns_capable+0x15",
            "proc_pid_stack+0x2a",
        ]);
        assert_eq!(class_from_evidence(&stack), Some(AuditClass::Audited));
        assert_eq!(class_from_evidence(&[]), None);
    }

    #[test]
    fn own_id_checks_are_optional_whatever_their_call_path() {
        // ssh-agent's setgid(getgid()) and nginx's setgid(www-data): one call path.
        let setgid = path(&[
            "security_capable+0x3b",
            "ns_capable_setid+0x2a",
            "__sys_setgid+0x5e",
        ]);
        let own = behaviour_only(Capability::SETGID, true, &setgid).unwrap();
        assert!(own.effect.starts_with("without SETGID"), "{}", own.effect);
        assert!(own.callers.contains(&"__sys_setgid"));
        assert!(behaviour_only(Capability::SETUID, true, &[]).is_some());
        assert_eq!(behaviour_only(Capability::SETGID, false, &setgid), None);
        // The kernel marks only SETUID and SETGID checks.
        assert_eq!(behaviour_only(Capability::CHOWN, true, &setgid), None);
    }

    #[test]
    fn unproven_list_and_missing_call_paths() {
        let with = path(&["security_capable+0x3b", "inet_create+0x10b"]);
        assert!(unproven(Capability::AUDIT_WRITE, &[&with], false).is_some());
        assert!(unproven(Capability::FSETID, &[&with], false).is_some());
        let chown = unproven(Capability::CHOWN, &[&with], false).unwrap();
        assert!(chown.contains("only a run without it"), "{chown}");
        assert_eq!(unproven(Capability::NET_RAW, &[&with], false), None);
        assert_eq!(unproven(Capability::NET_RAW, &[&[], &with], false), None);
        let none = unproven(Capability::NET_RAW, &[&[]], false).unwrap();
        assert!(none.contains("no call path"), "{none}");
        // Kept with capset (chrony's NET_BIND_SERVICE): no call path, and a proven need.
        assert_eq!(unproven(Capability::NET_BIND_SERVICE, &[], true), None);
    }

    #[test]
    fn setcap_lines_only_for_paths_that_survive_a_run_line() {
        assert_eq!(
            setcap_line(Capability::NET_BIND_SERVICE, "/bin/busybox").as_deref(),
            Some("RUN setcap cap_net_bind_service+ep /bin/busybox")
        );
        assert_eq!(setcap_line(Capability::NET_RAW, "/usr/bin/a b"), None);
        assert_eq!(setcap_line(Capability::NET_RAW, "/x;rm -rf /"), None);
        assert_eq!(setcap_line(Capability::NET_RAW, "busybox"), None);
    }
}
