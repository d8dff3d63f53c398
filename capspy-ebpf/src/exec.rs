//! Exec of a file with file capabilities (`security.capability`) by a non-root process: the
//! capabilities it holds after the exec came from the file, and without them in the bounding
//! set the exec fails with EPERM (see `capspy_common::file_caps_of_exec`).
//!
//! The classic tracepoint `sched:sched_process_exec`, fired after a successful exec once the
//! new credentials are committed (`exec_binprm` in fs/exec.c), fields from
//! /sys/kernel/tracing/events/sched/sched_process_exec/format: `__data_loc char[] filename` at 8.

use aya_ebpf::{EbpfContext, macros::tracepoint, programs::TracePointContext};
use capspy_common::{ORIGIN_FILE_CAPS, file_caps_of_exec};

use crate::facts::{self, Caller};

// kernel-abi: tracepoint sched/sched_process_exec filename@8
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn process_exec(ctx: TracePointContext) -> u32 {
    let Some(caller) = Caller::current() else {
        return 0;
    };
    let (uid, euid) = caller.uids();
    let caps = file_caps_of_exec(
        uid,
        euid,
        caller.read(caller.offsets.cap_permitted),
        caller.read(caller.offsets.cap_ambient),
    );
    if caps == 0 {
        return 0;
    }
    // SAFETY: offset within the tracepoint record, per the format file above.
    let Ok(loc) = (unsafe { ctx.read_at::<u32>(8) }) else {
        return 0;
    };
    // __data_loc: the low 16 bits are the string's offset in the record.
    let path = (ctx.as_ptr() as usize + (loc & 0xffff) as usize) as *const u8;
    facts::record(ORIGIN_FILE_CAPS, caps, true, &caller, Some(path));
    0
}
