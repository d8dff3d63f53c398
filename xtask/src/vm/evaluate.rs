//! Checking every run against the expectations and comparing the hooks' profiles.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::console::{Doctor, Run, Session, parse};
use super::expect::{
    PROBES, Probe, SCENARIOS, expected_classifier, expected_visibility, hook_matches,
    kernel_series, kernel_version,
};
use serde_json::Value;

pub(super) struct Outcome {
    pub(super) text: String,
    pub(super) markdown: String,
    pub(super) failures: usize,
}

/// Collects check results: `fail` lines count, `note` lines inform.
#[derive(Default)]
struct Checks {
    pub(super) text: String,
    pub(super) failures: usize,
}

impl Checks {
    pub(super) fn check(&mut self, subject: &str, ok: bool, what: &str) {
        if ok {
            let _ = writeln!(self.text, "  PASS  {subject}: {what}");
        } else {
            self.failures += 1;
            let _ = writeln!(self.text, "  FAIL  {subject}: {what}");
        }
    }

    fn note(&mut self, subject: &str, what: &str) {
        let _ = writeln!(self.text, "  NOTE  {subject}: {what}");
    }
}

/// One hook on one kernel: a column of the comparison.
struct Column<'a> {
    pub(super) hook: &'static str,
    pub(super) session: &'a Session,
}

impl Column<'_> {
    pub(super) fn label(&self) -> String {
        format!("{} on {}", self.hook, self.session.release)
    }
}

/// Required set per column, per scenario (in SCENARIOS order); None where there is no report.
type Profiles = Vec<Vec<Option<BTreeSet<String>>>>;

pub(super) fn evaluate(vms: &[Vec<String>], native_lines: Option<&Vec<String>>) -> Outcome {
    let mut c = Checks::default();
    let vms: Vec<Session> = vms.iter().map(|l| parse(l)).collect();
    let native = native_lines.map(|l| parse(l));
    let mut columns = Vec::new();
    for vm in &vms {
        let _ = writeln!(
            c.text,
            "
== VM: Linux {}",
            vm.release
        );
        check_garbled(&mut c, vm);
        let _ = writeln!(c.text, "capspy doctor:");
        check_doctors(&mut c, vm);
        columns.extend(["fexit", "kprobe"].map(|hook| Column { hook, session: vm }));
    }
    if let Some(native) = &native {
        let _ = writeln!(
            c.text,
            "
== this machine: Linux {}",
            native.release
        );
        check_garbled(&mut c, native);
        columns.push(Column {
            hook: "tracepoint",
            session: native,
        });
    }

    let mut profiles: Profiles = Vec::new();
    for column in &columns {
        let _ = writeln!(
            c.text,
            "
capspy run --hook {}:",
            column.label()
        );
        profiles.push(
            SCENARIOS
                .iter()
                .map(|(scenario, base)| {
                    check_run(&mut c, column.session, scenario, column.hook, base)
                })
                .collect(),
        );
    }

    let _ = writeln!(
        c.text,
        "
same profile from every hook:"
    );
    compare(&mut c, &columns, &profiles);

    let markdown = markdown(&columns, &profiles);
    let _ = writeln!(
        c.text,
        "
{} failed check(s)",
        c.failures
    );
    Outcome {
        text: c.text,
        markdown,
        failures: c.failures,
    }
}

fn check_garbled(c: &mut Checks, session: &Session) {
    for line in &session.garbled {
        c.check(
            "console",
            false,
            &format!("unreadable result line: {line:.200}"),
        );
    }
}

