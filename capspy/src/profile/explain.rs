//! The plain-language reasons a report gives for each required capability: what kept it without a
//! check, or what the capability lets a process do and who asked for it, from the call path.

use crate::model::caps::Capability;
use crate::model::check::{CheckRow, Origin, UserNs};
use crate::trace::call_path::{asked_by, has_frame};

use super::Dac;

/// One plain-language reason for a required capability: what kept it without a check (that call
/// fails outright without it) if anything did, else what it is and who asked.
pub(super) fn explain(cap: Capability, rows: &[&CheckRow], dac: Option<&Dac>) -> String {
    let checks: Vec<&CheckRow> = rows
        .iter()
        .copied()
        .filter(|r| r.origin == Origin::Check)
        .collect();
    match fact_reason(rows) {
        Some(fact) if checks.is_empty() => fact,
        Some(fact) => format!("{fact}; it also {}", explain_checks(cap, &checks, dac)),
        None => explain_checks(cap, rows, dac),
    }
}

/// Why a capability kept without a check is needed, from the earliest such row; `None` if every
/// row is a check.
fn fact_reason(rows: &[&CheckRow]) -> Option<String> {
    let row = rows
        .iter()
        .filter(|r| r.origin != Origin::Check)
        .min_by_key(|r| r.first_seen)?;
    let who = format!("{}, uid {}", row.example.comm, row.example.uid);
    Some(match row.origin {
        Origin::FileCaps => format!(
            "needed by the file capabilities of {} executed as uid {}; without it in the \
             bounding set the exec fails with EPERM",
            row.call_path
                .first()
                .map_or(row.example.comm.as_str(), String::as_str),
            row.example.uid
        ),
        Origin::Ambient => format!(
            "raised into the ambient set with prctl(PR_CAP_AMBIENT_RAISE) ({who}); without it \
             the raise fails with EPERM"
        ),
        Origin::Capset | Origin::Check => format!(
            "kept across the switch to uid {} with capset ({}); without it in the bounding set \
             that capset fails with EPERM",
            row.example.uid, row.example.comm
        ),
    })
}

/// The reason from the checks themselves.
fn explain_checks(cap: Capability, rows: &[&CheckRow], dac: Option<&Dac>) -> String {
    let path: &[String] = rows
        .iter()
        .find(|r| !r.call_path.is_empty())
        .map_or(&[], |r| r.call_path.as_slice());
    let on = |names: &[&str]| has_frame(path, names);
    let count: u64 = rows.iter().map(|r| r.count).sum();
    let (what, advice): (String, &str) = match cap.name().as_str() {
        "DAC_OVERRIDE" => (dac_override_reason(dac, count), CHECK_FILES),
        "DAC_READ_SEARCH" => (dac_read_search_reason(dac, on), CHECK_FILES),
        "NET_RAW" => (
            net_raw_reason(on),
            "ping over an unprivileged ICMP socket (net.ipv4.ping_group_range) needs none",
        ),
        "NET_ADMIN" => (net_admin_reason(on), ""),
        "SYS_ADMIN" => (
            sys_admin_reason(on),
            "look for a narrower capability or remove the need",
        ),
        name => PLAIN.iter().find(|(n, ..)| *n == name).map_or_else(
            || (format!("made a granted check of {cap}"), ""),
            |(_, what, advice)| ((*what).to_string(), *advice),
        ),
    };
    let mut reason = what;
    match asked_by(path) {
        Some(a) => reason = format!("{reason} (asked by {a})"),
        None if cap == Capability::SYS_ADMIN => reason.push_str(" (no call path was recorded)"),
        None => {}
    }
    if rows.iter().any(|r| r.user_namespace == UserNs::Unknown) {
        reason.push_str(" [user namespace unknown: counted as the host's]");
    }
    if !advice.is_empty() {
        reason = format!("{reason}; {advice}");
    }
    reason
}

