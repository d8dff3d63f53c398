// The kernel program shared by both objects (`main.rs`, `main_cgrp.rs`), included by each: they
// differ only in the `storage` module they declare.

mod capset;
mod cgroups;
mod exec;
mod facts;
mod prctl;
mod setid;

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_NOEXIST, pt_regs},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task_btf, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, generated::bpf_get_current_task,
        generated::bpf_get_stack, generated::bpf_task_pt_regs,
    },
    macros::{btf_tracepoint, fexit, kprobe, kretprobe, map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::{
        BtfTracePointContext, FExitContext, ProbeContext, RawTracePointContext, RetProbeContext,
        TracePointContext,
    },
};
use capspy_common::{
    ADVISORY_FUNCS_CAPACITY, AUDIT_ADVISORY, AUDIT_AUDITED, AddrRange, BUCKET_APP, BUCKET_BORROWED,
    BUCKET_RUNTIME, CAP_SETGID, CAP_SETUID, CHECKS_CAPACITY, CLASSIFIER_CALL_PATH, CLASSIFIER_NONE,
    CLASSIFIER_OPTS, CheckKey, CheckStats, CommPrefix, EXE_DEPTH, EXE_NAME_LEN, ExeOffsets,
    FirstSighting, KPROBE_ARGS_CAPACITY, KprobeArgs, ORIGIN_CHECK, RUNTIME_COMMS_CAPACITY,
    SIGHTINGS_BYTES, SITE_ADVISORY, SITE_ALWAYS_WALK, SITE_AUDITED, SITE_UNKNOWN, STACK_DEPTH,
    USERNS_INITIAL, USERNS_OTHER, USERNS_UNKNOWN, VERDICT_DENIED, VERDICT_GRANTED, abi, counter,
};

// ---------------------------------------------------------------------------------------------
// Configuration, set by the loader before load (read-only globals, folded by the verifier).

#[unsafe(no_mangle)]
static SELF_TGID: u32 = 0;
/// Byte offset of `level` in `struct user_namespace`, from BTF; 0 when unknown.
#[unsafe(no_mangle)]
static USERNS_LEVEL_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CAP_CAPABLE_ABI: u8 = abi::OPTS;
/// Byte offset of `real_cred` in `struct task_struct`, from BTF; 0 when unknown.
#[unsafe(no_mangle)]
pub(crate) static TASK_REAL_CRED_OFFSET: u32 = 0;
/// Byte offset of `comm` in `struct task_struct`, from BTF; 0 when unknown.
#[unsafe(no_mangle)]
static TASK_COMM_OFFSET: u32 = 0;
/// 1 when the kernel has `bpf_get_current_task_btf` (Linux 5.11+; the loader probes it), 0 on
/// older kernels, where the task's fields are copied with `bpf_probe_read_kernel` instead. The
/// verifier folds it and never sees the branch the kernel lacks.
#[unsafe(no_mangle)]
static TASK_BTF: u8 = 1;
/// 1 when the kernel has `bpf_task_pt_regs` too (Linux 5.15+; the loader probes it), else 0:
/// the syscall number and arguments are then unknown. Folded by the verifier like `TASK_BTF`.
#[unsafe(no_mangle)]
static TASK_PT_REGS: u8 = 0;
/// The stage [`record`] stops after in the benchmark's stage table (`cargo xtask bench`, section
/// 1d), 0 for none; read only by the object built with `STAGE_CUTS` (see [`bench_stop`]).
#[unsafe(no_mangle)]
static BENCH_STOP_AFTER: u8 = 0;
#[unsafe(no_mangle)]
static RUNTIME_COMMS: [CommPrefix; RUNTIME_COMMS_CAPACITY] =
    [CommPrefix { value: 0, mask: 0 }; RUNTIME_COMMS_CAPACITY];
