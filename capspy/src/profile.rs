//! The profile model: observed checks as rows, and the rules that turn them into the set of
//! capabilities a workload needs.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use capspy_common::{
    AUDIT_ADVISORY, BUCKET_BORROWED, BUCKET_RUNTIME, CLASSIFIER_CALL_PATH, CLASSIFIER_OPTS,
    CLASSIFIER_SYSCALL, CheckKey, CheckStats, ORIGIN_AMBIENT, ORIGIN_CAPSET, ORIGIN_CHECK,
    ORIGIN_FILE_CAPS, USERNS_INITIAL, USERNS_OTHER, VERDICT_GRANTED,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::caps::{CapSet, Capability};
use crate::collector::Observation;
use crate::kallsyms::Kallsyms;
use crate::rules;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Granted,
    Denied,
}

/// Whether the kernel would audit a denial of this check. Advisory (noaudit) checks only choose a
/// behaviour, such as the overcommit heuristic's SYS_ADMIN check on every mmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditClass {
    Audited,
    Advisory,
}

/// How the audit class was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Classifier {
    /// `cap_capable`'s `opts` argument (fexit, kprobe).
    Opts,
    /// The kernel call path (tracepoints, which have no `opts`).
    CallPath,
    /// Neither could be read; counted as audited so the profile stays sufficient.
    #[default]
    Unclassified,
    /// Not a check (see [`Origin`]): the verdict is the syscall's own return value.
    Syscall,
    /// The kernel's class contradicted the call path recorded with it (a store written before
    /// the kernel program confirmed cached classes): classified by the call path.
    Evidence,
}

/// What a row counts: `cap_capable` checks, or a capability the workload kept or raised without
/// one, which fails with EPERM when the capability is not in the bounding set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Also what a profile document written before origins existed holds.
    #[default]
    Check,
    /// Kept in the permitted or inheritable set with `capset(2)` by a non-root process.
    Capset,
    /// Raised into the ambient set with `prctl(PR_CAP_AMBIENT_RAISE)`.
    Ambient,
    /// Given by the file capabilities of a program executed by a non-root process.
    FileCaps,
}

impl Origin {
    fn from_kernel(origin: u8) -> Self {
        match origin {
            ORIGIN_CAPSET => Self::Capset,
            ORIGIN_AMBIENT => Self::Ambient,
            ORIGIN_FILE_CAPS => Self::FileCaps,
            _ => Self::Check,
        }
    }

    pub fn to_kernel(self) -> u8 {
        match self {
            Self::Check => ORIGIN_CHECK,
            Self::Capset => ORIGIN_CAPSET,
            Self::Ambient => ORIGIN_AMBIENT,
            Self::FileCaps => ORIGIN_FILE_CAPS,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Check => "check",
            Self::Capset => "capset",
            Self::Ambient => "ambient",
            Self::FileCaps => "file_caps",
        }
    }
}

/// Who made the check: the workload, or the container runtime setting the container up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    /// Documents written before buckets existed held only the workload's checks.
    #[default]
    App,
    /// `runc:[2:INIT]` and friends before the entrypoint's exec: never the application's needs.
    Runtime,
    /// Made on credentials other than the task's own, e.g. overlayfs copy-up with the mounter's:
    /// the kernel acting for someone else, not a need of the workload.
    Borrowed,
}

/// The user namespace the check was made against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UserNs {
    /// Also what a document without the field means: it counts as the host's either way.
    #[default]
    Initial,
    Other,
    Unknown,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRef {
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub comm: String,
    /// The executable's path within its filesystem (inside a container: the image's path), for
    /// the workload's non-root processes; absent when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
}

/// One observed (capability, verdict, audit class, user namespace) of a workload.
///
/// Read back from profile documents (baselines, `capspy merge`), where only the capability,
/// verdict, audit class and bucket must be present: the other fields were added over time or
/// are evidence, and a hand-edited baseline may leave them out.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckRow {
    #[serde(
        serialize_with = "serialize_cap",
        deserialize_with = "crate::caps::deserialize_name"
    )]
    pub capability: Capability,
    #[serde(default)]
    pub origin: Origin,
    pub verdict: Verdict,
    pub audit: AuditClass,
    #[serde(default)]
    pub classified_by: Classifier,
    #[serde(default)]
    pub user_namespace: UserNs,
    pub bucket: Bucket,
    #[serde(default)]
    pub count: u64,
    #[serde(
        serialize_with = "serialize_time",
        deserialize_with = "deserialize_time",
        default = "epoch"
    )]
    pub first_seen: SystemTime,
    #[serde(
        serialize_with = "serialize_time",
        deserialize_with = "deserialize_time",
        default = "epoch"
    )]
    pub last_seen: SystemTime,
    /// The process that made the first check.
    #[serde(default)]
    pub example: ProcessRef,
    /// Kernel functions above `cap_capable` for the first check, innermost first. For a
    /// capability kept without a check: the executed file (file capabilities), else empty.
    #[serde(default)]
    pub call_path: Vec<String>,
    /// The node it was observed on, in a profile merged from several (`capspy merge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Set when the call path shows a check whose denial fails no syscall: what denying it
    /// changes (see [`rules::BEHAVIOUR_ONLY`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<Cow<'static, str>>,
}

