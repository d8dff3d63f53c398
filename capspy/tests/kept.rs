//! Capabilities a workload needs without any `cap_capable` check: kept across a switch from root
//! with `capset(2)`, raised into the ambient set, or given by a file's capabilities at exec. Real
//! programs (util-linux `setpriv`, libcap's `capsh`, iputils' `ping` with `cap_net_raw=ep`), the
//! real BPF program, and for the container cases a real Docker engine with an image imported from
//! this host's own binaries, file capabilities included. Needs root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod common;

use common::{Cleanup, busybox_rootfs, capspy_run, import_rootfs, required};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("capspy-kept-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The workload's own rows of `cap` with this origin.
fn rows<'a>(report: &'a Value, cap: &str, origin: &str) -> Vec<&'a Value> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["capability"] == cap && c["origin"] == origin && c["bucket"] == "app")
        .collect()
}

fn reason<'a>(report: &'a Value, cap: &str) -> &'a str {
    report["explanations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["capability"] == cap)
        .and_then(|e| e["reason"].as_str())
        .unwrap_or_else(|| panic!("no explanation for {cap}: {report:#}"))
}

#[test]
fn setpriv_raising_an_ambient_capability_needs_it() {
    let dir = scratch("setpriv");
    // As root: switch to nobody keeping NET_RAW in the inheritable and ambient sets, so the
    // shell it starts holds NET_RAW as uid 65534.
    let (out, report) = capspy_run(
        &dir.join("setpriv.json"),
        &[],
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=+net_raw",
            "--ambient-caps=+net_raw",
            "--",
            "/bin/sh",
            "-c",
            "grep -q '^CapAmb:.*2000$' /proc/self/status",
        ],
    );
    assert!(out.status.success(), "{out:?}\n{report:#}");
    let ambient = rows(&report, "NET_RAW", "ambient");
    assert_eq!(ambient.len(), 1, "{report:#}");
    assert_eq!(ambient[0]["verdict"], "granted");
    assert_eq!(ambient[0]["classified_by"], "syscall");
    assert_eq!(ambient[0]["example"]["uid"], 65534, "{report:#}");
    // Raising the inheritable set after the switch is a capset that keeps it too.
    assert_eq!(rows(&report, "NET_RAW", "capset").len(), 1, "{report:#}");
    // setpriv's capset restoring its effective set after setresuid (the whole root set, as it
    // was) is no need: only the switch itself and NET_RAW are.
    assert_eq!(
        required(&report),
        ["SETGID", "SETUID", "NET_RAW"],
        "{report:#}"
    );
    assert!(
        reason(&report, "NET_RAW").starts_with("kept across the switch to uid 65534")
            || reason(&report, "NET_RAW").starts_with("raised into the ambient set"),
        "{report:#}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn capsh_keeping_a_capability_across_setuid_needs_it() {
    let dir = scratch("capsh");
    let (out, report) = capspy_run(
        &dir.join("capsh.json"),
        &[],
        &[
            "capsh",
            "--keep=1",
            "--user=nobody",
            "--caps=cap_net_bind_service+ep",
            "--has-p=cap_net_bind_service",
        ],
    );
    assert!(out.status.success(), "{out:?}\n{report:#}");
    let kept = rows(&report, "NET_BIND_SERVICE", "capset");
    assert_eq!(kept.len(), 1, "{report:#}");
    assert_eq!(kept[0]["example"]["comm"], "capsh");
    assert!(
        required(&report).contains(&"NET_BIND_SERVICE".to_string()),
        "{report:#}"
    );
    assert!(
        reason(&report, "NET_BIND_SERVICE").starts_with("kept across the switch to uid 65534"),
        "{report:#}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An image with busybox, and this host's `capsh` and `ping` with their libraries, `ping` keeping
/// its file capabilities (`cap_net_raw=ep`, set here with the real `setcap`).
struct Image {
    name: String,
}

impl Image {
    fn build(dir: &Path) -> Self {
        let root = busybox_rootfs(dir, &["sh", "true"]);
        for bin in ["/usr/bin/ping", "/usr/sbin/capsh"] {
            copy_with_libraries(&root, Path::new(bin));
        }
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/:/bin/sh\nuser:x:1000:1000::/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            root.join("etc/group"),
            "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n",
        )
        .unwrap();
        let setcap = Command::new("setcap")
            .arg("cap_net_raw=ep")
            .arg(root.join("usr/bin/ping"))
            .output()
            .expect("setcap (libcap2-bin) is installed");
        assert!(setcap.status.success(), "{setcap:?}");
        let name = format!("capspy-test/kept:{}", std::process::id());
        import_rootfs(&root, dir, &name);
        Self { name }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.name])
            .output();
    }
}