/// Functions on the call path of advisory checks (`security_vm_enough_memory_mm`,
/// `ns_capable_noaudit`, ...), from kallsyms. Unused slots are `{0, 0}`.
#[unsafe(no_mangle)]
static ADVISORY_FUNCS: [AddrRange; ADVISORY_FUNCS_CAPACITY as usize] =
    [AddrRange { start: 0, end: 0 }; ADVISORY_FUNCS_CAPACITY as usize];
#[unsafe(no_mangle)]
static EXE_OFFSETS: ExeOffsets = ExeOffsets {
    task_mm: 0,
    mm_exe_file: 0,
    file_dentry: 0,
    dentry_parent: 0,
    dentry_name: 0,
    padding: 0,
};

// ---------------------------------------------------------------------------------------------
// Maps.

#[map]
static CHECKS: HashMap<CheckKey, CheckStats> = HashMap::with_max_entries(CHECKS_CAPACITY, 0);

#[map]
pub(crate) static SIGHTINGS: RingBuf = RingBuf::with_byte_size(SIGHTINGS_BYTES, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::LEN, 0);

/// Audit class per call site, indexed by `cap * SYSCALL_SLOTS + syscall`. An array rather than
/// a hash: the verifier inlines array lookups, and this runs on every check.
#[map]
static CALL_SITE_CLASS: Array<u8> = Array::with_max_entries(capspy_common::CALL_SITE_SLOTS, 0);

/// The address of `init_user_ns`, learnt from the first check against a namespace of level 0
/// (kallsyms lists no data symbols on most kernels).
#[map]
static INIT_USER_NS: Array<u64> = Array::with_max_entries(1, 0);

#[map]
static KPROBE_ARGS: HashMap<u64, KprobeArgs> = HashMap::with_max_entries(KPROBE_ARGS_CAPACITY, 0);

/// Per-CPU scratch for the stack of a new call site (too big for the 512-byte BPF stack together
/// with the rest).
#[map]
static STACK_SCRATCH: PerCpuArray<[u64; STACK_DEPTH]> = PerCpuArray::with_max_entries(1, 0);

// ---------------------------------------------------------------------------------------------
// Method 1: fexit.
// int cap_capable(const struct cred *cred, struct user_namespace *targ_ns, int cap,
//                 unsigned int opts);                  (Linux >= 5.1; `int audit` before)

// kernel-abi: fn cap_capable(const struct cred *, struct user_namespace *, int, unsigned int)
#[fexit(function = "cap_capable")]
pub fn cap_capable_fexit(ctx: FExitContext) -> u32 {
    let cred: u64 = ctx.arg(0);
    let target_ns: u64 = ctx.arg(1);
    let cap: i32 = ctx.arg(2);
    let last_arg: u64 = ctx.arg(3);
    let ret: i32 = ctx.arg(4);
    record(&ctx, cred, target_ns, cap, ret, Some(last_arg));
    0
}

// ---------------------------------------------------------------------------------------------
// Method 2: kprobe + kretprobe, the same prototype as method 1. The entry saves the arguments
// per thread for the return probe, which alone sees the verdict.

// kernel-abi: fn cap_capable(const struct cred *, struct user_namespace *, int, unsigned int)
#[kprobe]
pub fn cap_capable_kprobe(ctx: ProbeContext) -> u32 {
    let (Some(cred), Some(target_ns), Some(cap), Some(last_arg)) = (
        ctx.arg::<u64>(0),
        ctx.arg::<u64>(1),
        ctx.arg::<u32>(2),
        ctx.arg::<u32>(3),
    ) else {
        return 0;
    };
    let args = KprobeArgs {
        cred,
        target_ns,
        cap,
        last_arg,
    };
    // A full map loses this check's verdict, not the kernel's.
    let _ = KPROBE_ARGS.insert(bpf_get_current_pid_tgid(), args, 0);
    0
}

#[kretprobe]
pub fn cap_capable_kretprobe(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(args) = (unsafe { KPROBE_ARGS.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = KPROBE_ARGS.remove(pid_tgid);
    let ret: i32 = ctx.ret();
    #[expect(
        clippy::cast_possible_wrap,
        reason = "cap is a small int in the kernel"
    )]
    record(
        &ctx,
        args.cred,
        args.target_ns,
        args.cap as i32,
        ret,
        Some(u64::from(args.last_arg)),
    );
    0
}