/// What decides whether a check can make its capability required: the one rule every consumer
/// (profiles, baselines, drift alerts, verify plans) applies, through [`CheckClass::shows_need`]
/// and [`CheckClass::makes_required`]. Deserializes from a report's `checks` entries; fields
/// older documents lack take the values those documents meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct CheckClass {
    pub verdict: Verdict,
    pub audit: AuditClass,
    #[serde(default)]
    pub bucket: Bucket,
    #[serde(default)]
    pub user_namespace: UserNs,
    /// The check only chose a behaviour (a report's `optional` effect is present).
    #[serde(default, rename = "optional", deserialize_with = "present")]
    pub behaviour_only: bool,
}

impl CheckClass {
    /// The workload's own check (not the runtime's setup, not on borrowed credentials), audited
    /// (advisory checks only choose a behaviour), and one whose denial fails a syscall (not
    /// behaviour-only). Granted against the initial user namespace, it makes the capability
    /// required; denied, it is a refused need; granted inside another user namespace, a grant
    /// that namespace holds without any cap_add.
    pub fn shows_need(self) -> bool {
        self.bucket == Bucket::App && self.audit == AuditClass::Audited && !self.behaviour_only
    }

    /// A granted need against the initial user namespace (or one that could not be told
    /// apart): the capability is required.
    pub fn makes_required(self) -> bool {
        self.shows_need()
            && self.verdict == Verdict::Granted
            && self.user_namespace != UserNs::Other
    }
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<serde::de::IgnoredAny>::deserialize(d)?.is_some())
}

impl CheckRow {
    pub fn class(&self) -> CheckClass {
        CheckClass {
            verdict: self.verdict,
            audit: self.audit,
            bucket: self.bucket,
            user_namespace: self.user_namespace,
            behaviour_only: self.optional.is_some(),
        }
    }

    /// See [`CheckClass::shows_need`].
    pub fn shows_need(&self) -> bool {
        self.class().shows_need()
    }

    /// See [`CheckClass::makes_required`].
    pub fn makes_required(&self) -> bool {
        self.class().makes_required()
    }

    pub fn from_observation(obs: &Observation, clock: &BootClock, syms: Option<&Kallsyms>) -> Self {
        let call_path = match obs.key.origin {
            ORIGIN_CHECK => syms.map(|s| call_path(&obs.stack, s)).unwrap_or_default(),
            ORIGIN_FILE_CAPS => fact_path(&obs.stack).into_iter().collect(),
            _ => Vec::new(),
        };
        let mut row = Self::from_kernel(&obs.key, &obs.stats, clock, call_path);
        row.example.exe.clone_from(&obs.exe);
        row
    }

    /// Builds a row from a kernel map entry, with the call path already named.
    pub fn from_kernel(
        key: &CheckKey,
        stats: &CheckStats,
        clock: &BootClock,
        call_path: Vec<String>,
    ) -> Self {
        Self::from_raw(
            RawCheck {
                cap: key.cap,
                verdict: key.verdict,
                audit: key.audit,
                userns: key.userns,
                bucket: key.bucket,
                classifier: stats.classifier,
                origin: key.origin,
            },
            stats.count,
            (
                clock.wall_time(stats.first_ns),
                clock.wall_time(stats.last_ns),
            ),
            ProcessRef {
                pid: stats.first_pid,
                tgid: stats.first_tgid,
                uid: stats.first_uid,
                comm: kernel_string(&stats.first_comm),
                exe: None,
            },
            call_path,
        )
    }

