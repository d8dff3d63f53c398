//! A workload that runs as a non-root user: `--cap-add` does not reach its effective set, and
//! the report says what does (file capabilities on the binary it saw). Real containers, the real
//! BPF program; needs root, Docker, busybox-static and setcap (libcap2-bin).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod common;

use common::{Cleanup, busybox_rootfs, import_rootfs};

const CAPSPY: &str = env!("CARGO_BIN_EXE_capspy");
const PLAIN: &str = "capspy-test/nonroot-plain:1";
const WITH_FILE_CAPS: &str = "capspy-test/nonroot-setcap:1";
const APPLETS: &[&str] = &["sh", "nc", "timeout", "sleep", "cat"];

/// `docker run` flags of the non-root workload: uid 1000, ports below 1024 privileged again.
const AS_USER: &[&str] = &[
    "--rm",
    "--network",
    "none",
    "--user",
    "1000",
    "--sysctl",
    "net.ipv4.ip_unprivileged_port_start=1024",
];

/// Listens on port 80 and answers one connection over the container's loopback; prints what the
/// listener received. Exits by itself (timeouts), with nc's status on failure.
const SERVE_ONCE: &str = "timeout 10 nc -l -p 80 > /tmp/got & sleep 1; \
     echo hello | timeout 5 nc 127.0.0.1 80; wait $! || exit 3; cat /tmp/got";

fn run_as_user(image: &str, caps: &[&str]) -> (bool, String) {
    let mut args = vec!["run"];
    args.extend(AS_USER);
    args.extend(caps);
    args.extend([image, "sh", "-c", SERVE_ONCE]);
    let out = Command::new("docker").args(&args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The plain image, and one whose busybox has `cap_net_bind_service+ep`, as the Dockerfile line
/// capspy prints would make it (tar keeps the xattr, docker import keeps it in the layer).
fn make_images(dir: &Path) {
    let root = busybox_rootfs(dir, APPLETS);
    // uid 1000 writes what it received there.
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    import_rootfs(&root, dir, PLAIN);
    let setcap = Command::new("setcap")
        .arg("cap_net_bind_service+ep")
        .arg(root.join("bin/busybox"))
        .status()
        .expect("setcap (libcap2-bin) installed");
    assert!(setcap.success());
    import_rootfs(&root, dir, WITH_FILE_CAPS);
}

#[test]
fn a_non_root_bind_gets_file_capability_advice_that_works() {
    let dir = std::env::temp_dir().join(format!("capspy-test-nonroot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup::new(dir.clone());
    make_images(&dir);

    // Profile it as the issue did: nc as uid 1000 is refused port 80 and exits.
    let report_file = dir.join("report.json");
    let mut argv = vec!["run", "--container", "--format", "json", "--output"];
    argv.push(report_file.to_str().unwrap());
    argv.extend(["--", "docker", "run"]);
    argv.extend(AS_USER);
    argv.extend([PLAIN, "nc", "-l", "-p", "80"]);
    let out = Command::new(CAPSPY).args(&argv).output().unwrap();
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap())
        .unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(report["required"], serde_json::json!([]), "{report:#}");
    let advice = report["non_root"].as_array().unwrap();
    assert_eq!(advice.len(), 1, "{report:#}");
    assert_eq!(advice[0]["capability"], "NET_BIND_SERVICE");
    assert_eq!(advice[0]["process"]["uid"], 1000);
    assert_eq!(
        advice[0]["dockerfile"], "RUN setcap cap_net_bind_service+ep /bin/busybox",
        "{report:#}"
    );
    // The text report and the docker format say it too.
    let text = Command::new(CAPSPY)
        .args(["run", "--container", "--", "docker", "run"])
        .args(AS_USER)
        .args([PLAIN, "nc", "-l", "-p", "80"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&text.stderr);
    assert!(
        stderr.contains("Dockerfile: RUN setcap cap_net_bind_service+ep /bin/busybox")
            && stderr.contains(
                "With file capabilities, apply: --cap-drop ALL --cap-add NET_BIND_SERVICE"
            ),
        "{stderr}"
    );

    // The advice works: with the file capability and --cap-add the bind succeeds as uid 1000;
    // without either it fails (so the workload really needs both).
    let drop_all = ["--cap-drop", "ALL"];
    let add = ["--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE"];
    let (ok, output) = run_as_user(WITH_FILE_CAPS, &add);
    assert!(ok && output.contains("hello"), "{output}");
    let (ok, output) = run_as_user(WITH_FILE_CAPS, &drop_all);
    assert!(
        !ok,
        "without --cap-add the file capability must not suffice: {output}"
    );
    let (ok, output) = run_as_user(PLAIN, &add);
    assert!(
        !ok,
        "--cap-add alone must not reach a non-root process: {output}"
    );
}
