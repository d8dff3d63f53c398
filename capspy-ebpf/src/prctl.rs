//! `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)`: a capability raised into the ambient set
//! (the only way a non-root program's child keeps it across exec). It needs the capability in
//! the permitted and inheritable sets, and makes no capability check.
//!
//! `int prctl(int option, unsigned long arg2, unsigned long arg3, ...);` through the classic
//! tracepoints `syscalls:sys_enter_prctl` (`option` at 16, `arg2` at 24, `arg3` at 32) and
//! `syscalls:sys_exit_prctl` (`long ret` at 16), from their format files. Every prctl call runs
//! the enter program; only the ambient raise leaves anything for the exit one.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use capspy_common::{ORIGIN_AMBIENT, PendingFact};

use crate::facts::{self, Caller, PENDING_FACTS};

/// include/uapi/linux/prctl.h
const PR_CAP_AMBIENT: u64 = 47;
const PR_CAP_AMBIENT_RAISE: u64 = 2;

// kernel-abi: tracepoint syscalls/sys_enter_prctl option@16 arg2@24 arg3@32
#[tracepoint(category = "syscalls", name = "sys_enter_prctl")]
pub fn prctl_enter(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets within the tracepoint record, per the format file above.
    let (Ok(option), Ok(arg2), Ok(cap)) = (
        unsafe { ctx.read_at::<u64>(16) },
        unsafe { ctx.read_at::<u64>(24) },
        unsafe { ctx.read_at::<u64>(32) },
    ) else {
        return 0;
    };
    // The kernel compares `option` as an int.
    if option & 0xffff_ffff != PR_CAP_AMBIENT || arg2 != PR_CAP_AMBIENT_RAISE || cap >= 64 {
        return 0;
    }
    let Some(caller) = Caller::current() else {
        return 0;
    };
    let pending = PendingFact {
        origin: ORIGIN_AMBIENT,
        non_root: u8::from(caller.non_root()),
        padding: [0; 6],
        asked_permitted: 1 << cap,
        asked_inheritable: 0,
        held_permitted: caller.read(caller.offsets.cap_permitted),
        held_inheritable: caller.read(caller.offsets.cap_inheritable),
    };
    let _ = PENDING_FACTS.insert(bpf_get_current_pid_tgid(), pending, 0);
    0
}

// kernel-abi: tracepoint syscalls/sys_exit_prctl ret@16
#[tracepoint(category = "syscalls", name = "sys_exit_prctl")]
pub fn prctl_exit(ctx: TracePointContext) -> u32 {
    facts::finish(&ctx, ORIGIN_AMBIENT);
    0
}
