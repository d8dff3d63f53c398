//! Real daemons from Debian packages (docs/real-daemons.md has the ground truth): each runs in a
//! container started the way its package starts it, and is exercised by its real client over
//! loopback. For each, capspy's promise: the workload works under Docker's defaults, works under
//! the flags capspy prints for it, and fails without any one of them (except those the report
//! lists as unproven). Needs root, Docker, and the daemons image (`common::daemons_image`: built
//! once, then cached).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::Cleanup;

const CAPSPY: &str = env!("CARGO_BIN_EXE_capspy");

/// One workload of `tests/daemons/`.
struct Workload {
    name: &'static str,
    /// What the container runs.
    command: Vec<&'static str>,
    /// `docker run` options other than capabilities.
    options: &'static [&'static str],
    /// Capabilities it is deployed with beyond Docker's defaults (it does not start without).
    deployed_with: &'static [&'static str],
    /// Capabilities whose checks only choose a behaviour: listed as optional, not required.
    optional: &'static [&'static str],
    /// What the recorded profile (no --verify) lists as unproven, exactly: required, but from
    /// checks whose failure programs may ignore.
    unproven: &'static [&'static str],
}

impl Workload {
    fn script(name: &'static str, script: &'static str) -> Self {
        Self {
            name,
            command: vec!["sh", "-c", script],
            options: &[],
            deployed_with: &[],
            optional: &[],
            unproven: &[],
        }
    }
}

/// A run of the workload's container: how it ended and what it printed.
struct Run {
    passed: bool,
    output: String,
}

/// What the test does with one workload, and the failures it found (all of them, not the first).
struct Case {
    /// The test's name: its folder's and containers' names (tests of one workload run at once).
    tag: String,
    cleanup: Cleanup,
    image: String,
    workload: Workload,
    runs: usize,
    problems: Vec<String>,
}

impl Case {
    fn new(workload: Workload) -> Self {
        let tag = std::thread::current()
            .name()
            .unwrap_or(workload.name)
            .replace("::", "-");
        let dir = std::env::temp_dir().join(format!("capspy-daemons-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            tag,
            cleanup: Cleanup::new(dir),
            image: common::daemons_image(),
            workload,
            runs: 0,
            problems: Vec::new(),
        }
    }

    fn dir(&self) -> &Path {
        &self.cleanup.dir
    }

    /// `docker run --rm --network none --name N OPTIONS CAPABILITY-FLAGS IMAGE COMMAND`, with a
    /// name the cleanup removes if the run is cut short.
    fn docker_run(&mut self, cap_flags: &[String]) -> Vec<String> {
        self.runs += 1;
        let name = format!("capspy-d-{}-{}-{}", self.tag, std::process::id(), self.runs);
        self.cleanup.containers.push(name.clone());
        let mut args: Vec<String> = ["docker", "run", "--rm", "--network", "none", "--name"]
            .iter()
            .map(ToString::to_string)
            .collect();
        args.push(name);
        args.extend(self.workload.options.iter().map(ToString::to_string));
        args.extend(cap_flags.iter().cloned());
        args.push(self.image.clone());
        args.extend(self.workload.command.iter().map(ToString::to_string));
        args
    }

    /// Docker's defaults plus what the workload is deployed with.
    fn default_flags(&self) -> Vec<String> {
        self.workload
            .deployed_with
            .iter()
            .flat_map(|c| ["--cap-add".to_string(), (*c).to_string()])
            .collect()
    }

    fn problem(&mut self, text: &str) {
        self.problems
            .push(format!("{}: {text}", self.workload.name));
    }

    fn assert_no_problems(&self) {
        assert!(self.problems.is_empty(), "\n{}\n", self.problems.join("\n"));
    }
}

/// Runs `args` with its output in `out` (both streams); kills it after `limit`.
fn run_for(args: &[String], out: &Path, limit: Duration) -> (ExitStatus, String) {
    let file = std::fs::File::create(out).unwrap();
    let mut child = Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            common::signal(&child, libc::SIGKILL);
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(out).unwrap_or_default())
}

/// How long one run of the workload may take; capspy with --verify runs it a dozen times.
const LIMIT: Duration = Duration::from_mins(2);
const VERIFY_LIMIT: Duration = Duration::from_mins(8);

/// The last lines of a run's output, for a failure message.
fn tail(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    lines[lines.len().saturating_sub(6)..].join(" | ")
}

