//! Types and names shared by the kernel program (`capspy-ebpf`) and the daemon (`capspy`).
//!
//! Everything here crosses the kernel boundary as raw bytes, so every struct is `#[repr(C)]`
//! with explicit padding fields: hash map keys are compared byte for byte, and uninitialised
//! padding would split one key into many.
#![cfg_attr(not(test), no_std)]

#[cfg(feature = "user")]
extern crate alloc;

/// Map names, as the loader looks them up in the object.
pub mod maps {
    /// `HashMap<CheckKey, CheckStats>`: the in-kernel aggregation.
    pub const CHECKS: &str = "CHECKS";
    /// `RingBuf` of [`super::FirstSighting`]: one record per new [`super::CheckKey`].
    pub const SIGHTINGS: &str = "SIGHTINGS";
    /// `PerCpuArray<u64>` indexed by [`super::counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// `Array<u8>`: audit class per call site (see [`super::SYSCALL_SLOTS`]), for hooks
    /// without `opts`; the loader marks some slots [`super::SITE_ALWAYS_WALK`].
    pub const CALL_SITE_CLASS: &str = "CALL_SITE_CLASS";
    /// `RingBuf` of [`super::NewCgroup`]: cgroup v2 directories as they are made.
    pub const NEW_CGROUPS: &str = "NEW_CGROUPS";
    /// `HashMap<u64, KprobeArgs>`: `cap_capable`'s arguments between kprobe and kretprobe.
    pub const KPROBE_ARGS: &str = "KPROBE_ARGS";
    /// `HashMap<u64, PendingFact>`: a `capset` or `prctl` between its enter and exit.
    pub const PENDING_FACTS: &str = "PENDING_FACTS";
    /// `CgrpStorage<[u64; CELLS]>` (Linux 6.2+, the `capspy-cgrp` object only): per cgroup, the
    /// counts of checks whose key has the common values, see [`super::cell_of`]. Userspace looks
    /// a cgroup up by an open fd of its directory.
    pub const CHECK_CELLS: &str = "CHECK_CELLS";
    /// `HashMap<u64, [u64; CELLS]>` (the `capspy-cgrp` object only): the cells of removed
    /// cgroups by cgroup id, copied when the cgroup is removed, until the daemon retires it.
    pub const FOLDED_CELLS: &str = "FOLDED_CELLS";
}

/// Global variables the loader sets before loading.
pub mod globals {
    /// `u32`: capspy's own tgid; its checks are not recorded.
    pub const SELF_TGID: &str = "SELF_TGID";
    /// `u32`: byte offset of `level` in `struct user_namespace` (from BTF), to tell checks
    /// against the initial user namespace; 0 when unknown.
    pub const USERNS_LEVEL_OFFSET: &str = "USERNS_LEVEL_OFFSET";
    /// `u8`: how to read `cap_capable`'s last argument, one of [`super::abi`].
    pub const CAP_CAPABLE_ABI: &str = "CAP_CAPABLE_ABI";
    /// `u32`: byte offset of `real_cred` in `struct task_struct` (from BTF); 0 when unknown.
    pub const TASK_REAL_CRED_OFFSET: &str = "TASK_REAL_CRED_OFFSET";
    /// `u32`: byte offset of `comm` in `struct task_struct` (from BTF); 0 when unknown.
    pub const TASK_COMM_OFFSET: &str = "TASK_COMM_OFFSET";
    /// `u8`: 1 when the kernel has the `bpf_get_current_task_btf` helper (Linux 5.11+), else 0.
    pub const TASK_BTF: &str = "TASK_BTF";
    /// `u8`: 1 when the kernel also has `bpf_task_pt_regs` (Linux 5.15+), to read the current
    /// syscall's number and arguments, else 0.
    pub const TASK_PT_REGS: &str = "TASK_PT_REGS";
    /// `[CommPrefix; RUNTIME_COMMS_CAPACITY]`: container runtime processes (unused slots zero).
    pub const RUNTIME_COMMS: &str = "RUNTIME_COMMS";
    /// `[AddrRange; ADVISORY_FUNCS_CAPACITY]`: kernel functions on the call path of advisory
    /// (noaudit) checks, from kallsyms.
    pub const ADVISORY_FUNCS: &str = "ADVISORY_FUNCS";
    /// [`super::CredOffsets`]: where `struct cred` keeps ids and capability sets (from BTF).
    pub const CRED_OFFSETS: &str = "CRED_OFFSETS";
    /// [`super::ExeOffsets`]: how to reach the current task's executable's name, from BTF.
    pub const EXE_OFFSETS: &str = "EXE_OFFSETS";
    /// [`super::CgroupOffsets`], for the cgroup storage (the `capspy-cgrp` object only).
    pub const CGROUP_OFFSETS: &str = "CGROUP_OFFSETS";
    /// `u8`: 0 in production; the benchmark's stage table sets N to stop the hot path after
    /// its stage N (1 to [`super::BENCH_STAGES`]), to price each stage.
    pub const BENCH_STOP_AFTER: &str = "BENCH_STOP_AFTER";
}

