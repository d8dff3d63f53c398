//! Reading a whole BPF hash map in a few system calls with `BPF_MAP_LOOKUP_BATCH` (Linux 5.6),
//! which aya 0.14 does not offer. Its iterator makes two calls per key (`get_next_key`, then a
//! lookup), and each `get_next_key` also walks the empty buckets up to the next key: with a few
//! hundred keys in a map of 32,768 buckets, that was most of the kernel time of a daemon sweep.
//!
//! A hash map's batch is a bucket index: each call copies whole buckets and says where to go on
//! (<https://github.com/torvalds/linux/blob/v6.18/kernel/bpf/hashtab.c>,
//! `__htab_map_lookup_and_delete_batch`). It ends with `ENOENT`, with the last entries copied.

use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd};

/// `BPF_MAP_LOOKUP_BATCH` in `enum bpf_cmd`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Entries asked for per call; a bucket longer than this (`ENOSPC`) doubles it.
const FIRST_CHUNK: usize = 512;

/// The `batch` member of `union bpf_attr`
/// (<https://github.com/torvalds/linux/blob/v6.18/include/uapi/linux/bpf.h>).
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Appends every entry of the hash map `map` to `out`. On any error (`EINVAL` on kernels before
/// 5.6) `out` is left as it was, for the caller to iterate instead.
pub fn lookup_all<K: aya::Pod, V: aya::Pod>(
    map: BorrowedFd<'_>,
    out: &mut Vec<(K, V)>,
) -> io::Result<()> {
    let start = out.len();
    let mut chunk = FIRST_CHUNK;
    let mut next: Option<u32> = None;
    let (mut keys, mut values) = buffers::<K, V>(chunk);
    loop {
        let mut token = next.unwrap_or(0);
        let mut attr = BatchAttr {
            in_batch: next.as_ref().map_or(0, |t| std::ptr::from_ref(t) as u64),
            out_batch: std::ptr::from_mut(&mut token) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: u32::try_from(chunk).unwrap_or(u32::MAX),
            map_fd: u32::try_from(map.as_raw_fd()).unwrap_or(u32::MAX),
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: `attr` points at buffers of `count` keys and values of the map's sizes (K and V
        // are its key and value types), and at `token`, all alive until the call returns.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                std::ptr::from_mut(&mut attr),
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let error = (ret < 0).then(io::Error::last_os_error);
        let copied = if error.is_none() || is(error.as_ref(), libc::ENOENT) {
            (attr.count as usize).min(chunk)
        } else {
            0
        };
        out.extend(
            keys[..copied]
                .iter()
                .copied()
                .zip(values[..copied].iter().copied()),
        );
        match error {
            None => next = Some(token),
            Some(e) if is(Some(&e), libc::ENOENT) => return Ok(()),
            Some(e) if is(Some(&e), libc::ENOSPC) && chunk < 1 << 20 => {
                chunk *= 2;
                (keys, values) = buffers(chunk);
            }
            Some(e) => {
                // A later call failing would leave a partial read: the caller reads it all again.
                out.truncate(start);
                return Err(e);
            }
        }
    }
}

fn buffers<K: aya::Pod, V: aya::Pod>(n: usize) -> (Vec<K>, Vec<V>) {
    // SAFETY: Pod types are valid for any bit pattern, zeros included.
    let (k, v) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    (vec![k; n], vec![v; n])
}

fn is(error: Option<&io::Error>, errno: i32) -> bool {
    error.and_then(io::Error::raw_os_error) == Some(errno)
}
