//! Profiles: the rows of one workload turned into the capabilities it needs, with the evidence
//! and the plain-language reasons. The one rule of what makes a capability required is
//! [`CheckClass`](crate::model::check::CheckClass); [`rules`] reads call paths; [`row`] builds
//! rows from what the kernel recorded; [`explain`] words the reasons.

pub mod explain;
pub mod pss;
pub mod row;
pub mod rules;

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde::Serialize;

use crate::model::caps::{CapSet, Capability, serialize_cap, serialize_caps, serialize_opt_caps};
use crate::model::check::{AuditClass, Bucket, CheckRow, Origin, ProcessRef, UserNs, Verdict};
use crate::model::time::serialize_time;
use crate::trace::call_path::{asked_by, has_frame};
use explain::explain;

/// What a workload needs, with the evidence.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Profile {
    /// The capabilities to add after dropping all: host-level `cap_add`.
    #[serde(serialize_with = "serialize_caps")]
    pub required: BTreeSet<Capability>,
    /// One plain-language reason per required capability, in `required`'s order.
    pub explanations: Vec<Finding>,
    /// Only ever denied: not required, but the workload may need it (verify without it).
    pub refused: Vec<Finding>,
    /// Granted only against a user namespace other than the initial one: not a host-level
    /// `cap_add`.
    pub userns_only: Vec<Finding>,
    /// Seen only in advisory (noaudit) checks: never required.
    #[serde(serialize_with = "serialize_caps")]
    pub advisory: BTreeSet<Capability>,
    /// Not required: checked only where the kernel picks a behaviour and fails no syscall
    /// either way; the reason says what changes without it.
    pub optional: Vec<Finding>,
    /// Required capabilities whose need the trace does not prove: programs often go on when
    /// they are refused. `capspy verify --minimal` removes each and re-runs.
    pub unproven: Vec<Unproven>,
    /// Capabilities refused to a process that ran as a non-root uid, with what makes them
    /// reachable: a cap_add alone does not.
    pub non_root: Vec<NonRoot>,
    /// What the subject was granted (bounding | effective), when known.
    #[serde(serialize_with = "serialize_opt_caps")]
    pub granted: Option<BTreeSet<Capability>>,
    /// Granted but not required: what to drop. Known when `granted` is.
    #[serde(serialize_with = "serialize_opt_caps")]
    pub droppable: Option<BTreeSet<Capability>>,
    pub checks: Vec<CheckRow>,
}

/// A required capability that may not be needed, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Unproven {
    #[serde(serialize_with = "serialize_cap")]
    pub capability: Capability,
    pub reason: String,
}

/// A capability a non-root process was refused: `--cap-add` puts it in the bounding set only,
/// since neither Docker nor Kubernetes sets ambient capabilities.
#[derive(Clone, Debug, Serialize)]
pub struct NonRoot {
    #[serde(serialize_with = "serialize_cap")]
    pub capability: Capability,
    /// The first non-root process refused it.
    pub process: ProcessRef,
    /// `RUN setcap cap_x+ep /path/to/bin`, for the image's Dockerfile, when the binary's path
    /// was seen and prints safely.
    pub dockerfile: Option<String>,
    pub reason: String,
}

/// A capability with the reason it is listed and the observations behind it.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    #[serde(serialize_with = "serialize_cap")]
    pub capability: Capability,
    pub reason: String,
    /// `other` for checks against a user namespace other than the initial one.
    pub user_namespace: UserNs,
    pub evidence: Evidence,
}

/// The observations a finding rests on, summed over its rows.
#[derive(Clone, Debug, Serialize)]
pub struct Evidence {
    pub count: u64,
    #[serde(serialize_with = "serialize_time")]
    pub first_seen: SystemTime,
    #[serde(serialize_with = "serialize_time")]
    pub last_seen: SystemTime,
    /// The first process of each row, earliest first, without repeats.
    pub processes: Vec<ProcessRef>,
    /// The call path of the earliest row that has one (only a key's first check has one).
    pub call_path: Vec<String>,
}

impl Evidence {
    fn of(rows: &[&CheckRow]) -> Self {
        let mut sorted: Vec<&CheckRow> = rows.to_vec();
        sorted.sort_by_key(|r| r.first_seen);
        let mut processes: Vec<ProcessRef> = Vec::new();
        for r in &sorted {
            if !processes
                .iter()
                .any(|p| p.tgid == r.example.tgid && p.comm == r.example.comm)
            {
                processes.push(r.example.clone());
            }
        }
        Self {
            count: rows.iter().map(|r| r.count).sum(),
            first_seen: sorted
                .first()
                .map_or(SystemTime::UNIX_EPOCH, |r| r.first_seen),
            last_seen: rows
                .iter()
                .map(|r| r.last_seen)
                .max()
                .unwrap_or(SystemTime::UNIX_EPOCH),
            processes,
            call_path: sorted
                .iter()
                .find(|r| !r.call_path.is_empty())
                .map(|r| r.call_path.clone())
                .unwrap_or_default(),
        }
    }
}

impl Profile {
    pub fn from_checks(mut checks: Vec<CheckRow>) -> Self {
        checks.sort_by_key(|c| (c.bucket, c.capability, c.verdict, c.audit, c.user_namespace));
        let (required, dac) = required_of(&checks);
        let (explanations, unproven) = explain_required(&checks, &required, dac.as_ref());
        // Denials the DAC decision already accounts for: the read that DAC_OVERRIDE (or now
        // DAC_READ_SEARCH) served.
        let covered: BTreeSet<Capability> = if required.contains(&Capability::DAC_OVERRIDE) {
            BTreeSet::from([Capability::DAC_READ_SEARCH])
        } else if dac == Some(Dac::ReadsOnly) {
            BTreeSet::from([Capability::DAC_OVERRIDE])
        } else {
            BTreeSet::new()
        };
        let (refused, userns_only) = side_findings(&checks, &required, &covered);
        let non_root = refused.iter().filter_map(non_root_advice).collect();
        let optional = optional_findings(&checks, &required);
        let advisory = advisory_only(&checks);
        Self {
            required,
            explanations,
            refused,
            userns_only,
            advisory,
            optional,
            unproven,
            non_root,
            granted: None,
            droppable: None,
            checks,
        }
    }

