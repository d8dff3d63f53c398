//! Kubernetes workload identity: which controller owns a pod's container, from the labels the
//! kubelet writes through CRI (on the container) and the pod's own labels (on its sandbox).
//!
//! Every engine that runs pods (containerd, CRI-O, cri-dockerd) keeps the kubelet's labels, so
//! one rule serves them all: a pod's container becomes the workload
//! `k8s:<namespace>/<kind>/<owner>/<container>`, shared by its replicas, restarts and rollouts.

use std::collections::BTreeMap;
use std::fmt;

pub type Labels = BTreeMap<String, String>;

/// Labels the kubelet puts on every container and sandbox it creates through CRI.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// How each engine marks a pod's sandbox (pause) container.
const SANDBOX_MARKS: [(&str, &str); 3] = [
    // containerd's CRI plugin, on the containerd container.
    ("io.cri-containerd.kind", "sandbox"),
    // CRI-O, in its annotations.
    ("io.kubernetes.cri-o.ContainerType", "sandbox"),
    // dockershim and cri-dockerd, on the Docker container.
    ("io.kubernetes.docker.type", "podsandbox"),
];

/// Pod labels the controllers set (k8s.io/api: apps/v1 and batch/v1 label constants).
const POD_TEMPLATE_HASH: &str = "pod-template-hash";
const STATEFULSET_POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";
const POD_TEMPLATE_GENERATION: &str = "pod-template-generation";
const JOB_NAME: &str = "batch.kubernetes.io/job-name";
const LEGACY_JOB_NAME: &str = "job-name";
/// The kubelet's annotation on pods it read from a file or URL rather than the API server.
const CONFIG_SOURCE: &str = "kubernetes.io/config.source";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    /// A static pod: the kubelet runs it from a manifest on the node.
    Static,
    /// A pod no controller owns: its own name.
    Pod,
    /// The pod's own labels were not available and its name looks generated: some controller
    /// (a DaemonSet, Job or bare ReplicaSet) whose kind the name does not tell.
    Controller,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "deployment",
            Self::StatefulSet => "statefulset",
            Self::DaemonSet => "daemonset",
            Self::Job => "job",
            Self::CronJob => "cronjob",
            Self::Static => "static",
            Self::Pod => "pod",
            Self::Controller => "controller",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Deployment,
            Self::StatefulSet,
            Self::DaemonSet,
            Self::Job,
            Self::CronJob,
            Self::Static,
            Self::Pod,
            Self::Controller,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One container of a pod, as its owner's workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodContainer {
    pub namespace: String,
    pub pod: String,
    pub kind: Kind,
    pub owner: String,
    pub container: String,
}

impl PodContainer {
    /// `k8s:<namespace>/<kind>/<owner>/<container>`.
    pub fn key(&self) -> String {
        format!(
            "k8s:{}/{}/{}/{}",
            self.namespace, self.kind, self.owner, self.container
        )
    }
}

/// What a Kubernetes-labelled container is to capspy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// The pod's sandbox (pause) container: the runtime's infrastructure, not a workload.
    Sandbox,
    Container(PodContainer),
}

