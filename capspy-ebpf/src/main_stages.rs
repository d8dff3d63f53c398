//! `main_cgrp.rs`'s program with the hot path's stage cuts compiled in, for the benchmark's
//! stage table: the loader sets `BENCH_STOP_AFTER` to stop `record` after one of its stages.
//! The objects capspy runs are built without them, so they carry no trace of the cuts.
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

/// See `bench_stop` in `probe.rs`.
const STAGE_CUTS: bool = true;

include!("probe.rs");
