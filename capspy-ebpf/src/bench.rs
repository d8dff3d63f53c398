//! Comparison programs for `cargo xtask bench`, on the same hook capspy uses (the
//! `capability:cap_capable` tracepoint, as tp_btf): they bracket capspy's cost from below and
//! from the side.
//!
//! TP_PROTO(const struct cred *cred, struct user_namespace *target_ns,
//!          const struct user_namespace *capable_ns, int cap, int ret)
#![no_std]
#![no_main]
// The BPF target has no `AtomicU64::fetch_add`; the intrinsic lowers to BPF's atomic add.
#![feature(core_intrinsics)]
#![allow(internal_features, reason = "atomic_xadd, as in main.rs")]

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::cgroup,
    btf_maps::CgrpStorage,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task_btf, bpf_ktime_get_boot_ns,
    },
    macros::{btf_map, btf_tracepoint, map},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::BtfTracePointContext,
};
use capspy_common::{AUDIT_AUDITED, BUCKET_APP, CheckKey, ORIGIN_CHECK, USERNS_INITIAL};

/// The floor: the least a program on this hook can do, count.
#[map]
static FLOOR_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

// kernel-abi: tp_btf cap_capable(const struct cred *, struct user_namespace *, const struct user_namespace *, int, int)
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

// kernel-abi: tp_btf cap_capable(const struct cred *, struct user_namespace *, const struct user_namespace *, int, int)
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

/// The aggregation capspy does, alone: the cgroup id, then a hash lookup on the 16-byte key and
/// an atomic add (the key is made on the first check). What the cgroup storage below replaces.
#[map]
static AGG_HASH: HashMap<CheckKey, u64> = HashMap::with_max_entries(1024, 0);

#[btf_tracepoint(function = "cap_capable")]
pub fn bench_hash(ctx: BtfTracePointContext) -> u32 {
    // `int cap`, 0..=40.
    let cap: u32 = ctx.arg(3);
    let ret: i32 = ctx.arg(4);
    let key = CheckKey {
        // SAFETY: helper without preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        cap: cap as u8,
        verdict: u8::from(ret != 0),
        audit: AUDIT_AUDITED,
        userns: USERNS_INITIAL,
        bucket: BUCKET_APP,
        origin: ORIGIN_CHECK,
        syscall: 0,
    };
    if let Some(n) = AGG_HASH.get_ptr_mut(key) {
        // SAFETY: a map value, valid for this run; shared between CPUs.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(n, 1) };
    } else {
        let _ = AGG_HASH.insert(key, 1, 0);
    }
    0
}

/// Byte offsets of `task_struct.cgroups` and `css_set.dfl_cgrp`, from BTF (set by the loader).
#[unsafe(no_mangle)]
static TASK_CGROUPS_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CSS_SET_DFL_CGRP_OFFSET: u32 = 0;

/// Counters per capability (< 64) x verdict x audit class, in the cgroup's own storage.
pub const CGRP_SLOTS: usize = 256;

/// Linux >= 6.2: storage that hangs off `struct cgroup`, found through its per-map cache slot.
#[btf_map]
static AGG_CGRP: CgrpStorage<[u64; CGRP_SLOTS]> = CgrpStorage::new();

/// The same count in the task's default cgroup's storage: `task->cgroups->dfl_cgrp` (two loads
/// through BTF pointers), `bpf_cgrp_storage_get`, an atomic add at an index; no hashing.
/// `void *bpf_cgrp_storage_get(struct bpf_map *map, struct cgroup *cgroup, void *value,
/// u64 flags)`: https://github.com/torvalds/linux/blob/v6.18/kernel/bpf/bpf_cgrp_storage.c
#[btf_tracepoint(function = "cap_capable")]
pub fn bench_cgrp(ctx: BtfTracePointContext) -> u32 {
    let cap: u32 = ctx.arg(3);
    let ret: i32 = ctx.arg(4);
    // SAFETY: globals written by the loader; plain loads through BTF pointers, which the
    // verifier checks against the kernel's BTF and guards against faults.
    unsafe {
        let task = bpf_get_current_task_btf().cast::<u8>();
        let cgroups_at = core::ptr::read_volatile(&TASK_CGROUPS_OFFSET) as usize;
        let dfl_at = core::ptr::read_volatile(&CSS_SET_DFL_CGRP_OFFSET) as usize;
        let css_set = core::ptr::read_volatile(task.add(cgroups_at).cast::<*const u8>());
        let cgrp = core::ptr::read_volatile(css_set.add(dfl_at).cast::<*mut cgroup>());
        let counts = AGG_CGRP.get_or_insert_ptr_mut(cgrp, None);
        if counts.is_null() {
            return 0;
        }
        let slot = ((cap as usize & 63) << 2) | (usize::from(ret != 0) << 1);
        if let Some(n) = (*counts).get_mut(slot) {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(n, 1);
        }
    }
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