/// Whether these labels (or a CRI-O container's annotations) mark a pod sandbox.
pub fn is_sandbox(labels: &Labels) -> bool {
    SANDBOX_MARKS
        .iter()
        .any(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
}

/// The role of a container from its labels; None when the kubelet did not create it.
///
/// `pod_labels` are the labels of the pod (its sandbox's), None when the engine could not give
/// them: the owner is then read from the pod's name alone. `pod_annotations` may carry
/// `kubernetes.io/config.source` (CRI-O keeps annotations); `node` is this node's name, the
/// suffix the kubelet gives static pods.
pub fn role(
    labels: &Labels,
    pod_labels: Option<&Labels>,
    pod_annotations: Option<&Labels>,
    node: Option<&str>,
) -> Option<Role> {
    let get = |k: &str| labels.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let (namespace, pod) = (get(POD_NAMESPACE)?, get(POD_NAME)?);
    if is_sandbox(labels) {
        return Some(Role::Sandbox);
    }
    let container = get(CONTAINER_NAME)?;
    let uid = get(POD_UID).unwrap_or_default();
    let static_source = pod_annotations
        .and_then(|a| a.get(CONFIG_SOURCE))
        .is_some_and(|s| s != "api");
    let (kind, owner) = match pod_labels {
        Some(pod_labels) => {
            owner_from_labels(pod, pod_labels, static_source || is_static_uid(uid), node)
        }
        None if static_source || is_static_uid(uid) => (Kind::Static, static_owner(pod, node)),
        None => owner_from_name(pod),
    };
    Some(Role::Container(PodContainer {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        kind,
        owner: owner.to_owned(),
        container: container.to_owned(),
    }))
}

fn owner_from_labels<'a>(
    pod: &'a str,
    labels: &'a Labels,
    is_static: bool,
    node: Option<&str>,
) -> (Kind, &'a str) {
    let get = |k: &str| labels.get(k).map(String::as_str).filter(|v| !v.is_empty());
    if let Some(hash) = get(POD_TEMPLATE_HASH) {
        // `<deployment>-<hash>-<suffix>`; the hash is the ReplicaSet's.
        if let Some(at) = pod.rfind(&format!("-{hash}-")).filter(|at| *at > 0) {
            return (Kind::Deployment, &pod[..at]);
        }
        return (Kind::Deployment, owner_from_name(pod).1);
    }
    if get(STATEFULSET_POD_NAME).is_some() {
        // `<statefulset>-<ordinal>`.
        return (Kind::StatefulSet, strip_ordinal(pod).unwrap_or(pod));
    }
    if get(CONTROLLER_REVISION_HASH).is_some() && get(POD_TEMPLATE_GENERATION).is_some() {
        // `<daemonset>-<suffix>`.
        return (Kind::DaemonSet, strip_suffix(pod).unwrap_or(pod));
    }
    if let Some(job) = get(JOB_NAME).or_else(|| get(LEGACY_JOB_NAME)) {
        // A CronJob names its Jobs `<cronjob>-<scheduled time in minutes since the epoch>`.
        return match job.rsplit_once('-') {
            Some((cron, time))
                if !cron.is_empty()
                    && time.len() >= 8
                    && time.bytes().all(|b| b.is_ascii_digit()) =>
            {
                (Kind::CronJob, cron)
            }
            _ => (Kind::Job, job),
        };
    }
    if is_static {
        return (Kind::Static, static_owner(pod, node));
    }
    (Kind::Pod, pod)
}

/// The kubelet gives a static pod the uid it hashes from the manifest: 32 hex digits, where the
/// API server's uids are UUIDs with dashes.
fn is_static_uid(uid: &str) -> bool {
    uid.len() == 32 && uid.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A static pod is `<name>-<node>`.
fn static_owner<'a>(pod: &'a str, node: Option<&str>) -> &'a str {
    node.filter(|n| !n.is_empty())
        .and_then(|n| pod.strip_suffix(n))
        .and_then(|p| p.strip_suffix('-'))
        .filter(|p| !p.is_empty())
        .unwrap_or(pod)
}

/// The characters Kubernetes uses for generated name suffixes (no vowels, no 0, 1, 3).
fn is_generated(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
}

