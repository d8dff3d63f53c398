//! SETUID and SETGID checks that `setuid`, `setgid`, `setresuid` and `setresgid` make for ids
//! the caller already holds: the call succeeds without the capability, so the check is counted
//! under its own origin (see `capspy_common::own_id_check`).
//!
//! Depends on the syscalls' prototypes (the `kernel-abi` lines below; each checks
//! `ns_capable_setid(old->user_ns, CAP_SET*ID)` with `old = current_cred()`, the `cred` that
//! `cap_capable` gets: <https://github.com/torvalds/linux/blob/v6.18/kernel/sys.c>), and on the
//! x86-64 syscall ABI: the number in `orig_rax`, the arguments in `rdi`, `rsi`, `rdx` of the
//! task's user-mode `struct pt_regs`.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use capspy_common::{
    CAP_SETUID, Ids, ORIGIN_CHECK, ORIGIN_OWN_ID, USERNS_INITIAL, nr, own_id_check,
};

use crate::{TASK_REAL_CRED_OFFSET, UserRegs, facts::CRED_OFFSETS, has_task_pt_regs, task_field};

// kernel-abi: fn __sys_setuid(uid_t)
// kernel-abi: fn __sys_setgid(gid_t)
// kernel-abi: fn __sys_setresuid(uid_t, uid_t, uid_t)
// kernel-abi: fn __sys_setresgid(gid_t, gid_t, gid_t)
/// [`ORIGIN_OWN_ID`] for a SETUID or SETGID check (`cap`) on `cred` that asks only for ids
/// the caller holds; [`ORIGIN_CHECK`] otherwise, and whenever something is unknown. `task` and
/// `regs` are the current task's, from `current_task` and [`UserRegs::of`].
#[inline(always)]
pub(crate) fn origin(task: *const u8, regs: UserRegs, cred: u64, cap: u8, userns: u8) -> u8 {
    // The syscall's ids equal the cred's kernel ids only in the initial user namespace.
    if userns != USERNS_INITIAL || !has_task_pt_regs() {
        return ORIGIN_CHECK;
    }
    let number = regs.get(|r| &raw const r.orig_rax);
    if !matches!(
        number,
        nr::SETUID | nr::SETGID | nr::SETRESUID | nr::SETRESGID
    ) {
        return ORIGIN_CHECK;
    }
    // SAFETY: global written by the loader.
    let o = unsafe { core::ptr::read_volatile(&CRED_OFFSETS) };
    let (real, effective, saved) = if cap == CAP_SETUID {
        (o.uid, o.euid, o.suid)
    } else {
        (o.gid, o.egid, o.sgid)
    };
    // SAFETY: global written by the loader.
    let real_cred_at = unsafe { core::ptr::read_volatile(&TASK_REAL_CRED_OFFSET) };
    // `cred` is a plain address for the verifier (the kprobe and tracepoint methods pass it as a
    // number), read with checked copies. When it is the task's `real_cred` (no `override_creds`,
    // the common case) the ids are plain loads through the task's BTF pointer instead: a
    // helper call less for each. `task` is a BTF pointer here only because the early return on
    // `!has_task_pt_regs()` (a read-only global the verifier folds) implies a BTF task: on a
    // kernel without `bpf_get_current_task_btf` (5.10) that return drops this branch, whose
    // plain loads through a plain address the verifier would refuse.
    let ids = if real_cred_at != 0 && task_field(task, real_cred_at) == cred {
        // Loaded again, not `cred`: the compiler could otherwise load through `cred`, which the
        // verifier refuses. The task's own `real_cred` cannot change while it runs this.
        let base = task_field(task, real_cred_at);
        let read = |offset: u32| -> Option<u32> {
            // SAFETY: a BTF pointer to `struct cred`; the verifier checks the access against
            // the kernel's BTF (the offsets are read-only globals it folds) and guards it.
            (offset != 0).then(|| unsafe {
                core::ptr::read_volatile((base + u64::from(offset)) as *const u32)
            })
        };
        (read(real), read(effective), read(saved))
    } else {
        let read = |offset: u32| -> Option<u32> {
            if offset == 0 {
                return None;
            }
            // SAFETY: a checked read of kernel memory; `cred` is the check's credentials.
            unsafe { bpf_probe_read_kernel((cred + u64::from(offset)) as *const u32) }.ok()
        };
        (read(real), read(effective), read(saved))
    };
    let (Some(real), Some(effective), Some(saved)) = ids else {
        return ORIGIN_CHECK;
    };
    #[expect(
        clippy::cast_possible_truncation,
        reason = "uid_t and gid_t are 32 bits, passed in 64-bit registers"
    )]
    let args = [
        regs.get(|r| &raw const r.rdi) as u32,
        regs.get(|r| &raw const r.rsi) as u32,
        regs.get(|r| &raw const r.rdx) as u32,
    ];
    let ids = Ids {
        real,
        effective,
        saved,
    };
    if own_id_check(cap, number, args, ids) {
        ORIGIN_OWN_ID
    } else {
        ORIGIN_CHECK
    }
}
