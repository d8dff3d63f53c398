//! Turning a profile into what people read or paste: a text table, a JSON document, docker flags.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::collector::LossCounters;
use crate::profile::{AuditClass, Bucket, CheckRow, Classifier, Profile, UserNs, Verdict};

/// Version of the JSON document; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Docker,
}

/// What was traced.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subject {
    Command {
        argv: Vec<String>,
        /// The command's exit code, or 128 + signal number, as a shell reports it.
        exit_code: i32,
        /// Tracing stopped early (Ctrl-C): the profile may be incomplete.
        interrupted: bool,
    },
    /// One container instance.
    Container {
        id: String,
        name: Option<String>,
        image: Option<String>,
        workload: Option<String>,
    },
    /// Every container of a workload (restarts and replicas merged).
    Workload {
        key: String,
        /// Container ids.
        containers: Vec<String>,
    },
}

/// A profile with its context: the unit every output format renders.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub subject: Subject,
    /// The attach method that produced the observations.
    pub hook: String,
    #[serde(flatten)]
    pub profile: Profile,
    pub docker_flags: String,
    pub losses: LossCounters,
    /// Caveats that apply to this report (e.g. the hook's blind spots).
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(subject: Subject, hook: &str, profile: Profile, losses: LossCounters) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            subject,
            hook: hook.to_string(),
            docker_flags: docker_flags(&profile),
            notes: hook_notes(hook),
            profile,
            losses,
        }
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Text => text(self),
            Format::Json => {
                let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
                s.push('\n');
                s
            }
            Format::Docker => format!("{}\n", self.docker_flags),
        }
    }
}

/// Symbol-based hooks miss the call sites where the compiler inlined `cap_capable`
/// (measured on Debian 6.1 and 6.12 by `cargo xtask vm-test`; see docs/kernel-matrix.md).
fn hook_notes(hook: &str) -> Vec<String> {
    match hook {
        "fexit" | "kprobe" => vec![format!(
            "{hook} cannot see checks where the kernel inlined cap_capable (cap_task_prctl, \
             cap_capset, cap_vm_enough_memory, cap_mmap_addr on many kernels): e.g. SETPCAP for \
             prctl(PR_SET_SECUREBITS) and SYS_RAWIO for mmap below mmap_min_addr are missed; \
             see docs/kernel-matrix.md"
        )],
        _ => Vec::new(),
    }
}

/// `--cap-drop ALL --cap-add X ...`, the form docker run takes.
pub fn docker_flags(profile: &Profile) -> String {
    let mut flags = String::from("--cap-drop ALL");
    for cap in &profile.required {
        let _ = write!(flags, " --cap-add {cap}");
    }
    flags
}

fn text(report: &Report) -> String {
    let mut out = String::new();
    header(&mut out, report);
    let checks = &report.profile.checks;
    let in_bucket = |b: Bucket| checks.iter().filter(|c| c.bucket == b).collect::<Vec<_>>();
    let (app, runtime, borrowed) = (
        in_bucket(Bucket::App),
        in_bucket(Bucket::Runtime),
        in_bucket(Bucket::Borrowed),
    );
    if app.is_empty() {
        out.push_str("No capability checks were observed.\n");
    } else {
        table(&mut out, &app);
    }
    if !runtime.is_empty() {
        out.push_str(
            "\nContainer runtime setup (before the entrypoint; not the workload's needs):",
        );
        table(&mut out, &runtime);
    }
    if !borrowed.is_empty() {
        out.push_str(
            "\nOn other credentials (the kernel acting for someone else, e.g. overlayfs copy-up):",
        );
        table(&mut out, &borrowed);
    }
    let advisory = app.iter().any(|c| c.audit == AuditClass::Advisory);
    let denied = app.iter().any(|c| c.verdict == Verdict::Denied);
    out.push('\n');
    if report.profile.required.is_empty() {
        out.push_str("Required: none\n");
    } else {
        let names: Vec<String> = report
            .profile
            .required
            .iter()
            .map(ToString::to_string)
            .collect();
        let _ = writeln!(out, "Required: {}", names.join(", "));
    }
    if advisory {
        out.push_str("Advisory (noaudit) checks only choose a behaviour: never required.\n");
    }
    if denied {
        out.push_str(
            "Denied checks are not required on their own (programs often fall back); verify by running without them.\n",
        );
    }
    let l = &report.losses;
    if l.checks_overflow > 0 || l.sightings_lost > 0 || l.unclassified > 0 {
        let _ = writeln!(
            out,
            "Warning: {} checks did not fit the kernel map, {} first-sighting records were lost (their counts were recovered from the map), {} checks could not be classified.",
            l.checks_overflow, l.sightings_lost, l.unclassified
        );
    }
    for note in &report.notes {
        let _ = writeln!(out, "Note: {note}");
    }
    let _ = writeln!(out, "Apply: {}", report.docker_flags);
    out
}

/// The first line: what was traced.
fn header(out: &mut String, report: &Report) {
    match &report.subject {
        Subject::Command {
            argv,
            exit_code,
            interrupted,
        } => {
            let _ = writeln!(
                out,
                "capspy: `{}` exited with {exit_code}{}; hook {}",
                argv.join(" "),
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
                name.as_deref().unwrap_or("?"),
                &id[..id.len().min(12)],
                image.as_deref().unwrap_or("?"),
                workload.as_deref().unwrap_or("?"),
            );
        }
        Subject::Workload { key, containers } => {
            let _ = writeln!(
                out,
                "capspy: workload {key}, {} container instance(s)",
                containers.len()
            );
        }
    }
}