/// Copies `bin` and the libraries `ldd` lists for it to the same paths under `root`.
fn copy_with_libraries(root: &Path, bin: &Path) {
    let ldd = Command::new("ldd").arg(bin).output().expect("ldd");
    assert!(ldd.status.success(), "{ldd:?}");
    let text = String::from_utf8_lossy(&ldd.stdout).into_owned();
    let libs = text
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')))
        .map(PathBuf::from);
    for file in std::iter::once(bin.to_path_buf()).chain(libs) {
        let dest = root.join(file.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&file, &dest).unwrap_or_else(|e| panic!("copying {}: {e}", file.display()));
    }
}

/// `docker run --rm --network none ARGS IMAGE CMD`.
fn docker_run(image: &Image, args: &[&str], cmd: &[&str]) -> Output {
    Command::new("docker")
        .args(["run", "--rm", "--network", "none"])
        .args(args)
        .arg(&image.name)
        .args(cmd)
        .output()
        .unwrap()
}

/// The printed `docker_flags`, and the same without `--cap-add CAP`.
fn flags_with_and_without(report: &Value, cap: &str) -> (Vec<String>, Vec<String>) {
    let flags: Vec<String> = report["docker_flags"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect();
    let pos = flags
        .windows(2)
        .position(|w| w[0] == "--cap-add" && w[1] == cap)
        .unwrap_or_else(|| panic!("no --cap-add {cap} in {flags:?}"));
    let mut without = flags.clone();
    without.drain(pos..pos + 2);
    (flags, without)
}

/// A container that needs a capability without making a check for it, recorded with
/// `capspy run --container -- docker run --rm --network none ARGS IMAGE CMD`.
struct Case {
    /// Names the case in failures, and its report file.
    name: &'static str,
    docker_args: &'static [&'static str],
    cmd: &'static [&'static str],
    cap: &'static str,
    /// The workload's one row of `cap` with this origin, which shows the need: its verdict, and
    /// more of its fields as (JSON pointer, value).
    origin: &'static str,
    verdict: &'static str,
    row: Vec<(&'static str, Value)>,
    /// The report's `required` when the container runs; then it also runs under the printed
    /// flags and fails without `cap`. None: the container is refused `cap` (it fails, and the
    /// report lists `cap` as refused).
    required: Option<&'static [&'static str]>,
    /// The explanation of `cap`, word for word.
    reason: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    vec![
        // iputils' ping as uid 1000: Docker lets unprivileged users open ICMP datagram sockets,
        // so ping makes no NET_RAW check; but its file capabilities make the exec itself fail
        // without NET_RAW in the bounding set.
        Case {
            name: "ping with file capabilities",
            docker_args: &["--user", "1000"],
            cmd: &["ping", "-c", "1", "-W", "2", "127.0.0.1"],
            cap: "NET_RAW",
            origin: "file_caps",
            verdict: "granted",
            row: vec![
                ("/call_path/0", "/usr/bin/ping".into()),
                ("/example/uid", 1000.into()),
            ],
            required: Some(&["NET_RAW"]),
            reason: Some(
                "needed by the file capabilities of /usr/bin/ping executed as uid 1000; without \
                 it in the bounding set the exec fails with EPERM",
            ),
        },
        // capsh starting as root, switching to nobody and keeping NET_BIND_SERVICE with capset:
        // runc's own capset (as uid 0 or 1000, with the whole default set) stays the runtime's.
        Case {
            name: "capsh keeping NET_BIND_SERVICE",
            docker_args: &[],
            cmd: &[
                "capsh",
                "--keep=1",
                "--user=nobody",
                "--caps=cap_net_bind_service+ep",
                "--has-p=cap_net_bind_service",
            ],
            cap: "NET_BIND_SERVICE",
            origin: "capset",
            verdict: "granted",
            row: Vec::new(),
            required: Some(&["SETGID", "SETUID", "NET_BIND_SERVICE"]),
            reason: None,
        },
        // Under --cap-drop ALL the same capset is refused: capspy says so.
        Case {
            name: "capsh refused NET_BIND_SERVICE",
            docker_args: &[
                "--cap-drop",
                "ALL",
                "--cap-add",
                "SETUID",
                "--cap-add",
                "SETGID",
            ],
            cmd: &[
                "capsh",
                "--keep=1",
                "--user=nobody",
                "--caps=cap_net_bind_service+ep",
            ],
            cap: "NET_BIND_SERVICE",
            origin: "capset",
            verdict: "denied",
            row: Vec::new(),
            required: None,
            reason: None,
        },
    ]
}