fn caps_of_flags(flags: &[String]) -> Vec<String> {
    flags
        .windows(2)
        .filter(|w| w[0] == "--cap-add")
        .map(|w| w[1].clone())
        .collect()
}

fn without(flags: &[String], cap: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < flags.len() {
        if flags[i] == "--cap-add" && flags.get(i + 1).is_some_and(|c| c == cap) {
            i += 2;
        } else {
            out.push(flags[i].clone());
            i += 1;
        }
    }
    out
}

/// The capabilities a report lists under `key`, as strings or as `{capability: ...}` objects.
fn listed(report: &Value, key: &str) -> Vec<String> {
    report[key]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().or_else(|| v["capability"].as_str()))
                .map(ToString::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// What the report says made `cap` required, for a failure message.
fn evidence(report: &Value, cap: &str) -> String {
    report["explanations"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["capability"] == cap)
        .map_or_else(
            || "none".to_string(),
            |e| {
                format!(
                    "{} (processes {}, call path {})",
                    e["reason"], e["evidence"]["processes"], e["evidence"]["call_path"]
                )
            },
        )
}

/// Check rows whose audit class contradicts their own call path: a `*_noaudit` caller is an
/// advisory check, `capable`/`ns_capable`/... an audited one.
fn audit_contradictions(report: &Value) -> Vec<String> {
    const AUDITED: &[&str] = &[
        "capable",
        "ns_capable",
        "ns_capable_setid",
        "capable_wrt_inode_uidgid",
        "file_ns_capable",
        "has_capability",
        "has_ns_capability",
    ];
    let mut found = Vec::new();
    for row in report["checks"].as_array().into_iter().flatten() {
        if row.get("origin").is_some_and(|o| o != "check") {
            continue;
        }
        let Some(caller) = row["call_path"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|f| f.split('+').next().unwrap_or(f))
            .find(|f| *f != "security_capable" && *f != "cap_capable")
        else {
            continue;
        };
        let expected = if caller.ends_with("_noaudit") {
            "advisory"
        } else if AUDITED.contains(&caller) {
            "audited"
        } else {
            continue;
        };
        if row["audit"] != expected {
            found.push(format!(
                "{} {} from {caller} is listed as {}, expected {expected}",
                row["capability"], row["verdict"], row["audit"]
            ));
        }
    }
    found
}

/// `capspy run --container --format json` of the workload under Docker's defaults (with
/// `--verify`: re-run until removal proved each capability): the report.
fn traced(case: &mut Case, verify: bool) -> Value {
    let dir = case.dir().to_path_buf();
    let defaults = case.default_flags();
    let report_path = dir.join("report.json");
    let mut capspy = vec![
        CAPSPY.to_string(),
        "run".into(),
        "--container".into(),
        "--format".into(),
        "json".into(),
        "--output".into(),
        report_path.to_str().unwrap().into(),
    ];
    if verify {
        capspy.push("--verify".into());
    }
    capspy.push("--".into());
    capspy.extend(case.docker_run(&defaults));
    let limit = if verify { VERIFY_LIMIT } else { LIMIT };
    let (status, output) = run_for(&capspy, &dir.join("capspy.log"), limit);
    let report: Value = match std::fs::read_to_string(&report_path) {
        Ok(text) => serde_json::from_str(&text).expect("report is JSON"),
        Err(e) => panic!("no report ({e}), capspy {status}: {}", tail(&output)),
    };
    if !status.success() {
        case.problem(&format!(
            "expected the traced run to pass, capspy exited {status}: {}",
            tail(&output)
        ));
    }
    report
}

/// The whole check of one workload; every failure is collected, then reported together. With
/// `verify`, capspy re-ran the workload itself: every capability it prints must be needed.
fn check(workload: Workload, verify: bool) {
    let mut case = Case::new(workload);
    let dir: PathBuf = case.dir().to_path_buf();

    // 1. It works as deployed: Docker's defaults (plus what it is deployed with).
    let defaults = case.default_flags();
    let args = case.docker_run(&defaults);
    let (status, output) = run_for(&args, &dir.join("defaults.log"), LIMIT);
    if !status.success() {
        case.problem(&format!(
            "expected to pass under Docker's defaults {defaults:?}, got {status}: {}",
            tail(&output)
        ));
        case.assert_no_problems();
    }

    // 2. capspy's profile of the same run, from its own output.
    let report = traced(&mut case, verify);
    let printed = report["docker_flags"].as_str().unwrap_or_default();
    let flags: Vec<String> = printed
        .split_whitespace()
        .map(ToString::to_string)
        .collect();
    if flags.get(..2) != Some(&["--cap-drop".to_string(), "ALL".to_string()][..]) {
        case.problem(&format!(
            "docker_flags {printed:?} do not start with --cap-drop ALL"
        ));
    }

    // 3. The printed flags are sufficient ...
    let args = case.docker_run(&flags);
    let under_profile = run_for(&args, &dir.join("profile.log"), LIMIT);
    let profile_run = Run {
        passed: under_profile.0.success(),
        output: under_profile.1,
    };
    if !profile_run.passed {
        case.problem(&format!(
            "expected to pass under capspy's `{printed}`, got {}: {}",
            under_profile.0,
            tail(&profile_run.output)
        ));
    }

    // 4. ... and each capability in them necessary, unless the report says it is unproven. The
    // runs are independent: run them side by side.
    let unproven = if verify {
        Vec::new()
    } else {
        listed(&report, "unproven")
    };
    let removals: Vec<(String, Vec<String>)> = caps_of_flags(&flags)
        .into_iter()
        .filter(|c| !unproven.contains(c))
        .map(|c| {
            let args = case.docker_run(&without(&flags, &c));
            (c, args)
        })
        .collect();
    let results: Vec<(String, Run)> = std::thread::scope(|s| {
        let handles: Vec<_> = removals
            .iter()
            .map(|(cap, args)| {
                let log = dir.join(format!("without-{cap}.log"));
                s.spawn(move || {
                    let (status, output) = run_for(args, &log, LIMIT);
                    (
                        cap.clone(),
                        Run {
                            passed: status.success(),
                            output,
                        },
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (cap, run) in results {
        if run.passed && profile_run.passed {
            case.problem(&format!(
                "expected to fail without {cap} (in `{printed}`{}), it passed; capspy's \
                 evidence: {}",
                if verify {
                    " after --verify"
                } else {
                    ", not listed as unproven"
                },
                evidence(&report, &cap)
            ));
        }
    }

    // 4b. Unproven are exactly the capabilities whose failure the workload may ignore.
    if !verify {
        expect_unproven(&mut case, unproven);
    }

    // 5. Checks that only choose a behaviour are optional, not required (a verified profile
    // drops them instead).
    let required = listed(&report, "required");
    let optional = listed(&report, "optional");
    for cap in case.workload.optional.iter().filter(|_| !verify) {
        if required.iter().any(|c| c == cap) || !optional.iter().any(|c| c == cap) {
            case.problem(&format!(
                "expected {cap} listed as optional and not required, got required {required:?}, optional {optional:?}"
            ));
        }
    }

    case.assert_no_problems();
}

/// The report's unproven capabilities are the workload's, by name.
fn expect_unproven(case: &mut Case, mut got: Vec<String>) {
    let mut expected: Vec<String> = case
        .workload
        .unproven
        .iter()
        .map(ToString::to_string)
        .collect();
    expected.sort();
    got.sort();
    if got != expected {
        case.problem(&format!(
            "expected unproven {expected:?}, the report lists {got:?}"
        ));
    }
}

/// chronyd drops to _chrony keeping NET_BIND_SERVICE with libcap's cap_set_proc: no check.
fn chrony() -> Workload {
    Workload {
        unproven: &["CHOWN"],
        ..Workload::script("chrony", include_str!("daemons/chrony.sh"))
    }
}

/// dnsmasq (DNS and DHCP) checks its own sets, then keeps NET_ADMIN and NET_RAW with capset.
fn dnsmasq() -> Workload {
    Workload {
        deployed_with: &["NET_ADMIN"],
        // Its pid file's fchown, whose failure it only warns about.
        unproven: &["CHOWN"],
        ..Workload::script("dnsmasq", include_str!("daemons/dnsmasq.sh"))
    }
}

/// dbus-daemon changes to messagebus with libcap-ng's capng_change_id, keeping AUDIT_WRITE only
/// when it has it.
fn dbus() -> Workload {
    Workload {
        unproven: &["AUDIT_WRITE", "CHOWN"],
        ..Workload::script("dbus", include_str!("daemons/dbus.sh"))
    }
}

/// A non-root user executes iputils' ping, which has file capabilities (cap_net_raw=ep), and
/// drops them with `setuid(getuid())`: a SETUID check for its own user.
fn ping() -> Workload {
    Workload {
        name: "ping",
        command: vec!["ping", "-c1", "-W2", "127.0.0.1"],
        options: &["--user", "tester"],
        deployed_with: &[],
        optional: &["SETUID"],
        unproven: &[],
    }
}

/// openssh-client's postinst sets the set-group-ID bit of ssh-agent as root not in its group:
/// an FSETID check whose denial only clears the bit. ssh-agent, run set-group-ID, then calls
/// `setgid(getgid())`: a SETGID check for its own real group, allowed without SETGID.
fn ssh_agent() -> Workload {
    Workload {
        optional: &["FSETID", "SETGID"],
        ..Workload::script("ssh-agent", include_str!("daemons/ssh-agent.sh"))
    }
}

/// ps reads /proc/sys/kernel/pid_max: SYS_ADMIN through ns_capable_noaudit, advisory.
fn ps() -> Workload {
    Workload {
        name: "ps",
        command: vec!["ps", "-e", "-o", "pid,user,comm"],
        options: &[],
        deployed_with: &[],
        optional: &[],
        unproven: &[],
    }
}

/// sshd sends audit messages and goes on when the kernel refuses them.
fn sshd() -> Workload {
    Workload {
        unproven: &["AUDIT_WRITE"],
        ..Workload::script("ssh", include_str!("daemons/ssh.sh"))
    }
}

/// nginx's chown of its temporary folders is needed, but looks like dnsmasq's ignored one.
fn nginx() -> Workload {
    Workload {
        unproven: &["CHOWN"],
        ..Workload::script("nginx", include_str!("daemons/nginx.sh"))
    }
}

/// vsftpd's privileged helper keeps NET_BIND_SERVICE with capset; its PAM session sends audit
/// messages.
fn vsftpd() -> Workload {
    Workload {
        unproven: &["AUDIT_WRITE", "CHOWN"],
        ..Workload::script("vsftpd", include_str!("daemons/vsftpd.sh"))
    }
}

#[test]
fn chrony_keeps_net_bind_service_with_capset() {
    check(chrony(), false);
}

#[test]
fn dnsmasq_keeps_net_admin_and_net_raw_with_capset() {
    check(dnsmasq(), false);
}

#[test]
fn dbus_changes_user_with_libcap_ng() {
    check(dbus(), false);
}

#[test]
fn ping_as_non_root_needs_its_file_capability() {
    check(ping(), false);
}

#[test]
fn ssh_agent_postinst_fsetid_is_optional() {
    check(ssh_agent(), false);
}

#[test]
fn ps_needs_nothing() {
    check(ps(), false);
}

#[test]
fn sshd_key_login() {
    check(sshd(), false);
}

#[test]
fn nginx_serves_a_page() {
    check(nginx(), false);
}

#[test]
fn vsftpd_password_login() {
    check(vsftpd(), false);
}

/// Every row's audit class agrees with its own call path. ps's SYS_ADMIN check is advisory, in a
/// container whose runtime made audited SYS_ADMIN checks (`capable <- xattr_permission`) and
/// advisory ones before it.
#[test]
fn audit_classes_agree_with_their_call_paths() {
    let mut case = Case::new(ps());
    let report = traced(&mut case, false);
    for contradiction in audit_contradictions(&report) {
        case.problem(&contradiction);
    }
    case.assert_no_problems();
}

/// With --verify, what capspy prints is minimal: chrony's capset need is found by bisection.
#[test]
fn chrony_verified() {
    check(chrony(), true);
}

#[test]
fn dnsmasq_verified() {
    check(dnsmasq(), true);
}

#[test]
fn ping_verified() {
    check(ping(), true);
}

/// sshd's AUDIT_WRITE is dropped: sshd goes on when its audit messages are refused.
#[test]
fn sshd_verified() {
    check(sshd(), true);
}

/// FSETID (behaviour only) and ssh-agent's SETGID (the kernel falls back) are dropped.
#[test]
fn ssh_agent_verified() {
    check(ssh_agent(), true);
}

#[test]
fn vsftpd_verified() {
    check(vsftpd(), true);
}
