//! Types and names shared by the kernel program (`capspy-ebpf`) and the daemon (`capspy`).
//!
//! Everything here crosses the kernel boundary as raw bytes, so every struct is `#[repr(C)]`
//! with explicit padding fields: hash map keys are compared byte for byte, and uninitialised
//! padding would split one key into many.
#![no_std]

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
    /// `[CommPrefix; RUNTIME_COMMS_CAPACITY]`: container runtime processes (unused slots zero).
    pub const RUNTIME_COMMS: &str = "RUNTIME_COMMS";
    /// `[AddrRange; ADVISORY_FUNCS_CAPACITY]`: kernel functions on the call path of advisory
    /// (noaudit) checks, from kallsyms.
    pub const ADVISORY_FUNCS: &str = "ADVISORY_FUNCS";
}

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
    pub const LEN: u32 = 3;
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
    /// [`BUCKET_APP`] or [`BUCKET_RUNTIME`].
    pub bucket: u8,
    pub padding: [u8; 3],
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

pub const CGROUPS_BYTES: u32 = 256 * 1024;
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
    use super::{AddrRange, CheckKey, CheckStats, CommPrefix, FirstSighting, KprobeArgs};

    // SAFETY: all are repr(C) plain data with explicit padding.
    unsafe impl aya::Pod for CheckKey {}
    unsafe impl aya::Pod for CheckStats {}
    unsafe impl aya::Pod for FirstSighting {}
    unsafe impl aya::Pod for AddrRange {}
    unsafe impl aya::Pod for CommPrefix {}
    unsafe impl aya::Pod for super::NewCgroup {}
    unsafe impl aya::Pod for KprobeArgs {}
}
