//! The check vocabulary: what the kernel program records about one capability check (or one
//! capability kept without a check), decoded from `capspy_common`'s byte constants into enums
//! that every later stage uses, and the one rule of which checks can make a capability required
//! ([`CheckClass`]).

use std::borrow::Cow;
use std::time::SystemTime;

use capspy_common::{ORIGIN_AMBIENT, ORIGIN_CAPSET, ORIGIN_CHECK, ORIGIN_FILE_CAPS};
use serde::{Deserialize, Deserializer, Serialize};

use super::caps::{Capability, serialize_cap};
use super::time::{deserialize_time, epoch, serialize_time};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Granted,
    Denied,
}

impl Verdict {
    /// The name documents, metrics and tables use (serde's too).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Granted => "granted",
            Self::Denied => "denied",
        }
    }
}

/// Whether the kernel would audit a denial of this check. Advisory (noaudit) checks only choose a
/// behaviour, such as the overcommit heuristic's SYS_ADMIN check on every mmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditClass {
    Audited,
    Advisory,
}

impl AuditClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audited => "audited",
            Self::Advisory => "advisory",
        }
    }
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

impl Classifier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opts => "opts",
            Self::CallPath => "call_path",
            Self::Unclassified => "unclassified",
            Self::Syscall => "syscall",
            Self::Evidence => "evidence",
        }
    }
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
    /// A check for ids the caller holds (`ORIGIN_OWN_ID`) is a check: what tells it apart is the
    /// row's `optional` effect.
    pub fn from_kernel(origin: u8) -> Self {
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

    pub fn as_str(self) -> &'static str {
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

impl Bucket {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::App => "app",
            Self::Runtime => "runtime",
            Self::Borrowed => "borrowed",
        }
    }
}

/// Container runtimes' setup processes, by comm: `runc` joins the container's cgroup, then its
/// init stages rename themselves `runc:[0:PARENT]`, `runc:[1:CHILD]`, `runc:[2:INIT]` until the
/// entrypoint's exec; crun keeps its own name. A trailing NUL means an exact name. `exe` is
/// `runc init` before it renames itself: runc starts it as `/proc/self/exe init`, and its
/// cloned-binary setup bind-mounts (SYS_ADMIN) under that name, in the container's cgroup when
/// runc moved it there first (seen with podman's runc).
pub const RUNTIME_COMMS: &[&[u8]] = &[b"runc:[", b"runc\0", b"crun\0", b"exe\0"];

/// Whether a process name (as `/proc/PID/status` shows it) is a runtime setup process.
pub fn is_runtime_comm(name: &str) -> bool {
    RUNTIME_COMMS
        .iter()
        .any(|prefix| match prefix.split_last() {
            Some((0, exact)) => name.as_bytes() == exact,
            _ => name.as_bytes().starts_with(prefix),
        })
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

impl UserNs {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Other => "other",
            Self::Unknown => "unknown",
        }
    }
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
        deserialize_with = "super::caps::deserialize_name"
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

#[cfg(test)]
mod tests {
    use super::*;

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
            // Denied inside another user namespace: a refusal there, shown as a need (the
            // workload asked), never a host cap_add; every consumer reads it so.
            (
                CheckClass {
                    verdict: Verdict::Denied,
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
    fn runtime_processes_are_recognised_by_name() {
        assert!(is_runtime_comm("runc:[2:INIT]"));
        assert!(is_runtime_comm("runc:[1:CHILD]"));
        assert!(is_runtime_comm("crun"));
        assert!(!is_runtime_comm("crunch"));
        assert!(is_runtime_comm("runc"));
        assert!(!is_runtime_comm("runcible"));
        assert!(!is_runtime_comm("ping"));
    }

    #[test]
    fn names_are_serdes_names() {
        fn same<T: Serialize>(v: T, name: &str) {
            assert_eq!(serde_json::to_value(v).unwrap(), name);
        }
        for v in [Verdict::Granted, Verdict::Denied] {
            same(v, v.as_str());
        }
        for v in [AuditClass::Audited, AuditClass::Advisory] {
            same(v, v.as_str());
        }
        for v in [
            Classifier::Opts,
            Classifier::CallPath,
            Classifier::Unclassified,
            Classifier::Syscall,
            Classifier::Evidence,
        ] {
            same(v, v.as_str());
        }
        for v in [Bucket::App, Bucket::Runtime, Bucket::Borrowed] {
            same(v, v.as_str());
        }
        for v in [UserNs::Initial, UserNs::Other, UserNs::Unknown] {
            same(v, v.as_str());
        }
        for v in [
            Origin::Check,
            Origin::Capset,
            Origin::Ambient,
            Origin::FileCaps,
        ] {
            same(v, v.as_str());
        }
    }
}