    /// Builds a row from the kernel's encoding of a key (as the kernel map and the store keep it).
    pub fn from_raw(
        raw: RawCheck,
        count: u64,
        (first_seen, last_seen): (SystemTime, SystemTime),
        example: ProcessRef,
        call_path: Vec<String>,
    ) -> Self {
        let kernel_class = if raw.audit == AUDIT_ADVISORY {
            AuditClass::Advisory
        } else {
            AuditClass::Audited
        };
        let kernel_classifier = match raw.classifier {
            CLASSIFIER_OPTS => Classifier::Opts,
            CLASSIFIER_CALL_PATH => Classifier::CallPath,
            CLASSIFIER_SYSCALL => Classifier::Syscall,
            _ => Classifier::Unclassified,
        };
        let (audit, classified_by) = by_evidence(kernel_class, kernel_classifier, &call_path);
        let capability = Capability(raw.cap);
        Self {
            capability,
            origin: Origin::from_kernel(raw.origin),
            verdict: if raw.verdict == VERDICT_GRANTED {
                Verdict::Granted
            } else {
                Verdict::Denied
            },
            audit,
            classified_by,
            user_namespace: match raw.userns {
                USERNS_INITIAL => UserNs::Initial,
                USERNS_OTHER => UserNs::Other,
                _ => UserNs::Unknown,
            },
            bucket: match raw.bucket {
                BUCKET_RUNTIME => Bucket::Runtime,
                BUCKET_BORROWED => Bucket::Borrowed,
                _ => Bucket::App,
            },
            count,
            first_seen,
            last_seen,
            example,
            optional: rules::behaviour_only(capability, &call_path)
                .map(|b| Cow::Borrowed(b.effect)),
            call_path,
            host: None,
        }
    }
}

/// The audit class of a row: the kernel's, unless the call path recorded with it says
/// otherwise. `opts` is the kernel's own flag and stands; a class read from the call path
/// (tracepoints) can disagree with the first check's stack only in stores written before the
/// kernel program confirmed cached classes at new keys, and the stack is the evidence.
fn by_evidence(
    kernel: AuditClass,
    classifier: Classifier,
    call_path: &[String],
) -> (AuditClass, Classifier) {
    match rules::class_from_evidence(call_path) {
        Some(seen)
            if !matches!(classifier, Classifier::Opts | Classifier::Syscall) && seen != kernel =>
        {
            (seen, Classifier::Evidence)
        }
        _ => (kernel, classifier),
    }
}

/// The kernel's byte encoding of a check's class (see `capspy_common`).
#[derive(Clone, Copy, Debug)]
pub struct RawCheck {
    pub cap: u8,
    pub verdict: u8,
    pub audit: u8,
    pub userns: u8,
    pub bucket: u8,
    pub classifier: u8,
    pub origin: u8,
}

/// The executed file a file-capability fact's first sighting carries in place of its stack.
fn fact_path(stack: &[u64]) -> Option<String> {
    let bytes: Vec<u8> = stack.iter().flat_map(|w| w.to_le_bytes()).collect();
    let path = kernel_string(&bytes);
    (!path.is_empty()).then_some(path)
}

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
        let rows = |cap: Capability, want: &dyn Fn(&CheckRow) -> bool| -> Vec<&CheckRow> {
            checks
                .iter()
                .filter(|c| c.capability == cap && want(c))
                .collect()
        };
        let host_granted: BTreeSet<Capability> = checks
            .iter()
            .filter(|c| c.makes_required())
            .map(|c| c.capability)
            .collect();
        let dac = dac_decision(&checks, &host_granted);
        let mut required = host_granted.clone();
        if dac == Some(Dac::ReadsOnly) {
            required.remove(&Capability::DAC_OVERRIDE);
            required.insert(Capability::DAC_READ_SEARCH);
        }

        let explanations = required
            .iter()
            .map(|&cap| {
                // The reads DAC_READ_SEARCH will serve are the DAC_OVERRIDE grants seen.
                let evidence_cap =
                    if cap == Capability::DAC_READ_SEARCH && dac == Some(Dac::ReadsOnly) {
                        Capability::DAC_OVERRIDE
                    } else {
                        cap
                    };
                let r = rows(evidence_cap, &|c| c.makes_required());
                finding(cap, &r, explain(cap, &r, dac.as_ref()))
            })
            .collect();

        // Denials the DAC decision already accounts for: the read that DAC_OVERRIDE (or now
        // DAC_READ_SEARCH) served.
        let covered: BTreeSet<Capability> = if required.contains(&Capability::DAC_OVERRIDE) {
            BTreeSet::from([Capability::DAC_READ_SEARCH])
        } else if dac == Some(Dac::ReadsOnly) {
            BTreeSet::from([Capability::DAC_OVERRIDE])
        } else {
            BTreeSet::new()
        };
        let unproven = required
            .iter()
            .filter_map(|&cap| {
                let evidence_cap =
                    if cap == Capability::DAC_READ_SEARCH && dac == Some(Dac::ReadsOnly) {
                        Capability::DAC_OVERRIDE
                    } else {
                        cap
                    };
                let r = rows(evidence_cap, &|c| c.makes_required());
                let paths: Vec<&[String]> = r.iter().map(|c| c.call_path.as_slice()).collect();
                Some(Unproven {
                    capability: cap,
                    reason: rules::unproven(cap, &paths)?,
                })
            })
            .collect();
        let (refused, userns_only) = side_findings(&checks, &required, &covered);
        let non_root = refused.iter().filter_map(non_root_advice).collect();
        let caps: BTreeSet<Capability> = checks.iter().map(|c| c.capability).collect();
        let optional = caps
            .iter()
            .filter(|cap| !required.contains(cap))
            .filter_map(|&cap| {
                let r = rows(cap, &|c| {
                    c.bucket == Bucket::App
                        && c.audit == AuditClass::Audited
                        && c.optional.is_some()
                });
                let mut effects: Vec<&str> =
                    r.iter().filter_map(|c| c.optional.as_deref()).collect();
                effects.dedup();
                (!r.is_empty()).then(|| finding(cap, &r, effects.join("; ")))
            })
            .collect();
        let advisory = caps
            .iter()
            .copied()
            .filter(|&cap| {
                let app = rows(cap, &|c| c.bucket == Bucket::App);
                !app.is_empty() && app.iter().all(|c| c.audit == AuditClass::Advisory)
            })
            .collect();
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
    let comm = crate::text::printable(&process.comm);
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