/// `db-0` → `db`.
fn strip_ordinal(pod: &str) -> Option<&str> {
    let (rest, last) = pod.rsplit_once('-')?;
    (!rest.is_empty() && !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
        .then_some(rest)
}

/// `agent-x2k4p` → `agent`.
fn strip_suffix(pod: &str) -> Option<&str> {
    let (rest, last) = pod.rsplit_once('-')?;
    (!rest.is_empty() && last.len() == 5 && is_generated(last)).then_some(rest)
}

/// The owner when only the pod's name is known: StatefulSet `db-0` → `db`; Deployment
/// `web-7d9f8c6b5-x2k4p` → `web` (ReplicaSet hash and suffix); CronJob
/// `backup-29012345-x2k4p` → `backup`; DaemonSet or Job `agent-x2k4p` → `agent` (kind unknown:
/// [`Kind::Controller`]). Other names are bare pods.
pub fn owner_from_name(pod: &str) -> (Kind, &str) {
    if let Some(owner) = strip_ordinal(pod) {
        return (Kind::StatefulSet, owner);
    }
    let Some(rest) = strip_suffix(pod) else {
        return (Kind::Pod, pod);
    };
    match rest.rsplit_once('-') {
        Some((owner, mid))
            if !owner.is_empty() && (6..=10).contains(&mid.len()) && is_generated(mid) =>
        {
            (Kind::Deployment, owner)
        }
        Some((owner, mid))
            if !owner.is_empty() && mid.len() >= 8 && mid.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (Kind::CronJob, owner)
        }
        _ => (Kind::Controller, rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "8b5f2c1e-3d4a-4f6b-9c7e-0a1b2c3d4e5f";

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The labels the kubelet gives a container of pod `pod` in namespace `shop`.
    fn container(pod: &str, name: &str) -> Labels {
        labels(&[
            (POD_NAMESPACE, "shop"),
            (POD_NAME, pod),
            (POD_UID, UID),
            (CONTAINER_NAME, name),
            ("io.cri-containerd.kind", "container"),
        ])
    }

    fn key(pod: &str, pod_labels: Option<&Labels>) -> String {
        match role(&container(pod, "web"), pod_labels, None, Some("node-1")) {
            Some(Role::Container(c)) => c.key(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn controllers_from_the_pod_labels() {
        let deploy = labels(&[("app", "web"), (POD_TEMPLATE_HASH, "7d9f8c6b5")]);
        assert_eq!(
            key("web-7d9f8c6b5-x2k4p", Some(&deploy)),
            "k8s:shop/deployment/web/web"
        );
        // A Deployment whose own name ends like a hash: the label says where the hash starts.
        let deploy = labels(&[(POD_TEMPLATE_HASH, "6b474476c4")]);
        assert_eq!(
            key("api-bcdfgh-6b474476c4-zq9vw", Some(&deploy)),
            "k8s:shop/deployment/api-bcdfgh/web"
        );
        let sts = labels(&[
            (STATEFULSET_POD_NAME, "db-12"),
            (CONTROLLER_REVISION_HASH, "db-5d8f7c9b4"),
        ]);
        assert_eq!(key("db-12", Some(&sts)), "k8s:shop/statefulset/db/web");
        let ds = labels(&[
            (CONTROLLER_REVISION_HASH, "6c9d8b7f5"),
            (POD_TEMPLATE_GENERATION, "3"),
        ]);
        assert_eq!(
            key("node-exporter-x2k4p", Some(&ds)),
            "k8s:shop/daemonset/node-exporter/web"
        );
        let job = labels(&[(JOB_NAME, "migrate"), (LEGACY_JOB_NAME, "migrate")]);
        assert_eq!(key("migrate-x2k4p", Some(&job)), "k8s:shop/job/migrate/web");
        let cron = labels(&[(LEGACY_JOB_NAME, "backup-29012345")]);
        assert_eq!(
            key("backup-29012345-8hx7v", Some(&cron)),
            "k8s:shop/cronjob/backup/web"
        );
        // No controller label: the pod is its own owner, whatever its name looks like.
        assert_eq!(
            key("debug-x2k4p", Some(&labels(&[("run", "debug")]))),
            "k8s:shop/pod/debug-x2k4p/web"
        );
        assert_eq!(key("db-0", Some(&Labels::new())), "k8s:shop/pod/db-0/web");
    }

    #[test]
    fn static_pods_lose_their_node_suffix() {
        let mut c = container("etcd-node-1", "etcd");
        c.insert(POD_UID.into(), "6a1c9e0b8f7d4e2a5c3b1d9f8e7a6c5b".into());
        let Some(Role::Container(pc)) = role(
            &c,
            Some(&labels(&[("tier", "control-plane")])),
            None,
            Some("node-1"),
        ) else {
            panic!()
        };
        assert_eq!(pc.key(), "k8s:shop/static/etcd/etcd");
        assert_eq!(pc.pod, "etcd-node-1");
        // On another node name, or without one, the name stays whole.
        let Some(Role::Container(pc)) = role(&c, None, None, None) else {
            panic!()
        };
        assert_eq!(pc.key(), "k8s:shop/static/etcd-node-1/etcd");
        // CRI-O keeps the pod's annotations: the config source says it, whatever the uid.
        let c = container("proxy-node-1", "proxy");
        let src = labels(&[(CONFIG_SOURCE, "file")]);
        let Some(Role::Container(pc)) = role(&c, Some(&Labels::new()), Some(&src), Some("node-1"))
        else {
            panic!()
        };
        assert_eq!(pc.key(), "k8s:shop/static/proxy/proxy");
        let api = labels(&[(CONFIG_SOURCE, "api")]);
        let Some(Role::Container(pc)) = role(&c, Some(&Labels::new()), Some(&api), Some("node-1"))
        else {
            panic!()
        };
        assert_eq!(pc.kind, Kind::Pod);
    }

    #[test]
    fn the_sandbox_is_no_workload() {
        for (k, v) in SANDBOX_MARKS {
            let mut l = labels(&[
                (POD_NAMESPACE, "shop"),
                (POD_NAME, "web-7d9f8c6b5-x2k4p"),
                (POD_UID, UID),
            ]);
            l.insert(k.into(), v.into());
            assert_eq!(role(&l, None, None, None), Some(Role::Sandbox), "{k}");
            assert!(is_sandbox(&l));
        }
        assert!(!is_sandbox(&container("x", "y")));
    }

    #[test]
    fn containers_the_kubelet_did_not_make() {
        assert_eq!(role(&Labels::new(), None, None, None), None);
        let mut c = container("web", "web");
        c.insert(CONTAINER_NAME.into(), String::new());
        assert_eq!(role(&c, None, None, None), None);
        c.remove(POD_NAMESPACE);
        assert_eq!(role(&c, None, None, None), None);
    }

    #[test]
    fn owners_from_the_name_alone() {
        let cases = [
            ("web-7d9f8c6b5-x2k4p", Kind::Deployment, "web"),
            ("web-6b474476c4-zq9vw", Kind::Deployment, "web"),
            ("my-api-gw-7d9f8c6b5-x2k4p", Kind::Deployment, "my-api-gw"),
            ("db-0", Kind::StatefulSet, "db"),
            ("db-12", Kind::StatefulSet, "db"),
            ("backup-29012345-8hx7v", Kind::CronJob, "backup"),
            ("node-exporter-x2k4p", Kind::Controller, "node-exporter"),
            ("my-svc-x2k4p", Kind::Controller, "my-svc"),
            ("debug", Kind::Pod, "debug"),
            ("debug-shell", Kind::Pod, "debug-shell"),
            ("web-abcde", Kind::Pod, "web-abcde"),
            ("web-X2K4P", Kind::Pod, "web-X2K4P"),
            ("-0", Kind::Pod, "-0"),
            ("-x2k4p", Kind::Pod, "-x2k4p"),
            ("web-", Kind::Pod, "web-"),
            ("", Kind::Pod, ""),
        ];
        for (pod, kind, owner) in cases {
            assert_eq!(owner_from_name(pod), (kind, owner), "{pod}");
        }
        assert_eq!(
            key("web-7d9f8c6b5-x2k4p", None),
            "k8s:shop/deployment/web/web"
        );
    }

    #[test]
    fn kinds_round_trip() {
        for k in [
            Kind::Deployment,
            Kind::StatefulSet,
            Kind::DaemonSet,
            Kind::Job,
            Kind::CronJob,
            Kind::Static,
            Kind::Pod,
            Kind::Controller,
        ] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("Deployment"), None);
    }
}
