//! Comparison programs for `cargo xtask bench`, on the same hook capspy uses (the
//! `capability:cap_capable` tracepoint, as tp_btf): they bracket capspy's cost from below and
//! from the side.
//!
//! TP_PROTO(const struct cred *cred, struct user_namespace *target_ns,
//!          const struct user_namespace *capable_ns, int cap, int ret)
#![no_std]
#![no_main]
// The workspace's pedantic lints, less those that fight BPF code:
#![allow(
    clippy::inline_always,
    reason = "BPF helpers are inlined on purpose: the verifier checks one flat program, and \
              bpf-to-bpf calls cost stack the hot path cannot spare"
)]
#![allow(
    clippy::needless_pass_by_value,
    reason = "aya's program macros hand each program its context by value"
)]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_ptr_alignment,
    clippy::borrow_as_ptr,
    reason = "kernel values narrowed after range checks, reads through bpf_probe_read (no \
              alignment needed), and helper arguments written the way aya's docs write them"
)]

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_ktime_get_boot_ns,
    },
    macros::{btf_tracepoint, map},
    maps::{PerCpuArray, RingBuf},
    programs::BtfTracePointContext,
};

/// The floor: the least a program on this hook can do, count.
#[map]
static FLOOR_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[btf_tracepoint(function = "cap_capable")]
pub fn bench_floor(_ctx: BtfTracePointContext) -> u32 {
    if let Some(n) = FLOOR_COUNT.get_ptr_mut(0) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        unsafe { *n += 1 };
    }
    0
}

/// One record per check, as tracers that stream every event to userspace do.
#[repr(C)]
pub struct StreamEvent {
    pub cgroup_id: u64,
    pub pid_tgid: u64,
    pub time_ns: u64,
    pub cap: i32,
    pub ret: i32,
    pub comm: [u8; 16],
}

#[map]
static STREAM: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

#[map]
static STREAM_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[btf_tracepoint(function = "cap_capable")]
pub fn bench_stream(ctx: BtfTracePointContext) -> u32 {
    let Some(mut entry) = STREAM.reserve::<StreamEvent>(0) else {
        if let Some(n) = STREAM_LOST.get_ptr_mut(0) {
            // SAFETY: per-CPU value.
            unsafe { *n += 1 };
        }
        return 0;
    };
    let event = StreamEvent {
        // SAFETY: helpers without preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        pid_tgid: bpf_get_current_pid_tgid(),
        time_ns: unsafe { bpf_ktime_get_boot_ns() },
        cap: ctx.arg(3),
        ret: ctx.arg(4),
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    entry.write(event);
    entry.submit(0);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
