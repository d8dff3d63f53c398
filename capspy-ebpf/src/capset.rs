//! `capset(2)`: capabilities a process keeps in its permitted or inheritable set. No capability
//! check happens when a set only shrinks, yet under `--cap-drop` the call fails with EPERM: the
//! need shows only here (see `PendingFact::needs` for the rule).
//!
//! `int capset(cap_user_header_t header, const cap_user_data_t data);` through the classic
//! tracepoints `syscalls:sys_enter_capset` (`header` at 16, `data` at 24) and
//! `syscalls:sys_exit_capset` (`long ret` at 16), from their format files under
//! /sys/kernel/tracing/events/syscalls/ (present with `CONFIG_FTRACE_SYSCALLS`). The structs are
//! `struct __user_cap_header_struct { __u32 version; int pid; }` and, per 32 capabilities,
//! `struct __user_cap_data_struct { __u32 effective, permitted, inheritable; }`
//! (include/uapi/linux/capability.h).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use capspy_common::{ORIGIN_CAPSET, PendingFact};

use crate::facts::{self, Caller, PENDING_FACTS};

const VERSION_1: u32 = 0x1998_0330;
const VERSION_2: u32 = 0x2007_1026;
const VERSION_3: u32 = 0x2008_0522;

// kernel-abi: tracepoint syscalls/sys_enter_capset header@16 data@24
#[tracepoint(category = "syscalls", name = "sys_enter_capset")]
pub fn capset_enter(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets within the tracepoint record, per the format file above.
    let (Ok(header), Ok(data)) = (unsafe { ctx.read_at::<u64>(16) }, unsafe {
        ctx.read_at::<u64>(24)
    }) else {
        return 0;
    };
    // SAFETY: checked reads of user memory.
    let Ok(version) = (unsafe { bpf_probe_read_user(header as *const u32) }) else {
        return 0;
    };
    let words = match version {
        VERSION_1 => 1,
        VERSION_2 | VERSION_3 => 2,
        _ => return 0, // EINVAL
    };
    let Ok(low) = (unsafe { bpf_probe_read_user(data as *const [u32; 3]) }) else {
        return 0;
    };
    let high = if words == 2 {
        match unsafe { bpf_probe_read_user((data + 12) as *const [u32; 3]) } {
            Ok(high) => high,
            Err(_) => return 0,
        }
    } else {
        [0; 3]
    };
    let Some(caller) = Caller::current() else {
        return 0;
    };
    let set = |i: usize| u64::from(low[i]) | (u64::from(high[i]) << 32);
    let pending = PendingFact {
        origin: ORIGIN_CAPSET,
        non_root: u8::from(caller.non_root()),
        padding: [0; 6],
        asked_permitted: set(1),
        asked_inheritable: set(2),
        held_permitted: caller.read(caller.offsets.cap_permitted),
        held_inheritable: caller.read(caller.offsets.cap_inheritable),
    };
    // A full map loses this call's fact, nothing else.
    let _ = PENDING_FACTS.insert(bpf_get_current_pid_tgid(), pending, 0);
    0
}

// kernel-abi: tracepoint syscalls/sys_exit_capset ret@16
#[tracepoint(category = "syscalls", name = "sys_exit_capset")]
pub fn capset_exit(ctx: TracePointContext) -> u32 {
    facts::finish(&ctx, ORIGIN_CAPSET);
    0
}
