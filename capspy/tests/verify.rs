//! `--verify` and `capspy verify` against real containers: the runs re-start real busybox
//! containers under real Docker, and each suggested command line is run as printed. Needs root,
//! busybox-static and Docker; the engine is started here if none runs, and stopped here.
//!
//! One test function runs the scenarios in sequence: they share one image, and each verify run
//! starts several containers one after another.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod common;

use common::{Cleanup, busybox_rootfs, import_rootfs, strings};

const CAPSPY: &str = env!("CARGO_BIN_EXE_capspy");

struct Ctx {
    cleanup: Cleanup,
    image: String,
}

impl Ctx {
    fn dir(&self) -> &Path {
        &self.cleanup.dir
    }

    /// `docker run --rm --network none IMAGE CMD...` as words.
    fn docker_run(&self, args: &[&str], cmd: &[&str]) -> Vec<String> {
        let mut words: Vec<String> = ["docker", "run", "--rm", "--network", "none"]
            .map(String::from)
            .to_vec();
        words.extend(args.iter().map(|s| (*s).to_string()));
        words.push(self.image.clone());
        words.extend(cmd.iter().map(|s| (*s).to_string()));
        words
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

fn capspy(args: &[&str], command: &[String]) -> Output {
    Command::new(CAPSPY)
        .args(args)
        .arg("--")
        .args(command)
        .output()
        .unwrap()
}

/// Runs a command line capspy printed, as a shell reads it, with this capspy on the PATH.
fn printed(line: &str) -> Output {
    let bin = PathBuf::from(CAPSPY);
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("sh")
        .args(["-c", line])
        .env("PATH", path)
        .output()
        .unwrap()
}

fn container_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["container", "inspect", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn verify_runs_real_containers() {
    let dir = std::env::temp_dir().join(format!("capspy-verify-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cleanup = Cleanup::new(dir.clone());
    let root = busybox_rootfs(
        &dir,
        &["sh", "ping", "chown", "touch", "sleep", "cat", "echo"],
    );
    let image = format!("capspy-verify-test/busybox:{}", std::process::id());
    import_rootfs(&root, &dir, &image);
    let t = Ctx { cleanup, image };

    run_verify_keeps_only_what_removal_proved(&t);
    report_on_standard_output_alone(&t);
    a_container_that_never_started_has_no_profile(&t);
    a_failing_profile_is_completed_by_bisection(&t);
}

/// `run --container --verify`: CHOWN is granted and used, but the script ignores chown's
/// failure, so the re-runs drop it; NET_RAW stays. The container's sets fill `granted`.
fn run_verify_keeps_only_what_removal_proved(t: &Ctx) {
    let cmd = t.docker_run(
        &[],
        &[
            "sh",
            "-c",
            "touch /tmp/f; chown 7 /tmp/f 2>/dev/null; ping -c 1 127.0.0.1 >/dev/null && sleep 1",
        ],
    );
    let out = capspy(
        &["run", "--container", "--format", "json", "--output", "-"],
        &cmd,
    );
    assert!(out.status.success(), "{}", show(&out));
    let recorded: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&out)));
    let required = strings(&recorded["required"]);
    assert!(
        required.contains(&"CHOWN".into()) && required.contains(&"NET_RAW".into()),
        "{recorded:#}"
    );
    // CHOWN is unproven: the report prints the command that proves it (run below, as printed).
    assert!(
        recorded["unproven"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["capability"] == "CHOWN"),
        "{recorded:#}"
    );
    let prove = recorded["verify_command"]
        .as_str()
        .unwrap_or_else(|| panic!("no verify_command: {recorded:#}"))
        .to_string();
    assert!(
        prove.starts_with("capspy run --container --verify -- docker run --rm "),
        "{prove}"
    );
    // What the container held, read from its processes while it ran: Docker's 14.
    assert_eq!(
        recorded["granted"].as_array().map(Vec::len),
        Some(14),
        "{recorded:#}"
    );
    assert_eq!(
        recorded["droppable"].as_array().map(Vec::len),
        Some(12),
        "{recorded:#}"
    );

    let out = capspy(
        &[
            "run",
            "--container",
            "--verify",
            "--timeout",
            "30s",
            "--format",
            "json",
            "--output",
            "-",
        ],
        &cmd,
    );
    assert!(out.status.success(), "{}", show(&out));
    let verified: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&out)));
    assert_eq!(strings(&verified["required"]), ["NET_RAW"], "{verified:#}");
    assert_eq!(
        verified["docker_flags"], "--cap-drop ALL --cap-add NET_RAW",
        "{verified:#}"
    );
    let v = &verified["verification"];
    assert_eq!(v["working"], serde_json::json!(["NET_RAW"]), "{v:#}");
    let chown = v["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["capability"] == "CHOWN")
        .unwrap_or_else(|| panic!("CHOWN not dropped: {v:#}"));
    assert!(
        chown["reason"]
            .as_str()
            .unwrap()
            .contains("passed without it"),
        "{v:#}"
    );
    // The profile, then each recorded capability removed in turn (CHOWN: works, kept out;
    // NET_RAW: breaks). The recording can see more (an overlayfs copy-up's SYS_ADMIN, on
    // some runs): verify drops those too.
    assert_eq!(
        v["runs"].as_u64(),
        Some(1 + v["dropped"].as_array().unwrap().len() as u64 + 1),
        "{v:#}"
    );
    assert_eq!(strings(&verified["droppable"]).len(), 13, "{verified:#}");

    // The recorded report's command, run as printed: its text report says which were dropped
    // and why.
    let out = printed(&prove);
    assert!(out.status.success(), "`{prove}`: {}", show(&out));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("dropped CHOWN: the workload passed without it")
            && text.contains("Required: NET_RAW")
            && text.ends_with("Apply: --cap-drop ALL --cap-add NET_RAW\n"),
        "{}",
        show(&out)
    );
}

