//! `capspy merge` as users run it, on files: node profiles in, one profile per workload out,
//! which `capspy baseline check` and `capspy diff` load; and a fleet-sized merge (1,000 node
//! files of 100 workloads each) in seconds. No root needed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use capspy::model::caps::{CapSet, Capability};
use capspy::model::check::{
    AuditClass, Bucket, CheckRow, Classifier, Origin, ProcessRef, UserNs, Verdict,
};
use capspy::model::loss::LossCounters;
use capspy::profile::Profile;
use capspy::report::{Format, Report, Subject};

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
        origin: Origin::Check,
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
            exe: None,
        },
        call_path: call_path.iter().map(|f| (*f).to_string()).collect(),
        host: None,
        optional: None,
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
        &std::fs::read_to_string(
            out_dir.join(capspy::watch::baseline::file_name("k8s:shop/w7/app")),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(one["coverage"]["hosts"].as_array().unwrap().len(), NODES);
    assert_eq!(one["explanations"][0]["evidence"]["count"], 3 * NODES);
    // Seconds, not minutes, even on a shared CI machine.
    assert!(took < Duration::from_mins(1), "{took:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A node's store with workloads `web` (NET_BIND_SERVICE granted `count` times) and `db`, kept
/// under the node's name, as `capspy record --node NAME` leaves it.
fn node_store(path: &Path, node: &str, count: u64) {
    use capspy::store::{CheckRecord, StoreWriter, Subject as StoreSubject, SubjectKind};
    let mut store = StoreWriter::open(path).unwrap();
    store.set_host(node).unwrap();
    let session = store.begin_session("tp_btf", 1_800_000_000_000).unwrap();
    let mut checks = Vec::new();
    for (i, name) in ["web", "db"].into_iter().enumerate() {
        let cgroup_id = 1000 + i as u64;
        store
            .upsert_subject(
                cgroup_id,
                &StoreSubject {
                    kind: SubjectKind::Container,
                    key: format!("{node}-{name}-{}", "0".repeat(40)),
                    runtime: Some("docker".into()),
                    name: Some(name.into()),
                    image: Some("shop:1".into()),
                    workload: Some(format!("image:shop:1/{name}")),
                    first_seen_ms: 1_800_000_000_000,
                    last_seen_ms: 1_800_000_000_000,
                    running: false,
                    ..StoreSubject::default()
                },
            )
            .unwrap();
        checks.push(CheckRecord {
            cgroup_id,
            cap: 10,
            count,
            classifier: 1,
            first_seen_ms: 1_800_000_000_000,
            last_seen_ms: 1_800_000_000_000,
            comm: "httpd".into(),
            call_path: BIND.iter().map(|f| (*f).to_string()).collect(),
            ..CheckRecord::default()
        });
    }
    store.write_checks(session, &checks).unwrap();
    store.end_session(session, 1_800_000_000_001).unwrap();
}

#[test]
fn profiles_from_several_stores_and_all_workloads() {
    let dir = scratch("stores");
    let (a, b) = (dir.join("a.db"), dir.join("b.db"));
    node_store(&a, "node-a", 2);
    node_store(&b, "node-b", 3);
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());

    // One document per workload, each naming its node.
    let out = capspy(&["profile", "--all", "--format", "json", "--store", a]);
    assert!(out.status.success(), "{out:?}");
    let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    let keys: Vec<&str> = docs
        .iter()
        .map(|d| d["subject"]["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["image:shop:1/db", "image:shop:1/web"]);
    assert!(docs.iter().all(|d| d["host"] == "node-a"), "{docs:#?}");
    // ... which merge reads back as one file.
    let all = write(&dir, "node-a.json", &String::from_utf8_lossy(&out.stdout));

    // Two stores: one profile, both nodes, counts summed.
    let out = capspy(&[
        "profile", "web", "--store", a, "--store", b, "--format", "json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["coverage"]["hosts"],
        serde_json::json!(["node-a", "node-b"])
    );
    assert_eq!(doc["required"], serde_json::json!(["NET_BIND_SERVICE"]));
    assert_eq!(doc["explanations"][0]["evidence"]["count"], 5);

    // --all over both stores into a folder of baselines that watch's loader takes.
    let baselines = dir.join("baselines");
    let out = capspy(&[
        "profile",
        "--all",
        "--store",
        a,
        "--store",
        b,
        "--to",
        baselines.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_dir(&baselines).unwrap().count(), 2);
    let check = capspy(&["baseline", "check", baselines.to_str().unwrap()]);
    assert!(check.status.success(), "{check:?}");
    // The node-a export merged with the node-b store's export gives the same.
    let out = capspy(&["profile", "--all", "--format", "json", "--store", b]);
    let b_all = write(&dir, "node-b.json", &String::from_utf8_lossy(&out.stdout));
    let out = capspy(&["merge", &all, &b_all, "--format", "docker"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "--cap-drop ALL --cap-add NET_BIND_SERVICE\n--cap-drop ALL --cap-add NET_BIND_SERVICE\n"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