// ---------------------------------------------------------------------------------------------
// Method 3: the `capability:cap_capable` tracepoint (Linux 6.13+), fired inside cap_capable:
// TP_PROTO(const struct cred *cred, struct user_namespace *target_ns,
//          const struct user_namespace *capable_ns, int cap, int ret)
// It has no `opts`: the audit class comes from the call path (see `call_path_class`).

// kernel-abi: tp_btf cap_capable(const struct cred *, struct user_namespace *, const struct user_namespace *, int, int)
#[btf_tracepoint(function = "cap_capable")]
pub fn cap_capable_tp_btf(ctx: BtfTracePointContext) -> u32 {
    let cred: u64 = ctx.arg(0);
    let target_ns: u64 = ctx.arg(1);
    let cap: i32 = ctx.arg(3);
    let ret: i32 = ctx.arg(4);
    record(&ctx, cred, target_ns, cap, ret, None);
    0
}

// kernel-abi: tp_btf cap_capable(const struct cred *, struct user_namespace *, const struct user_namespace *, int, int)
#[raw_tracepoint(tracepoint = "cap_capable")]
pub fn cap_capable_raw_tp(ctx: RawTracePointContext) -> u32 {
    let cred: u64 = ctx.arg(0);
    let target_ns: u64 = ctx.arg(1);
    let cap: i32 = ctx.arg(3);
    let ret: i32 = ctx.arg(4);
    record(&ctx, cred, target_ns, cap, ret, None);
    0
}

/// Field offsets from `/sys/kernel/tracing/events/capability/cap_capable/format`:
/// `cred` at 8, `target_ns` at 16, `cap` at 32, `ret` at 36 (after the 8-byte common header).
// kernel-abi: tracepoint capability/cap_capable cred@8 target_ns@16 cap@32 ret@36
#[tracepoint(category = "capability", name = "cap_capable")]
pub fn cap_capable_tracepoint(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets within the tracepoint record, per the format file above.
    let fields = unsafe {
        (
            ctx.read_at::<u64>(8),
            ctx.read_at::<u64>(16),
            ctx.read_at::<i32>(32),
            ctx.read_at::<i32>(36),
        )
    };
    if let (Ok(cred), Ok(target_ns), Ok(cap), Ok(ret)) = fields {
        record(&ctx, cred, target_ns, cap, ret, None);
    }
    0
}

// ---------------------------------------------------------------------------------------------
// The hot path.