/// Stages the hot path can be stopped after ([`globals::BENCH_STOP_AFTER`]): 1 the self-tgid
/// check, 2 the call-site class, 3 the user-namespace class, 4 the bucket, 5 the setid origin,
/// 6 the cgroup storage cell. The full program is the next one.
pub const BENCH_STAGES: u8 = 6;

/// Program names in the object, one per attach method.
pub mod programs {
    pub const FEXIT: &str = "cap_capable_fexit";
    pub const KPROBE: &str = "cap_capable_kprobe";
    pub const KRETPROBE: &str = "cap_capable_kretprobe";
    pub const TP_BTF: &str = "cap_capable_tp_btf";
    pub const RAW_TRACEPOINT: &str = "cap_capable_raw_tp";
    pub const TRACEPOINT: &str = "cap_capable_tracepoint";
    /// `cgroup:cgroup_mkdir`, for attribution.
    pub const CGROUP_MKDIR: &str = "cgroup_mkdir";
    /// tp_btf `cgroup_rmdir` (the `capspy-cgrp` object only): folds a removed cgroup's
    /// [`super::maps::CHECK_CELLS`] into [`super::maps::CHECKS`] before the storage is freed.
    pub const CGROUP_RMDIR_FOLD: &str = "cgroup_rmdir_fold";
    /// Capabilities kept or raised without a `cap_capable` check (see [`super::ORIGIN_CAPSET`]),
    /// as (program, tracepoint category, tracepoint name).
    pub const FACTS: [(&str, &str, &str); 5] = [
        ("capset_enter", "syscalls", "sys_enter_capset"),
        ("capset_exit", "syscalls", "sys_exit_capset"),
        ("prctl_enter", "syscalls", "sys_enter_prctl"),
        ("prctl_exit", "syscalls", "sys_exit_prctl"),
        ("process_exec", "sched", "sched_process_exec"),
    ];
}

/// How `cap_capable`'s last argument is laid out (decided from BTF by the loader).
pub mod abi {
    /// Since 5.1: `unsigned int opts`, noaudit when `opts & CAP_OPT_NOAUDIT`.
    pub const OPTS: u8 = 0;
    /// Before 5.1: `int audit`, noaudit when `audit == SECURITY_CAP_NOAUDIT` (0).
    pub const LEGACY_AUDIT: u8 = 1;
    /// `CAP_OPT_NOAUDIT` from `include/linux/security.h`.
    pub const CAP_OPT_NOAUDIT: u64 = 1 << 1;
}

/// Indices into [`maps::COUNTERS`].
pub mod counter {
    /// A first sighting did not fit in the ring buffer (the map sweep still finds the key).
    pub const SIGHTINGS_LOST: u32 = 0;
    /// A new key did not fit in [`super::maps::CHECKS`]: its checks are only counted here.
    pub const CHECKS_OVERFLOW: u32 = 1;
    /// A call site could not be classified (stack capture failed); recorded as audited.
    pub const UNCLASSIFIED: u32 = 2;
    /// A `cgroup_mkdir` record did not fit in [`super::maps::NEW_CGROUPS`]: that cgroup's path
    /// is left to a walk, which cannot find it once it is removed.
    pub const CGROUPS_LOST: u32 = 3;
    pub const LEN: u32 = 4;
}

pub const CHECKS_CAPACITY: u32 = 32_768;
pub const ADVISORY_FUNCS_CAPACITY: u32 = 16;
pub const SIGHTINGS_BYTES: u32 = 256 * 1024;
pub const KPROBE_ARGS_CAPACITY: u32 = 10_240;
/// Kernel stack frames kept with a first sighting: enough to reach the caller that decides the
/// audit class (`cap_capable` ← `security_capable` ← `ns_capable_noaudit` ← ...).
pub const STACK_DEPTH: usize = 12;

pub const VERDICT_GRANTED: u8 = 0;
pub const VERDICT_DENIED: u8 = 1;

pub const AUDIT_AUDITED: u8 = 0;
pub const AUDIT_ADVISORY: u8 = 1;

/// How the audit class of a check was decided.
pub const CLASSIFIER_OPTS: u8 = 0;
pub const CLASSIFIER_CALL_PATH: u8 = 1;
/// The call path could not be read; the check is counted as audited, which errs towards a
/// sufficient profile rather than a minimal one.
pub const CLASSIFIER_NONE: u8 = 2;
/// Not a check: the verdict is a syscall's own return value (see [`ORIGIN_CAPSET`]).
pub const CLASSIFIER_SYSCALL: u8 = 3;