    /// What the workload used: the capabilities of its own granted, audited checks against
    /// the initial user namespace. `required` can differ (DAC_READ_SEARCH for a DAC_OVERRIDE
    /// that only served reads).
    pub fn used(&self) -> BTreeSet<Capability> {
        self.checks
            .iter()
            .filter(|c| c.makes_required())
            .map(|c| c.capability)
            .collect()
    }

    /// Adds what the subject was granted, and so what it can drop.
    #[must_use]
    pub fn with_granted(mut self, granted: Option<CapSet>) -> Self {
        self.granted = granted.map(|g| g.iter().collect());
        self.droppable = self
            .granted
            .as_ref()
            .map(|g| g.difference(&self.required).copied().collect());
        self
    }
}

/// The rows of `cap` that `want` keeps.
fn rows_of(
    checks: &[CheckRow],
    cap: Capability,
    want: impl Fn(&CheckRow) -> bool,
) -> Vec<&CheckRow> {
    checks
        .iter()
        .filter(|c| c.capability == cap && want(c))
        .collect()
}

/// The capabilities the checks make required, with DAC_READ_SEARCH for a DAC_OVERRIDE that
/// only served reads, and that DAC decision.
fn required_of(checks: &[CheckRow]) -> (BTreeSet<Capability>, Option<Dac>) {
    let host_granted: BTreeSet<Capability> = checks
        .iter()
        .filter(|c| c.makes_required())
        .map(|c| c.capability)
        .collect();
    let dac = dac_decision(checks, &host_granted);
    let mut required = host_granted;
    if dac == Some(Dac::ReadsOnly) {
        required.remove(&Capability::DAC_OVERRIDE);
        required.insert(Capability::DAC_READ_SEARCH);
    }
    (required, dac)
}

/// One pass over what requires each capability: its explanation, and whether that proves the
/// need.
fn explain_required(
    checks: &[CheckRow],
    required: &BTreeSet<Capability>,
    dac: Option<&Dac>,
) -> (Vec<Finding>, Vec<Unproven>) {
    let mut explanations = Vec::new();
    let mut unproven = Vec::new();
    for &cap in required {
        // The reads DAC_READ_SEARCH will serve are the DAC_OVERRIDE grants seen.
        let evidence_cap = if cap == Capability::DAC_READ_SEARCH && dac == Some(&Dac::ReadsOnly) {
            Capability::DAC_OVERRIDE
        } else {
            cap
        };
        let r = rows_of(checks, evidence_cap, CheckRow::makes_required);
        let paths: Vec<&[String]> = r
            .iter()
            .filter(|c| c.origin == Origin::Check)
            .map(|c| c.call_path.as_slice())
            .collect();
        let kept = r.iter().any(|c| c.origin != Origin::Check);
        if let Some(reason) = rules::unproven(cap, &paths, kept) {
            unproven.push(Unproven {
                capability: cap,
                reason,
            });
        }
        explanations.push(finding(cap, &r, explain(cap, &r, dac)));
    }
    (explanations, unproven)
}

/// Capabilities not required whose audited checks only changed a behaviour, with the effect.
fn optional_findings(checks: &[CheckRow], required: &BTreeSet<Capability>) -> Vec<Finding> {
    let caps: BTreeSet<Capability> = checks.iter().map(|c| c.capability).collect();
    caps.iter()
        .filter(|cap| !required.contains(cap))
        .filter_map(|&cap| {
            let r = rows_of(checks, cap, |c| {
                c.bucket == Bucket::App && c.audit == AuditClass::Audited && c.optional.is_some()
            });
            let mut effects: Vec<&str> = r.iter().filter_map(|c| c.optional.as_deref()).collect();
            effects.dedup();
            (!r.is_empty()).then(|| finding(cap, &r, effects.join("; ")))
        })
        .collect()
}

/// Capabilities the workload only ever asked about without audit.
fn advisory_only(checks: &[CheckRow]) -> BTreeSet<Capability> {
    let caps: BTreeSet<Capability> = checks.iter().map(|c| c.capability).collect();
    caps.into_iter()
        .filter(|&cap| {
            let app = rows_of(checks, cap, |c| c.bucket == Bucket::App);
            !app.is_empty() && app.iter().all(|c| c.audit == AuditClass::Advisory)
        })
        .collect()
}

