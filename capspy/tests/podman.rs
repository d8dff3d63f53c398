//! Rootful podman (Debian's package) through its Docker-compatible API: `capspy record` names
//! its containers as it names Docker's, and `capspy profile NAME` finds them. Needs root.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

mod common;

use common::engines::PodmanService;
use common::{Daemon, strings};

const CAPSPY: &str = env!("CARGO_BIN_EXE_capspy");
const IMAGE: &str = "localhost/capspy-test/podman-busybox:1";

fn podman(args: &[&str]) -> Output {
    let out = Command::new("podman")
        .args(args)
        .output()
        .expect("podman is installed");
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The test image in podman's own storage, from busybox-static.
fn ensure_image(dir: &Path) {
    let exists = Command::new("podman")
        .args(["image", "exists", IMAGE])
        .status()
        .is_ok_and(|s| s.success());
    if exists {
        return;
    }
    let root = common::busybox_rootfs(dir, &["sh", "ping", "sleep"]);
    let tarball = common::rootfs_tarball(&root, dir);
    podman(&[
        "import",
        "--change",
        "ENV PATH=/bin",
        tarball.to_str().unwrap(),
        IMAGE,
    ]);
}

/// Removes the test's containers by name, and its folder, even when an assertion fails.
struct Cleanup {
    names: Vec<String>,
    dir: std::path::PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("podman").args(["rm", "-f", name]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn podman_containers_are_named_like_dockers() {
    let dir = std::env::temp_dir().join(format!("capspy-podman-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tag = common::letters_tag();
    let name = format!("capspy-pm-{tag}");
    let mut cleanup = Cleanup {
        names: Vec::new(),
        dir: dir.clone(),
    };
    ensure_image(&dir);
    let service = PodmanService::start(&dir);
    let store = dir.join("capspy.db");
    let daemon = Daemon::record_with(
        &store,
        &["--podman-socket", service.socket.to_str().unwrap()],
    );
    // Replicas by hand: a numbered second one merges with the first. The daemon is held
    // meanwhile, so both have exited before it first looks: what they were granted must come
    // from podman's record, not from their processes.
    daemon.signal(libc::SIGSTOP);
    for replica in [name.clone(), format!("{name}-2")] {
        cleanup.names.push(replica.clone());
        podman(&[
            "run",
            "--name",
            &replica,
            "--network",
            "none",
            // podman raises RLIMIT_NOFILE and RLIMIT_NPROC by default, which needs
            // CAP_SYS_RESOURCE (this host's bounding set lacks it).
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            // podman's default set has no NET_RAW.
            "--cap-add",
            "NET_RAW",
            IMAGE,
            "sh",
            "-c",
            "ping -c 1 127.0.0.1 >/dev/null",
        ]);
    }
    daemon.signal(libc::SIGCONT);
    std::thread::sleep(Duration::from_millis(800));
    assert!(daemon.stop().success());

    let profile = |target: &str| -> serde_json::Value {
        let out = Command::new(CAPSPY)
            .args(["profile", target, "--format", "json", "--store"])
            .arg(&store)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // By its name, as a Docker container: podman's name, image and workload.
    let key = format!("image:{IMAGE}/{name}");
    let one = profile(&name);
    assert_eq!(one["subject"]["kind"], "container", "{one:#}");
    assert_eq!(one["subject"]["name"], name.as_str());
    assert_eq!(one["subject"]["image"], IMAGE);
    assert_eq!(one["subject"]["workload"], key.as_str());
    assert_eq!(strings(&one["required"]), ["NET_RAW"], "{one:#}");
    // What podman itself says it granted (its defaults from containers.conf, plus NET_RAW).
    let inspect: serde_json::Value =
        serde_json::from_slice(&podman(&["inspect", &name]).stdout).unwrap();
    let mut granted: Vec<String> = ["BoundingCaps", "EffectiveCaps"]
        .iter()
        .flat_map(|k| strings(&inspect[0][*k]))
        .map(|c| c.trim_start_matches("CAP_").to_owned())
        .collect();
    granted.sort();
    granted.dedup();
    assert!(granted.contains(&"NET_RAW".to_owned()), "{inspect:#}");
    let mut stored = strings(&one["granted"]);
    stored.sort();
    assert_eq!(stored, granted, "{one:#}");
    assert!(
        !strings(&one["droppable"]).contains(&"NET_RAW".to_owned()),
        "{one:#}"
    );
    let both = profile(&key);
    assert_eq!(strings(&both["subject"]["containers"]).len(), 2, "{both:#}");
    assert_eq!(strings(&both["required"]), ["NET_RAW"], "{both:#}");
    let ls = Command::new(CAPSPY)
        .args(["ls", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(
        text.contains(&format!("workload image:{IMAGE}/{name}  image={IMAGE}")),
        "{text}"
    );
    assert!(
        !String::from_utf8_lossy(&ls.stderr).contains("podman container"),
        "{ls:?}"
    );
}