/// Who made the check: the workload, or a container runtime setting it up (`runc:[2:INIT]` before
/// it execs the entrypoint), told apart by the task's comm.
pub const BUCKET_APP: u8 = 0;
pub const BUCKET_RUNTIME: u8 = 1;
/// The check was made on credentials other than the task's own (`cred != current->real_cred`):
/// the kernel acting on someone else's behalf, e.g. overlayfs copy-up with the mounter's creds.
pub const BUCKET_BORROWED: u8 = 2;
/// Comm prefixes of container runtimes' setup processes, as little-endian `u64`s with a mask of
/// the bytes that must match (the prefix may include the terminating NUL).
pub const RUNTIME_COMMS_CAPACITY: usize = 4;
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommPrefix {
    pub value: u64,
    pub mask: u64,
}

/// What a [`CheckKey`] counts: `cap_capable` checks, or a capability that a process kept or
/// raised without one. A capability that is only kept makes no check, yet without it in the
/// bounding set the call that keeps it fails with EPERM.
pub const ORIGIN_CHECK: u8 = 0;
/// A non-root `capset(2)` that kept the capability in its permitted or inheritable set.
pub const ORIGIN_CAPSET: u8 = 1;
/// `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)`.
pub const ORIGIN_AMBIENT: u8 = 2;
/// A non-root `execve` whose new permitted set came from the file's `security.capability`.
/// The first sighting's `stack` carries the executed path instead of return addresses.
pub const ORIGIN_FILE_CAPS: u8 = 3;
/// A `cap_capable` check of SETUID or SETGID that `setuid`, `setgid`, `setresuid` or
/// `setresgid` made for ids the caller already holds: the call succeeds without the capability
/// (see [`own_id_check`]). Kept apart from [`ORIGIN_CHECK`] so that a daemon's needed
/// `setgid(www-data)` and its `setgid(getgid())` are two rows.
pub const ORIGIN_OWN_ID: u8 = 4;

pub const CAP_SETGID: u8 = 6;
pub const CAP_SETUID: u8 = 7;
pub const CAP_SYS_ADMIN: u8 = 21;

/// x86-64 syscall numbers, from
/// <https://github.com/torvalds/linux/blob/v6.18/arch/x86/entry/syscalls/syscall_64.tbl>.
pub mod nr {
    pub const MMAP: u64 = 9;
    pub const MPROTECT: u64 = 10;
    pub const BRK: u64 = 12;
    pub const MREMAP: u64 = 25;
    pub const SHMGET: u64 = 29;
    pub const CLONE: u64 = 56;
    pub const FORK: u64 = 57;
    pub const VFORK: u64 = 58;
    pub const EXECVE: u64 = 59;
    pub const SETUID: u64 = 105;
    pub const SETGID: u64 = 106;
    pub const SETRESUID: u64 = 117;
    pub const SETRESGID: u64 = 119;
    pub const MEMFD_CREATE: u64 = 319;
    pub const EXECVEAT: u64 = 322;
    pub const CLONE3: u64 = 435;
}

/// A caller's user ids, or its group ids: real, effective, saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub real: u32,
    pub effective: u32,
    pub saved: u32,
}

/// Whether a check of `cap` made in syscall `nr` with arguments `args` asks for ids the caller
/// (`ids`: its user ids for SETUID, group ids for SETGID, as seen from its own user namespace)
/// already holds, so that the call succeeds without the capability
/// (<https://github.com/torvalds/linux/blob/v6.18/kernel/sys.c>):
/// - `__sys_setuid(uid)` and `__sys_setgid(gid)` check the capability first, then allow an id
///   equal to the real or saved one; the call succeeds either way, and only with the
///   capability does it also set the real and saved ids (`setgid(getgid())` in a
///   set-group-ID program keeps its saved group without SETGID);
/// - `__sys_setresuid` and `__sys_setresgid` allow ids among the real, effective and saved
///   ones (`-1` leaves one as it is): since 6.4 they check only when one is new, before that
///   they checked first.
///
/// `setreuid`, `setregid`, `setfsuid` and `setfsgid` check only for an id the caller does not
/// hold: their checks are needs.
pub const fn own_id_check(cap: u8, nr: u64, args: [u32; 3], ids: Ids) -> bool {
    const fn held(id: u32, ids: Ids) -> bool {
        id == u32::MAX || id == ids.real || id == ids.effective || id == ids.saved
    }
    match (cap, nr) {
        (CAP_SETUID, nr::SETUID) | (CAP_SETGID, nr::SETGID) => {
            args[0] == ids.real || args[0] == ids.saved
        }
        (CAP_SETUID, nr::SETRESUID) | (CAP_SETGID, nr::SETRESGID) => {
            held(args[0], ids) && held(args[1], ids) && held(args[2], ids)
        }
        _ => false,
    }
}

/// Where `struct cred` keeps what the fact programs read, as byte offsets from BTF (0: unknown;
/// no field is at offset 0 except `usage`, which is never read).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CredOffsets {
    pub uid: u32,
    pub euid: u32,
    pub suid: u32,
    pub gid: u32,
    pub egid: u32,
    pub sgid: u32,
    pub cap_inheritable: u32,
    pub cap_permitted: u32,
    pub cap_ambient: u32,
    pub user_ns: u32,
}

