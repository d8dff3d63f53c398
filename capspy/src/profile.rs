//! The profile model: observed checks as rows, and the rules that turn them into the set of
//! capabilities a workload needs.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use capspy_common::{
    AUDIT_ADVISORY, BUCKET_BORROWED, BUCKET_RUNTIME, CLASSIFIER_CALL_PATH, CLASSIFIER_OPTS,
    USERNS_INITIAL, USERNS_OTHER, VERDICT_GRANTED,
};
use serde::{Serialize, Serializer};

use crate::caps::Capability;
use crate::collector::Observation;
use crate::kallsyms::Kallsyms;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Granted,
    Denied,
}

/// Whether the kernel would audit a denial of this check. Advisory (noaudit) checks only choose a
/// behaviour, such as the overcommit heuristic's SYS_ADMIN check on every mmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditClass {
    Audited,
    Advisory,
}

/// How the audit class was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Classifier {
    /// `cap_capable`'s `opts` argument (fexit, kprobe).
    Opts,
    /// The kernel call path (tracepoints, which have no `opts`).
    CallPath,
    /// Neither could be read; counted as audited so the profile stays sufficient.
    Unclassified,
}

/// Who made the check: the workload, or the container runtime setting the container up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    App,
    /// `runc:[2:INIT]` and friends before the entrypoint's exec: never the application's needs.
    Runtime,
    /// Made on credentials other than the task's own, e.g. overlayfs copy-up with the mounter's:
    /// the kernel acting for someone else, not a need of the workload.
    Borrowed,
}

/// The user namespace the check was made against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UserNs {
    Initial,
    Other,
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessRef {
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub comm: String,
}

/// One observed (capability, verdict, audit class, user namespace) of a workload.
#[derive(Clone, Debug, Serialize)]
pub struct CheckRow {
    #[serde(serialize_with = "serialize_cap")]
    pub capability: Capability,
    pub verdict: Verdict,
    pub audit: AuditClass,
    pub classified_by: Classifier,
    pub user_namespace: UserNs,
    pub bucket: Bucket,
    pub count: u64,
    #[serde(serialize_with = "serialize_time")]
    pub first_seen: SystemTime,
    #[serde(serialize_with = "serialize_time")]
    pub last_seen: SystemTime,
    /// The process that made the first check.
    pub example: ProcessRef,
    /// Kernel functions above `cap_capable` for the first check, innermost first.
    pub call_path: Vec<String>,
}

impl CheckRow {
    /// The rule of this first rule set: a granted, audited check means the capability is needed.
    /// Advisory and denied checks are shown, never required.
    pub fn makes_required(&self) -> bool {
        self.bucket == Bucket::App
            && self.verdict == Verdict::Granted
            && self.audit == AuditClass::Audited
    }

    pub fn from_observation(obs: &Observation, clock: &BootClock, syms: Option<&Kallsyms>) -> Self {
        let key = &obs.key;
        let stats = &obs.stats;
        Self::from_raw(
            RawCheck {
                cap: key.cap,
                verdict: key.verdict,
                audit: key.audit,
                userns: key.userns,
                bucket: key.bucket,
                classifier: stats.classifier,
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
                comm: comm_to_string(&stats.first_comm),
            },
            syms.map(|s| call_path(&obs.stack, s)).unwrap_or_default(),
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
        Self {
            capability: Capability(raw.cap),
            verdict: if raw.verdict == VERDICT_GRANTED {
                Verdict::Granted
            } else {
                Verdict::Denied
            },
            audit: if raw.audit == AUDIT_ADVISORY {
                AuditClass::Advisory
            } else {
                AuditClass::Audited
            },
            classified_by: match raw.classifier {
                CLASSIFIER_OPTS => Classifier::Opts,
                CLASSIFIER_CALL_PATH => Classifier::CallPath,
                _ => Classifier::Unclassified,
            },
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
            call_path,
        }
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
}

/// What a workload needs, with the evidence.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Profile {
    #[serde(serialize_with = "serialize_caps")]
    pub required: BTreeSet<Capability>,
    pub checks: Vec<CheckRow>,
}

impl Profile {
    pub fn from_checks(mut checks: Vec<CheckRow>) -> Self {
        checks.sort_by_key(|c| (c.bucket, c.capability, c.verdict, c.audit, c.user_namespace));
        let required = checks
            .iter()
            .filter(|c| c.makes_required())
            .map(|c| c.capability)
            .collect();
        Self { required, checks }
    }
}

/// Converts the kernel's `bpf_ktime_get_boot_ns` to wall-clock time.
pub struct BootClock {
    boot_epoch: SystemTime,
}

impl BootClock {
    pub fn now() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec we pass.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) };
        let since_boot = Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        );
        Self {
            boot_epoch: SystemTime::now() - since_boot,
        }
    }

    pub fn wall_time(&self, boot_ns: u64) -> SystemTime {
        self.boot_epoch + Duration::from_nanos(boot_ns)
    }
}

fn comm_to_string(comm: &[u8; 16]) -> String {
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
fn serialize_cap<S: Serializer>(cap: &Capability, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&cap.to_string())
}

fn serialize_caps<S: Serializer>(caps: &BTreeSet<Capability>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(caps.iter().map(ToString::to_string))
}

fn serialize_time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::render::rfc3339(*t))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn row(cap: Capability, verdict: Verdict, audit: AuditClass, count: u64) -> CheckRow {
        CheckRow {
            capability: cap,
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
            },
            call_path: vec!["security_capable+0x3c".into()],
        }
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

    #[test]
    fn comm_stops_at_nul() {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"ping");
        assert_eq!(comm_to_string(&comm), "ping");
        assert_eq!(comm_to_string(&[b'a'; 16]), "a".repeat(16));
    }
}
