//! The text table `capspy profile` prints by default: header, verdicts, findings, checks.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::deploy::{bare_names, non_root_lines};
use super::{Report, Subject, Verification};
use crate::model::check::{Bucket, CheckRow, ProcessRef, Verdict};
use crate::model::text::{printable, short_id};
use crate::model::time::rfc3339;
use crate::profile::Finding;

pub(super) fn text(report: &Report) -> String {
    let mut out = String::new();
    header(&mut out, report);
    let denied = check_tables(&mut out, &report.profile.checks);
    verdicts(&mut out, report, denied);
    footer(&mut out, report);
    out
}

/// The checks, one table per bucket; true if the workload's own checks include a denial.
fn check_tables(out: &mut String, checks: &[CheckRow]) -> bool {
    let in_bucket = |b: Bucket| checks.iter().filter(|c| c.bucket == b).collect::<Vec<_>>();
    let (app, runtime, borrowed) = (
        in_bucket(Bucket::App),
        in_bucket(Bucket::Runtime),
        in_bucket(Bucket::Borrowed),
    );
    if app.is_empty() {
        out.push_str("No capability checks were observed.\n");
    } else {
        table(out, &app);
    }
    if !runtime.is_empty() {
        out.push_str(
            "\nContainer runtime setup (before the entrypoint; not the workload's needs):",
        );
        table(out, &runtime);
    }
    if !borrowed.is_empty() {
        out.push_str(
            "\nOn other credentials (the kernel acting for someone else, e.g. overlayfs copy-up):",
        );
        table(out, &borrowed);
    }
    app.iter().any(|c| c.verdict == Verdict::Denied)
}

/// What the profile concludes from the checks: required, refused, user namespace only,
/// advisory, the behaviour sections.
fn verdicts(out: &mut String, report: &Report, denied: bool) {
    let profile = &report.profile;
    out.push('\n');
    if profile.required.is_empty() {
        out.push_str("Required: none\n");
    } else {
        let names = bare_names(&profile.required);
        let _ = writeln!(out, "Required: {}", names.join(", "));
        findings(out, &profile.explanations, false);
    }
    if !profile.refused.is_empty() {
        out.push_str(
            "Refused (only ever denied; not required, but the workload may need it: verify by \
             running without it):\n",
        );
        findings(out, &profile.refused, true);
    }
    if !profile.userns_only.is_empty() {
        out.push_str(
            "User namespace only (granted inside a user namespace other than the initial one; \
             not a host-level cap_add):\n",
        );
        findings(out, &profile.userns_only, true);
    }
    if !profile.advisory.is_empty() {
        let _ = writeln!(
            out,
            "Advisory only: {} (noaudit checks only choose a behaviour: never required)",
            bare_names(&profile.advisory).join(", ")
        );
    }
    behaviour_sections(out, report);
    if denied && profile.refused.is_empty() {
        out.push_str(
            "Denied checks are not required on their own (programs often fall back); verify by running without them.\n",
        );
    }
}

/// What the verdicts rest on and what to do: the granted set, the kernel program's losses,
/// notes, the verification, the flags to apply.
fn footer(out: &mut String, report: &Report) {
    let profile = &report.profile;
    if let (Some(granted), Some(droppable)) = (&profile.granted, &profile.droppable) {
        let _ = writeln!(
            out,
            "Granted: {} of 41; droppable (granted, never required): {}",
            granted.len(),
            if droppable.is_empty() {
                "none".to_string()
            } else {
                bare_names(droppable).join(", ")
            }
        );
    }
    let l = &report.losses;
    if l.checks_overflow > 0 || l.sightings_lost > 0 || l.unclassified > 0 || l.cgroups_lost > 0 {
        let _ = writeln!(
            out,
            "Warning: {} checks did not fit the kernel map, {} first-sighting records were lost (their counts were recovered from the map), {} checks could not be classified, {} cgroup creation records were lost (cgroups removed before a walk found them are unattributed).",
            l.checks_overflow, l.sightings_lost, l.unclassified, l.cgroups_lost
        );
    }
    for note in &report.notes {
        let _ = writeln!(out, "Note: {note}");
    }
    if let Some(v) = &report.verification {
        verification(out, v);
    }
    let _ = writeln!(out, "Apply: {}", report.docker_flags);
}

pub(super) fn verification(out: &mut String, v: &Verification) {
    match &v.failure {
        None => {
            let _ = writeln!(
                out,
                "Verified by {} run(s) of the workload: it exits with {} under the flags below; Required lists only what removal proved needed.",
                v.runs, v.expected_exit
            );
        }
        Some(why) => {
            let _ = writeln!(
                out,
                "Not verified ({} run(s)): {why}; the flags below are the recorded ones.",
                v.runs
            );
        }
    }
    for d in &v.dropped {
        let _ = writeln!(out, "  dropped {}: {}", d.capability, d.reason);
    }
    for a in &v.added {
        let _ = writeln!(out, "  added {}: {}", a.capability, a.reason);
    }
}

