//! Drift detection for `capspy watch`: every observed (cgroup, capability, verdict, audit class,
//! bucket) key is judged against its workload's baseline as soon as it is seen (the ring buffer's
//! first sighting, or the map sweep when that record was lost), and each finding is alerted once
//! per workload and capability; repeats are counted.
//!
//! Kinds of finding, only for checks made by the application (never the container runtime's setup
//! or the kernel on borrowed credentials), only audited ones (advisory checks choose a behaviour,
//! they are not needs), and not against a user namespace the workload made itself:
//! - `drift`: a granted check of a capability outside the baseline's `required`;
//! - `attempted`: a denied check of a capability neither required nor tried in the baseline (a
//!   try, not a use: the workload did not get it);
//! - `new_workload`: a container workload without a baseline made its first check (of any
//!   kind). It has no baseline to stay within, so its uses and tries are reported as above too.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use capspy_common::{CheckKey, CheckStats};
use serde::Serialize;

use crate::model::caps::Capability;
use crate::model::check::{AuditClass, Bucket, CheckClass, CheckRow, ProcessRef, UserNs, Verdict};
use crate::model::loss::LossCounters;
use crate::model::text::short_id;
use crate::model::time::BootClock;
use crate::model::time::rfc3339;
use crate::store::Alerted;
use crate::watch::alert::AlertKind;
use crate::watch::baseline::Baselines;
use crate::watch::metrics::Metrics;

/// Where the daemon learnt of the check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The ring buffer's first sighting of the key: immediate.
    RingBuffer,
    /// The periodic map sweep (the first sighting's record was lost).
    Sweep,
}

/// One observed check key of a container, as the detector sees it.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub workload: &'a str,
    pub container_id: &'a str,
    pub container_name: Option<&'a str>,
    pub capability: Capability,
    /// Verdict, audit class, bucket and user namespace: what [`CheckClass`] judges.
    pub class: CheckClass,
    /// The first process that made a check of this key.
    pub process: ProcessRef,
    /// When that first check was made.
    pub time: SystemTime,
    pub source: Source,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerRef {
    pub id: String,
    pub name: Option<String>,
}

/// One alert: a JSON line in the alerts stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub kind: AlertKind,
    /// The check's time (the first check of its key).
    pub time: String,
    pub detected_at: String,
    /// From the check to the alert.
    pub latency_ms: u64,
    pub workload: String,
    pub container: ContainerRef,
    pub capability: String,
    pub verdict: Verdict,
    pub audit: AuditClass,
    pub bucket: Bucket,
    pub process: ProcessRef,
    /// The baseline file, or null when the workload has none.
    pub baseline: Option<PathBuf>,
    /// What the baseline allows (null without one).
    pub baseline_required: Option<Vec<String>>,
    pub source: Source,
}

impl Alert {
    /// The stderr line: everything that identifies the alert, with names quoted and escaped.
    pub fn log_line(&self) -> String {
        let container = match &self.container.name {
            Some(name) => format!("{name:?} ({})", short_id(&self.container.id)),
            None => short_id(&self.container.id).to_string(),
        };
        let what = match self.kind {
            AlertKind::Drift => format!("used {} outside its baseline", self.capability),
            AlertKind::Attempted => {
                format!("tried {} (denied) outside its baseline", self.capability)
            }
            AlertKind::NewWorkload => format!(
                "appeared without a baseline (first check: {} {}, {} bucket)",
                self.capability,
                json_word(&self.verdict),
                json_word(&self.bucket)
            ),
        };
        let allowed = match &self.baseline_required {
            Some(caps) if caps.is_empty() => "; baseline allows none".to_string(),
            Some(caps) => format!("; baseline allows {}", caps.join(",")),
            None => String::new(),
        };
        format!(
            "capspy: ALERT {}: workload {:?} container {container} {what}; process {:?} pid {} uid {} at {}{allowed}",
            self.kind.as_str(),
            self.workload,
            self.process.comm,
            self.process.tgid,
            self.process.uid,
            self.time,
        )
    }
}

/// A unit enum's serde name (`granted`, `runtime`).
fn json_word<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// What one observation amounted to.
#[derive(Debug, Default)]
pub struct Outcome {
    /// New alerts (at most one new_workload and one drift or attempted).
    pub alerts: Vec<Alert>,
    /// How the check lies outside the baseline, if it does.
    pub outside: Option<AlertKind>,
}

