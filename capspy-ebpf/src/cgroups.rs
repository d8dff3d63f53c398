//! Cgroup creation, for attribution: a container can be created, make its checks and be removed
//! between two walks of the cgroup hierarchy, so its path is taken when it is made.
//!
//! The classic tracepoint `cgroup:cgroup_mkdir`, fields from
//! `/sys/kernel/tracing/events/cgroup/cgroup_mkdir/format` (stable since Linux 5.x):
//! `int root` at 8 (hierarchy id; 0 is cgroup v2), `u64 id` at 16, `__data_loc char[] path` at 24.

use aya_ebpf::{
    EbpfContext,
    helpers::bpf_probe_read_kernel_str_bytes,
    macros::{map, tracepoint},
    maps::RingBuf,
    programs::TracePointContext,
};
use capspy_common::{CGROUPS_BYTES, NewCgroup, counter};

#[map]
static NEW_CGROUPS: RingBuf = RingBuf::with_byte_size(CGROUPS_BYTES, 0);

// kernel-abi: tracepoint cgroup/cgroup_mkdir root@8 id@16 path@24
#[tracepoint(category = "cgroup", name = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets within the tracepoint record, per the format file above.
    let (Ok(root), Ok(id), Ok(loc)) = (
        unsafe { ctx.read_at::<i32>(8) },
        unsafe { ctx.read_at::<u64>(16) },
        unsafe { ctx.read_at::<u32>(24) },
    ) else {
        return 0;
    };
    if root != 0 {
        return 0; // a cgroup v1 hierarchy: its ids are not the ones checks carry
    }
    let Some(mut entry) = NEW_CGROUPS.reserve::<NewCgroup>(0) else {
        // Userspace falls back to walking the hierarchy.
        crate::count(counter::CGROUPS_LOST);
        return 0;
    };
    let record = entry.as_mut_ptr();
    // __data_loc: the low 16 bits are the string's offset in the record.
    let src = (ctx.as_ptr() as usize + (loc & 0xffff) as usize) as *const u8;
    // SAFETY: `record` is a reserved ring buffer slot of the right size; the read is checked.
    unsafe {
        (*record).id = id;
        (*record).path = [0; capspy_common::CGROUP_PATH_LEN];
        if bpf_probe_read_kernel_str_bytes(src, &mut (*record).path).is_err() {
            entry.discard(0);
            return 0;
        }
    }
    entry.submit(0);
    0
}