fn check_doctors(c: &mut Checks, vm: &Session) {
    let Some(doctor) = vm.doctors.get("btf") else {
        c.check("doctor", false, "no output from `capspy doctor` in the VM");
        return;
    };
    let has_tracepoint = kernel_version(&vm.release) >= (6, 13);
    c.check(
        "doctor",
        doctor.status == Some(0),
        &format!("exits with 0 (got {:?})", doctor.status),
    );
    for (method, should_load) in [
        ("fexit", true),
        ("kprobe", true),
        ("tp_btf", has_tracepoint),
        ("raw_tracepoint", has_tracepoint),
        ("tracepoint", has_tracepoint),
    ] {
        let line = doctor
            .lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(method));
        let loads = line.is_some_and(|l| l.contains("loads and attaches"));
        let verb = if should_load { "loads" } else { "fails" };
        c.check(
            "doctor",
            line.is_some() && loads == should_load,
            &format!(
                "{method} {verb}: {}",
                line.map_or("(no line)", |l| l.trim())
            ),
        );
    }
    c.check(
        "doctor",
        doctor
            .lines
            .iter()
            .any(|l| l.contains("cap_capable's last argument: unsigned int opts")),
        "reads `unsigned int opts` from cap_capable's BTF",
    );
    // Linux 5.11 added bpf_get_current_task_btf; before it capspy reads the task another way and
    // doctor says so.
    let fallback = doctor
        .lines
        .iter()
        .find(|l| l.starts_with("bpf_get_current_task_btf: not available"));
    let expect_fallback = kernel_version(&vm.release) < (5, 11);
    c.check(
        "doctor",
        fallback.is_some() == expect_fallback,
        &fallback.map_or_else(
            || "bpf_get_current_task_btf available (no fallback reported)".to_string(),
            |l| l.trim().to_string(),
        ),
    );
    check_partly_traced(c, doctor);
    check_no_btf(c, vm);
}

/// Programs beside the `cap_capable` hook (e.g. for capabilities kept without a check) are
/// attached when they load; doctor lists those that did not under a line saying `not all
/// traced`. On a kernel of the matrix that is a regression to fix or a degradation to record.
fn check_partly_traced(c: &mut Checks, doctor: &Doctor) {
    for (i, line) in doctor.lines.iter().enumerate() {
        if !line.contains("not all traced") {
            continue;
        }
        let reasons: Vec<&str> = doctor.lines[i + 1..]
            .iter()
            .take_while(|l| l.starts_with("  "))
            .map(|l| l.trim())
            .collect();
        c.check(
            "doctor",
            false,
            &format!("{} {}", line.trim(), reasons.join("; ")),
        );
    }
}

/// With /sys/kernel/btf hidden, capspy must say that BTF is missing, wherever it cannot go on.
fn check_no_btf(c: &mut Checks, vm: &Session) {
    let Some(no_btf) = vm.doctors.get("no-btf") else {
        c.check(
            "no BTF",
            false,
            "no output from `capspy doctor` without BTF",
        );
        return;
    };
    c.check(
        "no BTF",
        no_btf
            .lines
            .iter()
            .any(|l| l.starts_with("BTF: not available")),
        "doctor says `BTF: not available`",
    );
    for method in ["fexit", "kprobe"] {
        if let Some(line) = no_btf
            .lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(method))
        {
            c.note("no BTF", &format!("doctor: {}", line.trim()));
        }
        let Some(run) = vm.run("no-btf", method) else {
            c.check(
                "no BTF",
                false,
                &format!("no result for `run --hook {method}`"),
            );
            continue;
        };
        let says_btf = run.log.iter().any(|l| l.contains("BTF"));
        if method == "fexit" || run.report.is_none() {
            c.check(
                "no BTF",
                run.status != 0 && says_btf,
                &format!(
                    "`run --hook {method}` fails (exit {}) naming BTF as the reason",
                    run.status
                ),
            );
        } else {
            c.note(
                "no BTF",
                &format!("`run --hook {method}` works without BTF"),
            );
        }
    }
}

/// Checks one run; returns its required set when it produced a report.
fn check_run(
    c: &mut Checks,
    session: &Session,
    scenario: &str,
    hook: &str,
    base: &[&str],
) -> Option<BTreeSet<String>> {
    let subject = format!("{scenario} --hook {hook}");
    let Some(run) = session.run(scenario, hook) else {
        c.check(&subject, false, "no result");
        return None;
    };
    let Some(report) = &run.report else {
        let output = run.log.join("\n");
        c.check(
            &subject,
            false,
            &format!("no report (exit {}); output:\n{output}", run.status),
        );
        return None;
    };
    let required: BTreeSet<String> = strings(&report["required"]);
    let checks = ReportChecks::new(report);
    let mut problems = common_problems(run, report, &checks, hook);

    let mut expected: BTreeSet<String> = base.iter().map(ToString::to_string).collect();
    let mut visibility = String::new();
    if let Some(probe) = PROBES.iter().find(|p| p.scenario == scenario) {
        let seen = checks.cap(probe.cap);
        if !seen.is_empty() && probe.required {
            expected.insert(probe.cap.to_string());
        }
        if !probe.required && seen.iter().any(|ch| ch["audit"] != "advisory") {
            problems.push(format!(
                "{} checks not all advisory: {}",
                probe.cap,
                list(&seen)
            ));
        }
        match probe_visibility(probe, hook, &session.release, !seen.is_empty()) {
            Visibility::AsMeasured(text) => visibility = format!("; {text}"),
            Visibility::Unexpected(text) => problems.push(text),
            Visibility::Unmeasured(text) => c.note(&subject, &text),
        }
    }
    if required != expected {
        problems.push(format!("required {required:?}, expected {expected:?}"));
    }
    problems.extend(scenario_problems(scenario, &checks));
    if problems.is_empty() {
        let advisory: BTreeSet<String> = checks
            .0
            .iter()
            .filter(|ch| ch["audit"] == "advisory")
            .map(|ch| {
                format!(
                    "{} by {}",
                    ch["capability"].as_str().unwrap_or("?"),
                    ch["classified_by"].as_str().unwrap_or("?")
                )
            })
            .collect();
        if !advisory.is_empty() {
            let list: Vec<String> = advisory.into_iter().collect();
            let _ = write!(visibility, "; advisory: {}", list.join(", "));
        }
        c.check(
            &subject,
            true,
            &format!("required {}{visibility}", names(&required)),
        );
    } else {
        c.check(&subject, false, &problems.join("; "));
    }
    Some(required)
}

