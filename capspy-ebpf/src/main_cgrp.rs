//! capspy's kernel side with cgroup local storage (Linux 6.2+): `main.rs`'s program, with the
//! common checks counted in their cgroup's storage once their key is in the hash (`storage.rs`).
#![no_std]
#![no_main]
// The BPF target has no `AtomicU64::fetch_add`; the intrinsic lowers to BPF's atomic add.
#![feature(core_intrinsics)]
#![allow(
    internal_features,
    reason = "core_intrinsics is the only atomic add the BPF target has"
)]

#[path = "storage.rs"]
mod storage;

/// No stage cuts: see `main_stages.rs`.
const STAGE_CUTS: bool = false;

include!("probe.rs");