/// A `capset(2)` or `prctl(PR_CAP_AMBIENT_RAISE)` between its enter and exit tracepoints.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingFact {
    /// [`ORIGIN_CAPSET`] or [`ORIGIN_AMBIENT`].
    pub origin: u8,
    /// 1 when the caller's uid and euid are both non-zero.
    pub non_root: u8,
    pub padding: [u8; 6],
    /// What the call asks for: capset's new permitted set, or the ambient capability.
    pub asked_permitted: u64,
    /// capset's new inheritable set.
    pub asked_inheritable: u64,
    /// The caller's permitted and inheritable sets before the call.
    pub held_permitted: u64,
    pub held_inheritable: u64,
}

impl PendingFact {
    /// The capabilities the call shows a need for, once it returned `ret`; `None` when it says
    /// nothing (another error than EPERM, or a root caller's capset).
    ///
    /// The kernel's rules (`cap_capset` in
    /// <https://github.com/torvalds/linux/blob/v6.18/security/commoncap.c>): the new permitted set
    /// must be a subset of the old one, the new inheritable set of the old inheritable set and
    /// the bounding set (and of the old permitted set without SETPCAP). So a capability a process
    /// keeps must still be in its permitted set, which under `--cap-drop` it is not: the call
    /// fails with EPERM. For `PR_CAP_AMBIENT_RAISE` the capability must be permitted and
    /// inheritable (`cap_task_prctl`, same file).
    ///
    /// What is a need:
    /// - a failed call (EPERM, any uid): the capabilities asked for and not held, as refused;
    /// - an ambient raise that succeeded (any uid: it is only ever done on purpose);
    /// - a non-root capset that changed the permitted set (after a switch from root, the set it
    ///   keeps is a choice: ntpd keeps SYS_TIME): the new permitted and inheritable sets. One that
    ///   leaves the permitted set as it was only restores the effective set (setpriv does, after
    ///   setresuid): only the capabilities it adds to the inheritable set count.
    ///
    /// A root capset is not a need: root's sets follow the bounding set at every exec, and its
    /// capset mostly drops (`ping` as root keeps `NET_RAW` only if it had it).
    pub fn needs(&self, ret: i64) -> Option<(u64, bool)> {
        const EPERM: i64 = 1;
        let held = self.held_permitted | self.held_inheritable;
        match ret {
            0 if self.origin == ORIGIN_AMBIENT => Some((self.asked_permitted, true)),
            0 if self.non_root == 0 => None,
            0 if self.asked_permitted != self.held_permitted => {
                Some((self.asked_permitted | self.asked_inheritable, true))
            }
            0 => Some((self.asked_inheritable & !self.held_inheritable, true)),
            r if r == -EPERM && self.origin == ORIGIN_AMBIENT => {
                Some((self.asked_permitted, false))
            }
            r if r == -EPERM => Some((
                (self.asked_permitted & !self.held_permitted) | (self.asked_inheritable & !held),
                false,
            )),
            _ => None,
        }
    }
}

/// The capabilities a process got from the file it just executed, from its new credentials.
/// For a process whose uid and euid are not 0, the new permitted set is
/// `(bounding & file permitted) | (inheritable & file inheritable) | ambient`
/// (`cap_bprm_creds_from_file` in
/// <https://github.com/torvalds/linux/blob/v6.18/security/commoncap.c>): what it holds beyond
/// the ambient set came from the file's `security.capability`. The exec fails with EPERM when
/// the bounding set lacks one of the file's permitted capabilities and the file has the
/// effective bit (`bprm_caps_from_vfs_caps`), as iputils' `ping` (`cap_net_raw=ep`) has. Root's
/// new permitted set is the whole bounding set, so its file capabilities cannot be told apart.
pub const fn file_caps_of_exec(uid: u32, euid: u32, permitted: u64, ambient: u64) -> u64 {
    if uid == 0 || euid == 0 {
        0
    } else {
        permitted & !ambient
    }
}

pub const PENDING_FACTS_CAPACITY: u32 = 1024;
/// Bytes of the executed path kept in a file-capability fact's first sighting (the `stack`).
pub const FACT_PATH_LEN: usize = STACK_DEPTH * 8;

pub const USERNS_INITIAL: u8 = 0;
pub const USERNS_OTHER: u8 = 1;
/// The kernel has no BTF to find `user_namespace.level` with.
pub const USERNS_UNKNOWN: u8 = 2;

/// The aggregation key: one row of a profile per cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CheckKey {
    /// cgroup v2 id (the inode number of the cgroup's folder).
    pub cgroup_id: u64,
    pub cap: u8,
    pub verdict: u8,
    pub audit: u8,
    pub userns: u8,
    /// [`BUCKET_APP`], [`BUCKET_RUNTIME`] or [`BUCKET_BORROWED`].
    pub bucket: u8,
    /// [`ORIGIN_CHECK`] or a capability kept without a check ([`ORIGIN_CAPSET`], ...).
    pub origin: u8,
    /// For an advisory check classified by call path (tracepoints), 1 + its syscall's slot (see
    /// [`SYSCALL_SLOTS`]); 0 otherwise. Advisory checks are kept apart per syscall so that the
    /// workload's overcommit checks (in every mmap) do not absorb an audited check whose
    /// (capability, syscall) pair the cache learnt as advisory: that check finds no key, and a
    /// new key's class is confirmed from its own stack. Userspace merges the rows again.
    pub syscall: u16,
}