/// The text report's optional, unproven and non-root sections.
pub(super) fn behaviour_sections(out: &mut String, report: &Report) {
    let profile = &report.profile;
    if !profile.optional.is_empty() {
        out.push_str(
            "Optional (checked only where the kernel picks a behaviour; no call fails without \
             them, so never required):\n",
        );
        findings(out, &profile.optional, true);
    }
    if !profile.unproven.is_empty() {
        out.push_str(
            "Unproven (required, but programs often go on without them; re-running the \
             workload without each tells):\n",
        );
        for u in &profile.unproven {
            let _ = writeln!(out, "  {:<18} {}", u.capability.to_string(), u.reason);
        }
        match &report.verify_command {
            Some(line) => {
                let _ = writeln!(out, "  To prove them: {line}");
            }
            None => out.push_str(
                "  To prove them: capspy run --container --verify, or capspy profile with \
                 --verify, followed by the docker run command that starts the workload\n",
            ),
        }
    }
    for line in non_root_lines(report) {
        let _ = writeln!(out, "{line}");
    }
}

/// The first line: what was traced.
pub(super) fn header(out: &mut String, report: &Report) {
    match &report.subject {
        Subject::Command {
            argv,
            exit_code,
            interrupted,
        } => {
            let _ = writeln!(
                out,
                "capspy: `{}` exited with {exit_code}{}; hook {}",
                printable(&argv.join(" ")),
                if *interrupted {
                    " (interrupted: partial profile)"
                } else {
                    ""
                },
                report.hook
            );
        }
        Subject::Container {
            id,
            name,
            image,
            workload,
        } => {
            let _ = writeln!(
                out,
                "capspy: container {} ({}), image {}, workload {}",
                printable(name.as_deref().unwrap_or("?")),
                printable(short_id(id)),
                printable(image.as_deref().unwrap_or("?")),
                printable(workload.as_deref().unwrap_or("?")),
            );
        }
        Subject::Workload {
            key, containers, ..
        } => {
            let _ = writeln!(
                out,
                "capspy: workload {}, {} container instance(s)",
                printable(key),
                containers.len()
            );
        }
    }
    if let Some(c) = &report.coverage {
        let hosts: Vec<String> = c.hosts.iter().map(|h| printable(h).into_owned()).collect();
        let _ = writeln!(
            out,
            "merged from {} host(s) ({}), {} instance(s), {} .. {}",
            c.hosts.len(),
            hosts.join(", "),
            c.instances,
            seconds(c.first_seen),
            seconds(c.last_seen)
        );
    }
}

pub(super) fn table(out: &mut String, checks: &[&CheckRow]) {
    let _ = writeln!(
        out,
        "\n{:<20} {:<9} {:<8} {:<9} {:<13} {:<8} {:>8}  {:<19}  {:<19}  {:<30} CALL PATH",
        "CAPABILITY",
        "ORIGIN",
        "VERDICT",
        "AUDIT",
        "CLASSIFIED BY",
        "USERNS",
        "COUNT",
        "FIRST SEEN (UTC)",
        "LAST SEEN",
        "FIRST PROCESS"
    );
    for c in checks {
        let process = process_str(&c.example);
        // The generic frames say nothing about who asked; show the first callers past them.
        let path: Vec<&str> = c
            .call_path
            .iter()
            .map(String::as_str)
            .filter(|f| !f.starts_with("security_capable+"))
            .take(3)
            .collect();
        let _ = writeln!(
            out,
            "{:<20} {:<9} {:<8} {:<9} {:<13} {:<8} {:>8}  {:<19}  {:<19}  {:<30} {}",
            c.capability.to_string(),
            c.origin.as_str(),
            c.verdict.as_str(),
            c.audit.as_str(),
            c.classified_by.as_str(),
            c.user_namespace.as_str(),
            c.count,
            seconds(c.first_seen),
            seconds(c.last_seen),
            process,
            path.join(" <- ")
        );
    }
}

/// `  NET_RAW  reason [evidence]` lines of a findings section.
pub(super) fn findings(out: &mut String, list: &[Finding], with_evidence: bool) {
    for f in list {
        let _ = write!(out, "  {:<18} {}", f.capability.to_string(), f.reason);
        if with_evidence {
            let e = &f.evidence;
            let processes: Vec<String> = e.processes.iter().take(3).map(process_str).collect();
            let _ = write!(
                out,
                " [{} check(s) {} .. {}, by {}{}]",
                e.count,
                seconds(e.first_seen),
                seconds(e.last_seen),
                processes.join(", "),
                if e.processes.len() > 3 { ", ..." } else { "" }
            );
        }
        out.push('\n');
    }
}

pub(super) fn process_str(p: &ProcessRef) -> String {
    format!("{} (pid {}, uid {})", printable(&p.comm), p.tgid, p.uid)
}

/// `2026-11-29 00:18:02`: the text table's time, to the second.
pub(super) fn seconds(t: SystemTime) -> String {
    let full = rfc3339(t);
    full.get(..19).unwrap_or(&full).replacen('T', " ", 1)
}
