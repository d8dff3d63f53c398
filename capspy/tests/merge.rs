//! `capspy merge` as users run it, on files: node profiles in, one profile per workload out,
//! which `capspy baseline check` and `capspy diff` load; and a fleet-sized merge (1,000 node
//! files of 100 workloads each) in seconds. No root needed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use capspy::caps::{CapSet, Capability};
use capspy::collector::LossCounters;
use capspy::profile::{
    AuditClass, Bucket, CheckRow, Classifier, ProcessRef, Profile, UserNs, Verdict,
};
use capspy::render::{Format, Report, Subject};

const CAPSPY: &str = env!("CARGO_BIN_EXE_capspy");
/// Where node names go in a rendered template.
const NODE: &str = "@NODE@";

fn capspy(args: &[&str]) -> Output {
    Command::new(CAPSPY).args(args).output().unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("capspy-merge-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn row(cap: Capability, verdict: Verdict, count: u64, call_path: &[&str]) -> CheckRow {
    CheckRow {
        capability: cap,
        verdict,
        audit: AuditClass::Audited,
        classified_by: Classifier::CallPath,
        user_namespace: UserNs::Initial,
        bucket: Bucket::App,
        count,
        first_seen: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_001),
        last_seen: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_061),
        example: ProcessRef {
            pid: 4242,
            tgid: 4242,
            uid: 0,
            comm: "httpd".into(),
        },
        call_path: call_path.iter().map(|f| (*f).to_string()).collect(),
        host: None,
    }
}

/// A node's profile of `key`, as `capspy profile KEY --format json` prints it.
fn node_profile(node: &str, key: &str, rows: Vec<CheckRow>) -> String {
    Report::new(
        Subject::Workload {
            key: key.into(),
            containers: vec![format!("{node}-0123456789abcdef")],
            images: vec!["shop/web:1".into()],
        },
        "store",
        Profile::from_checks(rows).with_granted(Some(CapSet(0xa804_25fb))),
        LossCounters::default(),
    )
    .with_host(Some(node.into()))
    .render(Format::Json)
}

const OVERRIDE: &[&str] = &[
    "security_capable+0x3b",
    "capable_wrt_inode_uidgid+0x39",
    "generic_permission+0x11a",
    "inode_permission+0x3e",
];
const READ: &[&str] = &[
    "security_capable+0x3b",
    "capable_wrt_inode_uidgid+0x39",
    "generic_permission+0x1cf",
    "inode_permission+0x3e",
];
const BIND: &[&str] = &[
    "security_capable+0x3b",
    "ns_capable+0x2a",
    "__inet6_bind+0x194",
];

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn merged_profiles_serve_as_baselines_and_in_diff() {
    let dir = scratch("cli");
    let key = "k8s:shop/web/httpd";
    // node-a only reads a file it may not (DAC_READ_SEARCH would do); node-b also writes one.
    let reader = vec![
        row(Capability::DAC_OVERRIDE, Verdict::Granted, 1, OVERRIDE),
        row(Capability::DAC_READ_SEARCH, Verdict::Denied, 1, READ),
        row(Capability::NET_BIND_SERVICE, Verdict::Granted, 1, BIND),
    ];
    let writer = vec![
        row(Capability::DAC_OVERRIDE, Verdict::Granted, 1, OVERRIDE),
        row(Capability::NET_BIND_SERVICE, Verdict::Granted, 2, BIND),
    ];
    let a = write(&dir, "node-a.json", &node_profile("node-a", key, reader));
    let b = write(&dir, "node-b.json", &node_profile("node-b", key, writer));
    let baselines = dir.join("baselines");
    let out = capspy(&["merge", &a, &b, "--to", baselines.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("required: DAC_OVERRIDE,NET_BIND_SERVICE"),
        "{stdout}"
    );
    let merged = std::fs::read_dir(&baselines)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&merged).unwrap()).unwrap();
    assert_eq!(
        doc["coverage"]["hosts"],
        serde_json::json!(["node-a", "node-b"])
    );
    assert_eq!(doc["coverage"]["instances"], 2);

    // watch's loader takes the folder.
    let check = capspy(&["baseline", "check", baselines.to_str().unwrap()]);
    assert!(check.status.success(), "{check:?}");
    // node-b keeps within the merged baseline; node-a's own profile, used as a baseline, does
    // not cover node-b's write.
    let merged = merged.to_str().unwrap();
    let diff = capspy(&["diff", merged, &b]);
    assert_eq!(diff.status.code(), Some(0), "{diff:?}");
    let diff = capspy(&["diff", &a, merged]);
    assert_eq!(diff.status.code(), Some(1), "{diff:?}");
    assert!(
        String::from_utf8_lossy(&diff.stdout).contains("DAC_OVERRIDE"),
        "{diff:?}"
    );
    // The merged profile renders as the other formats.
    let flags = capspy(&["merge", &a, &b, "--format", "docker"]);
    assert_eq!(
        String::from_utf8_lossy(&flags.stdout),
        "--cap-drop ALL --cap-add DAC_OVERRIDE --cap-add NET_BIND_SERVICE\n"
    );

    // Bad input: one line, exit 2.
    let truncated = write(
        &dir,
        "cut.json",
        &std::fs::read_to_string(&a).unwrap()[..200],
    );
    let bad = capspy(&["merge", &a, &truncated]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("cut.json:") && err.lines().count() == 1,
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// 1,000 nodes' `capspy profile --all --format json` files of 100 workloads each (4 check rows
/// per workload, as bench_store writes), merged into 100 profiles.
#[test]
fn a_thousand_nodes_of_a_hundred_workloads_merge_in_seconds() {
    const NODES: usize = 1_000;
    const WORKLOADS: usize = 100;
    let dir = scratch("scale");
    let mut template = String::new();
    for w in 0..WORKLOADS {
        template.push_str(&node_profile(
            NODE,
            &format!("k8s:shop/w{w}/app"),
            vec![
                row(Capability(7), Verdict::Granted, 3, BIND),
                row(Capability::NET_RAW, Verdict::Granted, 5, BIND),
                row(Capability::CHOWN, Verdict::Denied, 1, OVERRIDE),
                row(Capability::NET_BIND_SERVICE, Verdict::Granted, 1, BIND),
            ],
        ));
    }
    let started = Instant::now();
    let mut files = Vec::new();
    for n in 0..NODES {
        files.push(write(
            &dir,
            &format!("node-{n:04}.json"),
            &template.replace(NODE, &format!("node-{n:04}")),
        ));
    }
    let bytes = template.len() * NODES;
    eprintln!(
        "wrote {NODES} files, {} MB, in {:?}",
        bytes >> 20,
        started.elapsed()
    );
    let out_dir = dir.join("merged");
    let started = Instant::now();
    let out = Command::new(CAPSPY)
        .arg("merge")
        .args(&files)
        .arg("--to")
        .arg(&out_dir)
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("capspy merge of {NODES} files x {WORKLOADS} workloads: {took:?}");
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), WORKLOADS);
    let one: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join(capspy::baseline::file_name("k8s:shop/w7/app")))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(one["coverage"]["hosts"].as_array().unwrap().len(), NODES);
    assert_eq!(one["explanations"][0]["evidence"]["count"], 3 * NODES);
    // Seconds, not minutes, even on a shared CI machine.
    assert!(took < Duration::from_mins(1), "{took:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