/// Counts one check. `last_arg` is `cap_capable`'s `opts` (or legacy `audit`) where the hook has
/// it; otherwise the audit class is read from the call path.
#[inline(always)]
fn record<C: EbpfContext>(
    ctx: &C,
    cred: u64,
    target_ns: u64,
    cap: i32,
    ret: i32,
    last_arg: Option<u64>,
) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: globals are plain data written by the loader.
    if tgid == unsafe { core::ptr::read_volatile(&SELF_TGID) } {
        return;
    }
    if bench_stop(1, pid_tgid) {
        return;
    }
    let Ok(cap) = u8::try_from(cap) else {
        return;
    };
    let task = current_task();
    let setid = cap == CAP_SETUID || cap == CAP_SETGID;
    // Looked up once, for the call-site class and the setid origin, only where one needs them.
    let regs = if last_arg.is_none() || setid {
        UserRegs::of(task)
    } else {
        UserRegs::NONE
    };
    let (audit, classifier, site) = match last_arg {
        Some(arg) => (audit_class_from_arg(arg), CLASSIFIER_OPTS, None),
        None => call_path_class(ctx, cap, regs),
    };
    if bench_stop(2, u64::from(audit) ^ site.map_or(0, |s| u64::from(s.slot))) {
        return;
    }
    let mut key = CheckKey {
        // Read below, off the fast path.
        cgroup_id: 0,
        cap,
        verdict: if ret == 0 {
            VERDICT_GRANTED
        } else {
            VERDICT_DENIED
        },
        audit,
        userns: userns_class(target_ns),
        bucket: BUCKET_APP,
        origin: ORIGIN_CHECK,
        syscall: 0,
    };
    if bench_stop(3, u64::from(key.userns)) {
        return;
    }
    key.bucket = bucket_of(task, cred);
    if bench_stop(4, u64::from(key.bucket)) {
        return;
    }
    // Only SETUID and SETGID checks pay for reading the syscall's arguments.
    if setid {
        key.origin = setid::origin(task, regs, cred, cap, key.userns);
    }
    if let Some(site) = &site {
        key.syscall = advisory_syscall(key.audit, site.slot);
    }
    if bench_stop(5, u64::from(key.origin) ^ u64::from(key.syscall)) {
        return;
    }
    // The fast path (cgroup local storage, `storage.rs`): a common key already in the hash is
    // counted in its cgroup's cell, with no cgroup id and no hashing.
    let mut cell = storage::cell(task, &key);
    if bench_stop(6, cell.map_or(0, |c| c as u64)) {
        return;
    }
    if let Some(cell) = cell
        // SAFETY: points into the cgroup's storage, valid for this run.
        && unsafe { core::ptr::read_volatile(cell) } != 0
    {
        add(cell, 1);
        return;
    }
    // SAFETY: helper without preconditions.
    key.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    // A key seen before costs one lookup and one atomic add (in `upsert`).
    if let Some(stats) = CHECKS.get_ptr_mut(key) {
        count_at(stats, cell);
        return;
    }
    // A new key whose class came from the call-site cache: the cache learnt it from another
    // check of the same (capability, syscall), which may have come another way (SYS_ADMIN in
    // read is audited for proc_pid_stack, advisory for pid_table_root_permissions). This
    // check's own stack decides, and a pair seen both ways is walked from now on.
    if let Some(site) = site
        && let Some(cached) = site.cached
        && let Some(walked) = classify_stack(ctx)
        && walked != key.audit
    {
        // SAFETY: points into an array map value; racing CPUs write the same value.
        unsafe { *cached = SITE_ALWAYS_WALK };
        key.audit = walked;
        key.syscall = advisory_syscall(walked, site.slot);
        cell = storage::cell(task, &key);
    }
    if let Some(stats) = upsert_into(&key, pid_tgid, classifier, cell) {
        emit_sighting(ctx, &key, &stats);
    }
}

/// Whether the benchmark stops [`record`] after `stage` ([`BENCH_STOP_AFTER`]). `keep` is the
/// stage's result: passed through `black_box`, so the compiler cannot move the stage's work past
/// the stop. Always false, compiled away, in the objects capspy runs (`STAGE_CUTS` false).
#[inline(always)]
fn bench_stop(stage: u8, keep: u64) -> bool {
    if !STAGE_CUTS {
        return false;
    }
    // SAFETY: global written by the loader.
    if unsafe { core::ptr::read_volatile(&BENCH_STOP_AFTER) } != stage {
        return false;
    }
    core::hint::black_box(keep);
    true
}

/// Counts one check (or fact) under `key`. A new key returns its first stats, for the caller to
/// send as a first sighting.
#[inline(always)]
pub(crate) fn upsert(key: &CheckKey, pid_tgid: u64, classifier: u8) -> Option<CheckStats> {
    upsert_into(key, pid_tgid, classifier, None)
}