impl CheckKey {
    /// The key as userspace aggregates it: advisory checks of every syscall together.
    #[must_use]
    pub const fn merged(mut self) -> Self {
        self.syscall = 0;
        self
    }
}

/// Counters per cgroup in [`maps::CHECK_CELLS`], 4 KiB per cgroup: one per capability x verdict
/// x audit class x origin (a check, or an own-id SETUID/SETGID check) in cells `0..CELL_CAPS * 8`,
/// then two (granted, denied) per syscall of [`OVERCOMMIT_SYSCALLS`].
pub const CELLS: usize = 512;
/// Entries of [`maps::FOLDED_CELLS`]: cgroups removed between two sweeps and the next.
pub const FOLDED_CAPACITY: u32 = 8192;

/// Capabilities with cells: all of Linux 6.18's (`CAP_LAST_CAP` is `CAP_CHECKPOINT_RESTORE`, 40,
/// <https://github.com/torvalds/linux/blob/v6.18/include/uapi/linux/capability.h>). A later
/// capability is counted in the hash.
pub const CELL_CAPS: u8 = 41;
/// The syscalls whose advisory CAP_SYS_ADMIN checks have cells of their own, as
/// [`CheckKey::syscall`] values (x86-64 number + 1; the last, every syscall at or above the last
/// slot of [`SYSCALL_SLOTS`]). These are where the overcommit heuristic checks: every accountable
/// (private writable) mapping made or grown, `security_vm_enough_memory_mm` in mmap, mprotect, brk,
/// mremap, fork's copy of the address space, exec's new stack and shmem
/// (<https://github.com/torvalds/linux/blob/v6.18/mm/vma.c>,
/// <https://github.com/torvalds/linux/blob/v6.18/mm/mprotect.c>,
/// <https://github.com/torvalds/linux/blob/v6.18/kernel/fork.c>,
/// <https://github.com/torvalds/linux/blob/v6.18/mm/shmem.c>): the check real work makes most,
/// which tracepoints classify by call path and key per syscall.
pub const OVERCOMMIT_SYSCALLS: [u16; 13] = [
    slot_key(nr::MMAP),
    slot_key(nr::MPROTECT),
    slot_key(nr::BRK),
    slot_key(nr::MREMAP),
    slot_key(nr::SHMGET),
    slot_key(nr::CLONE),
    slot_key(nr::FORK),
    slot_key(nr::VFORK),
    slot_key(nr::EXECVE),
    slot_key(nr::MEMFD_CREATE),
    slot_key(nr::EXECVEAT),
    slot_key(nr::CLONE3),
    slot_key(SYSCALL_SLOTS as u64 - 1),
];

/// [`CheckKey::syscall`] of a syscall number below [`SYSCALL_SLOTS`].
#[expect(
    clippy::cast_possible_truncation,
    reason = "syscall slots are below 512, checked at compile time"
)]
const fn slot_key(nr: u64) -> u16 {
    assert!(nr < SYSCALL_SLOTS as u64);
    nr as u16 + 1
}

/// The first cell of [`OVERCOMMIT_SYSCALLS`].
const OVERCOMMIT_CELLS: usize = (CELL_CAPS as usize) << 3;

/// The cell of `key` in its cgroup's storage, for the common keys: the workload's own check
/// (own credentials, [`BUCKET_APP`]) against the initial user namespace, classified without a
/// syscall slot, or an advisory CAP_SYS_ADMIN check in one of [`OVERCOMMIT_SYSCALLS`]. Every
/// other key is counted in the hash alone.
#[inline]
#[must_use]
pub const fn cell_of(key: &CheckKey) -> Option<usize> {
    let own_id = match key.origin {
        ORIGIN_CHECK => 0,
        ORIGIN_OWN_ID => 1,
        _ => return None,
    };
    if key.userns != USERNS_INITIAL
        || key.bucket != BUCKET_APP
        || key.cap >= CELL_CAPS
        || key.verdict > 1
        || key.audit > 1
    {
        return None;
    }
    if key.syscall == 0 {
        return Some(
            ((key.cap as usize) << 3)
                | ((key.verdict as usize) << 2)
                | ((key.audit as usize) << 1)
                | own_id,
        );
    }
    if key.cap != CAP_SYS_ADMIN || key.audit != AUDIT_ADVISORY || own_id != 0 {
        return None;
    }
    let mut i = 0;
    while i < OVERCOMMIT_SYSCALLS.len() {
        if OVERCOMMIT_SYSCALLS[i] == key.syscall {
            return Some(OVERCOMMIT_CELLS + 2 * i + key.verdict as usize);
        }
        i += 1;
    }
    None
}