/// What a capability lets a process do, and the guide's advice, for those whose call path adds
/// nothing the name does not say (the others have their own functions below).
const PLAIN: &[(&str, &str, &str)] = &[
    (
        "CHOWN",
        "changed the owner or group of a file (chown)",
        "or create the files as the right user in the image",
    ),
    (
        "FOWNER",
        "acted on a file it does not own (chmod, utimes, flags, ACLs)",
        CHECK_FILES,
    ),
    (
        "FSETID",
        "kept a setuid/setgid bit on a file it changed, or set setgid for another group",
        "",
    ),
    ("KILL", "sent a signal to a process of another user", ""),
    (
        "SETGID",
        "changed its group IDs (setgid, setgroups), e.g. to drop root for a service user",
        "or start it as that user instead (--user)",
    ),
    (
        "SETUID",
        "changed its user IDs (setuid), e.g. to drop root for a service user",
        "or start it as that user instead (--user)",
    ),
    (
        "SETPCAP",
        "changed capability sets or securebits (capset, prctl)",
        "",
    ),
    (
        "LINUX_IMMUTABLE",
        "set or cleared a file's immutable or append-only flag",
        "",
    ),
    (
        "NET_BIND_SERVICE",
        "bound a port below 1024",
        "or listen on a high port instead",
    ),
    (
        "NET_BROADCAST",
        "used broadcast or multicast privileges",
        "",
    ),
    (
        "IPC_LOCK",
        "locked memory beyond RLIMIT_MEMLOCK (mlock, huge pages)",
        "or raise the memlock limit (--ulimit memlock=...)",
    ),
    ("IPC_OWNER", "used System V IPC objects of another user", ""),
    (
        "SYS_MODULE",
        "loaded or unloaded a kernel module",
        "avoid in production: load modules on the host",
    ),
    (
        "SYS_RAWIO",
        "performed raw I/O (I/O ports, /dev/mem, low mmap addresses)",
        "",
    ),
    ("SYS_CHROOT", "called chroot", ""),
    (
        "SYS_PTRACE",
        "traced or inspected a process of another user (ptrace, /proc/PID)",
        "",
    ),
    ("SYS_PACCT", "configured process accounting (acct)", ""),
    (
        "SYS_BOOT",
        "rebooted or loaded a new kernel (reboot, kexec)",
        "",
    ),
    (
        "SYS_NICE",
        "raised a priority, chose a real-time scheduler or set another process's CPU affinity",
        "",
    ),
    (
        "SYS_RESOURCE",
        "exceeded or raised a resource limit (setrlimit, quotas, reserved space)",
        "or raise the limit for the container (--ulimit)",
    ),
    ("SYS_TIME", "set the system clock", ""),
    ("SYS_TTY_CONFIG", "configured a terminal (vhangup)", ""),
    (
        "MKNOD",
        "created a device node (mknod)",
        "or pass the device in (--device)",
    ),
    ("LEASE", "took a lease on a file it does not own", ""),
    (
        "AUDIT_WRITE",
        "wrote a record to the kernel audit log (e.g. login, sudo, sshd)",
        "",
    ),
    ("AUDIT_CONTROL", "configured kernel auditing", ""),
    (
        "SETFCAP",
        "set file capabilities (setcap), or mapped root into a new user namespace",
        "",
    ),
    (
        "MAC_OVERRIDE",
        "overrode the mandatory access control policy",
        "",
    ),
    (
        "MAC_ADMIN",
        "configured mandatory access control (AppArmor, SELinux, Smack)",
        "",
    ),
    (
        "SYSLOG",
        "read or configured the kernel log (dmesg, klogctl)",
        "",
    ),
    ("WAKE_ALARM", "set an alarm that wakes the system", ""),
    (
        "BLOCK_SUSPEND",
        "kept the system from suspending (EPOLLWAKEUP)",
        "",
    ),
    ("AUDIT_READ", "read the audit log over netlink", ""),
    (
        "PERFMON",
        "used performance monitoring beyond the unprivileged limits (perf_event_open)",
        "",
    ),
    ("BPF", "loaded BPF programs or created BPF maps", ""),
    (
        "CHECKPOINT_RESTORE",
        "chose PIDs or restored a process (clone3 set_tid, ns_last_pid)",
        "",
    ),
];

fn net_raw_reason(on: impl Fn(&[&str]) -> bool) -> String {
    if on(&["packet_create"]) {
        "opened a packet socket (AF_PACKET), as packet capture does"
    } else if on(&["inet_create", "inet6_create"]) {
        "opened a raw IP or ICMP socket, as ping does"
    } else if on(&["setsockopt"]) {
        "set a socket option reserved to raw networking (e.g. SO_BINDTODEVICE, IP_TRANSPARENT)"
    } else {
        "used raw sockets (raw IP, ICMP or packet sockets, e.g. ping)"
    }
    .to_string()
}