/// [`upsert`], counting in `cell` (the key's cell in its cgroup's storage) rather than in the
/// hash when there is one: a new key is then made with a count of 0 before its cell counts, so
/// that a cell that is not zero always has its key.
#[inline(always)]
fn upsert_into(
    key: &CheckKey,
    pid_tgid: u64,
    classifier: u8,
    cell: Option<*mut u64>,
) -> Option<CheckStats> {
    // A key seen before costs one lookup and one atomic add: no clock, no comm copy. The daemon
    // dates the latest check by the sweep that sees the count change.
    if let Some(stats) = CHECKS.get_ptr_mut(key) {
        count_at(stats, cell);
        return None;
    }
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let stats = CheckStats {
        count: 1,
        first_ns: now,
        last_ns: now,
        first_pid: pid_tgid as u32,
        first_tgid: (pid_tgid >> 32) as u32,
        first_uid: bpf_get_current_uid_gid() as u32,
        classifier,
        padding: [0; 3],
        first_comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    let stored = CheckStats {
        count: u64::from(cell.is_none()),
        ..stats
    };
    match CHECKS.insert(key, stored, u64::from(BPF_NOEXIST)) {
        Ok(()) => {
            if let Some(cell) = cell {
                add(cell, 1);
            }
            Some(stats)
        }
        // Another CPU inserted the same key first: count on its entry.
        Err(e) if e == -libc_eexist() => {
            if let Some(stats) = CHECKS.get_ptr_mut(key) {
                count_at(stats, cell);
            }
            None
        }
        Err(_) => {
            count(counter::CHECKS_OVERFLOW);
            None
        }
    }
}

/// Counts one check of an existing key: in its cell if it has one, else in the hash.
#[inline(always)]
fn count_at(stats: *mut CheckStats, cell: Option<*mut u64>) {
    match cell {
        Some(cell) => add(cell, 1),
        None => bump(stats),
    }
}

/// Who the check is for: see [`BUCKET_APP`], [`BUCKET_RUNTIME`], [`BUCKET_BORROWED`].
#[inline(always)]
pub(crate) fn bucket_of(task: *const u8, cred: u64) -> u8 {
    // SAFETY: globals written by the loader.
    let (real_cred_at, comm_at) = unsafe {
        (
            core::ptr::read_volatile(&TASK_REAL_CRED_OFFSET),
            core::ptr::read_volatile(&TASK_COMM_OFFSET),
        )
    };
    // `cred != current->real_cred`: `override_creds()` is in effect.
    if real_cred_at != 0 && task_field(task, real_cred_at) != cred {
        return BUCKET_BORROWED;
    }
    // The first 8 bytes of the name: enough for the runtime prefixes, and a third of the cost of
    // `bpf_get_current_comm`'s 16-byte padded copy.
    let head = if comm_at == 0 {
        let comm = bpf_get_current_comm().unwrap_or([0; 16]);
        u64::from_le_bytes([
            comm[0], comm[1], comm[2], comm[3], comm[4], comm[5], comm[6], comm[7],
        ])
    } else {
        task_field(task, comm_at)
    };
    for prefix in &RUNTIME_COMMS {
        // SAFETY: global written by the loader.
        let prefix = unsafe { core::ptr::read_volatile(prefix) };
        if prefix.mask == 0 {
            break;
        }
        if head & prefix.mask == prefix.value {
            return BUCKET_RUNTIME;
        }
    }
    BUCKET_APP
}

#[inline(always)]
fn has_task_btf() -> bool {
    // SAFETY: global written by the loader.
    unsafe { core::ptr::read_volatile(&TASK_BTF) != 0 }
}

/// Whether [`UserRegs`] can read the current syscall (it needs a BTF task pointer too).
#[inline(always)]
pub(crate) fn has_task_pt_regs() -> bool {
    // SAFETY: global written by the loader.
    has_task_btf() && unsafe { core::ptr::read_volatile(&TASK_PT_REGS) } != 0
}

/// The current `struct task_struct`: a BTF pointer where the kernel has
/// `bpf_get_current_task_btf`, else its plain address, for [`task_field`].
#[inline(always)]
pub(crate) fn current_task() -> *const u8 {
    if has_task_btf() {
        // SAFETY: helper without preconditions.
        unsafe { bpf_get_current_task_btf() }
            .cast::<u8>()
            .cast_const()
    } else {
        // SAFETY: helper without preconditions.
        unsafe { bpf_get_current_task() as *const u8 }
    }
}

/// 8 bytes of `struct task_struct` at `offset` (from BTF). With a BTF task pointer, a plain load,
/// not a helper call: the verifier checks the access against the kernel's BTF (the offset is a
/// read-only global it folds) and guards it against faults. Without one, a checked copy.
#[inline(always)]
pub(crate) fn task_field(task: *const u8, offset: u32) -> u64 {
    if has_task_btf() {
        // SAFETY: see above; the verifier rejects the program if `offset` is not inside the
        // struct.
        unsafe { core::ptr::read_volatile(task.add(offset as usize).cast::<u64>()) }
    } else {
        // SAFETY: the read is checked; `task` is the current task's address.
        unsafe { bpf_probe_read_kernel(task.add(offset as usize).cast::<u64>()) }.unwrap_or(0)
    }
}

#[inline(always)]
pub(crate) fn userns_class(target_ns: u64) -> u8 {
    let Some(init_ns) = INIT_USER_NS.get_ptr_mut(0) else {
        return USERNS_UNKNOWN;
    };
    // SAFETY: array map value; a racing CPU writes the same address.
    if target_ns == unsafe { *init_ns } {
        return USERNS_INITIAL;
    }
    // SAFETY: global written by the loader.
    let offset = unsafe { core::ptr::read_volatile(&USERNS_LEVEL_OFFSET) };
    if offset == 0 {
        return USERNS_UNKNOWN;
    }
    // SAFETY: the read is checked; `target_ns` is a kernel pointer from the hook.
    match unsafe { bpf_probe_read_kernel((target_ns + u64::from(offset)) as *const u32) } {
        Ok(0) => {
            unsafe { *init_ns = target_ns };
            USERNS_INITIAL
        }
        Ok(_) => USERNS_OTHER,
        Err(_) => USERNS_UNKNOWN,
    }
}

#[inline(always)]
fn bump(stats: *mut CheckStats) {
    // SAFETY: `stats` points into a map value that stays valid for this program run.
    add(unsafe { &raw mut (*stats).count }, 1);
}

/// Adds `n` to a count shared between CPUs, atomically.
#[inline(always)]
pub(crate) fn add(counter: *mut u64, n: u64) {
    // SAFETY: callers pass a pointer into a map value or cgroup storage, valid for this run.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, n);
    }
}