/// Kernel function names of a call path: `generic_permission+0x11a` → `generic_permission`,
/// compiler suffixes (`.isra.0`, `.cold`) dropped.
pub fn frame_names(call_path: &[String]) -> impl Iterator<Item = &str> {
    call_path.iter().map(|f| {
        let name = f.split('+').next().unwrap_or(f);
        name.split('.').next().unwrap_or(name)
    })
}

fn has_frame(call_path: &[String], names: &[&str]) -> bool {
    frame_names(call_path).any(|f| names.iter().any(|n| f.contains(n)))
}

/// The generic capability plumbing between a caller and `cap_capable`: it says nothing about
/// who asked.
const PLUMBING: &[&str] = &[
    "security_capable",
    "cap_capable",
    "ns_capable",
    "ns_capable_common",
    "ns_capable_noaudit",
    "ns_capable_setid",
    "capable",
    "has_capability",
    "has_ns_capability",
    "has_capability_noaudit",
    "has_ns_capability_noaudit",
    "file_ns_capable",
    "capable_wrt_inode_uidgid",
    "privileged_wrt_inode_uidgid",
    "inode_owner_or_capable",
    "sk_ns_capable",
    "sk_capable",
    "sk_net_capable",
    "sockopt_ns_capable",
    "sockopt_capable",
    "netlink_ns_capable",
    "__netlink_ns_capable",
    "netlink_capable",
    "netlink_net_capable",
    "perfmon_capable",
    "bpf_capable",
    "checkpoint_restore_ns_capable",
    "apparmor_capable",
    "selinux_capable",
    "cred_has_capability",
];

/// The frames past the plumbing, innermost first.
fn callers(call_path: &[String]) -> impl Iterator<Item = &str> {
    frame_names(call_path).filter(|f| !PLUMBING.contains(f) && !f.starts_with("0x"))
}

/// The first caller past the plumbing: `setattr_prepare` for
/// `capable_wrt_inode_uidgid <- setattr_prepare`.
pub fn first_caller(call_path: &[String]) -> Option<&str> {
    callers(call_path).next()
}

/// The first two callers past the plumbing: `inet_create <- __sock_create`.
fn asked_by(call_path: &[String]) -> Option<String> {
    let callers: Vec<&str> = callers(call_path).take(2).collect();
    (!callers.is_empty()).then(|| callers.join(" <- "))
}

/// One plain-language reason for a required capability: what kept it without a check (that call
/// fails outright without it) if anything did, else what it is and who asked.
fn explain(cap: Capability, rows: &[&CheckRow], dac: Option<&Dac>) -> String {
    let checks: Vec<&CheckRow> = rows
        .iter()
        .copied()
        .filter(|r| r.origin == Origin::Check)
        .collect();
    match fact_reason(rows) {
        Some(fact) if checks.is_empty() => fact,
        Some(fact) => format!("{fact}; it also {}", explain_checks(cap, &checks, dac)),
        None => explain_checks(cap, rows, dac),
    }
}

/// Why a capability kept without a check is needed, from the earliest such row; `None` if every
/// row is a check.
fn fact_reason(rows: &[&CheckRow]) -> Option<String> {
    let row = rows
        .iter()
        .filter(|r| r.origin != Origin::Check)
        .min_by_key(|r| r.first_seen)?;
    let who = format!("{}, uid {}", row.example.comm, row.example.uid);
    Some(match row.origin {
        Origin::FileCaps => format!(
            "needed by the file capabilities of {} executed as uid {}; without it in the \
             bounding set the exec fails with EPERM",
            row.call_path
                .first()
                .map_or(row.example.comm.as_str(), String::as_str),
            row.example.uid
        ),
        Origin::Ambient => format!(
            "raised into the ambient set with prctl(PR_CAP_AMBIENT_RAISE) ({who}); without it \
             the raise fails with EPERM"
        ),
        Origin::Capset | Origin::Check => format!(
            "kept across the switch to uid {} with capset ({}); without it in the bounding set \
             that capset fails with EPERM",
            row.example.uid, row.example.comm
        ),
    })
}

