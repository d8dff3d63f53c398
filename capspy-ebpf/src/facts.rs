//! Capabilities a process keeps or raises without a `cap_capable` check (`capset`,
//! `PR_CAP_AMBIENT_RAISE`, file capabilities at exec): counted in the same map as checks, under
//! keys whose `origin` says which, so every consumer of checks sees them. These are rare
//! syscalls, far from the check hot path.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes,
    },
    macros::map,
    maps::HashMap,
};
use capspy_common::{
    AUDIT_AUDITED, CLASSIFIER_SYSCALL, CheckKey, CheckStats, CredOffsets, FACT_PATH_LEN,
    PENDING_FACTS_CAPACITY, PendingFact, VERDICT_DENIED, VERDICT_GRANTED,
};

use crate::{
    TASK_REAL_CRED_OFFSET, bucket_of, current_task, reserve_sighting, task_field, upsert,
    userns_class,
};

#[unsafe(no_mangle)]
pub(crate) static CRED_OFFSETS: CredOffsets = CredOffsets {
    uid: 0,
    euid: 0,
    suid: 0,
    gid: 0,
    egid: 0,
    sgid: 0,
    cap_inheritable: 0,
    cap_permitted: 0,
    cap_ambient: 0,
    user_ns: 0,
};

/// A `capset` or `prctl` between its enter and exit tracepoints, per thread.
#[map]
pub(crate) static PENDING_FACTS: HashMap<u64, PendingFact> =
    HashMap::with_max_entries(PENDING_FACTS_CAPACITY, 0);

/// The current task's own credentials (`task->real_cred`), as the fact programs read them.
pub(crate) struct Caller {
    task: *const u8,
    cred: u64,
    pub offsets: CredOffsets,
}

impl Caller {
    #[inline(always)]
    pub(crate) fn current() -> Option<Self> {
        // SAFETY: globals written by the loader; the helper has no preconditions.
        let (real_cred_at, offsets) = unsafe {
            (
                core::ptr::read_volatile(&TASK_REAL_CRED_OFFSET),
                core::ptr::read_volatile(&CRED_OFFSETS),
            )
        };
        if real_cred_at == 0 {
            return None;
        }
        let task = current_task();
        Some(Self {
            task,
            cred: task_field(task, real_cred_at),
            offsets,
        })
    }

    /// A field of the credentials at `offset`; 0 when the offset is unknown or the read fails.
    #[inline(always)]
    pub(crate) fn read<T: Default>(&self, offset: u32) -> T {
        if offset == 0 {
            return T::default();
        }
        // SAFETY: a checked read of kernel memory.
        unsafe { bpf_probe_read_kernel((self.cred + u64::from(offset)) as *const T) }
            .unwrap_or_default()
    }

    /// Whether both the real and the effective uid are non-zero (unknown counts as root).
    #[inline(always)]
    pub(crate) fn non_root(&self) -> bool {
        let (uid, euid) = self.uids();
        uid != 0 && euid != 0
    }

    #[inline(always)]
    pub(crate) fn uids(&self) -> (u32, u32) {
        (self.read(self.offsets.uid), self.read(self.offsets.euid))
    }

    #[inline(always)]
    pub(crate) fn userns(&self) -> u8 {
        userns_class(self.read(self.offsets.user_ns))
    }

    #[inline(always)]
    pub(crate) fn bucket(&self) -> u8 {
        // The task's own credentials: never borrowed, runtime or app by comm.
        bucket_of(self.task, self.cred)
    }
}

/// Counts one fact for every capability in `caps`. `path` is a kernel string (the executed
/// file) that replaces the stack in the first sighting.
#[inline(always)]
pub(crate) fn record(
    origin: u8,
    caps: u64,
    granted: bool,
    caller: &Caller,
    path: Option<*const u8>,
) {
    if caps == 0 {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let mut key = CheckKey {
        // SAFETY: helper without preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        cap: 0,
        verdict: if granted {
            VERDICT_GRANTED
        } else {
            VERDICT_DENIED
        },
        // A fact's failure is a failed syscall: it counts like an audited check.
        audit: AUDIT_AUDITED,
        userns: caller.userns(),
        bucket: caller.bucket(),
        origin,
        syscall: 0,
    };
    for cap in 0..64u8 {
        if caps & (1 << cap) == 0 {
            continue;
        }
        key.cap = cap;
        if let Some(stats) = upsert(&key, pid_tgid, CLASSIFIER_SYSCALL) {
            emit(&key, &stats, path);
        }
    }
}

/// A first sighting whose `stack` carries `path` (or nothing): a fact has no call path.
#[inline(always)]
fn emit(key: &CheckKey, stats: &CheckStats, path: Option<*const u8>) {
    reserve_sighting(key, stats, |sighting| {
        if let Some(path) = path {
            // SAFETY: `sighting` is a reserved ring buffer record; the path read is checked and
            // bounded by the destination.
            unsafe {
                let dest = &mut *(&raw mut (*sighting).stack).cast::<[u8; FACT_PATH_LEN]>();
                // Keep a NUL at the end: the record is read as a NUL-terminated string.
                let _ = bpf_probe_read_kernel_str_bytes(path, &mut dest[..FACT_PATH_LEN - 1]);
            }
        }
    });
}

/// The exit of a `capset` or `prctl` whose enter left a [`PendingFact`]: counts what it shows.
#[inline(always)]
pub(crate) fn finish(ctx: &aya_ebpf::programs::TracePointContext, origin: u8) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_FACTS.get(pid_tgid) }).copied() else {
        return;
    };
    let _ = PENDING_FACTS.remove(pid_tgid);
    // SAFETY: `ret` at 16 in both exit tracepoints' records.
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(16) }) else {
        return;
    };
    if pending.origin != origin {
        return;
    }
    let Some(caller) = Caller::current() else {
        return;
    };
    if let Some((caps, granted)) = pending.needs(ret) {
        record(origin, caps, granted, &caller, None);
    }
}
