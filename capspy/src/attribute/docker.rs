//! Container names, images and labels from the Docker Engine API on its unix socket, and the
//! workload a container belongs to. Optional: everything works by container id without it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::errors::Error as ApiError;
use bollard::models::ContainerInspectResponse;

use crate::model::caps::CapSet;

const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// An engine that does not answer this fast is treated as absent: the daemon must not wait.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("Docker Engine API: {0}")]
    Api(#[from] ApiError),
    #[error("Docker Engine API did not answer within {0:?}")]
    Timeout(Duration),
}

/// What capspy needs to know about a container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// Without Docker's leading '/'.
    pub name: String,
    /// The image as the container was created from it (e.g. `busybox:latest`), else its id.
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// The main process, while running.
    pub pid: Option<u32>,
    pub running: bool,
    /// What the engine's record of the container says it was granted (bounding and, for root,
    /// effective): known after its processes are gone, unlike what `/proc` shows.
    pub granted: Option<CapSet>,
}

/// A client of the local Docker engine.
#[derive(Clone, Debug)]
pub struct Docker {
    client: bollard::Docker,
}

impl Docker {
    /// Connects to the engine at `DOCKER_HOST` if it is a `unix://` address, else at
    /// `/var/run/docker.sock`. None if no engine answers within a second.
    ///
    /// A `tcp://` or `ssh://` `DOCKER_HOST` is ignored: capspy profiles this host's containers,
    /// which only the local engine runs.
    pub async fn connect() -> Option<Docker> {
        let host = std::env::var("DOCKER_HOST").ok();
        Self::connect_to(socket_path(host.as_deref())).await
    }

    pub async fn connect_to(socket: PathBuf) -> Option<Docker> {
        let path = socket.to_str()?;
        let client = bollard::Docker::connect_with_unix(
            path,
            REQUEST_TIMEOUT.as_secs(),
            bollard::API_DEFAULT_VERSION,
        )
        .ok()?;
        // Also the ping: asks /version and lowers our API version to the engine's (Debian 12's
        // Docker 20.10 speaks 1.41 and refuses newer clients).
        let client = tokio::time::timeout(PING_TIMEOUT, client.negotiate_version())
            .await
            .ok()?
            .ok()?;
        Some(Docker { client })
    }

    /// podman's Docker-compatible API at `socket`. Its `/version` gathers host facts (1 to 2 s
    /// measured under load), so the ping is `/_ping` and the API version is fixed at 1.41, the
    /// compatible API's version since podman 3.
    pub async fn connect_podman(socket: PathBuf) -> Option<Docker> {
        let client = bollard::Docker::connect_with_unix(
            socket.to_str()?,
            REQUEST_TIMEOUT.as_secs(),
            &bollard::ClientVersion {
                major_version: 1,
                minor_version: 41,
            },
        )
        .ok()?;
        tokio::time::timeout(PING_TIMEOUT, client.ping())
            .await
            .ok()?
            .ok()?;
        Some(Docker { client })
    }

