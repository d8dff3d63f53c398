//! `capspy record`: the recording daemon. Traces every capability check on the host until
//! SIGINT/SIGTERM (or `--duration`) and keeps them in the store, attributed to containers,
//! services and the host.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::attribute::engines::{Engines, Sockets};
use crate::kernel::{cgroup, privilege};
use crate::recorder::Recorder;
use crate::store::{self, StoreWriter};
use crate::trace::hook::{Aggregation, HookChoice, KernelInfo, MapSizes, Tracer};

#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// How to hook cap_capable.
    #[arg(long, value_enum, default_value = "auto")]
    pub hook: HookChoice,
    /// The store to write.
    #[arg(long, value_name = "PATH", default_value = store::DEFAULT_PATH)]
    pub store: PathBuf,
    /// Stop after this long (e.g. 30s, 10m, 2h); default: until SIGINT or SIGTERM.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// How often to write to the store.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub interval: Duration,
    /// Entries of the kernel aggregation map (tests make it small to fill it).
    #[arg(long, hide = true, default_value_t = capspy_common::CHECKS_CAPACITY)]
    pub map_entries: u32,
    /// Bytes of the first-sighting ring buffer: a power of two, at least 4096 (tests shrink it).
    #[arg(long, hide = true, default_value_t = capspy_common::SIGHTINGS_BYTES, value_parser = parse_ring_bytes)]
    pub ring_buffer_bytes: u32,
    /// Bytes of the `cgroup_mkdir` ring buffer: a power of two, at least 4096 (tests shrink it).
    #[arg(long, hide = true, default_value_t = capspy_common::CGROUPS_BYTES, value_parser = parse_ring_bytes)]
    pub cgroups_ring_bytes: u32,
    /// Count every check in the hash map, as on kernels without cgroup local storage (the
    /// benchmark compares both).
    #[arg(long, hide = true)]
    pub no_cgroup_storage: bool,
    /// Stops the kernel program's hot path after this stage, counting nothing: only for the
    /// benchmark's stage table (`cargo xtask bench`, section 1d).
    #[arg(long, hide = true, value_parser = clap::value_parser!(u8).range(1..=i64::from(capspy_common::BENCH_STAGES)))]
    pub bench_stop_after: Option<u8>,
    /// The name of this node in profiles merged from several (`capspy merge`), kept in the
    /// store; default: the host name (in a pod, pass the node's name).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// containerd's API socket (names, labels and pods of its containers).
    #[arg(long, value_name = "PATH", default_value = crate::attribute::containerd::DEFAULT_SOCKET)]
    pub containerd_socket: PathBuf,
    /// CRI-O's socket.
    #[arg(long, value_name = "PATH", default_value = crate::attribute::crio::DEFAULT_SOCKET)]
    pub crio_socket: PathBuf,
    /// podman's Docker-compatible API socket (`podman system service`).
    #[arg(long, value_name = "PATH", default_value = crate::attribute::engines::PODMAN_SOCKET)]
    pub podman_socket: PathBuf,
}

impl RecordArgs {
    /// The running kernel's facts, as these options let the program use them.
    pub fn kernel(&self) -> KernelInfo {
        let mut kernel = KernelInfo::probe();
        if self.no_cgroup_storage {
            kernel.without_cgroup_storage("turned off by --no-cgroup-storage");
        }
        kernel.bench_stop_after = self.bench_stop_after.unwrap_or(0);
        kernel
    }

    pub fn map_sizes(&self) -> MapSizes {
        MapSizes {
            checks: self.map_entries,
            sightings_bytes: self.ring_buffer_bytes,
            cgroups_bytes: self.cgroups_ring_bytes,
        }
    }

    /// `--node`, else the host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default()
        })
    }

    /// Asks every engine that answers on its socket (Docker's is `DOCKER_HOST`'s or the default).
    pub async fn engines(&self) -> Engines {
        let sockets = Sockets {
            containerd: self.containerd_socket.clone(),
            crio: self.crio_socket.clone(),
            podman: self.podman_socket.clone(),
            ..Sockets::default()
        };
        Engines::connect(&sockets, Some(self.node_name())).await
    }
}

fn parse_ring_bytes(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n >= 4096 && n.is_power_of_two() => Ok(n),
        _ => Err(format!("{s:?} is not a power of two of at least 4096")),
    }
}

pub async fn record(args: RecordArgs) -> Result<i32> {
    privilege::require_tracing()?;
    // Open the store first: a second daemon must fail before touching the kernel.
    let mut store = StoreWriter::open(&args.store)
        .with_context(|| format!("opening the store {}", args.store.display()))?;
    store.set_host(&args.node_name())?;
    let root = cgroup::v2_root()?;
    let kernel = args.kernel();
    let sizes = args.map_sizes();
    let mut tracer = Tracer::attach_sized(args.hook, &kernel, sizes)?;
    // The stage cuts are compiled into the cgroup storage object alone: the hash object would
    // measure the whole program.
    if let (Some(_), Aggregation::Hash(why)) = (args.bench_stop_after, &tracer.aggregation) {
        anyhow::bail!("--bench-stop-after needs cgroup local storage: {why}");
    }
    let symbols = kernel.symbols();
    // Attached, store open, symbols read: nothing left needs a capability. Engines are reached
    // without one, at start as on every retry.
    privilege::drop_all()?;
    let mut recorder = Recorder::new(&mut tracer, store, root, symbols, args.engines().await)?;
    eprintln!(
        "capspy: recording with hook {} into {}; stop with Ctrl-C (aggregation: {})",
        tracer.method,
        args.store.display(),
        tracer.aggregation
    );
    recorder.run(args.interval, args.duration).await?;
    eprintln!(
        "capspy: stopped; the store is complete ({} kernel map entries in use)",
        recorder.map_entries()
    );
    Ok(0)
}

/// `500ms`, `30s`, `10m`, `2h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (expected e.g. 500ms, 30s, 10m, 2h)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    if d.is_zero() {
        return Err("the duration must be positive".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_mins(10)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_hours(2)));
        for bad in ["", "s", "10x", "-1s", "0s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