/// The decision logic, without I/O.
#[derive(Debug, Default)]
pub struct Detector {
    baselines: Baselines,
    /// (workload, kind, capability) already alerted; capability None for new_workload.
    alerted: HashSet<(String, AlertKind, Option<Capability>)>,
    /// Checks outside the baseline per (workload, kind, capability), the alerted one included.
    counts: HashMap<(String, AlertKind, Capability), u64>,
    /// Alerted since the last [`Detector::take_alerted`], for the store.
    fresh: Vec<(String, AlertKind, Option<Capability>)>,
    /// Alerts sent by this daemon.
    sent: usize,
}

impl Detector {
    pub fn new(baselines: Baselines) -> Self {
        Self {
            baselines,
            ..Self::default()
        }
    }

    pub fn baselines(&self) -> &Baselines {
        &self.baselines
    }

    /// What an earlier daemon alerted on (from the store): not alerted again, unless the
    /// baseline has allowed it since (a capability added and removed again is new drift).
    pub fn remember(&mut self, alerted: &[Alerted]) {
        for a in alerted {
            let Some(kind) = AlertKind::parse(&a.kind) else {
                continue;
            };
            let cap = match a.capability.as_deref().map(str::parse::<Capability>) {
                None => None,
                Some(Ok(cap)) => Some(cap),
                Some(Err(_)) => continue,
            };
            let baseline = self.baselines.get(&a.workload);
            let allowed = match (kind, cap) {
                (AlertKind::NewWorkload, _) => baseline.is_some(),
                (AlertKind::Drift, Some(c)) => baseline.is_some_and(|b| b.required.contains(&c)),
                (AlertKind::Attempted, Some(c)) => {
                    baseline.is_some_and(|b| b.required.contains(&c) || b.attempted.contains(&c))
                }
                (_, None) => true,
            };
            if !allowed {
                self.alerted.insert((a.workload.clone(), kind, cap));
            }
        }
    }

    /// What was alerted since the last call, in the store's terms.
    pub fn take_alerted(&mut self) -> Vec<Alerted> {
        self.fresh
            .drain(..)
            .map(|(workload, kind, cap)| Alerted {
                workload,
                kind: kind.as_str().to_string(),
                capability: cap.map(|c| c.to_string()),
            })
            .collect()
    }

    /// How a check of this class lies outside the workload's baseline, if it does: a check
    /// that would make the capability required (the profile's rule) and is not in the baseline
    /// is drift; a denied one that would, not known there, an attempt. Grants and denials inside
    /// a user namespace the workload made are not host privilege: no --cap-add governs them, so
    /// no baseline can allow or forbid them.
    pub fn classify(
        &self,
        workload: &str,
        cap: Capability,
        class: CheckClass,
    ) -> Option<AlertKind> {
        if !class.shows_need() || class.user_namespace == UserNs::Other {
            return None;
        }
        let baseline = self.baselines.get(workload);
        let required = baseline.is_some_and(|b| b.required.contains(&cap));
        if class.makes_required() {
            return (!required).then_some(AlertKind::Drift);
        }
        let known = required || baseline.is_some_and(|b| b.attempted.contains(&cap));
        (!known).then_some(AlertKind::Attempted)
    }

    /// Judges one key of a container; `new_checks` is how many checks of it were not counted
    /// before (0 when the same key is seen again).
    pub fn observe(&mut self, o: &Observed, new_checks: u64, now: SystemTime) -> Outcome {
        let mut out = Outcome::default();
        if self.baselines.get(o.workload).is_none()
            && self
                .alerted
                .insert((o.workload.to_string(), AlertKind::NewWorkload, None))
        {
            out.alerts.push(self.alert(AlertKind::NewWorkload, o, now));
            self.sent += 1;
            self.fresh
                .push((o.workload.to_string(), AlertKind::NewWorkload, None));
        }
        out.outside = self.classify(o.workload, o.capability, o.class);
        if let Some(kind) = out.outside {
            *self
                .counts
                .entry((o.workload.to_string(), kind, o.capability))
                .or_default() += new_checks;
            if self
                .alerted
                .insert((o.workload.to_string(), kind, Some(o.capability)))
            {
                out.alerts.push(self.alert(kind, o, now));
                self.sent += 1;
                self.fresh
                    .push((o.workload.to_string(), kind, Some(o.capability)));
            }
        }
        out
    }

    /// Checks outside the baseline so far, the alerted one included.
    pub fn count(&self, workload: &str, kind: AlertKind, cap: Capability) -> u64 {
        self.counts
            .get(&(workload.to_string(), kind, cap))
            .copied()
            .unwrap_or(0)
    }

