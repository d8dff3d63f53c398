//! Capabilities a workload needs without any `cap_capable` check: kept across a switch from root
//! with `capset(2)`, raised into the ambient set, or given by a file's capabilities at exec. Real
//! programs (util-linux `setpriv`, libcap's `capsh`, iputils' `ping` with `cap_net_raw=ep`), the
//! real BPF program, and for the container cases a real Docker engine with an image imported from
//! this host's own binaries, file capabilities included. Needs root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod common;

use common::{Cleanup, busybox_rootfs, import_rootfs, required};

const CAPSPY: &str = env!("CARGO_BIN_EXE_capspy");

/// `capspy run --format json --output FILE EXTRA -- CMD`: its output and the report.
fn capspy_run(dir: &Path, name: &str, extra: &[&str], cmd: &[&str]) -> (Output, Value) {
    let report = dir.join(format!("{name}.json"));
    let out = Command::new(CAPSPY)
        .args(["run", "--format", "json", "--output"])
        .arg(&report)
        .args(extra)
        .arg("--")
        .args(cmd)
        .output()
        .expect("capspy runs");
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, serde_json::from_str(&text).expect("report is JSON"))
}

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
        &dir,
        "setpriv",
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
        &dir,
        "capsh",
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

/// Records `docker run ARGS IMAGE CMD` under Docker's defaults, then checks the workload runs
/// under the printed flags and fails without `cap`. Returns the report.
fn record_and_apply(dir: &Path, image: &Image, args: &[&str], cmd: &[&str], cap: &str) -> Value {
    let mut docker = vec!["docker", "run", "--rm", "--network", "none"];
    docker.extend_from_slice(args);
    docker.push(&image.name);
    docker.extend_from_slice(cmd);
    let (out, report) = capspy_run(dir, cap, &["--container"], &docker);
    assert!(out.status.success(), "{out:?}\n{report:#}");
    let (flags, without) = flags_with_and_without(&report, cap);
    let with_args = |flags: &[String]| -> Vec<String> {
        flags
            .iter()
            .cloned()
            .chain(args.iter().map(|a| (*a).to_string()))
            .collect()
    };
    let strs = |v: &[String]| v.iter().map(String::as_str).collect::<Vec<_>>().join(" ");
    let works = docker_run(image, &strs_vec(&with_args(&flags)), cmd);
    assert!(
        works.status.success(),
        "under {}: {works:?}\n{report:#}",
        strs(&flags)
    );
    let fails = docker_run(image, &strs_vec(&with_args(&without)), cmd);
    assert!(
        !fails.status.success(),
        "still works without {cap} ({}): {fails:?}",
        strs(&without)
    );
    report
}

fn strs_vec(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn containers_get_the_capabilities_they_keep_without_a_check() {
    let dir = scratch("containers");
    let cleanup = Cleanup::new(dir.clone());
    let image = Image::build(&cleanup.dir);

    // iputils' ping as uid 1000: Docker lets unprivileged users open ICMP datagram sockets, so
    // ping makes no NET_RAW check; but its file capabilities make the exec itself fail without
    // NET_RAW in the bounding set.
    let ping = record_and_apply(
        &dir,
        &image,
        &["--user", "1000"],
        &["ping", "-c", "1", "-W", "2", "127.0.0.1"],
        "NET_RAW",
    );
    let file_caps = rows(&ping, "NET_RAW", "file_caps");
    assert_eq!(file_caps.len(), 1, "{ping:#}");
    assert_eq!(file_caps[0]["call_path"][0], "/usr/bin/ping", "{ping:#}");
    assert_eq!(file_caps[0]["example"]["uid"], 1000, "{ping:#}");
    assert_eq!(
        reason(&ping, "NET_RAW"),
        "needed by the file capabilities of /usr/bin/ping executed as uid 1000; without it in \
         the bounding set the exec fails with EPERM",
        "{ping:#}"
    );
    assert_eq!(required(&ping), ["NET_RAW"], "{ping:#}");

    // capsh starting as root, switching to nobody and keeping NET_BIND_SERVICE with capset:
    // runc's own capset (as uid 0 or 1000, with the whole default set) stays the runtime's.
    let capsh = record_and_apply(
        &dir,
        &image,
        &[],
        &[
            "capsh",
            "--keep=1",
            "--user=nobody",
            "--caps=cap_net_bind_service+ep",
            "--has-p=cap_net_bind_service",
        ],
        "NET_BIND_SERVICE",
    );
    assert_eq!(
        required(&capsh),
        ["SETGID", "SETUID", "NET_BIND_SERVICE"],
        "{capsh:#}"
    );
    assert_eq!(
        rows(&capsh, "NET_BIND_SERVICE", "capset").len(),
        1,
        "{capsh:#}"
    );

    // Under --cap-drop ALL the same capset is refused: capspy says so.
    let (out, refused) = capspy_run(
        &dir,
        "refused",
        &["--container"],
        &[
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--cap-drop",
            "ALL",
            "--cap-add",
            "SETUID",
            "--cap-add",
            "SETGID",
            &image.name,
            "capsh",
            "--keep=1",
            "--user=nobody",
            "--caps=cap_net_bind_service+ep",
        ],
    );
    assert!(!out.status.success(), "{out:?}");
    let denied: Vec<&Value> = rows(&refused, "NET_BIND_SERVICE", "capset")
        .into_iter()
        .filter(|r| r["verdict"] == "denied")
        .collect();
    assert_eq!(denied.len(), 1, "{refused:#}");
    assert!(
        refused["refused"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["capability"] == "NET_BIND_SERVICE"),
        "{refused:#}"
    );
    drop(image);
}