/// The reason from the checks themselves.
fn explain_checks(cap: Capability, rows: &[&CheckRow], dac: Option<&Dac>) -> String {
    let path: &[String] = rows
        .iter()
        .find(|r| !r.call_path.is_empty())
        .map_or(&[], |r| r.call_path.as_slice());
    let on = |names: &[&str]| has_frame(path, names);
    let count: u64 = rows.iter().map(|r| r.count).sum();
    let (what, advice): (String, &str) = match cap.name().as_str() {
        "DAC_OVERRIDE" => (dac_override_reason(dac, count), CHECK_FILES),
        "DAC_READ_SEARCH" => (dac_read_search_reason(dac, on), CHECK_FILES),
        "NET_RAW" => (
            net_raw_reason(on),
            "ping over an unprivileged ICMP socket (net.ipv4.ping_group_range) needs none",
        ),
        "NET_ADMIN" => (net_admin_reason(on), ""),
        "SYS_ADMIN" => (
            sys_admin_reason(on),
            "look for a narrower capability or remove the need",
        ),
        name => PLAIN.iter().find(|(n, ..)| *n == name).map_or_else(
            || (format!("made a granted check of {cap}"), ""),
            |(_, what, advice)| ((*what).to_string(), *advice),
        ),
    };
    let mut reason = what;
    match asked_by(path) {
        Some(a) => reason = format!("{reason} (asked by {a})"),
        None if cap == Capability::SYS_ADMIN => reason.push_str(" (no call path was recorded)"),
        None => {}
    }
    if rows.iter().any(|r| r.user_namespace == UserNs::Unknown) {
        reason.push_str(" [user namespace unknown: counted as the host's]");
    }
    if !advice.is_empty() {
        reason = format!("{reason}; {advice}");
    }
    reason
}

/// What a capability lets a process do, and the guide's advice, for those whose call path adds
/// nothing the name does not say (the others have their own functions below).
const PLAIN: &[(&str, &str, &str)] = &[
    (
        "CHOWN",
        "changed the owner or group of a file (chown)",
        "or create the files as the right user in the image",
    ),
    (
        "FOWNER",
        "acted on a file it does not own (chmod, utimes, flags, ACLs)",
        CHECK_FILES,
    ),
    (
        "FSETID",
        "kept a setuid/setgid bit on a file it changed, or set setgid for another group",
        "",
    ),
    ("KILL", "sent a signal to a process of another user", ""),
    (
        "SETGID",
        "changed its group IDs (setgid, setgroups), e.g. to drop root for a service user",
        "or start it as that user instead (--user)",
    ),
    (
        "SETUID",
        "changed its user IDs (setuid), e.g. to drop root for a service user",
        "or start it as that user instead (--user)",
    ),
    (
        "SETPCAP",
        "changed capability sets or securebits (capset, prctl)",
        "",
    ),
    (
        "LINUX_IMMUTABLE",
        "set or cleared a file's immutable or append-only flag",
        "",
    ),
    (
        "NET_BIND_SERVICE",
        "bound a port below 1024",
        "or listen on a high port instead",
    ),
    (
        "NET_BROADCAST",
        "used broadcast or multicast privileges",
        "",
    ),
    (
        "IPC_LOCK",
        "locked memory beyond RLIMIT_MEMLOCK (mlock, huge pages)",
        "or raise the memlock limit (--ulimit memlock=...)",
    ),
    ("IPC_OWNER", "used System V IPC objects of another user", ""),
    (
        "SYS_MODULE",
        "loaded or unloaded a kernel module",
        "avoid in production: load modules on the host",
    ),
    (
        "SYS_RAWIO",
        "performed raw I/O (I/O ports, /dev/mem, low mmap addresses)",
        "",
    ),
    ("SYS_CHROOT", "called chroot", ""),
    (
        "SYS_PTRACE",
        "traced or inspected a process of another user (ptrace, /proc/PID)",
        "",
    ),
    ("SYS_PACCT", "configured process accounting (acct)", ""),
    (
        "SYS_BOOT",
        "rebooted or loaded a new kernel (reboot, kexec)",
        "",
    ),
    (
        "SYS_NICE",
        "raised a priority, chose a real-time scheduler or set another process's CPU affinity",
        "",
    ),
    (
        "SYS_RESOURCE",
        "exceeded or raised a resource limit (setrlimit, quotas, reserved space)",
        "or raise the limit for the container (--ulimit)",
    ),
    ("SYS_TIME", "set the system clock", ""),
    ("SYS_TTY_CONFIG", "configured a terminal (vhangup)", ""),
    (
        "MKNOD",
        "created a device node (mknod)",
        "or pass the device in (--device)",
    ),
    ("LEASE", "took a lease on a file it does not own", ""),
    (
        "AUDIT_WRITE",
        "wrote a record to the kernel audit log (e.g. login, sudo, sshd)",
        "",
    ),
    ("AUDIT_CONTROL", "configured kernel auditing", ""),
    (
        "SETFCAP",
        "set file capabilities (setcap), or mapped root into a new user namespace",
        "",
    ),
    (
        "MAC_OVERRIDE",
        "overrode the mandatory access control policy",
        "",
    ),
    (
        "MAC_ADMIN",
        "configured mandatory access control (AppArmor, SELinux, Smack)",
        "",
    ),
    (
        "SYSLOG",
        "read or configured the kernel log (dmesg, klogctl)",
        "",
    ),
    ("WAKE_ALARM", "set an alarm that wakes the system", ""),
    (
        "BLOCK_SUSPEND",
        "kept the system from suspending (EPOLLWAKEUP)",
        "",
    ),
    ("AUDIT_READ", "read the audit log over netlink", ""),
    (
        "PERFMON",
        "used performance monitoring beyond the unprivileged limits (perf_event_open)",
        "",
    ),
    ("BPF", "loaded BPF programs or created BPF maps", ""),
    (
        "CHECKPOINT_RESTORE",
        "chose PIDs or restored a process (clone3 set_tid, ns_last_pid)",
        "",
    ),
];