    pub fn alerts_sent(&self) -> usize {
        self.sent
    }

    fn alert(&self, kind: AlertKind, o: &Observed, now: SystemTime) -> Alert {
        let baseline = self.baselines.get(o.workload);
        let latency = now.duration_since(o.time).unwrap_or_default();
        Alert {
            kind,
            time: rfc3339(o.time),
            detected_at: rfc3339(now),
            latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            workload: o.workload.to_string(),
            container: ContainerRef {
                id: o.container_id.to_string(),
                name: o.container_name.map(str::to_string),
            },
            capability: o.capability.to_string(),
            verdict: o.class.verdict,
            audit: o.class.audit,
            bucket: o.class.bucket,
            process: o.process.clone(),
            baseline: baseline.map(|b| b.file.clone()),
            baseline_required: baseline.map(|b| names(&b.required)),
            source: o.source,
        }
    }
}

fn names(caps: &BTreeSet<Capability>) -> Vec<String> {
    caps.iter().map(ToString::to_string).collect()
}

/// Where alerts go: JSON lines on stdout or appended to a file, each written whole and flushed,
/// and a log line on stderr.
pub struct AlertSink {
    out: Box<dyn Write + Send>,
    target: String,
}

impl AlertSink {
    pub fn stdout() -> Self {
        Self {
            out: Box::new(io::stdout()),
            target: "standard output".into(),
        }
    }

    /// Appends to `path`, created 0600 (alerts name processes and workloads).
    pub fn file(path: &Path) -> io::Result<Self> {
        let f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        Ok(Self {
            out: Box::new(f),
            target: path.display().to_string(),
        })
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn emit(&mut self, alert: &Alert) {
        eprintln!("{}", alert.log_line());
        let mut line = serde_json::to_string(alert).unwrap_or_default();
        line.push('\n');
        // One write per line (O_APPEND keeps concurrent writers' lines whole).
        if let Err(e) = self
            .out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.flush())
        {
            eprintln!("capspy: writing the alert to {}: {e}", self.target);
        }
    }
}

/// Who a cgroup belongs to, for the detector and the metrics.
#[derive(Clone, Copy, Debug)]
pub struct Who<'a> {
    /// The metrics' `workload` label: the workload key, a service unit, `host` or `unknown`.
    pub label: &'a str,
    /// Set for containers: (workload key, container id, name).
    pub container: Option<(&'a str, &'a str, Option<&'a str>)>,
}

#[derive(Clone, Copy, Debug, Default)]
struct KeyState {
    /// The kernel's count at the last look.
    count: u64,
    /// Judged once with what we now know of its cgroup: later looks only add counts.
    judged: bool,
}

/// The detector wired to the recorder: counts per kernel key, alerts out, metrics.
pub struct Watch {
    detector: Detector,
    sink: AlertSink,
    metrics: Option<Arc<Metrics>>,
    keys: HashMap<CheckKey, KeyState>,
}

