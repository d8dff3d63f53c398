//! Rows from what the kernel recorded: the vocabulary of [`crate::model`] decoded from a map entry
//! or a stored record, with the rules that read a check's call path applied (its audit class from
//! the evidence, behaviour-only checks marked optional). Every row any command sees is built here.

use std::borrow::Cow;
use std::time::SystemTime;

use capspy_common::{
    AUDIT_ADVISORY, BUCKET_BORROWED, BUCKET_RUNTIME, CLASSIFIER_CALL_PATH, CLASSIFIER_OPTS,
    CLASSIFIER_SYSCALL, CheckKey, CheckStats, ORIGIN_CHECK, ORIGIN_FILE_CAPS, ORIGIN_OWN_ID,
    USERNS_INITIAL, USERNS_OTHER, VERDICT_GRANTED,
};

use super::rules;
use crate::model::caps::Capability;
use crate::model::check::{
    AuditClass, Bucket, CheckRow, Classifier, Origin, ProcessRef, RawCheck, UserNs, Verdict,
};
use crate::model::text::kernel_string;
use crate::model::time::BootClock;
use crate::trace::call_path::CallPaths;
use crate::trace::collector::Observation;

impl CheckRow {
    pub fn from_observation(
        obs: &Observation,
        clock: &BootClock,
        paths: Option<&mut CallPaths>,
    ) -> Self {
        let call_path = match obs.key.origin {
            ORIGIN_CHECK | ORIGIN_OWN_ID => paths.map(|p| p.name(&obs.stack)).unwrap_or_default(),
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
            optional: rules::behaviour_only(capability, raw.origin == ORIGIN_OWN_ID, &call_path)
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

/// The executed file a file-capability fact's first sighting carries in place of its stack.
fn fact_path(stack: &[u64]) -> Option<String> {
    let bytes: Vec<u8> = stack.iter().flat_map(|w| w.to_le_bytes()).collect();
    let path = kernel_string(&bytes);
    (!path.is_empty()).then_some(path)
}