/// Records the case and checks what its report says.
fn record(dir: &Path, image: &Image, case: &Case) {
    let name = case.name;
    let mut docker = vec!["docker", "run", "--rm", "--network", "none"];
    docker.extend_from_slice(case.docker_args);
    docker.push(&image.name);
    docker.extend_from_slice(case.cmd);
    let report_file = dir.join(format!("{}.json", name.replace(' ', "-")));
    let (out, report) = capspy_run(&report_file, &["--container"], &docker);
    if let Some(want) = case.required {
        assert!(out.status.success(), "{name}: {out:?}\n{report:#}");
        assert_eq!(required(&report), want, "{name}: {report:#}");
        applies(image, case, &report);
    } else {
        assert!(!out.status.success(), "{name}: {out:?}");
        assert!(
            report["refused"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["capability"] == case.cap),
            "{name}: {report:#}"
        );
    }
    let found = rows(&report, case.cap, case.origin);
    assert_eq!(found.len(), 1, "{name}: {report:#}");
    assert_eq!(found[0]["verdict"], case.verdict, "{name}: {report:#}");
    for (pointer, want) in &case.row {
        assert_eq!(
            found[0].pointer(pointer),
            Some(want),
            "{name}: {pointer} in {report:#}"
        );
    }
    if let Some(want) = case.reason {
        assert_eq!(reason(&report, case.cap), want, "{name}: {report:#}");
    }
}

/// The container runs under the report's docker flags and fails without `--cap-add CAP`.
fn applies(image: &Image, case: &Case, report: &Value) {
    let name = case.name;
    let (flags, without) = flags_with_and_without(report, case.cap);
    let with_args = |flags: &[String]| -> Vec<String> {
        flags
            .iter()
            .cloned()
            .chain(case.docker_args.iter().map(|a| (*a).to_string()))
            .collect()
    };
    let strs = |v: &[String]| v.iter().map(String::as_str).collect::<Vec<_>>().join(" ");
    let works = docker_run(image, &strs_vec(&with_args(&flags)), case.cmd);
    assert!(
        works.status.success(),
        "{name}: under {}: {works:?}\n{report:#}",
        strs(&flags)
    );
    let fails = docker_run(image, &strs_vec(&with_args(&without)), case.cmd);
    assert!(
        !fails.status.success(),
        "{name}: still works without {} ({}): {fails:?}",
        case.cap,
        strs(&without)
    );
}

fn strs_vec(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn containers_get_the_capabilities_they_keep_without_a_check() {
    let dir = scratch("containers");
    let cleanup = Cleanup::new(dir.clone());
    let image = Image::build(&cleanup.dir);
    for case in &cases() {
        // Shown with a failure, whatever helper it comes from.
        eprintln!("case: {}", case.name);
        record(&dir, &image, case);
    }
    drop(image);
}