impl Watch {
    pub fn new(baselines: Baselines, sink: AlertSink, metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            detector: Detector::new(baselines),
            sink,
            metrics,
            keys: HashMap::new(),
        }
    }

    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    pub fn detector_mut(&mut self) -> &mut Detector {
        &mut self.detector
    }

    /// One look at a kernel key (a first sighting or a sweep entry).
    pub fn on_check(
        &mut self,
        who: Who,
        key: &CheckKey,
        stats: &CheckStats,
        clock: &BootClock,
        source: Source,
    ) {
        let state = self.keys.entry(*key).or_default();
        let new_checks = stats.count.saturating_sub(state.count);
        state.count = state.count.max(stats.count);
        if state.judged && new_checks == 0 {
            return;
        }
        let first_look = !state.judged;
        state.judged = true;
        let row = CheckRow::from_kernel(key, stats, clock, Vec::new());
        if let Some(m) = &self.metrics
            && new_checks > 0
        {
            m.count_checks(
                who.label,
                row.capability,
                (row.verdict, row.bucket),
                new_checks,
            );
        }
        let Some((workload, id, name)) = who.container else {
            return;
        };
        if let Some(m) = &self.metrics
            && first_look
        {
            m.see_workload(workload, self.detector.baselines().get(workload).is_some());
        }
        let observed = Observed {
            workload,
            container_id: id,
            container_name: name,
            capability: row.capability,
            class: row.class(),
            process: row.example,
            time: row.first_seen,
            source,
        };
        let outcome = self
            .detector
            .observe(&observed, new_checks, SystemTime::now());
        for alert in &outcome.alerts {
            self.sink.emit(alert);
            if let Some(m) = &self.metrics {
                m.count_alert(alert.kind);
            }
        }
        if let (Some(m), Some(kind)) = (&self.metrics, outcome.outside)
            && new_checks > 0
        {
            m.count_outside(workload, row.capability, kind, new_checks);
        }
    }

    /// After a sweep: the kernel's loss counters and map fill.
    pub fn after_sweep(&mut self, losses: LossCounters, entries: usize) {
        if let Some(m) = &self.metrics {
            m.update_kernel(losses, entries);
        }
    }

    /// A cgroup whose checks could not be attributed (see `SubjectKind::Unattributed`).
    pub fn count_unattributed(&self) {
        if let Some(m) = &self.metrics {
            m.count_unattributed();
        }
    }

    /// Forgets the keys of cgroups that are gone (their map entries are freed too).
    pub fn retain_cgroups(&mut self, keep: impl Fn(u64) -> bool) {
        self.keys.retain(|k, _| keep(k.cgroup_id));
    }

    pub fn sink_target(&self) -> &str {
        self.sink.target()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::watch::baseline::Baseline;

    const PINGER: &str = "image:demo/busybox:1/pinger";

    fn detector() -> Detector {
        let mut by_workload = BTreeMap::new();
        by_workload.insert(
            PINGER.to_string(),
            Baseline {
                workload: PINGER.into(),
                file: "base/pinger.json".into(),
                required: BTreeSet::from([Capability::NET_RAW]),
                attempted: BTreeSet::from([Capability(7)]),
            },
        );
        Detector::new(Baselines { by_workload })
    }

    fn check(workload: &str, cap: Capability, verdict: Verdict) -> Observed<'_> {
        Observed {
            workload,
            container_id: "0123456789abcdef",
            container_name: Some("pinger"),
            capability: cap,
            class: CheckClass {
                verdict,
                audit: AuditClass::Audited,
                bucket: Bucket::App,
                user_namespace: UserNs::Initial,
                behaviour_only: false,
            },
            process: ProcessRef {
                pid: 7,
                tgid: 7,
                uid: 0,
                comm: "chown".into(),
                exe: None,
            },
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            source: Source::RingBuffer,
        }
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250)
    }

    #[test]
    fn one_alert_per_workload_and_capability_repeats_counted() {
        let mut d = detector();
        let chown = check(PINGER, Capability::CHOWN, Verdict::Granted);
        let first = d.observe(&chown, 1, now());
        assert_eq!(first.alerts.len(), 1);
        let a = &first.alerts[0];
        assert_eq!(a.kind, AlertKind::Drift);
        assert_eq!(a.capability, "CHOWN");
        assert_eq!(a.workload, PINGER);
        assert_eq!(a.process.comm, "chown");
        assert_eq!(a.latency_ms, 250);
        assert_eq!(a.baseline_required, Some(vec!["NET_RAW".to_string()]));
        // Same key counted again, another container of the workload: counted, not alerted.
        assert!(d.observe(&chown, 4, now()).alerts.is_empty());
        let mut other = chown.clone();
        other.container_id = "fedcba";
        assert!(d.observe(&other, 2, now()).alerts.is_empty());
        assert_eq!(d.count(PINGER, AlertKind::Drift, Capability::CHOWN), 7);
        assert_eq!(d.alerts_sent(), 1);
    }

    #[test]
    fn what_an_earlier_daemon_alerted_is_not_alerted_again_unless_allowed_since() {
        let earlier = |kind: &str, cap: Option<&str>| Alerted {
            workload: PINGER.into(),
            kind: kind.into(),
            capability: cap.map(str::to_string),
        };
        let mut d = detector();
        d.remember(&[
            earlier("drift", Some("CHOWN")),
            // Allowed by the baseline since (NET_RAW is required now): forgotten.
            earlier("drift", Some("NET_RAW")),
            earlier("drift", Some("NOT_A_CAP")),
        ]);
        let chown = check(PINGER, Capability::CHOWN, Verdict::Granted);
        assert!(d.observe(&chown, 1, now()).alerts.is_empty());
        assert!(d.take_alerted().is_empty());
        // A capability the earlier daemon did not alert on.
        let kill = check(PINGER, Capability(5), Verdict::Granted);
        assert_eq!(d.observe(&kill, 1, now()).alerts.len(), 1);
        assert_eq!(d.take_alerted(), [earlier("drift", Some("KILL"))]);
        assert_eq!(d.alerts_sent(), 1);
        // Forgotten, NET_RAW would alert again were it dropped from the baseline; allowed, silent.
        let ping = check(PINGER, Capability::NET_RAW, Verdict::Granted);
        assert!(d.observe(&ping, 1, now()).alerts.is_empty());
    }

    #[test]
    fn what_the_baseline_allows_is_silent() {
        let mut d = detector();
        let ping = check(PINGER, Capability::NET_RAW, Verdict::Granted);
        assert!(d.observe(&ping, 3, now()).alerts.is_empty());
        // A denied try the baseline already made, or of a capability it requires.
        assert!(
            d.observe(&check(PINGER, Capability(7), Verdict::Denied), 1, now())
                .alerts
                .is_empty()
        );
        assert!(
            d.observe(
                &check(PINGER, Capability::NET_RAW, Verdict::Denied),
                1,
                now()
            )
            .alerts
            .is_empty()
        );
    }

    #[test]
    fn advisory_and_runtime_checks_never_alert() {
        let mut d = detector();
        let mut advisory = check(PINGER, Capability::SYS_ADMIN, Verdict::Granted);
        advisory.class.audit = AuditClass::Advisory;
        assert!(d.observe(&advisory, 100, now()).alerts.is_empty());
        for bucket in [Bucket::Runtime, Bucket::Borrowed] {
            let mut runc = check(PINGER, Capability::SYS_ADMIN, Verdict::Granted);
            runc.class.bucket = bucket;
            assert!(d.observe(&runc, 1, now()).alerts.is_empty());
        }
        // Inside a user namespace of its own (a sandbox): not host privilege.
        let mut sandbox = check(PINGER, Capability::SYS_ADMIN, Verdict::Granted);
        sandbox.class.user_namespace = UserNs::Other;
        assert!(d.observe(&sandbox, 1, now()).alerts.is_empty());
        // Behaviour-only (FSETID clearing a set-group-ID bit): no call needed it.
        let mut optional = check(PINGER, Capability(4), Verdict::Granted);
        optional.class.behaviour_only = true;
        assert!(d.observe(&optional, 1, now()).alerts.is_empty());
    }

    #[test]
    fn denied_checks_are_attempts_not_drift() {
        let mut d = detector();
        let out = d.observe(
            &check(PINGER, Capability::SYS_ADMIN, Verdict::Denied),
            1,
            now(),
        );
        assert_eq!(out.outside, Some(AlertKind::Attempted));
        assert_eq!(out.alerts.len(), 1);
        assert_eq!(out.alerts[0].kind, AlertKind::Attempted);
        // Granted later: a separate finding.
        let out = d.observe(
            &check(PINGER, Capability::SYS_ADMIN, Verdict::Granted),
            1,
            now(),
        );
        assert_eq!(out.alerts[0].kind, AlertKind::Drift);
    }

    #[test]
    fn a_workload_without_baseline_is_new_once() {
        let mut d = detector();
        let mut runc = check("image:x/new", Capability::SYS_ADMIN, Verdict::Granted);
        runc.class.bucket = Bucket::Runtime;
        let out = d.observe(&runc, 1, now());
        assert_eq!(out.alerts.len(), 1);
        assert_eq!(out.alerts[0].kind, AlertKind::NewWorkload);
        assert_eq!(out.alerts[0].baseline, None);
        // Its uses are outside an empty baseline; the workload is not new again.
        let out = d.observe(
            &check("image:x/new", Capability::CHOWN, Verdict::Granted),
            1,
            now(),
        );
        let kinds: Vec<AlertKind> = out.alerts.iter().map(|a| a.kind).collect();
        assert_eq!(kinds, [AlertKind::Drift]);
    }

    #[test]
    fn log_lines_escape_hostile_names() {
        let mut d = detector();
        let mut o = check(
            "image:x/evil\nFAKE ALERT",
            Capability::CHOWN,
            Verdict::Granted,
        );
        o.container_name = Some("a\"b");
        o.process.comm = "x\ny".into();
        let out = d.observe(&o, 1, now());
        for a in &out.alerts {
            let line = a.log_line();
            assert!(!line.contains('\n'), "{line}");
            assert!(line.contains(r#""image:x/evil\nFAKE ALERT""#), "{line}");
            let json = serde_json::to_string(a).unwrap();
            let back: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(back["workload"], "image:x/evil\nFAKE ALERT");
        }
    }
}
