//! `capspy run` against the real kernel: these tests load the real BPF program and trace real
//! processes, so they need root (CI runs them as root).

mod common;

use common::required;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const CAPSPY: &str = env!("CARGO_BIN_EXE_capspy");

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("capspy-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `capspy run --format json --output REPORT -- CMD`, the report in the scratch folder.
fn capspy_run(scratch: &Scratch, cmd: &[&str]) -> (Output, Value) {
    common::capspy_run(&scratch.path("report.json"), &[], cmd)
}

fn checks_of<'a>(report: &'a Value, cap: &str) -> Vec<&'a Value> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["capability"] == cap)
        .collect()
}

fn sh(script: &str) -> Vec<&str> {
    vec!["/bin/sh", "-c", script]
}

#[test]
fn ping_needs_net_raw() {
    let s = Scratch::new("ping");
    let (out, report) = capspy_run(&s, &["ping", "-c1", "-W1", "127.0.0.1"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(required(&report), ["NET_RAW"], "{report:#}");
    assert_eq!(report["docker_flags"], "--cap-drop ALL --cap-add NET_RAW");
    let net_raw = checks_of(&report, "NET_RAW");
    assert_eq!(net_raw[0]["verdict"], "granted");
    assert_eq!(net_raw[0]["audit"], "audited");
    assert_eq!(net_raw[0]["example"]["comm"], "ping");
}

#[test]
fn chown_to_another_user_needs_chown() {
    let s = Scratch::new("chown");
    let file = s.path("owned");
    std::fs::write(&file, "x").unwrap();
    let (out, report) = capspy_run(&s, &["chown", "4242", file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(required(&report), ["CHOWN"], "{report:#}");
}

#[test]
fn true_needs_nothing_and_overcommit_checks_are_advisory() {
    let s = Scratch::new("true");
    let (out, report) = capspy_run(&s, &["true"]);
    assert!(out.status.success(), "{out:?}");
    assert!(required(&report).is_empty(), "{report:#}");
    // Every exec/mmap makes the overcommit heuristic's SYS_ADMIN check: seen, advisory, and
    // classified from the call path on a tracepoint (from opts on fexit/kprobe).
    let sys_admin = checks_of(&report, "SYS_ADMIN");
    assert!(!sys_admin.is_empty(), "{report:#}");
    for c in &sys_admin {
        assert_eq!(c["audit"], "advisory", "{c:#}");
        assert!(c["count"].as_u64().unwrap() >= 1);
    }
    assert_eq!(report["subject"]["exit_code"], 0);
}

#[test]
fn advisory_call_path_is_the_overcommit_heuristic() {
    let s = Scratch::new("callpath");
    let (_, report) = capspy_run(&s, &["true"]);
    if report["hook"] == "fexit" || report["hook"] == "kprobe" {
        return; // classified from opts: no call path needed
    }
    let paths: Vec<String> = checks_of(&report, "SYS_ADMIN")
        .iter()
        .flat_map(|c| c["call_path"].as_array().unwrap().clone())
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert!(
        paths
            .iter()
            .any(|f| f.starts_with("security_vm_enough_memory_mm")),
        "{paths:?}"
    );
}

#[test]
fn children_and_grandchildren_are_included_even_after_the_parent_exits() {
    let s = Scratch::new("children");
    let file = s.path("f");
    std::fs::write(&file, "x").unwrap();
    // The grandchild outlives the shell: capspy waits for the whole cgroup to empty.
    let script = format!(
        "ping -c1 -W1 127.0.0.1 >/dev/null; (sleep 0.3; chown 4243 {}) & exit 0",
        file.display()
    );
    let (out, report) = capspy_run(&s, &sh(&script));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(required(&report), ["CHOWN", "NET_RAW"], "{report:#}");
}

#[test]
fn checks_outside_the_command_are_not_included() {
    let s = Scratch::new("outside");
    let file = s.path("f");
    std::fs::write(&file, "x").unwrap();
    // A concurrent process outside capspy's cgroup keeps making CHOWN checks.
    let mut outsider = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "while :; do chown 4244 {0}; chown 0 {0}; done",
            file.display()
        ))
        .spawn()
        .unwrap();
    let (out, report) = capspy_run(&s, &["sh", "-c", "sleep 0.5; ping -c1 -W1 127.0.0.1"]);
    outsider.kill().unwrap();
    outsider.wait().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(required(&report), ["NET_RAW"], "{report:#}");
    assert!(checks_of(&report, "CHOWN").is_empty(), "{report:#}");
}

#[test]
fn exit_status_is_propagated() {
    let s = Scratch::new("exit");
    let (out, report) = capspy_run(&s, &sh("exit 7"));
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(report["subject"]["exit_code"], 7);

    let (out, report) = capspy_run(&s, &sh("kill -TERM $$"));
    assert_eq!(out.status.code(), Some(128 + 15));
    assert_eq!(report["subject"]["exit_code"], 128 + 15);
}

#[test]
fn missing_command_exits_127_like_a_shell() {
    let out = Command::new(CAPSPY)
        .args(["run", "--", "/nonexistent/capspy-no-such-command"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("command not found"), "{stderr}");
}

#[test]
fn text_and_docker_formats_go_to_stderr_and_leave_stdout_to_the_command() {
    let out = Command::new(CAPSPY)
        .args(["run", "--format", "docker", "--", "sh", "-c"])
        .arg("echo hello; ping -c1 -W1 127.0.0.1 >/dev/null")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "--cap-drop ALL --cap-add NET_RAW\n"
    );

    let out = Command::new(CAPSPY)
        .args(["run", "--", "ping", "-c1", "-W1", "127.0.0.1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Required: NET_RAW"), "{text}");
    assert!(
        text.contains("Apply: --cap-drop ALL --cap-add NET_RAW"),
        "{text}"
    );
}

#[test]
fn sigint_stops_the_command_and_still_reports() {
    let s = Scratch::new("sigint");
    let report = s.path("report.json");
    let mut capspy = Command::new(CAPSPY);
    capspy
        .args(["run", "--format", "json", "--output"])
        .arg(&report)
        .args([
            "--",
            "sh",
            "-c",
            "ping -c1 -W1 127.0.0.1 >/dev/null; exec sleep 30",
        ]);
    // Started with SIGINT ignored, as a script's `&` starts a job: capspy handles it anyway, so
    // its command must not inherit the "ignore" (it would outlive exec and the forwarded SIGINT).
    // SAFETY: signal() is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        capspy.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = capspy.spawn().unwrap();
    // Not a fixed delay: under load capspy may still be loading its program after seconds.
    common::wait_for_descendant(child.id(), "sleep");
    common::signal(&child, libc::SIGINT);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGINT), "{status:?}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(v["subject"]["interrupted"], true);
    assert_eq!(required(&v), ["NET_RAW"]);
    assert_no_leftover_cgroup(child.id());
}

#[test]
fn the_run_cgroup_is_removed() {
    let mut child = Command::new(CAPSPY)
        .args(["run", "--format", "docker", "--", "true"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(child.wait().unwrap().success());
    // capspy names its cgroup after its own pid.
    assert_no_leftover_cgroup(child.id());
}

fn assert_no_leftover_cgroup(pid: u32) {
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let p = Path::new(root).join(format!("capspy-run-{pid}"));
        assert!(!p.exists(), "{} was not removed", p.display());
    }
}

#[test]
fn forcing_a_hook_that_cannot_load_lists_the_reason() {
    // On kernels without the tracepoint this is the other way round; skip there.
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return;
    }
    let out = Command::new(CAPSPY).args(["doctor"]).output().unwrap();
    let doctor = String::from_utf8_lossy(&out.stdout);
    let Some(line) = doctor.lines().find(|l| l.trim_start().starts_with("fexit")) else {
        panic!("doctor lists no fexit line: {doctor}");
    };
    if line.contains("loads and attaches") {
        return;
    }
    let out = Command::new(CAPSPY)
        .args(["run", "--hook", "fexit", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fexit:"), "{stderr}");
    assert!(stderr.contains("no hook method"), "{stderr}");
}

#[test]
fn doctor_reports_every_method_and_a_working_one() {
    let out = Command::new(CAPSPY).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for m in ["fexit", "kprobe", "tp_btf", "raw_tracepoint", "tracepoint"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(m)),
            "{m} missing: {text}"
        );
    }
    assert!(text.contains("`--hook auto` will use"), "{text}");
}

#[test]
fn without_privileges_the_error_names_what_is_missing() {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ])
        .arg(CAPSPY)
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CAP_BPF") && stderr.contains("CAP_PERFMON"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// `setpriv` (util-linux) running `ps` (procps) as uid 1000: ps reads
/// /proc/sys/kernel/pid_max, whose permission check asks SYS_ADMIN through
/// `ns_capable_noaudit <- pid_table_root_permissions` (advisory, denied) in openat and read.
/// `cat /proc/self/stack` as root asks SYS_ADMIN through `file_ns_capable <- proc_pid_stack`
/// (audited, granted) in read: one (capability, syscall) pair reached both ways.
const PS_AS_USER: &str = "setpriv --reuid=1000 --regid=1000 --clear-groups ps -p 1 >/dev/null";
const STACK_AS_ROOT: &str = "cat /proc/self/stack >/dev/null";