/// The key a cell of `cgroup_id`'s storage counts for: the inverse of [`cell_of`]; None for a
/// cell no key has.
#[inline]
#[must_use]
#[expect(
    clippy::cast_possible_truncation,
    reason = "each field is masked to its width first"
)]
pub const fn cell_key(cgroup_id: u64, cell: usize) -> Option<CheckKey> {
    let common = CheckKey {
        cgroup_id,
        cap: (cell >> 3) as u8,
        verdict: ((cell >> 2) & 1) as u8,
        audit: ((cell >> 1) & 1) as u8,
        userns: USERNS_INITIAL,
        bucket: BUCKET_APP,
        origin: if cell & 1 == 0 {
            ORIGIN_CHECK
        } else {
            ORIGIN_OWN_ID
        },
        syscall: 0,
    };
    if cell < OVERCOMMIT_CELLS {
        return Some(common);
    }
    let i = (cell - OVERCOMMIT_CELLS) / 2;
    if i >= OVERCOMMIT_SYSCALLS.len() {
        return None;
    }
    Some(CheckKey {
        cap: CAP_SYS_ADMIN,
        verdict: ((cell - OVERCOMMIT_CELLS) & 1) as u8,
        audit: AUDIT_ADVISORY,
        origin: ORIGIN_CHECK,
        syscall: OVERCOMMIT_SYSCALLS[i],
        ..common
    })
}

/// Byte offsets from BTF for the cgroup storage: `task_struct.cgroups`, `css_set.dfl_cgrp`
/// (the task's cgroup v2), `cgroup.kn` and `kernfs_node.id` (the cgroup id checks carry).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupOffsets {
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
}

/// What the kernel keeps per [`CheckKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CheckStats {
    pub count: u64,
    /// `bpf_ktime_get_boot_ns()` of the first check.
    pub first_ns: u64,
    /// The kernel writes `first_ns` here and never updates it (a clock read per check costs as
    /// much as the rest of the hot path); userspace sets it to when it saw the count change.
    pub last_ns: u64,
    pub first_pid: u32,
    pub first_tgid: u32,
    pub first_uid: u32,
    pub classifier: u8,
    pub padding: [u8; 3],
    pub first_comm: [u8; 16],
}

/// The ring buffer record for the first check of a new key.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FirstSighting {
    pub key: CheckKey,
    pub stats: CheckStats,
    /// Kernel return addresses, innermost first; unused slots are 0.
    pub stack: [u64; STACK_DEPTH],
    /// For a check of the workload by a non-root process: the names of the executable's dentry
    /// and its parents up to its filesystem's root (`/`), innermost first, NUL-padded; all zero
    /// otherwise. Read in the kernel because such a process (refused a capability) often exits
    /// before userspace could read `/proc/PID/exe`.
    pub exe: [[u8; EXE_NAME_LEN]; EXE_DEPTH],
}

/// Path components kept of an executable's path, and bytes kept of each: a longer path or name
/// leaves the path unknown.
pub const EXE_DEPTH: usize = 8;
pub const EXE_NAME_LEN: usize = 48;

/// Byte offsets (from BTF) from the current task to its executable's dentry names:
/// `task->mm->exe_file->f_path.dentry`, then `d_name.name` and `d_parent`. `task_mm` is 0 when
/// unknown.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExeOffsets {
    pub task_mm: u32,
    pub mm_exe_file: u32,
    /// `f_path.dentry` in `struct file`.
    pub file_dentry: u32,
    pub dentry_parent: u32,
    /// `d_name.name` in `struct dentry`.
    pub dentry_name: u32,
    pub padding: u32,
}

impl FirstSighting {
    /// The executable's path from [`FirstSighting::exe`], when the names reached `/` whole.
    #[cfg(feature = "user")]
    pub fn exe_path(&self) -> Option<alloc::string::String> {
        let mut parts = alloc::vec::Vec::new();
        for name in &self.exe {
            let len = name.iter().position(|b| *b == 0)?;
            match &name[..len] {
                b"/" => {
                    parts.reverse();
                    return (!parts.is_empty()).then(|| alloc::format!("/{}", parts.join("/")));
                }
                b"" => return None,
                part => parts.push(alloc::string::String::from_utf8_lossy(part).into_owned()),
            }
        }
        None
    }
}

/// For hooks without `opts`, call sites are told apart by capability and syscall number (cheap
/// to read on every check) in an array of `64 * SYSCALL_SLOTS` classes; the stack is read once per
/// new call site. Syscall numbers at or above the last slot (and page faults) share it.
pub const SYSCALL_SLOTS: u32 = 512;
pub const CALL_SITE_SLOTS: u32 = 64 * SYSCALL_SLOTS;