fn table(out: &mut String, checks: &[&CheckRow]) {
    let _ = writeln!(
        out,
        "\n{:<20} {:<8} {:<9} {:<13} {:<8} {:>8}  {:<30} CALL PATH",
        "CAPABILITY", "VERDICT", "AUDIT", "CLASSIFIED BY", "USERNS", "COUNT", "FIRST PROCESS"
    );
    for c in checks {
        let process = format!(
            "{} (pid {}, uid {})",
            c.example.comm, c.example.tgid, c.example.uid
        );
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
            "{:<20} {:<8} {:<9} {:<13} {:<8} {:>8}  {:<30} {}",
            c.capability.to_string(),
            verdict_str(c.verdict),
            audit_str(c.audit),
            classifier_str(c.classified_by),
            userns_str(c.user_namespace),
            c.count,
            process,
            path.join(" <- ")
        );
    }
}

fn verdict_str(v: Verdict) -> &'static str {
    match v {
        Verdict::Granted => "granted",
        Verdict::Denied => "denied",
    }
}

fn audit_str(a: AuditClass) -> &'static str {
    match a {
        AuditClass::Audited => "audited",
        AuditClass::Advisory => "advisory",
    }
}

fn classifier_str(c: Classifier) -> &'static str {
    match c {
        Classifier::Opts => "opts",
        Classifier::CallPath => "call path",
        Classifier::Unclassified => "unclassified",
    }
}

fn userns_str(u: UserNs) -> &'static str {
    match u {
        UserNs::Initial => "initial",
        UserNs::Other => "other",
        UserNs::Unknown => "unknown",
    }
}

/// `2026-11-29T00:18:02.123Z`, UTC, millisecond precision.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::caps::Capability;
    use crate::profile::tests::row;

    fn report(rows: Vec<crate::profile::CheckRow>) -> Report {
        Report::new(
            Subject::Command {
                argv: vec!["ping".into(), "-c1".into(), "127.0.0.1".into()],
                exit_code: 0,
                interrupted: false,
            },
            "tp_btf",
            Profile::from_checks(rows),
            LossCounters::default(),
        )
    }

    #[test]
    fn docker_flags_list_required_in_order() {
        let r = report(vec![
            row(
                Capability::NET_RAW,
                Verdict::Granted,
                AuditClass::Audited,
                1,
            ),
            row(Capability::CHOWN, Verdict::Granted, AuditClass::Audited, 1),
            row(
                Capability::SYS_ADMIN,
                Verdict::Granted,
                AuditClass::Advisory,
                9,
            ),
        ]);
        assert_eq!(
            r.render(Format::Docker),
            "--cap-drop ALL --cap-add CHOWN --cap-add NET_RAW\n"
        );
    }

    #[test]
    fn nothing_required_is_drop_all() {
        let r = report(vec![]);
        assert_eq!(r.render(Format::Docker), "--cap-drop ALL\n");
        assert!(r.render(Format::Text).contains("Required: none"));
    }

    #[test]
    fn json_has_versioned_required_and_checks() {
        let r = report(vec![
            row(
                Capability::NET_RAW,
                Verdict::Granted,
                AuditClass::Audited,
                1,
            ),
            row(
                Capability::SYS_ADMIN,
                Verdict::Denied,
                AuditClass::Advisory,
                7,
            ),
        ]);
        let v: serde_json::Value = serde_json::from_str(&r.render(Format::Json)).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["required"], serde_json::json!(["NET_RAW"]));
        assert_eq!(v["subject"]["kind"], "command");
        assert_eq!(v["subject"]["exit_code"], 0);
        let checks = v["checks"].as_array().unwrap();
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[1]["capability"], "SYS_ADMIN");
        assert_eq!(checks[1]["verdict"], "denied");
        assert_eq!(checks[1]["audit"], "advisory");
        assert_eq!(checks[1]["classified_by"], "call_path");
        assert_eq!(checks[1]["count"], 7);
        assert_eq!(checks[1]["example"]["comm"], "ping");
        assert_eq!(checks[0]["first_seen"], "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn text_names_each_check_and_the_flags() {
        let r = report(vec![row(
            Capability::NET_RAW,
            Verdict::Granted,
            AuditClass::Audited,
            1,
        )]);
        let t = r.render(Format::Text);
        assert!(t.contains("NET_RAW"), "{t}");
        assert!(t.contains("granted"), "{t}");
        assert!(t.contains("call path"), "{t}");
        assert!(t.contains("Required: NET_RAW"), "{t}");
        assert!(t.contains("Apply: --cap-drop ALL --cap-add NET_RAW"), "{t}");
    }

    #[test]
    fn symbol_hooks_carry_their_blind_spots() {
        let mut r = report(vec![]);
        assert!(r.notes.is_empty());
        r = Report::new(
            r.subject.clone(),
            "fexit",
            Profile::default(),
            LossCounters::default(),
        );
        assert!(r.render(Format::Text).contains("PR_SET_SECUREBITS"));
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_millis(951_782_400_250); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.250Z");
    }
}