fn has_frame(check: &Value, name: &str) -> bool {
    check["call_path"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f.as_str().unwrap().starts_with(name))
}

/// Every row of the workload agrees with the kernel: none was reclassified by userspace because
/// the kernel's class contradicted its own call path.
fn assert_classes_agree_with_evidence(report: &Value) {
    for c in report["checks"].as_array().unwrap() {
        assert_ne!(c["classified_by"], "evidence", "{c:#}");
    }
}

#[test]
fn an_advisory_check_after_an_audited_one_in_the_same_syscall_stays_advisory() {
    let s = Scratch::new("audited-first");
    let (out, report) = capspy_run(&s, &sh(&format!("{STACK_AS_ROOT}; {PS_AS_USER}")));
    assert!(out.status.success(), "{out:?}");
    assert_classes_agree_with_evidence(&report);
    let sys_admin = checks_of(&report, "SYS_ADMIN");
    // ps's denials are advisory: no audited SYS_ADMIN denial at all (the old cache made the
    // pid_max read one, with this very call path as its evidence).
    assert!(
        !sys_admin
            .iter()
            .any(|c| c["verdict"] == "denied" && c["audit"] == "audited"),
        "{report:#}"
    );
    assert!(
        sys_admin
            .iter()
            .any(|c| c["verdict"] == "denied" && c["audit"] == "advisory"),
        "{report:#}"
    );
    let stack = sys_admin
        .iter()
        .find(|c| has_frame(c, "proc_pid_stack"))
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(
        (&stack["verdict"], &stack["audit"]),
        (&"granted".into(), &"audited".into())
    );
    assert!(required(&report).contains(&"SYS_ADMIN".to_string()));
}

#[test]
fn an_audited_check_after_an_advisory_one_in_the_same_syscall_stays_audited() {
    let s = Scratch::new("advisory-first");
    let (out, report) = capspy_run(&s, &sh(&format!("{PS_AS_USER}; {STACK_AS_ROOT}")));
    assert!(out.status.success(), "{out:?}");
    assert_classes_agree_with_evidence(&report);
    // The read of /proc/self/stack is audited and makes SYS_ADMIN required, although the
    // cache learnt "advisory" for SYS_ADMIN in read from ps, and root's overcommit checks had
    // made a granted advisory SYS_ADMIN row before it.
    let sys_admin = checks_of(&report, "SYS_ADMIN");
    let audited: Vec<&&Value> = sys_admin
        .iter()
        .filter(|c| c["verdict"] == "granted" && c["audit"] == "audited")
        .collect();
    assert_eq!(audited.len(), 1, "{report:#}");
    assert!(has_frame(audited[0], "proc_pid_stack"), "{report:#}");
    assert!(
        required(&report).contains(&"SYS_ADMIN".to_string()),
        "{report:#}"
    );
}