    /// The container with this id (or name); None if the engine does not know it.
    pub async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, DockerError> {
        let id = id.trim_start_matches('/');
        if !is_reference(id) {
            // Goes into the URL path: anything else is not a container and must not become
            // another endpoint.
            return Ok(None);
        }
        match timed(self.client.inspect_container(id, None)).await? {
            Ok(resp) => Ok(Some(info_from_inspect(resp))),
            Err(ApiError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every running container, inspected (the list alone has no pid).
    pub async fn list_running(&self) -> Result<Vec<ContainerInfo>, DockerError> {
        let summaries = timed(self.client.list_containers(None)).await??;
        let mut out = Vec::with_capacity(summaries.len());
        for id in summaries.into_iter().filter_map(|s| s.id) {
            // Ones that stopped or vanished since the list are not running any more.
            if let Some(info) = self.inspect(&id).await?
                && info.running
            {
                out.push(info);
            }
        }
        Ok(out)
    }
}

async fn timed<T>(f: impl Future<Output = T>) -> Result<T, DockerError> {
    tokio::time::timeout(REQUEST_TIMEOUT, f)
        .await
        .map_err(|_| DockerError::Timeout(REQUEST_TIMEOUT))
}

pub fn socket_path(docker_host: Option<&str>) -> PathBuf {
    docker_host
        .and_then(|h| h.strip_prefix("unix://"))
        .filter(|p| !p.is_empty())
        .unwrap_or(DEFAULT_SOCKET)
        .into()
}

/// A container id, id prefix or name as Docker allows them.
fn is_reference(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.len() <= 255
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Missing fields become empty: older engines and odd responses must not break attribution.
fn info_from_inspect(resp: ContainerInspectResponse) -> ContainerInfo {
    let config = resp.config.unwrap_or_default();
    let state = resp.state.unwrap_or_default();
    let running = state.running.unwrap_or(false);
    ContainerInfo {
        id: resp.id.unwrap_or_default(),
        name: resp
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        image: config
            .image
            .filter(|i| !i.is_empty())
            .or(resp.image)
            .unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        // Stopped containers report pid 0.
        pid: state
            .pid
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p != 0 && running),
        running,
        granted: resp.host_config.and_then(|h| {
            docker_granted(
                h.privileged.unwrap_or(false),
                &h.cap_add.unwrap_or_default(),
                &h.cap_drop.unwrap_or_default(),
            )
        }),
    }
}

/// What Docker grants a container created with these options, computed as moby's
/// `oci/caps.TweakCapabilities` does (Docker's inspect shows only the options): privileged is
/// every capability; `ALL` added is every one but those dropped; `ALL` dropped is the added
/// ones alone; else the default set, minus the dropped, plus the added. None for a name this
/// build does not know (the caller falls back to what the processes hold).
/// <https://github.com/moby/moby/blob/v27.5.1/oci/caps/utils.go>
pub fn docker_granted(privileged: bool, add: &[String], drop: &[String]) -> Option<CapSet> {
    let is_all = |names: &[String]| names.iter().any(|n| n.eq_ignore_ascii_case("ALL"));
    let named = |names: &[String]| {
        CapSet::from_names(
            names
                .iter()
                .map(String::as_str)
                .filter(|n| !n.eq_ignore_ascii_case("ALL")),
        )
        .ok()
    };
    if privileged {
        return Some(CapSet::all());
    }
    let (added, dropped) = (named(add)?, named(drop)?);
    Some(if is_all(add) {
        CapSet::all().without(dropped)
    } else if is_all(drop) {
        added
    } else {
        CapSet(CapSet::DOCKER_DEFAULT.without(dropped).0 | added.0)
    })
}

/// What podman's own API says a container was granted: `BoundingCaps` | `EffectiveCaps` of
/// `GET /v4.0.0/libpod/containers/<id>/json`, taken from its spec, so known after it exited.
/// None if podman does not answer or does not say (podman 3 refuses the 4.0 API: its
/// containers' processes tell instead). The libpod API answers only under a versioned path.
pub async fn podman_granted(socket: &Path, id: &str) -> Option<CapSet> {
    if !is_reference(id) {
        return None;
    }
    let path = format!("/v4.0.0/libpod/containers/{id}/json");
    match crate::attribute::unix_http::get(socket, &path).await {
        Ok((200, body)) => libpod_granted(&body),
        Ok(_) => None,
        Err(e) => {
            log::debug!("podman {path}: {e}");
            None
        }
    }
}

fn libpod_granted(body: &[u8]) -> Option<CapSet> {
    #[derive(serde::Deserialize)]
    struct Inspect {
        #[serde(rename = "BoundingCaps")]
        bounding: Option<Vec<String>>,
        #[serde(rename = "EffectiveCaps")]
        effective: Option<Vec<String>>,
    }
    let i: Inspect = serde_json::from_slice(body).ok()?;
    if i.bounding.is_none() && i.effective.is_none() {
        return None;
    }
    let names = i.bounding.iter().chain(&i.effective).flatten();
    CapSet::from_names(names.map(String::as_str)).ok()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    Compose,
    Kubernetes,
    Plain,
}

/// The stable identity behind containers: restarts and replicas share it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Workload {
    pub key: String,
    pub kind: WorkloadKind,
}

const COMPOSE_PROJECT: &str = "com.docker.compose.project";
const COMPOSE_SERVICE: &str = "com.docker.compose.service";

/// The workload of a container, from its labels:
/// - compose: `compose:<project>/<service>`;
/// - Kubernetes (dockershim, cri-dockerd): `k8s:<namespace>/<kind>/<owner>/<container>`, the
///   owner read from the pod's name ([`crate::attribute::k8s::owner_from_name`]);
/// - else `image:<image>/<name>`, the image with an implicit `:latest` and Docker Hub prefix
///   normalised, and the name without a trailing replica index (`web-2`, `app_1` → `web`,
///   `app`): replicas started by hand or by scripts under numbered names merge, and a container
///   restarted under the same name and image is the same workload. A random name that Docker
///   picked (`festive_hopper`) is its own workload.
pub fn workload_of(info: &ContainerInfo) -> Workload {
    let label = |k: &str| info.labels.get(k).map(String::as_str).unwrap_or_default();
    let (project, service) = (label(COMPOSE_PROJECT), label(COMPOSE_SERVICE));
    if !project.is_empty() && !service.is_empty() {
        return Workload {
            key: format!("compose:{project}/{service}"),
            kind: WorkloadKind::Compose,
        };
    }
    if let Some(crate::attribute::k8s::Role::Container(c)) =
        crate::attribute::k8s::role(&info.labels, None, None, None)
    {
        return Workload {
            key: c.key(),
            kind: WorkloadKind::Kubernetes,
        };
    }
    Workload {
        key: format!(
            "image:{}/{}",
            normalize_image(&info.image),
            strip_replica_index(&info.name)
        ),
        kind: WorkloadKind::Plain,
    }
}

/// `web-2` and `app_1` → `web`, `app`; names that are only digits stay.
fn strip_replica_index(name: &str) -> &str {
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if stem.len() == name.len() {
        return name;
    }
    match stem.strip_suffix(['-', '_']) {
        Some(base) if !base.is_empty() => base,
        _ => name,
    }
}

/// `busybox` and `docker.io/library/busybox:latest` are one image.
fn normalize_image(image: &str) -> String {
    let short = image
        .strip_prefix("docker.io/library/")
        .or_else(|| image.strip_prefix("docker.io/"))
        .unwrap_or(image);
    let last = short.rsplit('/').next().unwrap_or(short);
    if short.is_empty() || short.contains('@') || short.starts_with("sha256:") || last.contains(':')
    {
        short.to_owned()
    } else {
        format!("{short}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, image: &str, labels: &[(&str, &str)]) -> ContainerInfo {
        ContainerInfo {
            id: "c73e4c3fbecddc7add30d4a756db5b3c37d200708bfaaf55b726ca614d4269a1".into(),
            name: name.into(),
            image: image.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            pid: Some(4242),
            running: true,
            granted: None,
        }
    }

    fn key(i: &ContainerInfo) -> String {
        workload_of(i).key
    }

    #[test]
    fn compose_project_and_service() {
        let labels = [
            (COMPOSE_PROJECT, "shop"),
            (COMPOSE_SERVICE, "api"),
            ("com.docker.compose.container-number", "2"),
        ];
        let w = workload_of(&info("shop-api-2", "shop/api:1.4", &labels));
        assert_eq!(w.key, "compose:shop/api");
        assert_eq!(w.kind, WorkloadKind::Compose);
        // A project label alone is not enough.
        let w = workload_of(&info("x", "busybox", &[(COMPOSE_PROJECT, "shop")]));
        assert_eq!(w.kind, WorkloadKind::Plain);
    }

    #[test]
    fn kubernetes_labels_name_the_pod_owner() {
        use crate::attribute::k8s::{CONTAINER_NAME, POD_NAME, POD_NAMESPACE, POD_UID};
        // Docker has no pod labels to give: the owner is read from the pod's name (the rules
        // are tested in k8s.rs).
        let k8s = |pod: &str| {
            workload_of(&info(
                "k8s_nginx_x",
                "nginx",
                &[
                    (POD_NAMESPACE, "prod"),
                    (POD_NAME, pod),
                    (CONTAINER_NAME, "nginx"),
                    (POD_UID, "8b5f2c1e-3d4a-4f6b-9c7e-0a1b2c3d4e5f"),
                ],
            ))
        };
        let w = k8s("web-7d9f8c6b5-x2k4p");
        assert_eq!(w.key, "k8s:prod/deployment/web/nginx");
        assert_eq!(w.kind, WorkloadKind::Kubernetes);
        assert_eq!(k8s("db-0").key, "k8s:prod/statefulset/db/nginx");
        assert_eq!(k8s("debug").key, "k8s:prod/pod/debug/nginx");
    }

    #[test]
    fn plain_containers_by_image_and_name() {
        let w = workload_of(&info("web", "nginx:1.27", &[]));
        assert_eq!(w.key, "image:nginx:1.27/web");
        assert_eq!(w.kind, WorkloadKind::Plain);
        // Restarted under the same name, however the image was spelled.
        for image in ["busybox", "busybox:latest", "docker.io/library/busybox"] {
            assert_eq!(
                key(&info("pinger", image, &[])),
                "image:busybox:latest/pinger"
            );
        }
        // Numbered replicas merge.
        for name in ["web-1", "web-2", "web_3", "web"] {
            assert_eq!(key(&info(name, "nginx:1.27", &[])), "image:nginx:1.27/web");
        }
        // ... but not across images.
        assert_ne!(
            key(&info("web-1", "nginx:1.27", &[])),
            key(&info("web-2", "nginx:1.28", &[]))
        );
    }

    #[test]
    fn replica_index_and_image_edge_cases() {
        assert_eq!(strip_replica_index("12"), "12");
        assert_eq!(strip_replica_index("-1"), "-1");
        assert_eq!(strip_replica_index("web1"), "web1");
        assert_eq!(strip_replica_index("web-"), "web-");
        assert_eq!(strip_replica_index("web-1-2"), "web-1");
        assert_eq!(strip_replica_index(""), "");
        assert_eq!(normalize_image(""), "");
        assert_eq!(
            normalize_image("registry:5000/team/app"),
            "registry:5000/team/app:latest"
        );
        assert_eq!(
            normalize_image("registry:5000/team/app:2"),
            "registry:5000/team/app:2"
        );
        assert_eq!(
            normalize_image("docker.io/grafana/grafana"),
            "grafana/grafana:latest"
        );
        assert_eq!(normalize_image("alpine@sha256:abcd"), "alpine@sha256:abcd");
        assert_eq!(
            normalize_image("sha256:8d23eb8e3902"),
            "sha256:8d23eb8e3902"
        );
    }

    #[test]
    fn inspect_responses_with_missing_fields() {
        let empty: ContainerInspectResponse = serde_json::from_str("{}").unwrap();
        assert_eq!(info_from_inspect(empty), ContainerInfo::default());

        let odd: ContainerInspectResponse = serde_json::from_str(
            r#"{"Id":"abc","Name":"/web-1","Image":"sha256:8d23",
                "Config":{"Image":"","Labels":null},
                "State":{"Running":false,"Pid":0}}"#,
        )
        .unwrap();
        let i = info_from_inspect(odd);
        assert_eq!(i.name, "web-1");
        assert_eq!(i.image, "sha256:8d23", "falls back to the image id");
        assert_eq!(i.pid, None);
        assert!(!i.running);

        let negative: ContainerInspectResponse =
            serde_json::from_str(r#"{"State":{"Running":true,"Pid":-5}}"#).unwrap();
        assert_eq!(info_from_inspect(negative).pid, None);
    }

    #[test]
    fn inspect_response_of_a_running_container() {
        let resp: ContainerInspectResponse = serde_json::from_str(
            r#"{"Id":"c73e4c3fbecddc7add30d4a756db5b3c37d200708bfaaf55b726ca614d4269a1",
                "Name":"/pinger","Image":"sha256:8d23eb8e",
                "Config":{"Image":"capspy-test:1","Labels":{"team":"net"}},
                "State":{"Status":"running","Running":true,"Pid":6413}}"#,
        )
        .unwrap();
        let i = info_from_inspect(resp);
        assert_eq!(i.name, "pinger");
        assert_eq!(i.image, "capspy-test:1");
        assert_eq!(i.pid, Some(6413));
        assert_eq!(i.labels.get("team").map(String::as_str), Some("net"));
    }

    #[test]
    fn granted_set_from_the_create_options() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let granted = |p, add: &[&str], drop: &[&str]| {
            docker_granted(p, &names(add), &names(drop)).map(|s| {
                s.iter()
                    .map(crate::model::caps::Capability::name)
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            docker_granted(false, &[], &[]),
            Some(CapSet::DOCKER_DEFAULT)
        );
        assert_eq!(granted(false, &["NET_RAW"], &["ALL"]).unwrap(), ["NET_RAW"]);
        // Docker accepts CAP_ prefixes and any case.
        assert_eq!(
            granted(false, &["cap_net_admin", "CAP_SYS_TIME"], &["all"]).unwrap(),
            ["NET_ADMIN", "SYS_TIME"]
        );
        let tweaked = granted(false, &["NET_ADMIN"], &["NET_RAW", "MKNOD"]).unwrap();
        assert_eq!(tweaked.len(), 13, "{tweaked:?}");
        assert!(
            tweaked.contains(&"NET_ADMIN".to_owned()) && !tweaked.contains(&"NET_RAW".to_owned())
        );
        let all_but = granted(false, &["ALL"], &["SYS_ADMIN"]).unwrap();
        assert_eq!(all_but.len(), 40);
        assert!(!all_but.contains(&"SYS_ADMIN".to_owned()));
        assert_eq!(
            docker_granted(true, &[], &names(&["ALL"])),
            Some(CapSet::all())
        );
        assert_eq!(granted(false, &["NOT_A_CAP"], &[]), None);
    }

    #[test]
    fn inspect_carries_the_granted_set() {
        let resp: ContainerInspectResponse = serde_json::from_str(
            r#"{"Id":"abc","HostConfig":{"CapAdd":["NET_RAW"],"CapDrop":["ALL"],
                "Privileged":false}}"#,
        )
        .unwrap();
        assert_eq!(
            info_from_inspect(resp).granted,
            Some(CapSet(1 << 13)),
            "NET_RAW alone"
        );
        let resp: ContainerInspectResponse =
            serde_json::from_str(r#"{"HostConfig":{"CapAdd":null,"CapDrop":null}}"#).unwrap();
        assert_eq!(
            info_from_inspect(resp).granted,
            Some(CapSet::DOCKER_DEFAULT)
        );
    }

    #[test]
    fn podman_says_what_it_granted() {
        // `podman inspect`'s libpod JSON (podman 4.3), trimmed.
        let body = br#"{"Id":"abc","EffectiveCaps":["CAP_CHOWN","CAP_NET_RAW"],
            "BoundingCaps":["CAP_CHOWN","CAP_NET_RAW"],"HostConfig":{"CapAdd":["CAP_NET_RAW"]}}"#;
        assert_eq!(libpod_granted(body), Some(CapSet(1 | 1 << 13)));
        // Run as another user: nothing effective, the bounding set still granted.
        let body = br#"{"EffectiveCaps":null,"BoundingCaps":["CAP_KILL"]}"#;
        assert_eq!(libpod_granted(body), Some(CapSet(1 << 5)));
        assert_eq!(libpod_granted(br#"{"Id":"abc"}"#), None, "an older podman");
    }

    #[test]
    fn socket_from_docker_host() {
        assert_eq!(socket_path(None), PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(
            socket_path(Some("unix:///run/user/1000/docker.sock")),
            PathBuf::from("/run/user/1000/docker.sock")
        );
        assert_eq!(
            socket_path(Some("tcp://10.0.0.2:2375")),
            PathBuf::from(DEFAULT_SOCKET)
        );
        assert_eq!(socket_path(Some("unix://")), PathBuf::from(DEFAULT_SOCKET));
    }

    #[test]
    fn only_container_references_reach_the_url() {
        assert!(is_reference("c73e4c3fbecd"));
        assert!(is_reference("web_1.blue-x"));
        assert!(!is_reference(""));
        assert!(!is_reference("../images/json"));
        assert!(!is_reference("web?x=1"));
        assert!(!is_reference("-web"));
        assert!(!is_reference(&"a".repeat(256)));
    }

    #[tokio::test]
    async fn no_engine_is_none_quickly() {
        let started = std::time::Instant::now();
        assert!(
            Docker::connect_to(PathBuf::from("/nonexistent/docker.sock"))
                .await
                .is_none()
        );
        // A socket nobody listens on: refused at once.
        let dir = std::env::temp_dir().join(format!("capspy-docker-{}", std::process::id()));
        let _ = std::fs::create_dir(&dir);
        let sock = dir.join("dead.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock));
        assert!(Docker::connect_to(sock).await.is_none());
        // A socket that accepts and never answers: the ping times out.
        let silent = dir.join("silent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&silent).unwrap();
        assert!(Docker::connect_to(silent).await.is_none());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    /// Runs `docker` (the CLI) for setup; None if it fails.
    fn cli(args: &[&str]) -> Option<String> {
        let out = std::process::Command::new("docker")
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Removes the test's container and image even if an assertion fails.
    struct Cleanup {
        container: String,
        image: String,
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = cli(&["rm", "-f", &self.container]);
            let _ = cli(&["rmi", &self.image]);
        }
    }

    /// Imports an image `tag` holding only `busybox`, as /bin/busybox; false if docker failed.
    fn import_busybox(busybox: &str, tag: &str) -> bool {
        let rootfs =
            std::env::temp_dir().join(format!("capspy-docker-rootfs-{}", std::process::id()));
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
        let import = format!(
            "tar -C {} -c . | docker import - {tag} >/dev/null",
            rootfs.display()
        );
        let imported = std::process::Command::new("sh")
            .args(["-c", &import])
            .status()
            .is_ok_and(|s| s.success());
        let _ = std::fs::remove_dir_all(&rootfs);
        imported
    }

    /// The v2 cgroup path of a process, as /proc shows it.
    fn v2_cgroup_of(pid: u32) -> String {
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        cgroup
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("v2 line")
            .to_owned()
    }

    /// The engine finds the container by id and by name, with its image, labels, granted set
    /// (Docker's default) and workload.
    async fn assert_found_by_id_and_name(docker: &Docker, id: &str, name: &str, tag: &str) {
        let by_id = docker.inspect(id).await.unwrap().expect("inspect by id");
        assert_eq!(by_id.id, id);
        assert_eq!(by_id.name, name);
        assert_eq!(by_id.image, tag);
        assert!(by_id.running);
        assert_eq!(by_id.labels.get("team").map(String::as_str), Some("net"));
        assert_eq!(by_id.granted, Some(CapSet::DOCKER_DEFAULT));
        let by_name = docker
            .inspect(name)
            .await
            .unwrap()
            .expect("inspect by name");
        assert_eq!(by_name.id, id);
        assert_eq!(
            workload_of(&by_id).key,
            format!("image:{tag}/capspy-unit-docker-{}", std::process::id())
        );
    }

    /// With a real engine (skips without one): a container is found by id and name, its main
    /// process sits in the cgroup `/docker/<id>` or `docker-<id>.scope`, and the index
    /// resolves that cgroup's id to the same container.
    #[tokio::test]
    async fn real_engine_container() {
        use crate::attribute::{CgroupIndex, Owner, Runtime, owner_from_path};
        use std::os::unix::fs::MetadataExt as _;

        let Some(docker) = Docker::connect().await else {
            eprintln!("skipped: no Docker engine");
            return;
        };
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let (Some(busybox), Ok(root), Some(_)) =
            (busybox, crate::kernel::cgroup::v2_root(), cli(&["version"]))
        else {
            eprintln!("skipped: needs busybox, the docker CLI and a cgroup v2 hierarchy");
            return;
        };
        let tag = format!("capspy-unit-docker:{}", std::process::id());
        let name = format!("capspy-unit-docker-{}-1", std::process::id());
        let _cleanup = Cleanup {
            container: name.clone(),
            image: tag.clone(),
        };
        assert!(import_busybox(busybox, &tag), "docker import failed");
        let id = cli(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            &name,
            "--label",
            "team=net",
            &tag,
            "/bin/busybox",
            "sleep",
            "60",
        ])
        .expect("docker run failed");

        assert_found_by_id_and_name(&docker, &id, &name, &tag).await;

        let running = docker.list_running().await.unwrap();
        let listed = running
            .iter()
            .find(|c| c.id == id)
            .expect("listed as running");
        let pid = listed.pid.expect("running container has a pid");

        // Its process's v2 cgroup, as /proc shows it and as the index finds it by inode.
        let path = v2_cgroup_of(pid);
        let want = Owner::Container {
            runtime: Runtime::Docker,
            id: id.clone(),
            pod_uid: None,
        };
        assert_eq!(owner_from_path(&path), want, "{path}");
        let ino = std::fs::metadata(root.join(path.trim_start_matches('/')))
            .unwrap()
            .ino();
        let mut index = CgroupIndex::new(root);
        assert_eq!(index.resolve(ino), Some(path));

        assert_eq!(
            docker.inspect(&"0".repeat(64)).await.unwrap(),
            None,
            "unknown ids are None"
        );
        assert_eq!(docker.inspect("../info").await.unwrap(), None);
    }
}
