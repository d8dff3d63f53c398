//! capspy's kernel side: one record per capability check, aggregated in a hash map.
//!
//! Six programs hook the same kernel function, `cap_capable`, in different ways; the loader
//! attaches exactly one method (fexit, kprobe+kretprobe, or one of the three tracepoint flavours).
//! They all end in [`record`], the hot path, which runs on every capability check on the host.
//!
//! Every program states what it reads of the kernel in a fixed-form line above it, checked
//! against the running kernel by `capspy/tests/kernel_abi.rs` (BTF prototypes, tracepoint
//! format files): `// kernel-abi: fn NAME(TYPES)`, `// kernel-abi: tp_btf NAME(TYPES)` (the
//! `btf_trace_NAME` arguments) or `// kernel-abi: tracepoint CATEGORY/NAME field@offset ...`.
#![no_std]
#![no_main]
// The BPF target has no `AtomicU64::fetch_add`; the intrinsic lowers to BPF's atomic add.
#![feature(core_intrinsics)]
#![allow(
    internal_features,
    reason = "core_intrinsics is the only atomic add the BPF target has"
)]

/// Without cgroup local storage (kernels before 6.2): every check is counted in the hash.
#[path = "storage_none.rs"]
mod storage;

/// No stage cuts: see `main_stages.rs`.
const STAGE_CUTS: bool = false;

include!("probe.rs");
