//! A Kubernetes node without Docker in the path: a containerd of the test's own holds pods made
//! as the kubelet makes them through CRI (a sandbox carrying the pod's labels, containers
//! carrying `io.kubernetes.*`, in the kubelet's cgroups for both cgroup drivers), and
//! `capspy record` asks containerd's API who they are. Needs root, Docker (for the image) and
//! Debian's containerd package.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

mod common;

use common::engines::Containerd;
use common::{Cleanup, Daemon, capspy_on as capspy, profile, strings};

const IMAGE: &str = common::BUSYBOX;
/// As ctr names the image it imported from `docker save`.
const CTR_IMAGE: &str = "docker.io/capspy-test/busybox:2";

/// A 64-hex container id, unique to this test process.
fn id(n: u8) -> String {
    format!("{:08x}{n:02x}{}", std::process::id(), "c".repeat(54))
}

/// A pod uid (a UUID, as the API server makes them), unique to this test process.
fn uid(n: u8) -> String {
    format!(
        "{:08x}-00{n:02x}-4000-8000-000000000000",
        std::process::id()
    )
}

/// One pod: its sandbox with the pod's labels, then its containers.
struct Pod {
    name: String,
    uid: String,
    labels: Vec<(String, String)>,
    systemd_driver: bool,
}

impl Pod {
    /// Where the kubelet puts a container of this pod.
    fn cgroup(&self, id: &str) -> String {
        if self.systemd_driver {
            let uid = self.uid.replace('-', "_");
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice/cri-containerd-{id}.scope"
            )
        } else {
            format!("/kubepods/besteffort/pod{}/{id}", self.uid)
        }
    }

    fn kubelet_labels(&self) -> Vec<(String, String)> {
        vec![
            ("io.kubernetes.pod.namespace".into(), "shop".into()),
            ("io.kubernetes.pod.name".into(), self.name.clone()),
            ("io.kubernetes.pod.uid".into(), self.uid.clone()),
        ]
    }

    fn start_sandbox(&self, ctrd: &mut Containerd, sandbox: &str) {
        let mut labels = self.kubelet_labels();
        labels.extend(self.labels.iter().cloned());
        labels.push(("io.cri-containerd.kind".into(), "sandbox".into()));
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        ctrd.run(
            "k8s.io",
            CTR_IMAGE,
            sandbox,
            &self.cgroup(sandbox),
            &labels,
            &["sleep", "600"],
        );
    }

    /// Runs container `name` of the pod as `id` until `script` ends.
    fn run(&self, ctrd: &mut Containerd, id: &str, name: &str, script: &str) {
        let mut labels = self.kubelet_labels();
        labels.push(("io.kubernetes.container.name".into(), name.into()));
        labels.push(("io.cri-containerd.kind".into(), "container".into()));
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let cgroup = self.cgroup(id);
        ctrd.run(
            "k8s.io",
            CTR_IMAGE,
            id,
            &cgroup,
            &labels,
            &["sh", "-c", script],
        );
        Containerd::wait_exited(&cgroup);
    }
}

