//! The guide's table of common container types (../shared/reference/capability-drop-practice.txt),
//! reproduced with real containers: each workload is a small static C program the test builds
//! (tests/workloads/*.c) or busybox, in an image made with `docker import`. For each row: record
//! it with `capspy run --container`, take the docker flags from the report, and check with
//! `capspy verify --minimal` that the workload succeeds under exactly those flags and fails with
//! each one removed. Needs root, gcc (static glibc), busybox-static and Docker; the engine is
//! started here if none runs, and stopped here. Run with `--nocapture` to see the observed table.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use serde_json::Value;

mod common;

use common::{Engine, busybox_rootfs, capspy_run, import_rootfs, strings};

const CAPSPY: &str = env!("CARGO_BIN_EXE_capspy");
const WORKLOADS: &[&str] = &["tcpserve", "icmpdgram", "klogread", "pktcap", "modload"];

/// What the test started, stopped by id or pid even when an assertion fails.
struct Env {
    image_id: Option<String>,
    image: String,
    dir: PathBuf,
    /// Dropped after the containers and the image are removed.
    _engine: Engine,
}

impl Drop for Env {
    fn drop(&mut self) {
        // Containers run with --rm; any left by a failed run are named in their cidfiles.
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "cid")
                    && let Ok(id) = std::fs::read_to_string(e.path())
                    && !id.trim().is_empty()
                {
                    let _ = Command::new("docker")
                        .args(["rm", "-f", id.trim()])
                        .output();
                }
            }
        }
        if let Some(id) = &self.image_id {
            let _ = Command::new("docker").args(["rmi", "-f", id]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Env {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("capspy-acceptance-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut env = Self {
            image_id: None,
            image: format!("capspy-acceptance/workloads:{}", std::process::id()),
            _engine: Engine::ensure(&dir),
            dir,
        };
        env.build_image();
        env
    }

    /// busybox-static plus the workloads, compiled static from tests/workloads.
    fn build_image(&mut self) {
        let root = busybox_rootfs(&self.dir, &["sh", "ping", "cat"]);
        let bin = root.join("bin");
        let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workloads");
        for w in WORKLOADS {
            let out = Command::new("gcc")
                .args([
                    "-static",
                    "-O2",
                    "-Wall",
                    "-Wextra",
                    "-Werror",
                    "-D_GNU_SOURCE",
                ])
                .arg("-o")
                .arg(bin.join(w))
                .arg(sources.join(format!("{w}.c")))
                .output()
                .expect("gcc is installed");
            assert!(
                out.status.success(),
                "gcc {w}.c: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.image_id = Some(import_rootfs(&root, &self.dir, &self.image));
    }

    /// `docker run --rm --network none ARGS IMAGE CMD` with its output; a cidfile for cleanup.
    fn docker_run(&self, args: &[&str], cmd: &[&str]) -> Output {
        let cid = self.fresh("plain", "cid");
        Command::new("docker")
            .args(["run", "--rm", "--network", "none", "--cidfile"])
            .arg(&cid)
            .args(args)
            .arg(&self.image)
            .args(cmd)
            .output()
            .unwrap()
    }

    /// A path in the scratch folder that no earlier call returned.
    fn fresh(&self, stem: &str, ext: &str) -> PathBuf {
        for n in 0.. {
            let p = self.dir.join(format!("{stem}-{n}.{ext}"));
            if !p.exists() {
                return p;
            }
        }
        unreachable!()
    }

    /// Records the workload: `capspy run --container --format json -- docker run --rm ...`.
    /// Returns the workload's exit status and the report.
    fn record(&self, args: &[&str], cmd: &[&str]) -> (i32, Value) {
        let report = self.fresh("report", "json");
        let cid = self.fresh("recorded", "cid");
        let mut docker = vec!["docker", "run", "--rm", "--network", "none", "--cidfile"];
        docker.push(cid.to_str().unwrap());
        docker.extend_from_slice(args);
        docker.push(&self.image);
        docker.extend_from_slice(cmd);
        let (out, report) = capspy_run(&report, &["--container"], &docker);
        (out.status.code().unwrap_or(-1), report)
    }

    /// `capspy verify --format json VERIFY_ARGS -- docker run --network none ARGS IMAGE CMD`.
    fn verify(&self, verify_args: &[&str], args: &[&str], cmd: &[&str]) -> (i32, Value) {
        let result = self.fresh("verify", "json");
        let out = Command::new(CAPSPY)
            .args(["verify", "--format", "json", "--timeout", "30s", "--output"])
            .arg(&result)
            .args(verify_args)
            .args(["--", "docker", "run", "--network", "none"])
            .args(args)
            .arg(&self.image)
            .args(cmd)
            .output()
            .unwrap();
        let text = std::fs::read_to_string(&result).unwrap_or_else(|e| {
            panic!(
                "no result from verify {cmd:?} ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (
            out.status.code().unwrap_or(-1),
            serde_json::from_str(&text).unwrap(),
        )
    }
}

/// The workload's own checks of `cap` (not the runtime's), as (verdict, count) pairs.
fn app_checks(report: &Value, cap: &str) -> Vec<(String, u64)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["capability"] == cap && c["bucket"] == "app")
        .map(|c| {
            (
                c["verdict"].as_str().unwrap().to_string(),
                c["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// A row of the guide's table and how to run it.
struct Row {
    container_type: &'static str,
    guide: &'static str,
    /// `docker run` options besides `--rm --network none`.
    args: &'static [&'static str],
    cmd: &'static [&'static str],
    expected: &'static [&'static str],
}

/// What was observed for a row, as the README table shows it.
struct Observed {
    container_type: &'static str,
    guide: &'static str,
    reported: String,
    flags: String,
    working: String,
    minimal: String,
    notes: Vec<String>,
}

impl Observed {
    fn markdown(&self) -> String {
        format!(
            "| {} | {} | {} | `{}` | {} | {} | {} |",
            self.container_type,
            self.guide,
            self.reported,
            self.flags,
            self.working,
            self.minimal,
            self.notes.join("; ")
        )
    }
}

/// Record, derive the flags, verify them (exactly those flags work, each removal breaks).
/// Returns the row as observed, and the recorded report.
fn reproduce(env: &Env, row: &Row) -> (Observed, Value) {
    let (status, report) = env.record(row.args, row.cmd);
    assert_eq!(
        status, 0,
        "{}: the recorded run failed: {report:#}",
        row.container_type
    );
    let required = strings(&report["required"]);
    assert_eq!(required, row.expected, "{}: {report:#}", row.container_type);
    let flags = report["docker_flags"].as_str().unwrap().to_string();
    let mut want = vec!["--cap-drop".to_string(), "ALL".to_string()];
    for cap in &required {
        want.extend(["--cap-add".to_string(), cap.clone()]);
    }
    assert_eq!(flags, want.join(" "), "{report:#}");

    let profile = env.fresh("profile", "json");
    std::fs::write(&profile, report.to_string()).unwrap();
    let (code, result) = env.verify(
        &[
            "--minimal",
            "--expect-exit",
            "0",
            "--profile",
            profile.to_str().unwrap(),
        ],
        row.args,
        row.cmd,
    );
    assert_eq!(code, 0, "{}: {result:#}", row.container_type);
    check_runs(&result, &want, &required);
    let observed = Observed {
        container_type: row.container_type,
        guide: row.guide,
        reported: if required.is_empty() {
            "nothing".into()
        } else {
            required.join(", ")
        },
        flags,
        working: "yes".into(),
        minimal: if required.is_empty() {
            "yes (nothing to remove)".into()
        } else {
            let each: Vec<String> = required.iter().map(|c| format!("without {c}")).collect();
            format!("yes: fails {}", each.join(", and "))
        },
        notes: Vec::new(),
    };
    (observed, report)
}

/// The profile run used exactly the flags, worked; each removal ran and broke the workload.
fn check_runs(result: &Value, flags: &[String], required: &[String]) {
    assert_eq!(result["works"], true, "{result:#}");
    assert_eq!(result["minimal"], true, "{result:#}");
    let runs = result["runs"].as_array().unwrap();
    let profile_run = runs.iter().find(|r| r["run"] == "profile").unwrap();
    let argv = strings(&profile_run["argv"]);
    assert!(
        argv.windows(flags.len()).any(|w| w == flags),
        "{flags:?} not in {argv:?}"
    );
    // Only verify's flags grant capabilities in a restricted run.
    assert_eq!(
        argv.iter().filter(|a| a.starts_with("--cap-")).count(),
        flags.len() / 2,
        "{argv:?}"
    );
    for cap in required {
        let without = runs
            .iter()
            .find(|r| r["run"] == "without" && r["capability"] == cap.as_str())
            .unwrap_or_else(|| panic!("no run without {cap}: {result:#}"));
        assert_eq!(without["works"], false, "{without:#}");
        assert_ne!(without["exit_code"], 0, "{without:#}");
    }
}

#[test]
fn the_guides_table_reproduced() {
    let env = Env::new();
    let started = Instant::now();
    let table = vec![
        web_api(&env),
        web_server_port_80_docker_default(&env),
        web_server_port_80_classic(&env),
        icmp_ping(&env),
        icmp_datagram(&env),
        syslog_reader(&env),
        packet_capture(&env),
        packet_capture_libpcap_style(&env),
        module_loader(&env),
    ];
    println!(
        "\n| Container type | Guide | capspy reported | Flags | Verified working | Verified minimal | Notes |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in &table {
        println!("{}", row.markdown());
    }
    println!("\n(in {:.0?})", started.elapsed());
}

fn web_api(env: &Env) -> Observed {
    let (o, _) = reproduce(
        env,
        &Row {
            container_type: "Web API (port > 1024)",
            guide: "None",
            args: &[],
            cmd: &["tcpserve", "8080"],
            expected: &[],
        },
    );
    o
}

fn web_server_port_80_docker_default(env: &Env) -> Observed {
    let sysctl = env.docker_run(
        &[],
        &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"],
    );
    let start = String::from_utf8_lossy(&sysctl.stdout).trim().to_string();
    let (mut o, _) = reproduce(
        env,
        &Row {
            container_type: "Web server, port 80, root, Docker's default sysctl",
            guide: "NET_BIND_SERVICE",
            args: &[],
            cmd: &["tcpserve", "80"],
            expected: if start == "0" {
                &[]
            } else {
                &["NET_BIND_SERVICE"]
            },
        },
    );
    o.notes.push(format!(
        "inside the container net.ipv4.ip_unprivileged_port_start={start}: binding port 80 makes no capability check at all"
    ));
    o
}

fn web_server_port_80_classic(env: &Env) -> Observed {
    let (mut o, _) = reproduce(
        env,
        &Row {
            container_type: "Web server, port 80, root, `--sysctl net.ipv4.ip_unprivileged_port_start=1024`",
            guide: "NET_BIND_SERVICE",
            args: &["--sysctl", "net.ipv4.ip_unprivileged_port_start=1024"],
            cmd: &["tcpserve", "80"],
            expected: &["NET_BIND_SERVICE"],
        },
    );
    o.notes
        .push("recorded under Docker's default set, which has NET_BIND_SERVICE".into());
    o
}

fn icmp_ping(env: &Env) -> Observed {
    let args: &[&str] = &[];
    let cmd: &[&str] = &["ping", "-c", "1", "-W", "2", "127.0.0.1"];
    let (mut o, _) = reproduce(
        env,
        &Row {
            container_type: "ICMP monitoring (busybox `ping`)",
            guide: "NET_RAW",
            args,
            cmd,
            expected: &["NET_RAW"],
        },
    );
    // verify recording the profile itself, and taking "works" from the recorded run.
    let (code, result) = env.verify(&["--minimal"], args, cmd);
    assert_eq!(code, 0, "{result:#}");
    assert_eq!(result["profile"]["source"], "recorded just now");
    assert_eq!(result["expected_from"], "the recorded run");
    assert_eq!(strings(&result["profile"]["required"]), ["NET_RAW"]);
    check_runs(
        &result,
        &["--cap-drop", "ALL", "--cap-add", "NET_RAW"].map(String::from),
        &["NET_RAW".to_string()],
    );
    o.notes.push(
        "busybox 1.35's ping opens a raw ICMP socket only; recorded under Docker's default set, which has NET_RAW".into(),
    );
    o
}

fn icmp_datagram(env: &Env) -> Observed {
    let range = env.docker_run(&[], &["cat", "/proc/sys/net/ipv4/ping_group_range"]);
    let range = String::from_utf8_lossy(&range.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let everyone = range == "0 2147483647";
    let (mut o, _) = reproduce(
        env,
        &Row {
            container_type: "ICMP monitoring, datagram ICMP socket (as iputils `ping` without raw sockets)",
            guide: "NET_RAW",
            args: &[],
            cmd: &["icmpdgram"],
            expected: &[],
        },
    );
    assert!(everyone, "ping_group_range is {range:?} here");
    o.notes.push(format!(
        "inside the container net.ipv4.ping_group_range=\"{range}\": any group may open ICMP datagram sockets, with no capability check"
    ));
    o
}

fn syslog_reader(env: &Env) -> Observed {
    let restrict = std::fs::read_to_string("/proc/sys/kernel/dmesg_restrict")
        .unwrap()
        .trim()
        .to_string();
    let (mut o, report) = reproduce(
        env,
        &Row {
            container_type: "Syslog reader (klogctl)",
            guide: "SYSLOG",
            args: &["--cap-add", "SYSLOG"],
            cmd: &["klogread"],
            expected: &["SYSLOG"],
        },
    );
    // SIZE_UNREAD is always restricted; SIZE_BUFFER and READ_ALL only under dmesg_restrict=1.
    let expected_checks = if restrict == "1" { 3 } else { 1 };
    assert_eq!(
        app_checks(&report, "SYSLOG"),
        [("granted".to_string(), expected_checks)],
        "{report:#}"
    );
    // Without SYSLOG, Docker's seccomp profile refuses syslog(2) before the kernel checks.
    let (status, refused) = env.record(&["--cap-drop", "ALL"], &["klogread"]);
    assert_eq!(status, 1);
    assert!(app_checks(&refused, "SYSLOG").is_empty(), "{refused:#}");
    o.notes.push(format!(
        "recorded with `--cap-add SYSLOG` (not in Docker's default set); kernel.dmesg_restrict={restrict} here, so each of SIZE_UNREAD, SIZE_BUFFER and READ_ALL is a SYSLOG check ({expected_checks} checks)"
    ));
    o.notes.push("without SYSLOG, Docker's default seccomp profile refuses syslog(2) itself (it allows it only with CAP_SYSLOG): the kernel's check never happens".into());
    o
}

fn packet_capture(env: &Env) -> Observed {
    let (mut o, _) = reproduce(
        env,
        &Row {
            container_type: "Packet capture on lo, promiscuous mode by SIOCSIFFLAGS (as `ip link set lo promisc on`)",
            guide: "NET_ADMIN, NET_RAW",
            args: &["--cap-add", "NET_ADMIN"],
            cmd: &["pktcap", "ioctl"],
            expected: &["NET_ADMIN", "NET_RAW"],
        },
    );
    o.notes.push("recorded with `--cap-add NET_ADMIN` (NET_RAW is in Docker's default set); NET_RAW for the AF_PACKET socket, NET_ADMIN for the interface flag".into());
    o
}

fn packet_capture_libpcap_style(env: &Env) -> Observed {
    let (mut o, _) = reproduce(
        env,
        &Row {
            container_type: "Packet capture on lo, promiscuous mode by PACKET_ADD_MEMBERSHIP (as libpcap)",
            guide: "NET_ADMIN, NET_RAW",
            args: &["--cap-add", "NET_ADMIN"],
            cmd: &["pktcap", "membership"],
            expected: &["NET_RAW"],
        },
    );
    o.notes.push("recorded with `--cap-add NET_ADMIN`, which it never used: a PACKET_MR_PROMISC membership on the capture socket makes no NET_ADMIN check".into());
    o
}

/// init_module with an image too short to be a module: ENOEXEC after the SYS_MODULE check.
fn module_loader(env: &Env) -> Observed {
    let modules = Path::new("/proc/modules").exists();
    let row = Row {
        container_type: "Kernel module loader (init_module, bogus module)",
        guide: "SYS_MODULE",
        args: &["--cap-add", "SYS_MODULE"],
        cmd: &["modload"],
        expected: &["SYS_MODULE"],
    };
    let seccomp = seccomp_and_init_module(env, modules);
    let mut o = if modules {
        reproduce(env, &row).0
    } else {
        // No module support (CONFIG_MODULES=n): init_module is not implemented, so there is no
        // capability check to observe.
        let (status, report) = env.record(row.args, row.cmd);
        assert_eq!(status, 3, "expected ENOSYS: {report:#}");
        assert!(app_checks(&report, "SYS_MODULE").is_empty(), "{report:#}");
        Observed {
            container_type: row.container_type,
            guide: row.guide,
            reported: "nothing".into(),
            flags: report["docker_flags"].as_str().unwrap().to_string(),
            working: "not reproducible here".into(),
            minimal: "n/a".into(),
            notes: vec![
                "this kernel has no module support (CONFIG_MODULES not set, no /proc/modules): init_module fails with ENOSYS before any capability check, with or without SYS_MODULE".into(),
            ],
        }
    };
    o.notes.push("recorded with `--cap-add SYS_MODULE`".into());
    o.notes.push(seccomp);
    o
}

/// What Docker's default seccomp profile does with init_module, told apart from the kernel's
/// own answer by the workload's exit status (1 EPERM, 3 ENOSYS, 0 ENOEXEC).
fn seccomp_and_init_module(env: &Env, modules: bool) -> String {
    let code = |args: &[&str]| env.docker_run(args, &["modload"]).status.code();
    let default_without = code(&["--cap-drop", "ALL"]);
    let unconfined_without = code(&["--cap-drop", "ALL", "--security-opt", "seccomp=unconfined"]);
    let default_with = code(&["--cap-drop", "ALL", "--cap-add", "SYS_MODULE"]);
    assert_eq!(default_without, Some(1), "EPERM without SYS_MODULE");
    if modules {
        // The kernel's own check refuses without the capability; seccomp lets it through with.
        assert_eq!(unconfined_without, Some(1));
        assert_eq!(default_with, Some(0));
    } else {
        // Unconfined, the kernel answers ENOSYS: so the EPERM above came from seccomp.
        assert_eq!(unconfined_without, Some(3));
        assert_eq!(default_with, Some(3));
    }
    "Docker's default seccomp profile refuses init_module (EPERM) unless SYS_MODULE is in the container's set, and allows it with SYS_MODULE: no `seccomp=unconfined` is needed to load, only to see the kernel's own refusal without SYS_MODULE".into()
}
