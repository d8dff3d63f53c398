//! Cgroup local storage (`BPF_MAP_TYPE_CGRP_STORAGE`, Linux 6.2+): the common checks of a cgroup
//! (see [`capspy_common::cell_of`]) are counted in a cell of an array hanging off the task's
//! cgroup v2, a pointer away, instead of hashing a key. A cell counts only once its key is in
//! the hash (the first check of a key in a cgroup takes the hash path and makes its first
//! sighting, with the call path), so a cell that is not zero means the key exists, and the count
//! of a key is its hash count plus its cell.
//!
//! Storage is freed with its cgroup: [`cgroup_rmdir_fold`] copies the cells where the daemon
//! finds them when the cgroup is removed, and deletes the storage. After that no check can
//! create it again:
//! `bpf_cgrp_storage_get` creates storage only while the cgroup's reference is not dying
//! (`percpu_ref_is_dying(&cgroup->self.refcnt)`,
//! <https://github.com/torvalds/linux/blob/v6.18/kernel/bpf/bpf_cgrp_storage.c>), and
//! `cgroup_destroy_locked` kills that reference before `cgroup_rmdir` fires the tracepoint
//! (<https://github.com/torvalds/linux/blob/v6.18/kernel/cgroup/cgroup.c>): a late check of a
//! task still exiting from it finds no storage and is counted in the hash. (`rmdir` needs the
//! cgroup empty of live tasks, so only such a late check could land between the copy and the
//! delete, and be lost.)

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, cgroup},
    btf_maps::CgrpStorage,
    macros::{btf_map, btf_tracepoint, map},
    maps::HashMap,
    programs::BtfTracePointContext,
};
use capspy_common::{CELLS, CgroupOffsets, CheckKey, FOLDED_CAPACITY, cell_of, counter};

#[btf_map]
static CHECK_CELLS: CgrpStorage<[u64; CELLS]> = CgrpStorage::new();

#[unsafe(no_mangle)]
static CGROUP_OFFSETS: CgroupOffsets = CgroupOffsets {
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
};

/// The cell counting `key` in the current task's cgroup v2 (`task->cgroups->dfl_cgrp`, two
/// loads through BTF pointers), its storage made on the first check; None for a key that is
/// not common, or when the storage cannot be had (no BTF task, a dying cgroup, no memory).
#[inline(always)]
pub(crate) fn cell(task: *const u8, key: &CheckKey) -> Option<*mut u64> {
    let index = cell_of(key)?;
    if !crate::has_task_btf() {
        return None;
    }
    // SAFETY: global written by the loader; plain loads through BTF pointers, which the
    // verifier checks against the kernel's BTF (the offsets are read-only globals it folds) and
    // guards against faults.
    unsafe {
        let o = core::ptr::read_volatile(&CGROUP_OFFSETS);
        let css_set =
            core::ptr::read_volatile(task.add(o.task_cgroups as usize).cast::<*const u8>());
        let cgrp = core::ptr::read_volatile(
            css_set
                .add(o.css_set_dfl_cgrp as usize)
                .cast::<*mut cgroup>(),
        );
        let cells = CHECK_CELLS.get_or_insert_ptr_mut(cgrp, None);
        if cells.is_null() {
            return None;
        }
        (*cells).get_mut(index).map(core::ptr::from_mut)
    }
}

/// The cells of removed cgroups, by cgroup id, until the daemon has read them (it deletes the
/// entry when it retires the cgroup). Allocated on use: it holds only cgroups removed since the
/// daemon's last sweeps.
#[map]
static FOLDED_CELLS: HashMap<u64, [u64; CELLS]> =
    HashMap::with_max_entries(FOLDED_CAPACITY, BPF_F_NO_PREALLOC);

// TP_PROTO(struct cgroup *cgrp, const char *path), the `cgroup` event class of
// https://github.com/torvalds/linux/blob/v6.18/include/trace/events/cgroup.h
// kernel-abi: tp_btf cgroup_rmdir(struct cgroup *, const char *)
/// Copies a removed cgroup's cells to [`FOLDED_CELLS`], then deletes its storage.
///
/// No count is lost or counted twice against the daemon, which adds to a key's hash count the
/// cgroup's folded cells if it finds them, else its storage's: before the copy it finds no
/// folded cells and reads the storage; after it, the folded cells. Read in between (no folded
/// cells yet, then no storage any more), a count is short for one sweep, never doubled, and
/// the daemon retires a removed cgroup only a sweep after it found it gone.
#[btf_tracepoint(function = "cgroup_rmdir")]
pub fn cgroup_rmdir_fold(ctx: BtfTracePointContext) -> u32 {
    let cgrp: *mut cgroup = ctx.arg(0);
    // SAFETY: a trusted BTF pointer to the cgroup being removed; plain loads as in `cell`. The
    // storage is valid for this run, and is copied from where it is (4 KiB: not via the stack).
    unsafe {
        let cells = CHECK_CELLS.get_ptr_mut(cgrp);
        if cells.is_null() {
            return 0;
        }
        let o = core::ptr::read_volatile(&CGROUP_OFFSETS);
        let kn = core::ptr::read_volatile(
            cgrp.cast::<u8>()
                .add(o.cgroup_kn as usize)
                .cast::<*const u8>(),
        );
        let id = core::ptr::read_volatile(kn.add(o.kernfs_node_id as usize).cast::<u64>());
        #[expect(
            clippy::needless_borrows_for_generic_args,
            reason = "by value, the 4 KiB would be copied onto the 512-byte BPF stack"
        )]
        let folded = FOLDED_CELLS.insert(id, &*cells, 0);
        if folded.is_err() {
            crate::count(counter::CHECKS_OVERFLOW);
        }
        let _ = CHECK_CELLS.delete(cgrp);
    }
    0
}