/// A call-site class: not seen yet (the array's zero value), known audited or advisory, or "walk
/// the stack every time" for the few syscalls known to reach one capability both ways.
pub const SITE_UNKNOWN: u8 = 0;
pub const SITE_AUDITED: u8 = 1;
pub const SITE_ADVISORY: u8 = 2;
pub const SITE_ALWAYS_WALK: u8 = 3;

/// About 7,700 records: churn tests make 1,500 cgroups in a few seconds, two daemons at a time
/// (256 KiB, 960 records, overflowed under load and lost the paths of removed cgroups).
pub const CGROUPS_BYTES: u32 = 2 * 1024 * 1024;
/// Longest cgroup path kept (container paths are well under it).
pub const CGROUP_PATH_LEN: usize = 256;

/// A cgroup v2 directory just made: its id and path below the hierarchy's root.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NewCgroup {
    pub id: u64,
    /// NUL-terminated.
    pub path: [u8; CGROUP_PATH_LEN],
}

/// `[start, end)` of a kernel function's text.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrRange {
    pub start: u64,
    pub end: u64,
}

/// `cap_capable`'s arguments saved by the kprobe for its kretprobe.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KprobeArgs {
    pub cred: u64,
    pub target_ns: u64,
    pub cap: u32,
    pub last_arg: u32,
}

#[cfg(feature = "user")]
mod pod {
    use super::{
        AddrRange, CheckKey, CheckStats, CommPrefix, CredOffsets, FirstSighting, KprobeArgs,
        PendingFact,
    };

    // SAFETY: all are repr(C) plain data with explicit padding.
    unsafe impl aya::Pod for CheckKey {}
    unsafe impl aya::Pod for CheckStats {}
    unsafe impl aya::Pod for FirstSighting {}
    unsafe impl aya::Pod for AddrRange {}
    unsafe impl aya::Pod for CommPrefix {}
    unsafe impl aya::Pod for super::NewCgroup {}
    unsafe impl aya::Pod for KprobeArgs {}
    unsafe impl aya::Pod for super::ExeOffsets {}
    unsafe impl aya::Pod for CredOffsets {}
    unsafe impl aya::Pod for PendingFact {}
    unsafe impl aya::Pod for super::CgroupOffsets {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_common_key_has_its_own_cell_and_comes_back_from_it() {
        let mut seen = [false; CELLS];
        let mut keys = Vec::new();
        for cap in 0..CELL_CAPS {
            for verdict in 0..2 {
                for audit in 0..2 {
                    for origin in [ORIGIN_CHECK, ORIGIN_OWN_ID] {
                        keys.push(CheckKey {
                            cgroup_id: 9,
                            cap,
                            verdict,
                            audit,
                            userns: USERNS_INITIAL,
                            bucket: BUCKET_APP,
                            origin,
                            syscall: 0,
                        });
                    }
                }
            }
        }
        for syscall in OVERCOMMIT_SYSCALLS {
            for verdict in 0..2 {
                keys.push(CheckKey {
                    cgroup_id: 9,
                    cap: CAP_SYS_ADMIN,
                    verdict,
                    audit: AUDIT_ADVISORY,
                    userns: USERNS_INITIAL,
                    bucket: BUCKET_APP,
                    origin: ORIGIN_CHECK,
                    syscall,
                });
            }
        }
        for key in keys {
            let cell = cell_of(&key).unwrap();
            assert!(!seen[cell], "{key:?}");
            seen[cell] = true;
            assert_eq!(cell_key(9, cell), Some(key));
        }
        // The rest are no key's.
        for (cell, used) in seen.iter().enumerate() {
            assert_eq!(cell_key(9, cell).is_some(), *used, "cell {cell}");
        }
        let common = cell_key(9, 0).unwrap();
        let mmap = cell_of(&CheckKey {
            cap: CAP_SYS_ADMIN,
            audit: AUDIT_ADVISORY,
            syscall: 10,
            ..common
        })
        .and_then(|cell| cell_key(9, cell))
        .unwrap();
        for rare in [
            CheckKey {
                userns: USERNS_OTHER,
                ..common
            },
            CheckKey {
                bucket: BUCKET_RUNTIME,
                ..common
            },
            CheckKey {
                origin: ORIGIN_CAPSET,
                ..common
            },
            CheckKey {
                cap: CELL_CAPS,
                ..common
            },
            // Only the overcommit check is kept per syscall in cells, and only in its syscalls.
            CheckKey {
                syscall: 10,
                ..common
            },
            CheckKey {
                audit: AUDIT_AUDITED,
                ..mmap
            },
            CheckKey { syscall: 2, ..mmap },
            CheckKey {
                bucket: BUCKET_BORROWED,
                ..mmap
            },
        ] {
            assert_eq!(cell_of(&rare), None, "{rare:?}");
        }
    }

    const SYS_TIME: u64 = 1 << 25;
    const NET_BIND_SERVICE: u64 = 1 << 10;
    const SETUID: u64 = 1 << 7;
    const NET_RAW: u64 = 1 << 13;