fn pair(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

#[test]
fn pods_on_containerd_are_named_and_merged() {
    let dir = std::env::temp_dir().join(format!("capspy-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup::new(dir.clone());
    common::ensure_busybox(&dir);
    let mut ctrd = Containerd::start(&dir, &format!("capspy-k8s-{}", std::process::id()), IMAGE);
    let store = dir.join("capspy.db");
    let socket = ctrd.socket.to_str().unwrap().to_owned();
    let daemon = Daemon::record_with(
        &store,
        &["--containerd-socket", &socket, "--node", "node-1"],
    );

    // A Deployment's two replicas (one per cgroup driver), one of them restarted.
    let hash = "7d9f8c6b5";
    let deploy = |name: &str, n: u8, systemd_driver: bool| Pod {
        name: format!("web-{hash}-{name}"),
        uid: uid(n),
        labels: vec![pair("app", "web"), pair("pod-template-hash", hash)],
        systemd_driver,
    };
    let (a, b) = (deploy("x2k4p", 1, true), deploy("q8z5m", 2, false));
    a.start_sandbox(&mut ctrd, &id(1));
    b.start_sandbox(&mut ctrd, &id(2));
    let ping = "ping -c 1 127.0.0.1 >/dev/null";
    // Held meanwhile, the daemon first looks once the replicas have exited: what they were
    // granted must come from containerd's record of them, not from their processes.
    daemon.signal(libc::SIGSTOP);
    a.run(&mut ctrd, &id(3), "web", ping);
    a.run(&mut ctrd, &id(4), "web", ping);
    b.run(&mut ctrd, &id(5), "web", ping);
    daemon.signal(libc::SIGCONT);
    // A StatefulSet's pod and a bare pod whose name looks like one of its replicas.
    let db = Pod {
        name: "db-0".into(),
        uid: uid(3),
        labels: vec![
            pair("statefulset.kubernetes.io/pod-name", "db-0"),
            pair("controller-revision-hash", "db-5d8f7c9b4"),
        ],
        systemd_driver: false,
    };
    let bare = Pod {
        name: "db-1".into(),
        uid: uid(4),
        labels: vec![pair("run", "db-1")],
        systemd_driver: false,
    };
    db.start_sandbox(&mut ctrd, &id(6));
    bare.start_sandbox(&mut ctrd, &id(7));
    db.run(&mut ctrd, &id(8), "db", "touch /tmp/f && chown 1234 /tmp/f");
    bare.run(&mut ctrd, &id(9), "db", "sleep 0.2");
    std::thread::sleep(Duration::from_secs(1));
    assert!(daemon.stop().success());
    granted_from_the_spec(&store, &ctrd);
    names_and_merges(&store, &dir, &a.name);
    without_the_engine(&dir, &mut ctrd);
}

/// The replicas' granted set is what containerd stored in their OCI spec (`ctr`'s defaults).
fn granted_from_the_spec(store: &Path, ctrd: &Containerd) {
    let out = ctrd.ctr(&["-n", "k8s.io", "containers", "info", &id(3)]);
    assert!(out.status.success(), "{out:?}");
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    let caps = &info["Spec"]["process"]["capabilities"];
    let mut want: Vec<String> = ["bounding", "effective"]
        .iter()
        .flat_map(|k| strings(&caps[*k]))
        .map(|c| c.trim_start_matches("CAP_").to_owned())
        .collect();
    want.sort();
    want.dedup();
    assert!(want.contains(&"NET_RAW".to_owned()), "{info:#}");
    let web = profile(store, "shop/deployment/web/web");
    let mut got = strings(&web["granted"]);
    got.sort();
    assert_eq!(got, want, "{web:#}");
}

/// What the store says of those pods, by each name people use.
fn names_and_merges(store: &Path, dir: &Path, pod_a: &str) {
    // One workload, three instances, the replicas' need.
    let web = profile(store, "shop/deployment/web/web");
    assert_eq!(
        web["subject"]["key"], "k8s:shop/deployment/web/web",
        "{web:#}"
    );
    let instances = strings(&web["subject"]["containers"]);
    assert_eq!(instances.len(), 3, "{web:#}");
    for n in [3, 4, 5] {
        assert!(instances.contains(&id(n)), "{instances:?}");
    }
    assert_eq!(strings(&web["required"]), ["NET_RAW"], "{web:#}");
    // The same workload by NAMESPACE/OWNER, by a pod's name and by the container's name.
    for name in ["shop/web", pod_a, "web"] {
        assert_eq!(
            profile(store, name)["subject"]["key"],
            "k8s:shop/deployment/web/web",
            "{name}"
        );
    }
    let sts = profile(store, "shop/statefulset/db");
    assert_eq!(sts["subject"]["key"], "k8s:shop/statefulset/db/db");
    assert_eq!(strings(&sts["required"]), ["CHOWN"], "{sts:#}");
    let pod = profile(store, "db-1");
    assert_eq!(pod["subject"]["key"], "k8s:shop/pod/db-1/db");
    assert!(strings(&pod["required"]).is_empty(), "{pod:#}");
    // `db` names both (the StatefulSet's and the bare pod's container): ambiguous.
    let out = capspy(store, &["profile", "db"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ambiguous"));

    // `ls`: grouped by namespace; sandboxes are containerd's, not workloads.
    let out = capspy(store, &["ls"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let heading = text.find("namespace shop\n").expect("namespace heading");
    assert!(
        text.find("workload k8s:shop/deployment/web/web").unwrap() > heading,
        "{text}"
    );
    let ls: Value =
        serde_json::from_slice(&capspy(store, &["ls", "--format", "json"]).stdout).unwrap();
    let workloads: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "workload")
        .map(|l| l["name"].as_str().unwrap())
        // The daemon records the whole host: other tests' containers may be there too.
        .filter(|n| n.starts_with("k8s:"))
        .collect();
    assert_eq!(
        workloads,
        [
            "k8s:shop/deployment/web/web",
            "k8s:shop/pod/db-1/db",
            "k8s:shop/statefulset/db/db"
        ],
        "{ls:#}"
    );
    assert!(
        ls.as_array()
            .unwrap()
            .iter()
            .any(|l| l["kind"] == "service" && l["name"] == "containerd.service"),
        "the sandboxes' checks go with containerd: {ls:#}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("containerd container"),
        "every containerd container was named: {out:?}"
    );

    // A baseline by those names.
    let baselines = dir.join("baselines");
    let out = capspy(
        store,
        &[
            "baseline",
            "save",
            "shop/web",
            "--to",
            baselines.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_dir(&baselines).unwrap().count(), 1);

    // The Kubernetes output says which Pod Security Standards level the profile meets.
    let out = capspy(store, &["profile", "shop/web", "--format", "k8s"]);
    let k8s = String::from_utf8_lossy(&out.stdout);
    assert!(
        k8s.contains("# Pod Security Standards: privileged only: baseline forbids adding NET_RAW"),
        "{k8s}"
    );
    assert!(k8s.contains("- name: web\n"), "{k8s}");
}

/// Without containerd's socket, the same kind of container is still attributed by its cgroup
/// path, and `ls` and the report say why it has no name.
fn without_the_engine(dir: &Path, ctrd: &mut Containerd) {
    let store: &Path = &dir.join("absent.db");
    let absent = dir.join("absent.sock");
    let daemon = Daemon::record_with(store, &["--containerd-socket", absent.to_str().unwrap()]);
    let pod = Pod {
        name: "solo".into(),
        uid: uid(5),
        labels: Vec::new(),
        systemd_driver: false,
    };
    pod.run(ctrd, &id(10), "solo", "ping -c 1 127.0.0.1 >/dev/null");
    std::thread::sleep(Duration::from_millis(800));
    assert!(daemon.stop().success());
    let key = format!("container:{}", &id(10)[..12]);
    let report = profile(store, &key);
    assert_eq!(strings(&report["required"]), ["NET_RAW"], "{report:#}");
    let why = format!("no socket at {}", absent.display());
    assert!(
        strings(&report["notes"]).iter().any(|n| n.contains(&why)),
        "{report:#}"
    );
    let out = capspy(store, &["ls"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 containerd container(s) are known by id only") && err.contains(&why),
        "{err}"
    );
}