/// The `checks` array of a report.
struct ReportChecks<'a>(pub(super) Vec<&'a Value>);

impl<'a> ReportChecks<'a> {
    pub(super) fn new(report: &'a Value) -> Self {
        Self(
            report["checks"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default(),
        )
    }

    pub(super) fn cap(&self, cap: &str) -> Vec<&'a Value> {
        self.0
            .iter()
            .copied()
            .filter(|ch| ch["capability"] == cap)
            .collect()
    }
}

/// What every run must satisfy: success, the hook asked for, classification by the hook's own
/// means (opts or call path), nothing lost.
fn common_problems(run: &Run, report: &Value, checks: &ReportChecks, hook: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if run.status != 0 {
        problems.push(format!(
            "exit {} (output: {})",
            run.status,
            run.log.join(" | ")
        ));
    }
    let reported_hook = report["hook"].as_str().unwrap_or("");
    if !hook_matches(hook, reported_hook) {
        problems.push(format!("report says hook {reported_hook}"));
    }
    let classifier = expected_classifier(hook);
    for ch in &checks.0 {
        if ch["classified_by"] != classifier {
            problems.push(format!(
                "{} classified by {} (expected {classifier})",
                ch["capability"], ch["classified_by"]
            ));
        }
    }
    let losses = &report["losses"];
    for counter in ["sightings_lost", "checks_overflow", "unclassified"] {
        if losses[counter].as_u64().unwrap_or(0) != 0 {
            problems.push(format!("losses.{counter} = {}", losses[counter]));
        }
    }
    problems
}

enum Visibility {
    /// As this test measured before: the text says seen or which blind spot.
    AsMeasured(String),
    Unexpected(String),
    /// No measurement for this kernel series.
    Unmeasured(String),
}

fn probe_visibility(probe: &Probe, hook: &str, release: &str, seen: bool) -> Visibility {
    let word = if seen { "seen" } else { "NOT seen" };
    let series = kernel_series(release);
    match expected_visibility(hook, release, probe) {
        Some(want) if want == seen => Visibility::AsMeasured(format!(
            "{} from {} {word}{}",
            probe.cap,
            probe.site,
            if seen {
                ""
            } else {
                " (known blind spot: cap_capable inlined there)"
            }
        )),
        Some(want) => Visibility::Unexpected(format!(
            "{} from {} {word}, but this test measured it {} on Linux {series}",
            probe.cap,
            probe.site,
            if want { "seen" } else { "missed" },
        )),
        None => Visibility::Unmeasured(format!(
            "{} from {} {word} (no measurement recorded for Linux {series})",
            probe.cap, probe.site
        )),
    }
}

/// Scenario-specific evidence beyond the required set.
fn scenario_problems(scenario: &str, checks: &ReportChecks) -> Vec<String> {
    let mut problems = Vec::new();
    match scenario {
        "ping" => {
            let ok = checks.cap("NET_RAW").iter().any(|ch| {
                ch["verdict"] == "granted"
                    && ch["audit"] == "audited"
                    && ch["example"]["comm"] == "ping"
            });
            if !ok {
                problems.push("no granted, audited NET_RAW check by ping".into());
            }
        }
        "children" => {
            for (cap, comm) in [("CHOWN", "chown"), ("NET_RAW", "ping")] {
                if !checks
                    .cap(cap)
                    .iter()
                    .any(|ch| ch["example"]["comm"] == comm)
                {
                    problems.push(format!("no {cap} check by {comm}"));
                }
            }
        }
        "proc-stat" => {
            let ptrace = checks.cap("SYS_PTRACE");
            if ptrace.is_empty() || ptrace.iter().any(|ch| ch["audit"] != "advisory") {
                problems.push(format!(
                    "expected advisory SYS_PTRACE checks, got {}",
                    list(&ptrace)
                ));
            }
        }
        _ => {}
    }
    problems
}

