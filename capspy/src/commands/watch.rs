//! `capspy watch`: the recording daemon with baselines. Records like `capspy record`, and alerts
//! when a workload uses (or tries) a capability outside its baseline, or has no baseline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};

use crate::commands::record::RecordArgs;
use crate::kernel::{cgroup, privilege};
use crate::recorder::Recorder;
use crate::store::StoreWriter;
use crate::trace::hook::Tracer;
use crate::watch::baseline::Baselines;
use crate::watch::drift::{AlertSink, Watch};
use crate::watch::http;
use crate::watch::metrics::{self, Metrics};

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Folder of baseline files, one per workload (written by `capspy baseline save`).
    #[arg(long, value_name = "DIR")]
    pub baseline: PathBuf,
    #[command(flatten)]
    pub record: RecordArgs,
    /// Append alerts (JSON lines) to FILE instead of writing them to standard output.
    #[arg(long, value_name = "FILE")]
    pub alerts: Option<PathBuf>,
    /// Serve Prometheus metrics (OpenMetrics text) on http://ADDR/metrics. ADDR is PORT (then
    /// 127.0.0.1), a loopback address with a port, or another IP address you name explicitly;
    /// 0.0.0.0 and [::] are refused. Off by default.
    #[arg(long, value_name = "ADDR", value_parser = metrics::parse_listen)]
    pub metrics: Option<SocketAddr>,
}

pub async fn watch(args: WatchArgs) -> Result<i32> {
    privilege::require_tracing()?;
    // Everything that can fail on bad input fails before the kernel is touched.
    let baselines = Baselines::load_dir(&args.baseline)
        .with_context(|| format!("loading baselines from {}", args.baseline.display()))?;
    let sink = match &args.alerts {
        Some(path) => AlertSink::file(path)
            .with_context(|| format!("opening the alerts file {}", path.display()))?,
        None => AlertSink::stdout(),
    };
    let listener = match args.metrics {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("serving metrics on {addr}"))?,
        ),
        None => None,
    };
    let rec = &args.record;
    let mut store = StoreWriter::open(&rec.store)
        .with_context(|| format!("opening the store {}", rec.store.display()))?;
    store.set_host(&rec.node_name())?;
    let alerted = store.alerted()?;
    let root = cgroup::v2_root()?;
    let kernel = rec.kernel();
    let mut tracer = Tracer::attach_sized(rec.hook, &kernel, rec.map_sizes())?;
    let symbols = kernel.symbols();
    // Attached, store, alerts file and socket open, symbols read: nothing left needs a
    // capability. Engines are reached without one, at start as on every retry.
    privilege::drop_all()?;
    let mut recorder = Recorder::new(&mut tracer, store, root, symbols, rec.engines().await)?;

    let count = baselines.len();
    let metrics = listener.as_ref().map(|_| {
        let mut programs = vec![("cap_capable", true)];
        programs.extend(tracer.optional.iter().map(|(p, why)| (*p, why.is_none())));
        Arc::new(Metrics::new(
            tracer.method.name(),
            &programs,
            rec.map_entries,
            count,
        ))
    });
    let served = match (listener, &metrics) {
        (Some(listener), Some(m)) => {
            let addr = listener.local_addr()?;
            if !addr.ip().is_loopback() {
                eprintln!(
                    "capspy: note: metrics are served without authentication on {addr}, as asked"
                );
            }
            tokio::spawn(http::serve(listener, m.clone()));
            format!("; metrics on http://{addr}/metrics")
        }
        _ => String::new(),
    };
    let mut watch = Watch::new(baselines, sink, metrics);
    // Alerted by an earlier run on this store: not again.
    watch.detector_mut().remember(&alerted);
    let target = watch.sink_target().to_string();
    recorder.watch(watch);
    eprintln!(
        "capspy: watching with hook {} into {}; {count} baseline(s) from {}; alerts to {target}{served}; stop with Ctrl-C",
        tracer.method,
        rec.store.display(),
        args.baseline.display(),
    );
    recorder.run(rec.interval, rec.duration).await?;
    let sent = recorder
        .watching()
        .map_or(0, |w| w.detector().alerts_sent());
    eprintln!("capspy: stopped; {sent} alert(s); the store is complete");
    Ok(0)
}