fn net_admin_reason(on: impl Fn(&[&str]) -> bool) -> String {
    if on(&["dev_ifsioc", "dev_ioctl", "dev_change_flags"]) {
        "changed a network interface's settings (e.g. promiscuous mode for packet capture, link \
         state)"
    } else if on(&["rtnetlink", "rtnl_", "do_setlink"]) {
        "changed network configuration over netlink (links, addresses, routes)"
    } else if on(&["nf_", "nft_", "ipt_", "ip6t_", "do_ipt", "xt_"]) {
        "changed firewall rules"
    } else if on(&["setsockopt"]) {
        "set a socket option reserved to network administration"
    } else {
        "administered the network (interfaces, routes, firewall, privileged socket options)"
    }
    .to_string()
}

const CHECK_FILES: &str = "check file ownership and permissions first";

fn dac_override_reason(dac: Option<&Dac>, count: u64) -> String {
    let base = "opened, wrote or executed files its permissions did not allow";
    match dac {
        Some(Dac::Unpaired { unpaired, checks }) if unpaired == checks => format!(
            "{base}: none of the {checks} DAC_OVERRIDE check(s) followed a DAC_READ_SEARCH \
             check, so they were writes or execs, which DAC_READ_SEARCH does not cover"
        ),
        Some(Dac::Unpaired { unpaired, checks }) => format!(
            "{base}: {unpaired} of {checks} DAC_OVERRIDE checks had no DAC_READ_SEARCH check \
             before them (a read checks DAC_READ_SEARCH first), so a write or exec needed it"
        ),
        Some(Dac::ReadSearchHeld) => format!(
            "{base}: reads were served by DAC_READ_SEARCH, so these {count} check(s) were writes \
             or execs"
        ),
        Some(Dac::Elsewhere { asked_by }) => format!(
            "overrode file permissions (asked by {asked_by}, not a plain file permission check \
             that DAC_READ_SEARCH could serve)"
        ),
        Some(Dac::Unproven | Dac::ReadsOnly) | None => format!(
            "{base}: kept rather than DAC_READ_SEARCH because the call paths do not show these \
             were only reads"
        ),
    }
}

fn dac_read_search_reason(dac: Option<&Dac>, on: impl Fn(&[&str]) -> bool) -> String {
    if dac == Some(&Dac::ReadsOnly) {
        return "read files or searched directories its permissions did not allow: every \
                DAC_OVERRIDE grant followed a denied DAC_READ_SEARCH check in \
                generic_permission, the kernel's order for reads and searches, and no write or \
                exec needed an override, so DAC_READ_SEARCH alone suffices (only the first \
                check of each kind has a call path: if a write fails, add DAC_OVERRIDE)"
            .into();
    }
    if on(&["handle_to_path", "do_handle_open", "may_decode_fh"]) {
        return "opened a file by handle (open_by_handle_at)".into();
    }
    "read files or searched directories its permissions did not allow".into()
}

fn sys_admin_reason(on: impl Fn(&[&str]) -> bool) -> String {
    let what = if on(&[
        "path_mount",
        "do_mount",
        "do_new_mount",
        "fsconfig",
        "fsopen",
        "fsmount",
        "move_mount",
        "mount_setattr",
    ]) {
        "mounted a filesystem"
    } else if on(&["path_umount", "ksys_umount"]) {
        "unmounted a filesystem"
    } else if on(&[
        "create_new_namespaces",
        "unshare_nsproxy_namespaces",
        "ksys_unshare",
        "copy_namespaces",
        "setns",
        "validate_nsset",
    ]) {
        "created or entered namespaces (unshare, clone, setns)"
    } else if on(&["sethostname", "setdomainname"]) {
        "set the hostname or domain name"
    } else if on(&["seccomp"]) {
        "installed a seccomp filter without no_new_privs (set no_new_privs first instead)"
    } else if on(&["swapon", "swapoff"]) {
        "enabled or disabled swap"
    } else if on(&["bpf"]) {
        "used bpf() beyond the unprivileged limits"
    } else if on(&["quotactl"]) {
        "managed disk quotas"
    } else if on(&["keyctl", "key_"]) {
        "managed kernel keyrings"
    } else if on(&["fanotify"]) {
        "watched filesystems with fanotify"
    } else {
        "allowed an administrative operation"
    };
    format!("the new root, a catch-all for administrative operations: here it {what}")
}
