//! `capspy bench-probe` (hidden): attaches one of the benchmark's comparison programs to the
//! `cap_capable` tracepoint until SIGINT/SIGTERM, so `cargo xtask bench` can measure it beside
//! capspy. Not a user command.

use anyhow::{Context as _, Result};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::BtfTracePoint;
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/capspy-bench"));

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// Count in a per-CPU array: the least a program on this hook can cost.
    Floor,
    /// Send every check through a ring buffer to userspace, which reads them all.
    Stream,
    /// capspy's aggregation alone: cgroup id, hash lookup on its 16-byte key, atomic add.
    Hash,
    /// The same count in the cgroup's local storage (Linux >= 6.2): no hashing.
    Cgrp,
}

#[derive(Debug, clap::Args)]
pub struct BenchProbeArgs {
    #[arg(long, value_enum)]
    pub variant: Variant,
}

pub async fn bench_probe(args: &BenchProbeArgs) -> Result<i32> {
    let btf = crate::kernel::btf::aya_vmlinux().context("reading BTF")?;
    let kernel = crate::kernel::btf::Btf::from_sys_fs()?;
    let cgroups_at = kernel.struct_member_offset("task_struct", "cgroups")?;
    let dfl_at = kernel.struct_member_offset("css_set", "dfl_cgrp")?;
    let mut ebpf = aya::EbpfLoader::new()
        .override_global("TASK_CGROUPS_OFFSET", &cgroups_at, true)
        .override_global("CSS_SET_DFL_CGRP_OFFSET", &dfl_at, true)
        .load(OBJECT)
        .context("loading the bench object")?;
    let name = match args.variant {
        Variant::Floor => "bench_floor",
        Variant::Stream => "bench_stream",
        Variant::Hash => "bench_hash",
        Variant::Cgrp => "bench_cgrp",
    };
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .context("program missing")?
        .try_into()?;
    prog.load("cap_capable", &btf)?;
    prog.attach()?;
    // The caller waits for this line before it starts measuring.
    println!("attached {name}");

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut events: u64 = 0;
    match args.variant {
        Variant::Floor | Variant::Hash | Variant::Cgrp => {
            tokio::select! {
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
            }
        }
        Variant::Stream => {
            let ring: RingBuf<MapData> =
                RingBuf::try_from(ebpf.take_map("STREAM").context("STREAM")?)?;
            // SAFETY: the ring buffer owns its fd for the AsyncFd's lifetime.
            let mut ring =
                unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
                    .map_err(|e| e.into_parts().1)?;
            loop {
                tokio::select! {
                    guard = ring.readable_mut() => {
                        let mut guard = guard?;
                        guard.clear_ready();
                        while let Some(item) = guard.get_inner_mut().next() {
                            // Read the record as a consumer would.
                            std::hint::black_box(&*item);
                            events += 1;
                        }
                    }
                    _ = sigint.recv() => break,
                    _ = sigterm.recv() => break,
                }
            }
        }
    }
    let lost: u64 = match ebpf.map("STREAM_LOST") {
        Some(map) => PerCpuArray::<_, u64>::try_from(map)?
            .get(&0, 0)
            .map_or(0, |v| v.iter().sum()),
        None => 0,
    };
    println!("events {events} lost {lost}");
    Ok(0)
}
