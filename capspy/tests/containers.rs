//! The recording daemon against a real Docker engine: real containers, real cgroups, the real
//! BPF program. Needs root and `dockerd`/`docker` installed (CI installs them); the engine is
//! started here if none is running, and then stopped here.
//!
//! One test function runs the scenarios in sequence: they share one engine, one image and one
//! daemon, and containers must not overlap with another test's in time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

mod common;

use common::{Cleanup, Daemon, capspy_on as capspy, docker, profile, required};

const CAPSPY: &str = env!("CARGO_BIN_EXE_capspy");
const IMAGE: &str = common::BUSYBOX;

/// The profile once `ready` holds, or after 30 s whatever it is (the caller's assertions then
/// say what is missing): the daemon stores a container's checks within a sweep or two, later
/// when the machine is loaded.
fn profile_when(store: &Path, name: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let start = std::time::Instant::now();
    loop {
        let out = capspy(store, &["profile", name, "--format", "json"]);
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            if ready(&v) || start.elapsed() > Duration::from_secs(30) {
                return v;
            }
        } else if start.elapsed() > Duration::from_secs(30) {
            return profile(store, name);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn count_of(report: &Value, cap: &str) -> u64 {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["capability"] == cap && c["bucket"] == "app")
        .map(|c| c["count"].as_u64().unwrap())
        .sum()
}

fn run_container(cleanup: &mut Cleanup, name: &str, script: &str) {
    cleanup.run_detached(IMAGE, name, script);
}

fn wait_exited(names: &[&str]) {
    for name in names {
        docker(&["wait", name]);
    }
}

/// What the scenarios share.
struct Ctx {
    cleanup: Cleanup,
    dir: PathBuf,
    store: PathBuf,
    tag: String,
    ping: String,
    chown: String,
    sleep: String,
    reader: String,
}

#[test]
fn daemon_profiles_real_containers() {
    let dir = std::env::temp_dir().join(format!("capspy-containers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cleanup = Cleanup::new(dir.clone());
    common::ensure_busybox(&dir);
    // Letters only: a trailing -N is read as a replica index.
    let tag: String = std::process::id()
        .to_string()
        .bytes()
        .map(|d| char::from(b'a' + (d - b'0')))
        .collect();
    let mut t = Ctx {
        cleanup,
        store: dir.join("store/capspy.db"),
        dir,
        ping: format!("capspy-t-ping-{tag}"),
        chown: format!("capspy-t-chown-{tag}"),
        sleep: format!("capspy-t-sleep-{tag}"),
        reader: format!("capspy-t-reader-{tag}"),
        tag,
    };

    let daemon = Daemon::record(&t.store);
    three_containers_three_profiles(&mut t);
    a_container_gone_before_the_daemon_looks_keeps_its_granted_set(&mut t, &daemon);
    ls_shows_granted_against_used(&t);
    ls_keeps_used_apart_from_required(&mut t);
    profile_verify_reruns_the_workload(&t);
    restarts_and_replicas_merge(&mut t);
    let daemon = kill_and_restart_keeps_counts(&t, daemon);
    assert!(daemon.stop().success());
    run_container_profiles_what_the_command_started(&mut t);
}

fn three_containers_three_profiles(t: &mut Ctx) {
    // Three containers at once: no cross-attribution.
    run_container(&mut t.cleanup, &t.ping, "ping -c 2 127.0.0.1 && sleep 1");
    run_container(
        &mut t.cleanup,
        &t.chown,
        "touch /tmp/f && chown 1234 /tmp/f && sleep 1",
    );
    run_container(&mut t.cleanup, &t.sleep, "sleep 2");
    wait_exited(&[&t.ping, &t.chown, &t.sleep]);

    let p = profile_when(&t.store, &t.ping, |v| !required(v).is_empty());
    assert_eq!(required(&p), ["NET_RAW"], "{p:#}");
    let c = profile_when(&t.store, &t.chown, |v| !required(v).is_empty());
    assert_eq!(required(&c), ["CHOWN"], "{c:#}");
    let s = profile(&t.store, &t.sleep);
    assert!(required(&s).is_empty(), "{s:#}");
    // runc's own setup checks are recorded, in the runtime bucket only.
    let runtime: Vec<&Value> = s["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["bucket"] == "runtime")
        .collect();
    assert!(!runtime.is_empty(), "no runtime checks recorded: {s:#}");
    assert!(
        runtime
            .iter()
            .all(|c| c["example"]["comm"].as_str().unwrap().starts_with("runc")),
        "{s:#}"
    );
}

/// A container whose processes exited before the daemon first looked at its cgroup (the daemon
/// is held with SIGSTOP meanwhile, so this is the race a loaded host loses, made certain): what
/// it was granted comes from the engine's record, so the profile still says what can be dropped.
fn a_container_gone_before_the_daemon_looks_keeps_its_granted_set(t: &mut Ctx, daemon: &Daemon) {
    let name = format!("capspy-t-brief-{}", t.tag);
    t.cleanup.containers.push(name.clone());
    daemon.signal(libc::SIGSTOP);
    let out = Command::new("docker")
        .args(["run", "--network", "none", "--name", &name])
        .args([
            "--cap-drop",
            "ALL",
            "--cap-add",
            "NET_RAW",
            "--cap-add",
            "CHOWN",
        ])
        .args([IMAGE, "ping", "-c", "1", "127.0.0.1"])
        .output()
        .unwrap();
    daemon.signal(libc::SIGCONT);
    assert!(out.status.success(), "{out:?}");
    let p = profile_when(&t.store, &name, |v| {
        !required(v).is_empty() && !v["granted"].is_null()
    });
    assert_eq!(required(&p), ["NET_RAW"], "{p:#}");
    assert_eq!(
        p["granted"],
        serde_json::json!(["CHOWN", "NET_RAW"]),
        "{p:#}"
    );
    assert_eq!(p["droppable"], serde_json::json!(["CHOWN"]), "{p:#}");
}

fn ls_shows_granted_against_used(t: &Ctx) {
    // ls: the Docker default set (14 capabilities), by name, against the used set.
    let out = capspy(&t.store, &["ls", "--format", "json"]);
    assert!(out.status.success(), "{out:?}");
    let lines: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ping_line = lines
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            l["kind"] == "workload" && l["workload"].as_str().unwrap().contains(t.ping.as_str())
        })
        .unwrap_or_else(|| panic!("no workload line for {}: {lines:#}", t.ping));
    let granted: Vec<&str> = ping_line["granted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(granted.len(), 14, "{ping_line:#}");
    assert!(
        granted.contains(&"NET_RAW") && granted.contains(&"CHOWN"),
        "{granted:?}"
    );
    assert_eq!(ping_line["used"], serde_json::json!(["NET_RAW"]));
    assert_eq!(ping_line["droppable"], 13);
    let text = capspy(&t.store, &["ls"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("used: NET_RAW") && text.contains("can drop: 13"),
        "{text}"
    );
}

/// A script that reads a file its mode denies root: what it used is DAC_OVERRIDE (granted after
/// a denied DAC_READ_SEARCH), what it needs is DAC_READ_SEARCH. On tmpfs (/dev/shm), so no
/// overlayfs copy-up adds checks of its own.
const READER: &str = "umask 777; touch /dev/shm/f; cat /dev/shm/f && sleep 1";

fn ls_keeps_used_apart_from_required(t: &mut Ctx) {
    run_container(&mut t.cleanup, &t.reader, READER);
    wait_exited(&[&t.reader]);
    std::thread::sleep(Duration::from_millis(800));
    let out = capspy(&t.store, &["ls", "--format", "json"]);
    assert!(out.status.success(), "{out:?}");
    let lines: Value = serde_json::from_slice(&out.stdout).unwrap();
    let line = lines
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            l["kind"] == "workload" && l["workload"].as_str().unwrap().contains(t.reader.as_str())
        })
        .unwrap_or_else(|| panic!("no workload line for {}: {lines:#}", t.reader));
    assert_eq!(
        line["used"],
        serde_json::json!(["DAC_OVERRIDE"]),
        "{line:#}"
    );
    assert_eq!(
        line["required"],
        serde_json::json!(["DAC_READ_SEARCH"]),
        "{line:#}"
    );
    let text = capspy(&t.store, &["ls"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("used: DAC_OVERRIDE\n    required: DAC_READ_SEARCH\n"),
        "{text}"
    );
}

/// `capspy profile NAME --verify -- docker run ...`: the stored profile, re-run as written and
/// under its flags, each removed: DAC_READ_SEARCH alone is proven needed.
fn profile_verify_reruns_the_workload(t: &Ctx) {
    let out = Command::new(CAPSPY)
        .args([
            "profile",
            &t.reader,
            "--format",
            "json",
            "--verify",
            "--timeout",
            "30s",
        ])
        .arg("--store")
        .arg(&t.store)
        .args(["--", "docker", "run", "--rm", "--network", "none", IMAGE])
        .args(["sh", "-c", READER])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(required(&report), ["DAC_READ_SEARCH"], "{report:#}");
    let v = &report["verification"];
    // As written (what "works" means), the profile, then without DAC_READ_SEARCH.
    assert_eq!(v["runs"], 3, "{v:#}");
    assert_eq!(
        v["working"],
        serde_json::json!(["DAC_READ_SEARCH"]),
        "{v:#}"
    );
    assert_eq!(v["dropped"], serde_json::json!([]), "{v:#}");
}

fn restarts_and_replicas_merge(t: &mut Ctx) {
    // A restart under the same name, and a second replica, merge into one workload.
    docker(&["rm", &t.ping]);
    run_container(&mut t.cleanup, &t.ping, "ping -c 1 127.0.0.1");
    let replica = format!("{}-2", t.ping);
    run_container(&mut t.cleanup, &replica, "ping -c 1 127.0.0.1");
    wait_exited(&[&t.ping, &replica]);
    let merged = profile_when(&t.store, &t.ping, |v| {
        v["subject"]["containers"].as_array().map(Vec::len) == Some(3)
            && count_of(v, "NET_RAW") >= 3
    });
    assert_eq!(merged["subject"]["kind"], "workload", "{merged:#}");
    assert_eq!(
        merged["subject"]["containers"].as_array().unwrap().len(),
        3,
        "{merged:#}"
    );
    assert_eq!(required(&merged), ["NET_RAW"]);
}

fn kill_and_restart_keeps_counts(t: &Ctx, daemon: Daemon) -> Daemon {
    // SIGKILL and restart: what was stored is neither lost nor counted twice.
    let before = count_of(
        &profile_when(&t.store, &t.ping, |v| count_of(v, "NET_RAW") >= 3),
        "NET_RAW",
    );
    assert!(before >= 3, "{before}");
    daemon.kill();
    let daemon = Daemon::record(&t.store);
    std::thread::sleep(Duration::from_millis(600));
    let after = count_of(&profile(&t.store, &t.ping), "NET_RAW");
    assert_eq!(before, after);
    daemon
}

fn run_container_profiles_what_the_command_started(t: &mut Ctx) {
    // One container from start to exit, in one command: its profile, not the docker client's.
    let (out, run) = common::capspy_run(
        &t.dir.join("run.json"),
        &["--container"],
        &[
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            "ping -c 1 127.0.0.1 >/dev/null && touch /tmp/x && chown 7 /tmp/x",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(run["subject"]["kind"], "container", "{run:#}");
    assert_eq!(required(&run), ["CHOWN", "NET_RAW"], "{run:#}");

    // A container that lives a few milliseconds: what it was granted is the engine's record
    // (its process is usually gone before capspy could read it).
    let out = Command::new(CAPSPY)
        .args(["run", "--container", "--format", "json", "--output"])
        .arg(t.dir.join("brief.json"))
        .args(["--", "docker", "run", "--rm", "--network", "none"])
        .args(["--cap-drop", "ALL", "--cap-add", "NET_RAW", IMAGE])
        .args(["ping", "-c", "1", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let brief: Value =
        serde_json::from_str(&std::fs::read_to_string(t.dir.join("brief.json")).unwrap()).unwrap();
    assert_eq!(required(&brief), ["NET_RAW"], "{brief:#}");
    assert_eq!(
        brief["granted"],
        serde_json::json!(["NET_RAW"]),
        "{brief:#}"
    );
    assert_eq!(brief["droppable"], serde_json::json!([]), "{brief:#}");

    // A container someone else starts meanwhile is not the command's (capspy has the client
    // write the id it creates, with --cidfile).
    let own = format!("capspy-t-own-{}", t.tag);
    let outsider = format!("capspy-t-outsider-{}", t.tag);
    t.cleanup.containers.push(own.clone());
    let mut traced = Command::new(CAPSPY)
        .args(["run", "--container", "--format", "json", "--output"])
        .arg(t.dir.join("own.json"))
        .args([
            "--",
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--name",
            &own,
        ])
        .args([IMAGE, "sh", "-c", "sleep 2; touch /tmp/x && chown 7 /tmp/x"])
        .spawn()
        .unwrap();
    // Start the outsider only once the traced container runs, so it is new to capspy too.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !Command::new("docker")
        .args(["inspect", "--format", "{{.State.Running}}", &own])
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"true"))
    {
        assert!(std::time::Instant::now() < deadline, "{own} never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    run_container(&mut t.cleanup, &outsider, "ping -c 1 127.0.0.1");
    assert!(traced.wait().unwrap().success());
    let own_run: Value =
        serde_json::from_str(&std::fs::read_to_string(t.dir.join("own.json")).unwrap()).unwrap();
    assert_eq!(own_run["subject"]["kind"], "container", "{own_run:#}");
    assert_eq!(own_run["subject"]["name"], own.as_str(), "{own_run:#}");
    assert_eq!(required(&own_run), ["CHOWN"], "{own_run:#}");
    wait_exited(&[&outsider]);

    // `docker run -d` returns at once: capspy waits for the container itself.
    let detached = format!("capspy-t-detached-{}", t.tag);
    t.cleanup.containers.push(detached.clone());
    let out = Command::new(CAPSPY)
        .args(["run", "--container", "--format", "docker", "--"])
        .args([
            "docker",
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            &detached,
            IMAGE,
        ])
        .args(["sh", "-c", "sleep 1; ping -c 1 127.0.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).ends_with("--cap-drop ALL --cap-add NET_RAW\n"),
        "{out:?}"
    );
}