#[inline(always)]
const fn libc_eexist() -> i32 {
    17
}

#[inline(always)]
fn audit_class_from_arg(arg: u64) -> u8 {
    // SAFETY: global written by the loader.
    let noaudit = if unsafe { core::ptr::read_volatile(&CAP_CAPABLE_ABI) } == abi::LEGACY_AUDIT {
        arg == 0 // SECURITY_CAP_NOAUDIT
    } else {
        arg & abi::CAP_OPT_NOAUDIT != 0
    };
    if noaudit {
        AUDIT_ADVISORY
    } else {
        AUDIT_AUDITED
    }
}

/// The audit class of a check from a hook without `opts`. Reading the kernel stack on every check
/// would cost more than the rest of the program, so call sites are cached by (capability,
/// syscall): the stack is read the first time a pair is seen, and again only for the few pairs the
/// loader marked as reaching one capability both ways (e.g. SYS_ADMIN in clone(CLONE_NEWNS),
/// after dup_mmap's advisory check), and for pairs `record` finds both ways at a new key.
#[inline(always)]
fn call_path_class<C: EbpfContext>(ctx: &C, cap: u8, regs: UserRegs) -> (u8, u8, Option<Site>) {
    let syscall = current_syscall_slot(regs);
    let slot = u32::from(cap) * capspy_common::SYSCALL_SLOTS + syscall;
    let cached = CALL_SITE_CLASS.get_ptr_mut(slot);
    // SAFETY: points into an array map value.
    let site = cached.map_or(SITE_UNKNOWN, |c| unsafe { *c });
    let from_cache = Site {
        slot: syscall as u16,
        cached,
    };
    match site {
        SITE_AUDITED => return (AUDIT_AUDITED, CLASSIFIER_CALL_PATH, Some(from_cache)),
        SITE_ADVISORY => return (AUDIT_ADVISORY, CLASSIFIER_CALL_PATH, Some(from_cache)),
        _ => {}
    }
    let walked = Site {
        slot: syscall as u16,
        cached: None,
    };
    let Some(class) = classify_stack(ctx) else {
        count(counter::UNCLASSIFIED);
        return (AUDIT_AUDITED, CLASSIFIER_NONE, None);
    };
    if let (Some(cached), SITE_UNKNOWN) = (cached, site) {
        let learnt = if class == AUDIT_ADVISORY {
            SITE_ADVISORY
        } else {
            SITE_AUDITED
        };
        // SAFETY: as above; a racing CPU writes the same value.
        unsafe { *cached = learnt };
    }
    (class, CLASSIFIER_CALL_PATH, Some(walked))
}