fn net_raw_reason(on: impl Fn(&[&str]) -> bool) -> String {
    if on(&["packet_create"]) {
        "opened a packet socket (AF_PACKET), as packet capture does"
    } else if on(&["inet_create", "inet6_create"]) {
        "opened a raw IP or ICMP socket, as ping does"
    } else if on(&["setsockopt"]) {
        "set a socket option reserved to raw networking (e.g. SO_BINDTODEVICE, IP_TRANSPARENT)"
    } else {
        "used raw sockets (raw IP, ICMP or packet sockets, e.g. ping)"
    }
    .to_string()
}

fn net_admin_reason(on: impl Fn(&[&str]) -> bool) -> String {
    if on(&["dev_ifsioc", "dev_ioctl", "dev_change_flags"]) {
        "changed a network interface's settings (e.g. promiscuous mode for packet capture, link \
         state)"
    } else if on(&["rtnetlink", "rtnl_", "do_setlink"]) {
        "changed network configuration over netlink (links, addresses, routes)"
    } else if on(&["nf_", "nft_", "ipt_", "ip6t_", "do_ipt", "xt_"]) {
        "changed firewall rules"
    } else if on(&["setsockopt"]) {
        "set a socket option reserved to network administration"
    } else {
        "administered the network (interfaces, routes, firewall, privileged socket options)"
    }
    .to_string()
}

const CHECK_FILES: &str = "check file ownership and permissions first";

fn dac_override_reason(dac: Option<&Dac>, count: u64) -> String {
    let base = "opened, wrote or executed files its permissions did not allow";
    match dac {
        Some(Dac::Unpaired { unpaired, checks }) if unpaired == checks => format!(
            "{base}: none of the {checks} DAC_OVERRIDE check(s) followed a DAC_READ_SEARCH \
             check, so they were writes or execs, which DAC_READ_SEARCH does not cover"
        ),
        Some(Dac::Unpaired { unpaired, checks }) => format!(
            "{base}: {unpaired} of {checks} DAC_OVERRIDE checks had no DAC_READ_SEARCH check \
             before them (a read checks DAC_READ_SEARCH first), so a write or exec needed it"
        ),
        Some(Dac::ReadSearchHeld) => format!(
            "{base}: reads were served by DAC_READ_SEARCH, so these {count} check(s) were writes \
             or execs"
        ),
        Some(Dac::Elsewhere { asked_by }) => format!(
            "overrode file permissions (asked by {asked_by}, not a plain file permission check \
             that DAC_READ_SEARCH could serve)"
        ),
        Some(Dac::Unproven | Dac::ReadsOnly) | None => format!(
            "{base}: kept rather than DAC_READ_SEARCH because the call paths do not show these \
             were only reads"
        ),
    }
}

fn dac_read_search_reason(dac: Option<&Dac>, on: impl Fn(&[&str]) -> bool) -> String {
    if dac == Some(&Dac::ReadsOnly) {
        return "read files or searched directories its permissions did not allow: every \
                DAC_OVERRIDE grant followed a denied DAC_READ_SEARCH check in \
                generic_permission, the kernel's order for reads and searches, and no write or \
                exec needed an override, so DAC_READ_SEARCH alone suffices (only the first \
                check of each kind has a call path: if a write fails, add DAC_OVERRIDE)"
            .into();
    }
    if on(&["handle_to_path", "do_handle_open", "may_decode_fh"]) {
        return "opened a file by handle (open_by_handle_at)".into();
    }
    "read files or searched directories its permissions did not allow".into()
}

