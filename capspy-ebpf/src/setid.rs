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

use crate::{UserRegs, facts::CRED_OFFSETS, has_task_pt_regs};

// kernel-abi: fn __sys_setuid(uid_t)
// kernel-abi: fn __sys_setgid(gid_t)
// kernel-abi: fn __sys_setresuid(uid_t, uid_t, uid_t)
// kernel-abi: fn __sys_setresgid(gid_t, gid_t, gid_t)
/// [`ORIGIN_OWN_ID`] for a SETUID or SETGID check (`cap`) on `cred` that asks only for ids
/// the caller holds; [`ORIGIN_CHECK`] otherwise, and whenever something is unknown.
#[inline(always)]
pub(crate) fn origin(regs: UserRegs, cred: u64, cap: u8, userns: u8) -> u8 {
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
    let read = |offset: u32| -> Option<u32> {
        if offset == 0 {
            return None;
        }
        // SAFETY: a checked read of kernel memory; `cred` is the check's credentials.
        unsafe { bpf_probe_read_kernel((cred + u64::from(offset)) as *const u32) }.ok()
    };
    let (Some(real), Some(effective), Some(saved)) = (read(real), read(effective), read(saved))
    else {
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