/// Where a class read from the call path came from: the check's syscall slot, and the cache
/// entry when the class was read from it rather than from this check's stack.
#[derive(Clone, Copy)]
struct Site {
    slot: u16,
    cached: Option<*mut u8>,
}

/// [`CheckKey::syscall`] for a check of this class classified by call path.
#[inline(always)]
fn advisory_syscall(audit: u8, slot: u16) -> u16 {
    if audit == AUDIT_ADVISORY { slot + 1 } else { 0 }
}

/// The syscall the current task is in, as a slot of [`CALL_SITE_CLASS`]; everything out of range
/// (page faults, kernel threads) shares the last slot, and so does every check on a kernel without
/// `bpf_task_pt_regs` (the loader then marks the last slots to be walked every time).
#[inline(always)]
fn current_syscall_slot(regs: UserRegs) -> u32 {
    let last = capspy_common::SYSCALL_SLOTS - 1;
    if !has_task_pt_regs() {
        return last;
    }
    let nr = regs.get(|r| &raw const r.orig_rax);
    if nr < u64::from(last) {
        nr as u32
    } else {
        last
    }
}

/// The current task's user-mode registers (x86-64 `struct pt_regs`: `orig_rax` holds the
/// syscall number, `rdi`, `rsi`, `rdx` its first arguments; arm64 keeps them elsewhere, and
/// capspy's object is built for x86-64 kernels), found once per check: `bpf_task_pt_regs` is a
/// helper call, the reads are plain loads.
#[derive(Clone, Copy)]
pub(crate) struct UserRegs(*const pt_regs);

impl UserRegs {
    /// Not looked up: every register reads 0.
    pub(crate) const NONE: Self = Self(core::ptr::null());

    /// `task` comes from [`current_task`]; on a kernel without `bpf_task_pt_regs`, [`Self::NONE`].
    #[inline(always)]
    pub(crate) fn of(task: *const u8) -> Self {
        if !has_task_pt_regs() {
            return Self::NONE;
        }
        // SAFETY: helper without preconditions beyond a BTF task pointer, which `task` is when
        // `has_task_pt_regs` holds.
        Self(unsafe { bpf_task_pt_regs(task.cast_mut().cast()) } as *const pt_regs)
    }

    /// One register, or 0 when the registers were not looked up or cannot be.
    #[inline(always)]
    pub(crate) fn get(self, field: impl Fn(&pt_regs) -> *const u64) -> u64 {
        if !has_task_pt_regs() || self.0.is_null() {
            return 0;
        }
        // SAFETY: a BTF pointer to the task's user-mode registers from `bpf_task_pt_regs`: a
        // plain load the verifier checks and guards.
        unsafe { core::ptr::read_volatile(field(&*self.0)) }
    }
}