    fn capset(non_root: u8, held: u64, asked: u64) -> PendingFact {
        PendingFact {
            origin: ORIGIN_CAPSET,
            non_root,
            held_permitted: held,
            asked_permitted: asked,
            ..PendingFact::default()
        }
    }

    #[test]
    fn a_non_root_capset_that_narrows_keeps_what_it_asks_for() {
        let kept = SYS_TIME | NET_BIND_SERVICE;
        let ntpd = capset(1, kept | SETUID, kept);
        assert_eq!(ntpd.needs(0), Some((kept, true)));
    }

    #[test]
    fn restoring_the_effective_set_or_a_root_capset_is_no_need() {
        // setpriv after setresuid: P' == P.
        assert_eq!(
            capset(1, SYS_TIME | SETUID, SYS_TIME | SETUID).needs(0),
            Some((0, true))
        );
        // root dropping to one capability.
        assert_eq!(capset(0, SYS_TIME | NET_RAW, NET_RAW).needs(0), None);
    }

    #[test]
    fn raising_the_inheritable_set_needs_what_it_adds() {
        let mut raise = capset(1, NET_RAW | SETUID, NET_RAW | SETUID);
        raise.asked_inheritable = NET_RAW;
        assert_eq!(raise.needs(0), Some((NET_RAW, true)));
    }

    #[test]
    fn a_refused_capset_blames_what_it_did_not_hold() {
        // Under --cap-drop ALL the kept set is empty: every capability asked for is refused.
        assert_eq!(capset(1, 0, SYS_TIME).needs(-1), Some((SYS_TIME, false)));
        assert_eq!(
            capset(0, NET_RAW, NET_RAW | SYS_TIME).needs(-1),
            Some((SYS_TIME, false))
        );
        // EINVAL (a bad version) says nothing.
        assert_eq!(capset(1, 0, SYS_TIME).needs(-22), None);
    }

    #[test]
    fn file_capabilities_are_what_a_non_root_exec_holds_beyond_ambient() {
        assert_eq!(file_caps_of_exec(1000, 1000, NET_RAW, 0), NET_RAW);
        assert_eq!(file_caps_of_exec(1000, 1000, NET_RAW, NET_RAW), 0);
        // Root (real or effective) gets the bounding set whatever the file says.
        assert_eq!(file_caps_of_exec(0, 0, u64::MAX, 0), 0);
        assert_eq!(file_caps_of_exec(1000, 0, u64::MAX, 0), 0);
    }

    #[test]
    fn an_ambient_raise_is_a_need_for_any_uid() {
        let raise = PendingFact {
            origin: ORIGIN_AMBIENT,
            asked_permitted: NET_RAW,
            ..PendingFact::default()
        };
        assert_eq!(raise.needs(0), Some((NET_RAW, true)));
        assert_eq!(raise.needs(-1), Some((NET_RAW, false)));
    }

    #[test]
    fn own_id_checks_are_those_the_kernel_allows_without_the_capability() {
        // ssh-agent, set-group-ID _ssh (gid 1000 real, 101 effective and saved): setgid(1000).
        let agent = Ids {
            real: 1000,
            effective: 101,
            saved: 101,
        };
        assert!(own_id_check(CAP_SETGID, nr::SETGID, [1000, 0, 0], agent));
        assert!(own_id_check(CAP_SETGID, nr::SETGID, [101, 0, 0], agent));
        // nginx as root: setgid(33) is a need; so is setgid to the effective group only.
        let root = Ids {
            real: 0,
            effective: 0,
            saved: 0,
        };
        assert!(!own_id_check(CAP_SETGID, nr::SETGID, [33, 0, 0], root));
        let effective_only = Ids {
            real: 1000,
            effective: 5,
            saved: 1000,
        };
        assert!(!own_id_check(
            CAP_SETGID,
            nr::SETGID,
            [5, 0, 0],
            effective_only
        ));
        // The same for users, and only with the syscall's own capability.
        assert!(own_id_check(CAP_SETUID, nr::SETUID, [0, 0, 0], root));
        assert!(!own_id_check(CAP_SETUID, nr::SETUID, [1000, 0, 0], root));
        assert!(!own_id_check(CAP_SETGID, nr::SETUID, [0, 0, 0], root));
        assert!(!own_id_check(CAP_SETUID, nr::SETGID, [0, 0, 0], root));
        // setres*: every id given (-1 leaves it) among real, effective and saved.
        assert!(own_id_check(
            CAP_SETGID,
            nr::SETRESGID,
            [u32::MAX, 5, 1000],
            effective_only
        ));
        assert!(!own_id_check(
            CAP_SETUID,
            nr::SETRESUID,
            [1000, 1000, 7],
            effective_only
        ));
        // setreuid, setfsuid, capset...: never (they check only for a new id).
        assert!(!own_id_check(CAP_SETUID, 113, [0, 0, 0], root));
        assert!(!own_id_check(CAP_SETUID, 122, [0, 0, 0], root));
    }
}