/// Refusals (only ever denied) and grants inside another user namespace, for capabilities
/// not required and not `covered` by the DAC decision.
fn side_findings(
    checks: &[CheckRow],
    required: &BTreeSet<Capability>,
    covered: &BTreeSet<Capability>,
) -> (Vec<Finding>, Vec<Finding>) {
    let app_audited = |c: &&CheckRow| c.shows_need();
    let ever_granted: BTreeSet<Capability> = checks
        .iter()
        .filter(app_audited)
        .filter(|c| c.verdict == Verdict::Granted)
        .map(|c| c.capability)
        .collect();
    let caps: BTreeSet<Capability> = checks.iter().map(|c| c.capability).collect();
    let mut refused = Vec::new();
    let mut userns_only = Vec::new();
    for cap in caps {
        if required.contains(&cap) || covered.contains(&cap) {
            continue;
        }
        let rows = |verdict: Verdict, other_ns: bool| -> Vec<&CheckRow> {
            checks
                .iter()
                .filter(app_audited)
                .filter(|c| {
                    c.capability == cap
                        && c.verdict == verdict
                        && (c.user_namespace == UserNs::Other) == other_ns
                })
                .collect()
        };
        if !ever_granted.contains(&cap) {
            // The host's denials first; else those inside another user namespace.
            let (denied, other_ns) = match rows(Verdict::Denied, false) {
                host if host.is_empty() => (rows(Verdict::Denied, true), true),
                host => (host, false),
            };
            if !denied.is_empty() {
                refused.push(finding(
                    cap,
                    &denied,
                    refusal_reason(cap, &denied, other_ns),
                ));
            }
        }
        let nested = rows(Verdict::Granted, true);
        if !nested.is_empty() {
            let reason = format!(
                "granted only against a user namespace other than the initial one{}: a \
                 capability held inside that namespace, not a host-level cap_add",
                asked_by(&nested[0].call_path)
                    .map(|a| format!(" (asked by {a})"))
                    .unwrap_or_default()
            );
            userns_only.push(finding(cap, &nested, reason));
        }
    }
    (refused, userns_only)
}

/// Advice for a refusal whose evidence includes a process that ran as a non-root uid. SETUID and
/// SETGID are left out: a non-root `setuid(getuid())`, as programs dropping privileges call it,
/// asks for them first and succeeds without (`__sys_setuid` in
/// https://github.com/torvalds/linux/blob/v6.18/kernel/sys.c), so their denial is no need.
fn non_root_advice(refusal: &Finding) -> Option<NonRoot> {
    let cap = refusal.capability;
    if cap == Capability::SETUID || cap == Capability::SETGID {
        return None;
    }
    let process = refusal.evidence.processes.iter().find(|p| p.uid != 0)?;
    let comm = crate::model::text::printable(&process.comm);
    let dockerfile = process
        .exe
        .as_deref()
        .and_then(|exe| rules::setcap_line(cap, exe));
    let file_caps = match &dockerfile {
        Some(line) => format!("give its binary the file capability in the image (`{line}`)"),
        None => format!(
            "give the binary that ran as {comm} the file capability in the image (setcap \
             cap_{}+ep on it; its path was not seen)",
            cap.name().to_ascii_lowercase()
        ),
    };
    let reason = format!(
        "{cap} was refused to {comm} running as uid {}: for a non-root process --cap-add only \
         bounds the capability, it does not reach the effective set (neither Docker nor \
         Kubernetes sets ambient capabilities). Either {file_caps} and apply --cap-add {cap} \
         with it, or start the process as root and let it drop to its user keeping {cap}",
        process.uid,
    );
    Some(NonRoot {
        capability: cap,
        process: process.clone(),
        dockerfile,
        reason,
    })
}

fn finding(cap: Capability, rows: &[&CheckRow], reason: String) -> Finding {
    let user_namespace = if rows.iter().all(|r| r.user_namespace == UserNs::Other) {
        UserNs::Other
    } else if rows.iter().any(|r| r.user_namespace == UserNs::Unknown) {
        UserNs::Unknown
    } else {
        UserNs::Initial
    };
    Finding {
        capability: cap,
        reason,
        user_namespace,
        evidence: Evidence::of(rows),
    }
}

fn refusal_reason(cap: Capability, rows: &[&CheckRow], other_ns: bool) -> String {
    if let Some(row) = rows.iter().find(|r| r.origin != Origin::Check) {
        let call = match row.origin {
            Origin::Ambient => "raise it into the ambient set (prctl)",
            _ => "keep it with capset",
        };
        return format!(
            "refused: {} (uid {}) tried to {call} and failed with EPERM: the workload needs it \
             (add it, then verify)",
            row.example.comm, row.example.uid
        );
    }
    let count: u64 = rows.iter().map(|r| r.count).sum();
    format!(
        "refused: the workload may need it ({cap} was denied {count} time{}{} and never \
         granted{}; programs often fall back, so verify by running without it)",
        if count == 1 { "" } else { "s" },
        if other_ns {
            " against a user namespace other than the initial one"
        } else {
            ""
        },
        rows.iter()
            .find_map(|r| asked_by(&r.call_path))
            .map(|a| format!(", asked by {a}"))
            .unwrap_or_default(),
    )
}

/// How DAC_OVERRIDE grants were read. On kernels since 4.16, `generic_permission` checks
/// DAC_READ_SEARCH first for a read or a directory search and then DAC_OVERRIDE; a write or an
/// exec checks DAC_OVERRIDE alone. The stacks of the DAC_OVERRIDE check are the same for a read
/// and a write (same call site), so the evidence is the pairing: every read that reached
/// DAC_OVERRIDE left a denied DAC_READ_SEARCH check before it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Dac {
    /// Every DAC_OVERRIDE check can be paired with a denied DAC_READ_SEARCH check at a file
    /// permission check: reads and searches only, DAC_READ_SEARCH suffices.
    ReadsOnly,
    /// `unpaired` of `checks` DAC_OVERRIDE checks had no DAC_READ_SEARCH check before them:
    /// writes, execs, or another kind of override.
    Unpaired { unpaired: u64, checks: u64 },
    /// DAC_READ_SEARCH was granted, so reads stopped there: DAC_OVERRIDE served other access.
    ReadSearchHeld,
    /// The first DAC_OVERRIDE check was not a file permission check.
    Elsewhere { asked_by: String },
    /// No call path shows where the checks came from.
    Unproven,
}