/// Walks the kernel stack looking for a function that makes advisory checks.
#[inline(always)]
fn classify_stack<C: EbpfContext>(ctx: &C) -> Option<u8> {
    let stack = STACK_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: `stack` is a per-CPU map value of exactly the size passed.
    let len = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            stack.cast(),
            core::mem::size_of::<[u64; STACK_DEPTH]>() as u32,
            0,
        )
    };
    if len <= 0 {
        return None;
    }
    // SAFETY: as above.
    let stack = unsafe { &*stack };
    for &addr in stack {
        if addr == 0 {
            break;
        }
        for range in &ADVISORY_FUNCS {
            // SAFETY: global written by the loader.
            let range = unsafe { core::ptr::read_volatile(range) };
            if range.start == 0 {
                break;
            }
            if addr >= range.start && addr < range.end {
                return Some(AUDIT_ADVISORY);
            }
        }
    }
    Some(AUDIT_AUDITED)
}

/// Sends a new key to userspace, with the stack as evidence of the call path. A full ring buffer
/// only delays the key: userspace also sweeps [`CHECKS`].
#[inline(always)]
fn emit_sighting<C: EbpfContext>(ctx: &C, key: &CheckKey, stats: &CheckStats) {
    reserve_sighting(key, stats, |sighting| {
        // SAFETY: `sighting` is a reserved, zeroed ring buffer record of the right size.
        unsafe {
            bpf_get_stack(
                ctx.as_ptr(),
                (&raw mut (*sighting).stack).cast(),
                core::mem::size_of::<[u64; STACK_DEPTH]>() as u32,
                0,
            );
            if stats.first_uid != 0 && key.bucket == BUCKET_APP {
                read_exe_names(&mut (*sighting).exe);
            }
        }
    });
}

/// Reserves a first sighting of `key` (a lost one is counted), with its stack and executable
/// names zeroed, lets `fill` complete it, and submits it.
#[inline(always)]
pub(crate) fn reserve_sighting(
    key: &CheckKey,
    stats: &CheckStats,
    fill: impl FnOnce(*mut FirstSighting),
) {
    let Some(mut entry) = SIGHTINGS.reserve::<FirstSighting>(0) else {
        count(counter::SIGHTINGS_LOST);
        return;
    };
    let sighting = entry.as_mut_ptr();
    // SAFETY: `sighting` is a reserved ring buffer record of the right size.
    unsafe {
        (*sighting).key = *key;
        (*sighting).stats = *stats;
        (*sighting).stack = [0; STACK_DEPTH];
        (*sighting).exe = [[0; EXE_NAME_LEN]; EXE_DEPTH];
    }
    fill(sighting);
    entry.submit(0);
}

/// The names of the current task's executable and its parent directories, innermost first, up
/// to its filesystem's root (whose name is `/`). Every read is checked: a task without `mm` or a
/// kernel without the offsets leaves `names` zero.
#[inline(always)]
fn read_exe_names(names: &mut [[u8; EXE_NAME_LEN]; EXE_DEPTH]) {
    // SAFETY: global written by the loader.
    let o = unsafe { core::ptr::read_volatile(&EXE_OFFSETS) };
    if o.task_mm == 0 {
        return;
    }
    let read = |addr: u64, offset: u32| -> Option<u64> {
        // SAFETY: a checked read of kernel memory.
        unsafe { bpf_probe_read_kernel((addr + u64::from(offset)) as *const u64) }
            .ok()
            .filter(|v| *v != 0)
    };
    // SAFETY: helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let Some(mut dentry) = read(task, o.task_mm)
        .and_then(|mm| read(mm, o.mm_exe_file))
        .and_then(|file| read(file, o.file_dentry))
    else {
        return;
    };
    for name in names.iter_mut() {
        let Some(text) = read(dentry, o.dentry_name) else {
            return;
        };
        // SAFETY: a checked read of a kernel string into the record.
        let _ = unsafe { bpf_probe_read_kernel_str_bytes(text as *const u8, name) };
        match read(dentry, o.dentry_parent) {
            Some(parent) if parent != dentry => dentry = parent,
            _ => return,
        }
    }
}

#[inline(always)]
pub(crate) fn count(index: u32) {
    if let Some(value) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU value, no other writer on this CPU while we run.
        unsafe { *value += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