pub(super) fn list(checks: &[&Value]) -> String {
    Value::Array(checks.iter().map(|&v| v.clone()).collect()).to_string()
}

pub(super) fn names(caps: &BTreeSet<String>) -> String {
    if caps.is_empty() {
        "none".to_string()
    } else {
        caps.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

pub(super) fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The required sets must match across hooks, except where a hook missed a probe this test
/// measured as a blind spot; then they must differ by exactly that capability.
fn compare(c: &mut Checks, columns: &[Column], profiles: &Profiles) {
    for (i, (scenario, _)) in SCENARIOS.iter().enumerate() {
        let sets: Vec<(&Column, &BTreeSet<String>)> = columns
            .iter()
            .zip(profiles)
            .filter_map(|(column, p)| Some((column, p[i].as_ref()?)))
            .collect();
        if sets.len() < columns.len() {
            c.check(
                scenario,
                false,
                "not every hook produced a profile to compare",
            );
            continue;
        }
        let probe = PROBES.iter().find(|p| p.scenario == *scenario);
        // The profile each hook would give had it seen the probe.
        let normalised: BTreeSet<BTreeSet<String>> = sets
            .iter()
            .map(|(column, set)| {
                let mut set = (*set).clone();
                if let Some(p) = probe
                    && p.required
                    && expected_visibility(column.hook, &column.session.release, p) == Some(false)
                {
                    set.insert(p.cap.to_string());
                }
                set
            })
            .collect();
        let raw: BTreeSet<&BTreeSet<String>> = sets.iter().map(|(_, s)| *s).collect();
        let listing: Vec<String> = sets
            .iter()
            .map(|(column, s)| format!("{}: {}", column.label(), names(s)))
            .collect();
        let listing = listing.join("; ");
        if raw.len() == 1 {
            c.check(scenario, true, &format!("identical ({listing})"));
        } else if normalised.len() == 1 {
            let site = probe.map_or("", |p| p.site);
            c.check(
                scenario,
                true,
                &format!("differ only by the known blind spot, {site} ({listing})"),
            );
        } else {
            c.check(scenario, false, &format!("differ ({listing})"));
        }
    }
}

fn markdown(columns: &[Column], profiles: &Profiles) -> String {
    let mut md = String::from("| scenario |");
    let mut rule = String::from("|---|");
    for column in columns {
        let _ = write!(md, " `{}` on {} |", column.hook, column.session.release);
        rule.push_str("---|");
    }
    let _ = writeln!(md, "\n{rule}");
    for (i, (scenario, _)) in SCENARIOS.iter().enumerate() {
        let _ = write!(md, "| {scenario} |");
        for p in profiles {
            let cell = p[i].as_ref().map_or_else(|| "no report".to_string(), names);
            let _ = write!(md, " {cell} |");
        }
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_that_did_not_load_fail_the_doctor_check() {
        let doctor = |lines: &[&str]| Doctor {
            lines: lines.iter().map(ToString::to_string).collect(),
            status: Some(0),
        };
        let mut c = Checks::default();
        check_partly_traced(
            &mut c,
            &doctor(&[
                "`--hook auto` will use fexit.",
                "capabilities kept without a check (capset): not all traced, profiles may miss them:",
                "  syscalls:sys_enter_capset: BPF_PROG_LOAD failed: Invalid argument (os error 22)",
                "  sched:sched_process_exec: BPF_PROG_LOAD failed",
            ]),
        );
        assert_eq!(c.failures, 1);
        assert!(
            c.text.contains("sys_enter_capset: BPF_PROG_LOAD failed"),
            "{}",
            c.text
        );
        assert!(c.text.contains("sched_process_exec"), "{}", c.text);

        let mut c = Checks::default();
        check_partly_traced(
            &mut c,
            &doctor(&["capabilities kept without a check (capset): traced"]),
        );
        assert_eq!(c.failures, 0);
    }
}