/// `--output -`: the report alone on standard output, the workload's output on standard error.
fn report_on_standard_output_alone(t: &Ctx) {
    let cmd = t.docker_run(
        &[],
        &["sh", "-c", "echo workload-says-hi; ping -c 1 127.0.0.1"],
    );
    let out = capspy(
        &["run", "--container", "--format", "docker", "--output", "-"],
        &cmd,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "--cap-drop ALL --cap-add NET_RAW\n",
        "{}",
        show(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("workload-says-hi"),
        "{}",
        show(&out)
    );
}

/// `docker run` exits with 125 before the entrypoint runs: no profile, a non-zero status.
fn a_container_that_never_started_has_no_profile(t: &Ctx) {
    // --verify refuses, before anything runs, a command it could not run twice.
    let name = format!("capspy-verify-named-{}", std::process::id());
    let named = [
        "docker",
        "run",
        "--network",
        "none",
        "--name",
        &name,
        &t.image,
        "true",
    ]
    .map(String::from);
    let out = capspy(&["run", "--container", "--verify"], &named);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("add --rm"),
        "{}",
        show(&out)
    );
    assert!(!container_exists(&name), "{name} was started");

    for (what, cmd) in [
        (
            "a user the image lacks",
            t.docker_run(&["--user", "nosuchuser"], &["true"]),
        ),
        (
            "no such image",
            vec![
                "docker".into(),
                "run".into(),
                "--rm".into(),
                "--pull".into(),
                "never".into(),
                format!("{}-missing", t.image),
                "true".into(),
            ],
        ),
    ] {
        let out = capspy(&["run", "--container"], &cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{what}: {}", show(&out));
        assert!(
            stderr.contains("Nothing ran, so there is no profile"),
            "{what}: {stderr}"
        );
        assert!(!stderr.contains("Apply:"), "{what}: {stderr}");
    }
}

/// `capspy verify` of a profile that lacks NET_RAW finds it by bisecting Docker's default set,
/// names the refusal in its excerpt, and suggests a command that runs as printed.
fn a_failing_profile_is_completed_by_bisection(t: &Ctx) {
    // The refusal is not the last line: the script says more after it.
    let cmd = t.docker_run(
        &[],
        &[
            "sh",
            "-c",
            "echo starting; ping -c 1 127.0.0.1 || { echo cleaning up >&2; exit 1; }",
        ],
    );
    let verify = [
        "verify",
        "--no-caps",
        "--expect-exit",
        "0",
        "--timeout",
        "30s",
    ];
    let result = t.dir().join("bisect.json");
    let json = [
        &verify[..],
        &["--format", "json", "--output", result.to_str().unwrap()],
    ]
    .concat();
    let out = capspy(&json, &cmd);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    assert_eq!(r["works"], false, "{r:#}");
    assert_eq!(strings(&r["missing"]), ["NET_RAW"], "{r:#}");
    assert_eq!(r["working"], serde_json::json!(["NET_RAW"]), "{r:#}");
    let runs = r["runs"].as_array().unwrap();
    let searches = runs.iter().filter(|x| x["run"] == "search").count();
    assert!(searches <= 5, "{searches} searches for one of 14: {r:#}");
    // The excerpt is ping's refusal, not the script's last line.
    let profile_run = runs.iter().find(|x| x["run"] == "profile").unwrap();
    let why = profile_run["why"].as_str().unwrap().to_ascii_lowercase();
    assert!(
        why.contains("permission denied") || why.contains("not permitted"),
        "{why}"
    );
    assert!(!why.contains("cleaning"), "{why}");

    // The text output's suggested command, run as printed by a shell (capspy on its PATH).
    let out = capspy(&verify, &cmd);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("Apply: --cap-drop ALL --cap-add NET_RAW"),
        "{text}"
    );
    let next = text
        .lines()
        .find_map(|l| l.strip_prefix("Next, to check that each is needed: "))
        .unwrap_or_else(|| panic!("no Next line: {text}"));
    assert!(next.starts_with("capspy verify "), "{next}");
    let out = printed(next);
    assert_eq!(out.status.code(), Some(0), "`{next}`: {}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("The profile works and is minimal"),
        "`{next}`: {}",
        show(&out)
    );
}
