//! Prometheus metrics of the watch daemon, in the OpenMetrics text format; [`super::http`]
//! serves them on `GET /metrics`.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::model::caps::Capability;
use crate::model::check::{Bucket, Verdict};
use crate::model::loss::LossCounters;
use crate::watch::alert::AlertKind;

/// The port of `--metrics PORT`; 9464 is the one commonly used by Prometheus exporters of
/// this kind.
pub const DEFAULT_PORT: u16 = 9464;
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    #[error(
        "--metrics {0:?}: {1} is every interface; name the address to serve on (e.g. \
         127.0.0.1:{DEFAULT_PORT}, or this host's address on the monitoring network)"
    )]
    Wildcard(String, IpAddr),
    #[error(
        "--metrics {0:?}: expected PORT, 127.0.0.1:PORT, [::1]:PORT or another IP address with \
         a port (host names are not resolved)"
    )]
    Invalid(String),
}

/// The address to serve metrics on, by this rule: a bare `PORT` or `localhost:PORT` means
/// 127.0.0.1; a loopback address is used as given; any other address is used only because the
/// user typed it (a specific address, never implied); the wildcards `0.0.0.0` and `[::]`, which
/// name no address but every interface, are refused, and host names are not resolved.
pub fn parse_listen(s: &str) -> Result<SocketAddr, AddrError> {
    let t = s.trim();
    let port = |p: &str| p.parse::<u16>().map_err(|_| AddrError::Invalid(s.into()));
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port(t)?));
    }
    if let Some(p) = t.strip_prefix("localhost:") {
        return Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port(p)?));
    }
    let addr: SocketAddr = t.parse().map_err(|_| AddrError::Invalid(s.into()))?;
    if addr.ip().is_unspecified() {
        return Err(AddrError::Wildcard(s.into(), addr.ip()));
    }
    Ok(addr)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    workload: String,
    capability: String,
    verdict: &'static str,
    /// Whose check: the application's, the container runtime's setup, or the kernel's on
    /// borrowed credentials (only the first can make a capability required).
    bucket: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkloadLabels {
    workload: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProgramLabels {
    program: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RingLabels {
    /// The kernel's ring buffer: `sightings` (first sightings) or `cgroups` (`cgroup_mkdir`).
    ring: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutsideLabels {
    workload: String,
    capability: String,
    kind: &'static str,
}

/// Every metric the daemon exports. Counters count from the daemon's start.
pub struct Metrics {
    registry: Registry,
    checks: Family<CheckLabels, Counter>,
    alerts: Family<AlertLabels, Counter>,
    outside: Family<OutsideLabels, Counter>,
    baselined: Family<WorkloadLabels, Gauge>,
    ring_lost: Family<RingLabels, Counter>,
    overflow: Counter,
    unattributed: Counter,
    entries: Gauge,
    /// The kernel's cumulative loss counters at the last update, to count the difference.
    last_losses: Mutex<LossCounters>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The daemon's constant facts: the map's capacity, the baselines loaded, the attach method
/// and which kernel programs attached.
fn register_daemon(
    registry: &mut Registry,
    hook: &str,
    programs: &[(&str, bool)],
    map_capacity: u32,
    baselines: usize,
) {
    let capacity = Gauge::<i64>::default();
    capacity.set(i64::from(map_capacity));
    registry.register(
        "map_capacity",
        "Capacity of the kernel aggregation map",
        capacity,
    );
    let loaded = Gauge::<i64>::default();
    loaded.set(i64::try_from(baselines).unwrap_or(i64::MAX));
    registry.register("baselines", "Baselines loaded", loaded);
    registry.register(
        "hook",
        "The attach method in use",
        Info::new(vec![("method".to_string(), hook.to_string())]),
    );
    let attached = Family::<ProgramLabels, Gauge>::default();
    for (program, on) in programs {
        attached
            .get_or_create(&ProgramLabels {
                program: (*program).to_string(),
            })
            .set(i64::from(*on));
    }
    registry.register(
        "hook_attached",
        "1 for each kernel program attached, 0 for an optional one that could not attach",
        attached,
    );
}

impl Metrics {
    /// `programs`: each kernel program by name, and whether it is attached.
    pub fn new(hook: &str, programs: &[(&str, bool)], map_capacity: u32, baselines: usize) -> Self {
        let mut registry = Registry::with_prefix("capspy");
        let checks = Family::<CheckLabels, Counter>::default();
        registry.register(
            "checks",
            "Capability checks seen since the daemon started, by workload (or service, host), capability, verdict and bucket (app, runtime, borrowed)",
            checks.clone(),
        );
        let alerts = Family::<AlertLabels, Counter>::default();
        registry.register(
            "drift_alerts",
            "Alerts emitted: one per workload and capability (drift, attempted) or per workload (new_workload)",
            alerts.clone(),
        );
        let outside = Family::<OutsideLabels, Counter>::default();
        registry.register(
            "drift_checks",
            "Checks outside the workload's baseline: the alerted first one and every repeat",
            outside.clone(),
        );
        let baselined = Family::<WorkloadLabels, Gauge>::default();
        registry.register(
            "workload_baseline",
            "1 for a container workload seen with a baseline loaded, 0 for one without",
            baselined.clone(),
        );
        let ring_lost = Family::<RingLabels, Counter>::default();
        registry.register(
            "ringbuf_lost",
            "Records a kernel ring buffer had no room for: ring sightings (first sightings; counts are recovered by the map sweep) or cgroups (cgroup_mkdir; a cgroup removed before a walk found it is stored unattributed)",
            ring_lost.clone(),
        );
        // Both rings are exported from the start, so that an alert sees every increase.
        for ring in ["sightings", "cgroups"] {
            ring_lost.get_or_create(&RingLabels { ring }).inc_by(0);
        }
        let overflow = Counter::default();
        registry.register(
            "map_overflow",
            "Checks whose new key did not fit in the kernel map",
            overflow.clone(),
        );
        let unattributed = Counter::default();
        registry.register(
            "unattributed_cgroups",
            "Cgroups removed before their path could be learnt: their checks are stored under unattributed subjects cgroup:<id>, not under a workload",
            unattributed.clone(),
        );
        let entries = Gauge::default();
        registry.register(
            "map_entries",
            "Entries in use in the kernel aggregation map",
            entries.clone(),
        );
        register_daemon(&mut registry, hook, programs, map_capacity, baselines);
        Self {
            registry,
            checks,
            alerts,
            outside,
            baselined,
            ring_lost,
            overflow,
            unattributed,
            entries,
            last_losses: Mutex::new(LossCounters::default()),
        }
    }

    pub fn count_checks(
        &self,
        workload: &str,
        cap: Capability,
        (verdict, bucket): (Verdict, Bucket),
        n: u64,
    ) {
        self.checks
            .get_or_create(&CheckLabels {
                workload: workload.to_string(),
                capability: cap.to_string(),
                verdict: verdict.as_str(),
                bucket: bucket.as_str(),
            })
            .inc_by(n);
    }

    pub fn count_unattributed(&self) {
        self.unattributed.inc();
    }

    pub fn count_alert(&self, kind: AlertKind) {
        self.alerts
            .get_or_create(&AlertLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    pub fn count_outside(&self, workload: &str, cap: Capability, kind: AlertKind, n: u64) {
        self.outside
            .get_or_create(&OutsideLabels {
                workload: workload.to_string(),
                capability: cap.to_string(),
                kind: kind.as_str(),
            })
            .inc_by(n);
    }

    /// A container workload seen, with or without a baseline.
    pub fn see_workload(&self, workload: &str, has_baseline: bool) {
        self.baselined
            .get_or_create(&WorkloadLabels {
                workload: workload.to_string(),
            })
            .set(i64::from(has_baseline));
    }

    /// The kernel program's loss counters (cumulative since it was loaded) and map fill.
    pub fn update_kernel(&self, losses: LossCounters, entries: usize) {
        let mut last = self
            .last_losses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (ring, now, before) in [
            ("sightings", losses.sightings_lost, last.sightings_lost),
            ("cgroups", losses.cgroups_lost, last.cgroups_lost),
        ] {
            self.ring_lost
                .get_or_create(&RingLabels { ring })
                .inc_by(now.saturating_sub(before));
        }
        self.overflow
            .inc_by(losses.checks_overflow.saturating_sub(last.checks_overflow));
        *last = losses;
        self.entries.set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    /// The exposition, ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            // Only a formatter error, which writing to a String never is.
            out.clear();
            let _ = writeln!(out, "# EOF");
        }
        out
    }
}

/// Serves `GET /metrics` (and `HEAD`) until the task is dropped.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_follow_the_rule() {
        let lo = |p| SocketAddr::new(Ipv4Addr::LOCALHOST.into(), p);
        assert_eq!(parse_listen("9464"), Ok(lo(9464)));
        assert_eq!(parse_listen("localhost:9000"), Ok(lo(9000)));
        assert_eq!(parse_listen("127.0.0.1:9464"), Ok(lo(9464)));
        assert_eq!(
            parse_listen("127.0.0.2:0"),
            Ok("127.0.0.2:0".parse().unwrap())
        );
        assert_eq!(
            parse_listen("[::1]:9464"),
            Ok("[::1]:9464".parse().unwrap())
        );
        // Named explicitly: allowed.
        assert_eq!(
            parse_listen("192.0.2.7:9464"),
            Ok("192.0.2.7:9464".parse().unwrap())
        );
        // Every interface: never.
        assert!(matches!(
            parse_listen("0.0.0.0:9464"),
            Err(AddrError::Wildcard(..))
        ));
        assert!(matches!(
            parse_listen("[::]:9464"),
            Err(AddrError::Wildcard(..))
        ));
        for bad in [
            "",
            "metrics.example:9464",
            "127.0.0.1",
            "99999",
            "localhost:x",
        ] {
            assert!(
                matches!(parse_listen(bad), Err(AddrError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn exposition_names_every_metric_and_ends_with_eof() {
        let m = Metrics::new(
            "tp_btf",
            &[("cap_capable", true), ("cgroup_mkdir", false)],
            32_768,
            2,
        );
        let app = (Verdict::Granted, Bucket::App);
        m.count_checks("image:a/b", Capability::NET_RAW, app, 3);
        m.count_checks(
            "host",
            Capability::SYS_ADMIN,
            (Verdict::Denied, Bucket::Runtime),
            1,
        );
        m.count_alert(AlertKind::Drift);
        m.see_workload("image:a/b", true);
        m.see_workload("image:c/d", false);
        m.count_outside("image:a/b", Capability::CHOWN, AlertKind::Drift, 2);
        m.count_unattributed();
        m.update_kernel(
            LossCounters {
                sightings_lost: 5,
                checks_overflow: 1,
                unclassified: 0,
                cgroups_lost: 2,
            },
            42,
        );
        // Cumulative kernel counters: only the difference is added.
        m.update_kernel(
            LossCounters {
                sightings_lost: 7,
                checks_overflow: 1,
                unclassified: 0,
                cgroups_lost: 3,
            },
            43,
        );
        let text = m.encode();
        for line in [
            "# TYPE capspy_checks counter",
            r#"capspy_checks_total{workload="image:a/b",capability="NET_RAW",verdict="granted",bucket="app"} 3"#,
            r#"capspy_drift_alerts_total{kind="drift"} 1"#,
            r#"capspy_drift_checks_total{workload="image:a/b",capability="CHOWN",kind="drift"} 2"#,
            r#"capspy_ringbuf_lost_total{ring="sightings"} 7"#,
            r#"capspy_ringbuf_lost_total{ring="cgroups"} 3"#,
            "capspy_map_overflow_total 1",
            "capspy_unattributed_cgroups_total 1",
            "capspy_map_entries 43",
            "capspy_map_capacity 32768",
            "capspy_baselines 2",
            r#"capspy_hook_info{method="tp_btf"} 1"#,
            r#"capspy_hook_attached{program="cap_capable"} 1"#,
            r#"capspy_hook_attached{program="cgroup_mkdir"} 0"#,
            r#"capspy_workload_baseline{workload="image:a/b"} 1"#,
            r#"capspy_workload_baseline{workload="image:c/d"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    /// The shipped Prometheus rules name only series this exposition has.
    #[test]
    fn the_prometheus_rules_use_exported_metrics() {
        let rules = include_str!("../../../dist/prometheus/capspy-rules.yaml");
        let m = Metrics::new("tp_btf", &[("cap_capable", true)], 1, 0);
        m.count_checks("w", Capability::CHOWN, (Verdict::Granted, Bucket::App), 1);
        m.count_outside("w", Capability::CHOWN, AlertKind::Drift, 1);
        m.see_workload("w", false);
        let text = m.encode();
        let exported: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let mut used = Vec::new();
        for line in rules.lines().filter_map(|l| l.trim().strip_prefix("expr:")) {
            // Series names, not recording rules (`level:capspy_metric:op`).
            let mut rest = line;
            while let Some(at) = rest.find("capspy_") {
                let before = rest[..at].chars().last();
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !matches!(before, Some(c) if c == ':' || c == '_' || c.is_ascii_alphanumeric()) {
                    used.push(name.clone());
                }
                rest = &rest[at + name.len()..];
            }
        }
        assert!(used.len() >= 8, "{used:?}");
        for name in &used {
            assert!(
                exported.contains(&name.as_str()),
                "{name} is not exported:\n{text}"
            );
        }
    }

    #[test]
    fn hostile_label_values_are_escaped() {
        let m = Metrics::new("tp_btf", &[], 1, 0);
        m.count_checks(
            "a\"b\\c\nd",
            Capability::CHOWN,
            (Verdict::Granted, Bucket::App),
            1,
        );
        let text = m.encode();
        assert!(text.contains(r#"workload="a\"b\\c\nd""#), "{text}");
    }
}