fn sys_admin_reason(on: impl Fn(&[&str]) -> bool) -> String {
    let what = if on(&[
        "path_mount",
        "do_mount",
        "do_new_mount",
        "fsconfig",
        "fsopen",
        "fsmount",
        "move_mount",
        "mount_setattr",
    ]) {
        "mounted a filesystem"
    } else if on(&["path_umount", "ksys_umount"]) {
        "unmounted a filesystem"
    } else if on(&[
        "create_new_namespaces",
        "unshare_nsproxy_namespaces",
        "ksys_unshare",
        "copy_namespaces",
        "setns",
        "validate_nsset",
    ]) {
        "created or entered namespaces (unshare, clone, setns)"
    } else if on(&["sethostname", "setdomainname"]) {
        "set the hostname or domain name"
    } else if on(&["seccomp"]) {
        "installed a seccomp filter without no_new_privs (set no_new_privs first instead)"
    } else if on(&["swapon", "swapoff"]) {
        "enabled or disabled swap"
    } else if on(&["bpf"]) {
        "used bpf() beyond the unprivileged limits"
    } else if on(&["quotactl"]) {
        "managed disk quotas"
    } else if on(&["keyctl", "key_"]) {
        "managed kernel keyrings"
    } else if on(&["fanotify"]) {
        "watched filesystems with fanotify"
    } else {
        "allowed an administrative operation"
    };
    format!("the new root, a catch-all for administrative operations: here it {what}")
}

/// Converts the kernel's `bpf_ktime_get_boot_ns` to wall-clock time.
pub struct BootClock {
    boot_epoch: SystemTime,
}

impl BootClock {
    pub fn now() -> Self {
        Self {
            boot_epoch: SystemTime::now() - Duration::from_nanos(boot_ns()),
        }
    }

    pub fn wall_time(&self, boot_ns: u64) -> SystemTime {
        self.boot_epoch + Duration::from_nanos(boot_ns)
    }
}

/// `CLOCK_BOOTTIME` in nanoseconds: the clock of `bpf_ktime_get_boot_ns`.
pub fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// A NUL-padded kernel string (a comm, a cgroup path) as text; all of it when it has no NUL.
pub fn kernel_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// Frames above `cap_capable`, symbolised; the tracing frames below it are dropped.
fn call_path(stack: &[u64], syms: &Kallsyms) -> Vec<String> {
    const SHOWN: usize = 6;
    let frames: Vec<(String, u64)> = stack
        .iter()
        .map(|a| {
            syms.symbolize(*a)
                .map_or_else(|| (format!("{a:#x}"), 0), |(n, off)| (n.to_string(), off))
        })
        .collect();
    let start = frames
        .iter()
        .position(|(name, _)| name == "cap_capable")
        .map_or(0, |i| i + 1);
    frames[start..]
        .iter()
        .filter(|(name, _)| !name.starts_with("bpf_") && !name.starts_with("__bpf"))
        .take(SHOWN)
        .map(|(name, off)| format!("{name}+{off:#x}"))
        .collect()
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde passes fields by reference"
)]
pub(crate) fn serialize_cap<S: Serializer>(cap: &Capability, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&cap.to_string())
}

fn serialize_caps<S: Serializer>(caps: &BTreeSet<Capability>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(caps.iter().map(ToString::to_string))
}

#[expect(clippy::ref_option, reason = "serde passes fields by reference")]
pub(crate) fn serialize_opt_caps<S: Serializer>(
    caps: &Option<BTreeSet<Capability>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match caps {
        Some(caps) => serialize_caps(caps, s),
        None => s.serialize_none(),
    }
}

pub(crate) fn serialize_time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::render::rfc3339(*t))
}

pub(crate) fn deserialize_time<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let text = String::deserialize(d)?;
    crate::render::parse_rfc3339(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "{text:?} is not a UTC time like 2026-11-29T01:56:58.795Z"
        ))
    })
}

fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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

    #[test]
    fn comm_stops_at_nul() {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"ping");
        assert_eq!(kernel_string(&comm), "ping");
        assert_eq!(kernel_string(&[b'a'; 16]), "a".repeat(16));
    }

    /// A row as the kernel and the store encode it, classified from `path` like real ones.
    fn raw(cap: Capability, verdict: Verdict, advisory: bool, uid: u32, path: &[&str]) -> CheckRow {
        CheckRow::from_raw(
            RawCheck {
                cap: cap.0,
                verdict: u8::from(verdict == Verdict::Denied),
                audit: if advisory { AUDIT_ADVISORY } else { 0 },
                userns: USERNS_INITIAL,
                bucket: 0,
                classifier: CLASSIFIER_CALL_PATH,
                origin: ORIGIN_CHECK,
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

    const SETGID_CHMOD: &[&str] = &[
        "security_capable+0x3b",
        "capable_wrt_inode_uidgid+0x39",
        "setattr_prepare+0x1dc",
        "ext4_setattr+0x71",
    ];

    #[test]
    fn the_one_rule_for_what_can_be_required() {
        let base = CheckClass {
            verdict: Verdict::Granted,
            audit: AuditClass::Audited,
            bucket: Bucket::App,
            user_namespace: UserNs::Initial,
            behaviour_only: false,
        };
        let cases: &[(CheckClass, bool, bool)] = &[
            (base, true, true),
            (
                CheckClass {
                    user_namespace: UserNs::Unknown,
                    ..base
                },
                true,
                true,
            ),
            // Denied: a refused need, not required.
            (
                CheckClass {
                    verdict: Verdict::Denied,
                    ..base
                },
                true,
                false,
            ),
            // Inside another user namespace: held there, no host cap_add.
            (
                CheckClass {
                    user_namespace: UserNs::Other,
                    ..base
                },
                true,
                false,
            ),
            (
                CheckClass {
                    audit: AuditClass::Advisory,
                    ..base
                },
                false,
                false,
            ),
            (
                CheckClass {
                    bucket: Bucket::Runtime,
                    ..base
                },
                false,
                false,
            ),
            (
                CheckClass {
                    bucket: Bucket::Borrowed,
                    ..base
                },
                false,
                false,
            ),
            (
                CheckClass {
                    behaviour_only: true,
                    ..base
                },
                false,
                false,
            ),
        ];
        for (class, need, required) in cases {
            assert_eq!(class.shows_need(), *need, "{class:?}");
            assert_eq!(class.makes_required(), *required, "{class:?}");
        }
        // A report's check entry reads back into the same class; older entries without bucket,
        // user namespace or optional mean the workload's own, initial, a need.
        let json = serde_json::json!({"capability": "FSETID", "verdict": "granted",
            "audit": "audited", "bucket": "app", "user_namespace": "initial",
            "optional": "without FSETID, ..."});
        let class = CheckClass::deserialize(&json).unwrap();
        assert_eq!(
            class,
            CheckClass {
                behaviour_only: true,
                ..base
            }
        );
        let old = serde_json::json!({"verdict": "granted", "audit": "audited"});
        assert_eq!(CheckClass::deserialize(&old).unwrap(), base);
    }

    #[test]
    fn profile_baseline_drift_and_verify_plan_agree() {
        use crate::commands::verify::ProfileUnderTest;
        let rows = vec![
            raw(Capability::FSETID, Verdict::Granted, false, 0, SETGID_CHMOD),
            raw(
                Capability::NET_RAW,
                Verdict::Granted,
                false,
                0,
                &["security_capable+0x3b", "inet_create+0x10b"],
            ),
            raw(
                Capability::SYSLOG,
                Verdict::Denied,
                false,
                0,
                &["security_capable+0x3b", "do_syslog+0x1"],
            ),
            raw(
                Capability::SYS_ADMIN,
                Verdict::Granted,
                true,
                0,
                &["security_vm_enough_memory_mm+0x36"],
            ),
        ];
        let profile = Profile::from_checks(rows);
        assert_eq!(profile.required, BTreeSet::from([Capability::NET_RAW]));
        let report = crate::render::Report::new(
            crate::render::Subject::Container {
                id: "c".into(),
                name: None,
                image: None,
                workload: None,
            },
            "tp_btf",
            profile.clone(),
            crate::collector::LossCounters::default(),
        );
        let json = report.render(crate::render::Format::Json);
        let doc =
            crate::baseline::ProfileDoc::parse(std::path::Path::new("r.json"), &json).unwrap();
        assert_eq!(doc.required, profile.required);
        assert_eq!(doc.attempted, BTreeSet::from([Capability::SYSLOG]));
        let plan = ProfileUnderTest::from_report(&serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(plan.required, profile.required);
        assert_eq!(plan.refused, BTreeSet::from([Capability::SYSLOG]));
        // Drift judges the same rows the same way: only NET_RAW would be drift from nothing.
        let detector = crate::drift::Detector::new(crate::baseline::Baselines::default());
        let drift: BTreeSet<Capability> = profile
            .checks
            .iter()
            .filter(|c| {
                detector.classify("w", c.capability, c.class())
                    == Some(crate::drift::AlertKind::Drift)
            })
            .map(|c| c.capability)
            .collect();
        assert_eq!(drift, profile.required);
    }

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