/// None unless DAC_OVERRIDE is required by the base rule.
fn dac_decision(checks: &[CheckRow], host_granted: &BTreeSet<Capability>) -> Option<Dac> {
    if !host_granted.contains(&Capability::DAC_OVERRIDE) {
        return None;
    }
    // A file capability or a capset that keeps DAC_OVERRIDE needs DAC_OVERRIDE itself.
    if checks.iter().any(|c| {
        c.capability == Capability::DAC_OVERRIDE && c.origin != Origin::Check && c.makes_required()
    }) {
        return None;
    }
    let host = |cap: Capability| {
        checks.iter().filter(move |c| {
            c.capability == cap
                && c.origin == Origin::Check
                && c.shows_need()
                && c.user_namespace != UserNs::Other
        })
    };
    if host_granted.contains(&Capability::DAC_READ_SEARCH) {
        return Some(Dac::ReadSearchHeld);
    }
    let overrides: Vec<&CheckRow> = host(Capability::DAC_OVERRIDE).collect();
    let searches: Vec<&CheckRow> = host(Capability::DAC_READ_SEARCH)
        .filter(|c| c.verdict == Verdict::Denied)
        .collect();
    let n_overrides: u64 = overrides.iter().map(|c| c.count).sum();
    let n_searches: u64 = searches.iter().map(|c| c.count).sum();
    let permission_check = |c: &&CheckRow| has_frame(&c.call_path, &["generic_permission"]);
    let granted = overrides.iter().filter(|c| c.verdict == Verdict::Granted);
    if granted.clone().any(|c| c.call_path.is_empty()) {
        return Some(Dac::Unproven);
    }
    if let Some(c) = granted.clone().find(|c| !permission_check(c)) {
        return Some(Dac::Elsewhere {
            asked_by: asked_by(&c.call_path).unwrap_or_else(|| "an unknown caller".into()),
        });
    }
    if n_overrides > n_searches {
        return Some(Dac::Unpaired {
            unpaired: n_overrides - n_searches,
            checks: n_overrides,
        });
    }
    if searches.iter().any(|c| !permission_check(c)) {
        return Some(Dac::Unproven);
    }
    Some(Dac::ReadsOnly)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use capspy_common::{AUDIT_ADVISORY, CLASSIFIER_CALL_PATH, ORIGIN_CHECK, USERNS_INITIAL};

    use super::*;
    use crate::model::check::{Classifier, RawCheck};

    pub fn row(cap: Capability, verdict: Verdict, audit: AuditClass, count: u64) -> CheckRow {
        CheckRow {
            capability: cap,
            origin: Origin::Check,
            verdict,
            audit,
            classified_by: Classifier::CallPath,
            user_namespace: UserNs::Initial,
            bucket: Bucket::App,
            count,
            first_seen: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            last_seen: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_001),
            example: ProcessRef {
                pid: 42,
                tgid: 42,
                uid: 0,
                comm: "ping".into(),
                exe: None,
            },
            call_path: vec!["security_capable+0x3c".into()],
            host: None,
            optional: None,
        }
    }

    const SYS_TIME: Capability = Capability(25);

    /// A capability kept without a check, as the kernel program records it.
    pub fn fact(cap: Capability, origin: Origin, verdict: Verdict, uid: u32) -> CheckRow {
        let mut r = row(cap, verdict, AuditClass::Audited, 1);
        r.origin = origin;
        r.classified_by = Classifier::Syscall;
        r.example.uid = uid;
        r.example.comm = "ntpd".into();
        r.call_path = Vec::new();
        r
    }

    #[test]
    fn capabilities_kept_without_a_check_are_required_with_their_own_reason() {
        let mut ping = fact(
            Capability::NET_RAW,
            Origin::FileCaps,
            Verdict::Granted,
            1000,
        );
        ping.call_path = vec!["/usr/bin/ping".into()];
        let p = Profile::from_checks(vec![
            fact(SYS_TIME, Origin::Capset, Verdict::Granted, 105),
            fact(
                Capability::NET_BIND_SERVICE,
                Origin::Ambient,
                Verdict::Granted,
                65534,
            ),
            ping,
        ]);
        assert_eq!(
            p.required,
            BTreeSet::from([Capability::NET_BIND_SERVICE, Capability::NET_RAW, SYS_TIME])
        );
        let reason = |cap| {
            p.explanations
                .iter()
                .find(|f| f.capability == cap)
                .map(|f| f.reason.clone())
                .unwrap()
        };
        assert_eq!(
            reason(SYS_TIME),
            "kept across the switch to uid 105 with capset (ntpd); without it in the bounding \
             set that capset fails with EPERM"
        );
        assert!(
            reason(Capability::NET_BIND_SERVICE).starts_with("raised into the ambient set"),
            "{}",
            reason(Capability::NET_BIND_SERVICE)
        );
        assert_eq!(
            reason(Capability::NET_RAW),
            "needed by the file capabilities of /usr/bin/ping executed as uid 1000; without it \
             in the bounding set the exec fails with EPERM"
        );
    }

    #[test]
    fn a_refused_capset_is_a_refused_need_and_the_runtimes_capset_is_not_the_apps() {
        let mut runc = fact(
            Capability::SYS_ADMIN,
            Origin::Capset,
            Verdict::Granted,
            1000,
        );
        runc.bucket = Bucket::Runtime;
        let p = Profile::from_checks(vec![
            runc,
            fact(SYS_TIME, Origin::Capset, Verdict::Denied, 105),
        ]);
        assert!(p.required.is_empty(), "{:?}", p.required);
        assert_eq!(p.refused.len(), 1);
        assert_eq!(p.refused[0].capability, SYS_TIME);
        assert!(
            p.refused[0].reason.contains("tried to keep it with capset"),
            "{}",
            p.refused[0].reason
        );
    }

    #[test]
    fn a_kept_dac_override_is_not_narrowed_to_dac_read_search() {
        let mut read = row(
            Capability::DAC_OVERRIDE,
            Verdict::Granted,
            AuditClass::Audited,
            1,
        );
        read.call_path = vec!["generic_permission+0x1".into()];
        let mut search = row(
            Capability::DAC_READ_SEARCH,
            Verdict::Denied,
            AuditClass::Audited,
            1,
        );
        search.call_path = read.call_path.clone();
        let reads_only = Profile::from_checks(vec![read.clone(), search.clone()]);
        assert!(reads_only.required.contains(&Capability::DAC_READ_SEARCH));
        let kept = Profile::from_checks(vec![
            read,
            search,
            fact(
                Capability::DAC_OVERRIDE,
                Origin::Capset,
                Verdict::Granted,
                105,
            ),
        ]);
        assert!(
            kept.required.contains(&Capability::DAC_OVERRIDE),
            "{:?}",
            kept.required
        );
    }

    #[test]
    fn granted_audited_checks_are_required() {
        let p = Profile::from_checks(vec![row(
            Capability::NET_RAW,
            Verdict::Granted,
            AuditClass::Audited,
            1,
        )]);
        assert_eq!(p.required, BTreeSet::from([Capability::NET_RAW]));
    }

    #[test]
    fn advisory_checks_are_never_required() {
        // The overcommit heuristic: SYS_ADMIN, granted for root, many times.
        let p = Profile::from_checks(vec![
            row(
                Capability::SYS_ADMIN,
                Verdict::Granted,
                AuditClass::Advisory,
                500,
            ),
            row(
                Capability::SYS_ADMIN,
                Verdict::Denied,
                AuditClass::Advisory,
                3,
            ),
        ]);
        assert!(p.required.is_empty());
        assert_eq!(p.checks.len(), 2);
    }

    #[test]
    fn denied_checks_are_shown_but_not_required() {
        let p = Profile::from_checks(vec![row(
            Capability::DAC_READ_SEARCH,
            Verdict::Denied,
            AuditClass::Audited,
            1,
        )]);
        assert!(p.required.is_empty());
        assert_eq!(p.checks[0].capability, Capability::DAC_READ_SEARCH);
    }

    #[test]
    fn one_audited_grant_among_advisory_ones_makes_it_required() {
        let p = Profile::from_checks(vec![
            row(
                Capability::SYS_ADMIN,
                Verdict::Granted,
                AuditClass::Advisory,
                900,
            ),
            row(
                Capability::SYS_ADMIN,
                Verdict::Granted,
                AuditClass::Audited,
                1,
            ),
        ]);
        assert_eq!(p.required, BTreeSet::from([Capability::SYS_ADMIN]));
    }

    #[test]
    fn runtime_checks_are_never_required() {
        let mut runc = row(
            Capability::SYS_ADMIN,
            Verdict::Granted,
            AuditClass::Audited,
            4,
        );
        runc.bucket = Bucket::Runtime;
        runc.example.comm = "runc:[2:INIT]".into();
        let p = Profile::from_checks(vec![
            runc,
            row(
                Capability::NET_RAW,
                Verdict::Granted,
                AuditClass::Audited,
                1,
            ),
        ]);
        assert_eq!(p.required, BTreeSet::from([Capability::NET_RAW]));
        assert_eq!(p.checks.last().unwrap().bucket, Bucket::Runtime);
    }

    fn with_path(mut r: CheckRow, path: &[&str]) -> CheckRow {
        r.call_path = path.iter().map(ToString::to_string).collect();
        r
    }

    /// The stacks measured on 6.18 (`capspy run` of `cat`/`sh -c 'echo >>'` on a mode-000 file
    /// of another user, DAC_READ_SEARCH dropped as under Docker's defaults): the read's pair and
    /// the write's lone DAC_OVERRIDE come from the same call site.
    const READ_SEARCH_PATH: &[&str] = &[
        "security_capable+0x3b",
        "capable_wrt_inode_uidgid+0x39",
        "generic_permission+0x1cf",
        "inode_permission+0x3a",
        "may_open+0x7b",
        "path_openat+0x3f7",
    ];
    const OVERRIDE_PATH: &[&str] = &[
        "security_capable+0x3b",
        "capable_wrt_inode_uidgid+0x39",
        "generic_permission+0x11a",
        "inode_permission+0x3a",
        "may_open+0x7b",
        "path_openat+0x3f7",
    ];

    fn dac_rows(read_search: (Verdict, u64), overrides: u64) -> Vec<CheckRow> {
        vec![
            with_path(
                row(
                    Capability::DAC_READ_SEARCH,
                    read_search.0,
                    AuditClass::Audited,
                    read_search.1,
                ),
                READ_SEARCH_PATH,
            ),
            with_path(
                row(
                    Capability::DAC_OVERRIDE,
                    Verdict::Granted,
                    AuditClass::Audited,
                    overrides,
                ),
                OVERRIDE_PATH,
            ),
        ]
    }

    #[test]
    fn reads_that_needed_an_override_need_only_dac_read_search() {
        // Three reads under Docker's defaults: READ_SEARCH denied, then OVERRIDE granted.
        let p = Profile::from_checks(dac_rows((Verdict::Denied, 3), 3));
        assert_eq!(p.required, BTreeSet::from([Capability::DAC_READ_SEARCH]));
        let why = &p.explanations[0];
        assert_eq!(why.capability, Capability::DAC_READ_SEARCH);
        assert!(why.reason.contains("alone suffices"), "{}", why.reason);
        assert!(
            why.reason.contains("check file ownership"),
            "{}",
            why.reason
        );
        assert_eq!(why.evidence.count, 3);
        // The denial is the read DAC_READ_SEARCH will now serve: not a refusal.
        assert!(p.refused.is_empty(), "{:?}", p.refused);
        // What was used stays what was used (capspy ls shows both).
        assert_eq!(p.used(), BTreeSet::from([Capability::DAC_OVERRIDE]));
    }

    #[test]
    fn an_override_without_a_read_search_before_it_was_a_write() {
        // One read (the pair) and one write (OVERRIDE alone).
        let p = Profile::from_checks(dac_rows((Verdict::Denied, 1), 2));
        assert_eq!(p.required, BTreeSet::from([Capability::DAC_OVERRIDE]));
        let reason = &p.explanations[0].reason;
        assert!(reason.contains("1 of 2"), "{reason}");
        assert!(reason.contains("check file ownership"), "{reason}");
        assert!(
            p.refused.is_empty(),
            "covered by DAC_OVERRIDE: {:?}",
            p.refused
        );

        // Only writes: no DAC_READ_SEARCH check at all.
        let p = Profile::from_checks(vec![with_path(
            row(
                Capability::DAC_OVERRIDE,
                Verdict::Granted,
                AuditClass::Audited,
                4,
            ),
            OVERRIDE_PATH,
        )]);
        assert_eq!(p.required, BTreeSet::from([Capability::DAC_OVERRIDE]));
        assert!(p.explanations[0].reason.contains("writes or execs"));
    }

    #[test]
    fn without_call_paths_dac_override_is_kept() {
        let mut rows = dac_rows((Verdict::Denied, 5), 1);
        rows[1].call_path.clear();
        let p = Profile::from_checks(rows);
        assert_eq!(p.required, BTreeSet::from([Capability::DAC_OVERRIDE]));

        // A DAC_READ_SEARCH denial from elsewhere (open_by_handle_at) proves nothing.
        let mut rows = dac_rows((Verdict::Denied, 5), 1);
        rows[0].call_path = vec!["security_capable+0x3b".into(), "handle_to_path+0x40".into()];
        let p = Profile::from_checks(rows);
        assert_eq!(p.required, BTreeSet::from([Capability::DAC_OVERRIDE]));

        // An override that is not a file permission check.
        let mut rows = dac_rows((Verdict::Denied, 5), 1);
        rows[1].call_path = vec![
            "security_capable+0x3b".into(),
            "proc_sys_permission+0x1".into(),
        ];
        let p = Profile::from_checks(rows);
        assert_eq!(p.required, BTreeSet::from([Capability::DAC_OVERRIDE]));
        assert!(p.explanations[0].reason.contains("proc_sys_permission"));
    }

    #[test]
    fn with_both_granted_both_stay() {
        // Root on the host: reads stop at READ_SEARCH, writes reach OVERRIDE.
        let p = Profile::from_checks(dac_rows((Verdict::Granted, 2), 1));
        assert_eq!(
            p.required,
            BTreeSet::from([Capability::DAC_OVERRIDE, Capability::DAC_READ_SEARCH])
        );
        assert!(
            p.explanations[0]
                .reason
                .contains("served by DAC_READ_SEARCH")
        );
    }

    #[test]
    fn only_denied_is_refused_with_evidence() {
        let mut denied = row(Capability(25), Verdict::Denied, AuditClass::Audited, 2); // SYS_TIME
        denied.call_path = vec![
            "security_capable+0x3b".into(),
            "do_settimeofday64+0x20".into(),
            "__x64_sys_settimeofday+0x50".into(),
        ];
        denied.example.comm = "date".into();
        let p = Profile::from_checks(vec![
            denied,
            // Advisory denials (the overcommit heuristic) are not refusals.
            row(
                Capability::SYS_ADMIN,
                Verdict::Denied,
                AuditClass::Advisory,
                50,
            ),
            // Denied and later granted: required, not refused.
            row(Capability::CHOWN, Verdict::Denied, AuditClass::Audited, 1),
            row(Capability::CHOWN, Verdict::Granted, AuditClass::Audited, 1),
        ]);
        assert_eq!(p.required, BTreeSet::from([Capability::CHOWN]));
        assert_eq!(p.refused.len(), 1, "{:?}", p.refused);
        let r = &p.refused[0];
        assert_eq!(r.capability.to_string(), "SYS_TIME");
        assert!(
            r.reason.starts_with("refused: the workload may need it"),
            "{}",
            r.reason
        );
        assert!(r.reason.contains("do_settimeofday64"), "{}", r.reason);
        assert_eq!(r.evidence.count, 2);
        assert_eq!(r.evidence.processes[0].comm, "date");
        assert_eq!(p.advisory, BTreeSet::from([Capability::SYS_ADMIN]));
    }

    #[test]
    fn grants_inside_another_user_namespace_are_not_host_cap_adds() {
        let mut nested = row(
            Capability::SYS_ADMIN,
            Verdict::Granted,
            AuditClass::Audited,
            3,
        );
        nested.user_namespace = UserNs::Other;
        nested.call_path = vec!["security_capable+0x3b".into(), "path_mount+0x60".into()];
        let mut unknown = row(
            Capability::NET_RAW,
            Verdict::Granted,
            AuditClass::Audited,
            1,
        );
        unknown.user_namespace = UserNs::Unknown;
        let p = Profile::from_checks(vec![nested, unknown]);
        // Unknown counts as the host's: sufficiency first.
        assert_eq!(p.required, BTreeSet::from([Capability::NET_RAW]));
        assert_eq!(p.explanations[0].user_namespace, UserNs::Unknown);
        assert_eq!(p.userns_only.len(), 1);
        assert_eq!(p.userns_only[0].capability, Capability::SYS_ADMIN);
        assert_eq!(p.userns_only[0].user_namespace, UserNs::Other);
        assert!(p.userns_only[0].reason.contains("path_mount"));
    }

    #[test]
    fn droppable_is_granted_minus_required() {
        let docker_default = CapSet::from_hex("00000000a80425fb").unwrap();
        let p = Profile::from_checks(vec![row(
            Capability::NET_RAW,
            Verdict::Granted,
            AuditClass::Audited,
            1,
        )])
        .with_granted(Some(docker_default));
        assert_eq!(p.granted.as_ref().unwrap().len(), 14);
        let drop = p.droppable.unwrap();
        assert_eq!(drop.len(), 13);
        assert!(!drop.contains(&Capability::NET_RAW));
        assert!(Profile::default().with_granted(None).droppable.is_none());
    }

    #[test]
    fn every_required_capability_gets_a_reason() {
        for cap in Capability::all() {
            let p = Profile::from_checks(vec![row(cap, Verdict::Granted, AuditClass::Audited, 1)]);
            assert_eq!(p.explanations.len(), 1, "{cap}");
            let reason = &p.explanations[0].reason;
            assert!(
                !reason.starts_with("made a granted check"),
                "{cap}: {reason}"
            );
        }
        let bind = Profile::from_checks(vec![row(
            Capability::NET_BIND_SERVICE,
            Verdict::Granted,
            AuditClass::Audited,
            1,
        )]);
        assert!(
            bind.explanations[0]
                .reason
                .contains("bound a port below 1024; or listen on a high port instead")
        );
        let mut ping = row(
            Capability::NET_RAW,
            Verdict::Granted,
            AuditClass::Audited,
            1,
        );
        ping.call_path = vec![
            "security_capable+0x3b".into(),
            "ns_capable+0x2d".into(),
            "inet_create+0x10b".into(),
            "__sock_create+0x1e9".into(),
        ];
        let p = Profile::from_checks(vec![ping]);
        assert!(
            p.explanations[0].reason.contains(
                "raw IP or ICMP socket, as ping does (asked by inet_create <- __sock_create)"
            ),
            "{}",
            p.explanations[0].reason
        );
        let mut mount = row(
            Capability::SYS_ADMIN,
            Verdict::Granted,
            AuditClass::Audited,
            1,
        );
        mount.call_path = vec!["security_capable+0x3b".into(), "path_mount+0x60".into()];
        let p = Profile::from_checks(vec![mount]);
        let reason = &p.explanations[0].reason;
        assert!(reason.contains("the new root"), "{reason}");
        assert!(
            reason.contains("mounted a filesystem (asked by path_mount)"),
            "{reason}"
        );
    }

    /// A row as the kernel and the store encode it, classified from `path` like real ones.
    pub(crate) fn raw(
        cap: Capability,
        verdict: Verdict,
        advisory: bool,
        uid: u32,
        path: &[&str],
    ) -> CheckRow {
        raw_of(ORIGIN_CHECK, (cap, verdict, advisory, uid), path)
    }

    /// [`raw`] under the kernel's `origin`.
    pub(crate) fn raw_of(
        origin: u8,
        (cap, verdict, advisory, uid): (Capability, Verdict, bool, u32),
        path: &[&str],
    ) -> CheckRow {
        CheckRow::from_raw(
            RawCheck {
                cap: cap.0,
                verdict: u8::from(verdict == Verdict::Denied),
                audit: if advisory { AUDIT_ADVISORY } else { 0 },
                userns: USERNS_INITIAL,
                bucket: 0,
                classifier: CLASSIFIER_CALL_PATH,
                origin,
            },
            1,
            (SystemTime::UNIX_EPOCH, SystemTime::UNIX_EPOCH),
            ProcessRef {
                pid: 9,
                tgid: 9,
                uid,
                comm: "app".into(),
                exe: Some("/usr/sbin/app".into()),
            },
            path.iter().map(ToString::to_string).collect(),
        )
    }

    pub(crate) const SETGID_CHMOD: &[&str] = &[
        "security_capable+0x3b",
        "capable_wrt_inode_uidgid+0x39",
        "setattr_prepare+0x1dc",
        "ext4_setattr+0x71",
    ];

    #[test]
    fn behaviour_only_checks_are_optional_with_their_effect() {
        let p = Profile::from_checks(vec![
            raw(Capability::FSETID, Verdict::Granted, false, 0, SETGID_CHMOD),
            // Denied, the same: no refusal, since no call failed.
            raw(
                Capability::SYS_ADMIN,
                Verdict::Denied,
                false,
                0,
                &[
                    "security_capable+0x3b",
                    "file_ns_capable+0x15",
                    "pagemap_read+0x7b",
                ],
            ),
        ]);
        assert!(p.required.is_empty(), "{:?}", p.required);
        assert!(p.refused.is_empty());
        let optional: Vec<Capability> = p.optional.iter().map(|f| f.capability).collect();
        assert_eq!(optional, [Capability::FSETID, Capability::SYS_ADMIN]);
        assert!(
            p.optional[0].reason.contains("set-group-ID bit"),
            "{}",
            p.optional[0].reason
        );
        assert!(p.checks.iter().all(|c| c.optional.is_some()));

        // Another row making FSETID required takes it out of optional; its unknown caller
        // leaves it unproven.
        let p = Profile::from_checks(vec![
            raw(Capability::FSETID, Verdict::Granted, false, 0, SETGID_CHMOD),
            raw(
                Capability::FSETID,
                Verdict::Granted,
                false,
                0,
                &[
                    "security_capable+0x3b",
                    "capable+0x2e",
                    "xfs_setattr_nonsize+0x1",
                ],
            ),
        ]);
        assert_eq!(p.required, BTreeSet::from([Capability::FSETID]));
        assert!(p.optional.is_empty());
        assert_eq!(p.unproven[0].capability, Capability::FSETID);
    }

    /// ssh-agent's `setgid(getgid())` and nginx's `setgid(www-data)` share a call path; the
    /// kernel program marks the first as asking for an id the caller holds.
    #[test]
    fn a_setgid_to_an_own_group_is_optional_and_another_required() {
        const SETGID: &[&str] = &[
            "security_capable+0x3b",
            "ns_capable_setid+0x2a",
            "__sys_setgid+0x5e",
        ];
        let own = raw_of(
            capspy_common::ORIGIN_OWN_ID,
            (Capability::SETGID, Verdict::Granted, false, 1000),
            SETGID,
        );
        assert_eq!(own.origin, Origin::Check);
        let p = Profile::from_checks(vec![own.clone()]);
        assert!(p.required.is_empty(), "{:?}", p.required);
        assert_eq!(p.optional.len(), 1);
        assert!(
            p.optional[0]
                .reason
                .starts_with("without SETGID, setgid(2) to the process's own")
        );
        assert!(own.class().behaviour_only);

        let needed = raw(Capability::SETGID, Verdict::Granted, false, 0, SETGID);
        let p = Profile::from_checks(vec![own, needed]);
        assert_eq!(p.required, BTreeSet::from([Capability::SETGID]));
        assert!(p.optional.is_empty() && p.unproven.is_empty());
    }

    /// A capability kept with capset has no call path, and is a proven need: the capset fails
    /// without it.
    #[test]
    fn a_capability_kept_with_capset_is_not_unproven() {
        let p = Profile::from_checks(vec![fact(
            Capability::NET_BIND_SERVICE,
            Origin::Capset,
            Verdict::Granted,
            105,
        )]);
        assert_eq!(p.required, BTreeSet::from([Capability::NET_BIND_SERVICE]));
        assert!(p.unproven.is_empty(), "{:?}", p.unproven);
    }

    #[test]
    fn without_a_call_path_a_check_stays_required_and_unproven() {
        let p = Profile::from_checks(vec![
            raw(Capability::FSETID, Verdict::Granted, false, 0, &[]),
            raw(Capability::NET_RAW, Verdict::Granted, false, 0, &[]),
            raw(
                Capability::AUDIT_WRITE,
                Verdict::Granted,
                false,
                0,
                &["security_capable+0x3b", "audit_netlink_ok+0x1"],
            ),
            raw(
                Capability::NET_ADMIN,
                Verdict::Granted,
                false,
                0,
                &["security_capable+0x3b", "dev_ioctl+0x1"],
            ),
        ]);
        let required: Vec<Capability> = p.required.iter().copied().collect();
        assert_eq!(
            required,
            [
                Capability::FSETID,
                Capability::NET_ADMIN,
                Capability::NET_RAW,
                Capability::AUDIT_WRITE
            ]
        );
        let unproven: Vec<Capability> = p.unproven.iter().map(|u| u.capability).collect();
        assert_eq!(
            unproven,
            [
                Capability::FSETID,
                Capability::NET_RAW,
                Capability::AUDIT_WRITE
            ]
        );
        assert!(p.unproven[1].reason.contains("no call path"));
    }

    #[test]
    fn a_class_the_call_path_contradicts_follows_the_call_path() {
        let ps = [
            "security_capable+0x3b",
            "ns_capable_noaudit+0x2d",
            "pid_table_root_permissions+0x23",
        ];
        // Stored as audited by an older kernel program: the evidence says advisory.
        let r = raw(Capability::SYS_ADMIN, Verdict::Denied, false, 0, &ps);
        assert_eq!(
            (r.audit, r.classified_by),
            (AuditClass::Advisory, Classifier::Evidence)
        );
        let stack = [
            "security_capable+0x3b",
            "file_ns_capable+0x15",
            "proc_pid_stack+0x2a",
        ];
        let r = raw(Capability::SYS_ADMIN, Verdict::Granted, true, 0, &stack);
        assert_eq!(
            (r.audit, r.classified_by),
            (AuditClass::Audited, Classifier::Evidence)
        );
        assert!(
            Profile::from_checks(vec![r])
                .required
                .contains(&Capability::SYS_ADMIN)
        );
        // Agreeing, or without a call path: the kernel's class.
        let r = raw(Capability::SYS_ADMIN, Verdict::Granted, false, 0, &stack);
        assert_eq!(
            (r.audit, r.classified_by),
            (AuditClass::Audited, Classifier::CallPath)
        );
        let r = raw(Capability::SYS_ADMIN, Verdict::Granted, true, 0, &[]);
        assert_eq!(r.audit, AuditClass::Advisory);
    }

    #[test]
    fn a_refusal_to_a_non_root_process_gets_file_capability_advice() {
        let bind = [
            "security_capable+0x3b",
            "ns_capable+0x2a",
            "__inet6_bind+0x194",
        ];
        let setuid = [
            "security_capable+0x3b",
            "ns_capable_setid+0x2d",
            "__sys_setuid+0x1",
        ];
        let p = Profile::from_checks(vec![
            raw(
                Capability::NET_BIND_SERVICE,
                Verdict::Denied,
                false,
                1000,
                &bind,
            ),
            raw(Capability::SETUID, Verdict::Denied, false, 1000, &setuid),
        ]);
        assert_eq!(p.non_root.len(), 1, "{:?}", p.non_root);
        let n = &p.non_root[0];
        assert_eq!(n.capability, Capability::NET_BIND_SERVICE);
        assert_eq!(
            n.dockerfile.as_deref(),
            Some("RUN setcap cap_net_bind_service+ep /usr/sbin/app")
        );
        assert!(n.reason.contains("uid 1000"), "{}", n.reason);
        // Root was refused: --cap-add is the answer, no advice.
        let p = Profile::from_checks(vec![raw(
            Capability::NET_BIND_SERVICE,
            Verdict::Denied,
            false,
            0,
            &bind,
        )]);
        assert!(p.non_root.is_empty());
    }
}
