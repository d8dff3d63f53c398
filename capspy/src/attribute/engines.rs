//! Who a container is, asked of the engine that runs it: Docker and podman (the Docker Engine
//! API, through bollard), containerd (its gRPC API) and CRI-O (its inspect endpoint). The
//! cgroup path says which engine; each engine is optional, and what it could not say is kept
//! as a reason for `capspy ls` and the reports.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::attribute::Runtime;
use crate::attribute::containerd::Containerd;
use crate::attribute::crio::Crio;
use crate::attribute::docker::{ContainerInfo, Docker};
use crate::attribute::k8s::{self, Labels, Role};
use crate::model::caps::CapSet;

/// Where each engine listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sockets {
    pub docker: PathBuf,
    pub podman: PathBuf,
    pub containerd: PathBuf,
    pub crio: PathBuf,
}

pub const PODMAN_SOCKET: &str = "/run/podman/podman.sock";

impl Default for Sockets {
    fn default() -> Self {
        Self {
            docker: crate::attribute::docker::socket_path(
                std::env::var("DOCKER_HOST").ok().as_deref(),
            ),
            podman: PODMAN_SOCKET.into(),
            containerd: crate::attribute::containerd::DEFAULT_SOCKET.into(),
            crio: crate::attribute::crio::DEFAULT_SOCKET.into(),
        }
    }
}

/// Whether an engine answered when the daemon started, and why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStatus {
    pub engine: String,
    pub socket: String,
    /// None when it answered.
    pub problem: Option<String>,
}

/// What an engine said a container is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    Named {
        /// Docker's and podman's name; `<pod>/<container>` for a pod's container; containerd's
        /// id otherwise.
        name: String,
        image: String,
        labels: Labels,
        workload: String,
        /// What the engine's record says the container was granted (bounding | effective);
        /// None where the engine does not say (CRI-O).
        granted: Option<CapSet>,
    },
    /// A pod's sandbox (pause) container: the runtime's infrastructure, whose checks go with
    /// the runtime's service.
    Infrastructure { unit: String },
}

#[derive(Debug, thiserror::Error)]
#[error("{engine}: {message}")]
pub struct EngineError {
    engine: Runtime,
    message: String,
}

fn failed(engine: Runtime) -> impl FnOnce(String) -> EngineError {
    move |message| EngineError { engine, message }
}

/// How often an engine that did not answer is tried again (it may start after capspy, or
/// restart).
const RETRY: Duration = Duration::from_secs(10);

pub struct Engines {
    sockets: Sockets,
    docker: Option<Docker>,
    podman: Option<Docker>,
    containerd: Option<Containerd>,
    crio: Option<Crio>,
    /// One per engine, in [`RUNTIMES`] order.
    statuses: Vec<EngineStatus>,
    /// When each absent engine may be tried again.
    retry_at: [Instant; 4],
    changed: bool,
    /// This node's name: static pods carry it as a suffix.
    node: Option<String>,
}

const RUNTIMES: [Runtime; 4] = [
    Runtime::Docker,
    Runtime::Podman,
    Runtime::Containerd,
    Runtime::CriO,
];

impl Engines {
    /// Connects to each engine that answers on its socket.
    pub async fn connect(sockets: &Sockets, node: Option<String>) -> Self {
        let mut engines = Self {
            sockets: sockets.clone(),
            docker: None,
            podman: None,
            containerd: None,
            crio: None,
            statuses: RUNTIMES
                .iter()
                .map(|r| EngineStatus {
                    engine: r.to_string(),
                    socket: String::new(),
                    problem: None,
                })
                .collect(),
            retry_at: [Instant::now(); 4],
            changed: false,
            node,
        };
        for runtime in RUNTIMES {
            engines.reconnect(runtime).await;
        }
        // The caller reads the first statuses; changes count from here.
        engines.changed = false;
        engines
    }

    /// Tries to connect to the engine of `runtime` again, and notes why it failed.
    async fn reconnect(&mut self, runtime: Runtime) {
        let slot = Self::slot(runtime);
        let socket = match runtime {
            Runtime::Docker => &self.sockets.docker,
            Runtime::Podman => &self.sockets.podman,
            Runtime::Containerd => &self.sockets.containerd,
            Runtime::CriO => &self.sockets.crio,
        }
        .clone();
        let problem = match socket_problem(&socket) {
            Some(p) => Some(p),
            None => match runtime {
                Runtime::Docker => match Docker::connect_to(socket.clone()).await {
                    Some(client) => {
                        self.docker = Some(client);
                        None
                    }
                    None => Some("did not answer within a second".to_owned()),
                },
                Runtime::Podman => match Docker::connect_podman(socket.clone()).await {
                    Some(client) => {
                        self.podman = Some(client);
                        None
                    }
                    None => Some("did not answer within a second".to_owned()),
                },
                Runtime::Containerd => match Containerd::connect(&socket).await {
                    Ok(client) => {
                        self.containerd = Some(client);
                        None
                    }
                    Err(e) => Some(e.to_string()),
                },
                Runtime::CriO => match Crio::connect(&socket).await {
                    Ok(client) => {
                        self.crio = Some(client);
                        None
                    }
                    Err(e) => Some(e.to_string()),
                },
            },
        };
        let status = EngineStatus {
            engine: runtime.to_string(),
            socket: socket.display().to_string(),
            problem,
        };
        self.changed |= self.statuses[slot] != status;
        self.statuses[slot] = status;
        self.retry_at[slot] = Instant::now() + RETRY;
    }

    fn slot(runtime: Runtime) -> usize {
        RUNTIMES.iter().position(|r| *r == runtime).unwrap_or(0)
    }

    fn connected(&self, runtime: Runtime) -> bool {
        match runtime {
            Runtime::Docker => self.docker.is_some(),
            Runtime::Podman => self.podman.is_some(),
            Runtime::Containerd => self.containerd.is_some(),
            Runtime::CriO => self.crio.is_some(),
        }
    }

    pub fn statuses(&self) -> &[EngineStatus] {
        &self.statuses
    }

    /// Whether a status changed since the last call (an engine came or went).
    pub fn take_change(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// What the engine of `runtime` says container `id` is: None when it does not know it,
    /// or there is no engine to ask (the reason is in [`Engines::statuses`]); an error when it
    /// did not answer (ask again later).
    pub async fn identify(
        &mut self,
        runtime: Runtime,
        id: &str,
    ) -> Result<Option<Identity>, EngineError> {
        if !self.connected(runtime) && Instant::now() >= self.retry_at[Self::slot(runtime)] {
            self.reconnect(runtime).await;
        }
        match runtime {
            Runtime::Docker | Runtime::Podman => {
                let client = if runtime == Runtime::Docker {
                    &self.docker
                } else {
                    &self.podman
                };
                let Some(client) = client else {
                    return Ok(None);
                };
                let info = client
                    .inspect(id)
                    .await
                    .map_err(|e| failed(runtime)(e.to_string()))?;
                let Some(mut info) = info else {
                    return Ok(None);
                };
                if runtime == Runtime::Podman {
                    // podman's CapAdd/CapDrop are against its containers.conf defaults, not
                    // Docker's: its own API says what the container was granted.
                    info.granted =
                        crate::attribute::docker::podman_granted(&self.sockets.podman, id).await;
                }
                Ok(Some(self.docker_identity(runtime, info)))
            }
            Runtime::Containerd => self.containerd(id).await,
            Runtime::CriO => self.crio(id).await,
        }
    }

    fn docker_identity(&self, runtime: Runtime, info: ContainerInfo) -> Identity {
        if k8s::role(&info.labels, None, None, self.node.as_deref()) == Some(Role::Sandbox) {
            return Identity::Infrastructure {
                unit: service_of(runtime).to_owned(),
            };
        }
        Identity::Named {
            workload: crate::attribute::docker::workload_of(&info).key,
            granted: info.granted,
            name: info.name,
            image: info.image,
            labels: info.labels,
        }
    }

    async fn containerd(&self, id: &str) -> Result<Option<Identity>, EngineError> {
        let Some(client) = &self.containerd else {
            return Ok(None);
        };
        let err = |e: crate::attribute::containerd::ContainerdError| {
            failed(Runtime::Containerd)(e.to_string())
        };
        let Some(c) = client.find(id).await.map_err(err)? else {
            return Ok(None);
        };
        let pod_labels = match c.labels.get(k8s::POD_UID) {
            Some(uid) if !k8s::is_sandbox(&c.labels) => client
                .pod_sandbox(&c.namespace, uid)
                .await
                .map_err(err)?
                .map(|s| s.labels),
            _ => None,
        };
        let plain = ContainerInfo {
            name: if crate::attribute::owner::is_id(&c.id) {
                crate::model::text::short_id(&c.id).to_owned()
            } else {
                c.id.clone()
            },
            id: c.id,
            image: c.image,
            labels: c.labels,
            pid: None,
            running: true,
            granted: c.granted,
        };
        Ok(Some(self.pod_identity(
            Runtime::Containerd,
            plain,
            pod_labels.as_ref(),
            None,
        )))
    }

    async fn crio(&self, id: &str) -> Result<Option<Identity>, EngineError> {
        let Some(client) = &self.crio else {
            return Ok(None);
        };
        let err = |e: crate::attribute::crio::CrioError| failed(Runtime::CriO)(e.to_string());
        let Some(c) = client.inspect(id).await.map_err(err)? else {
            return Ok(None);
        };
        let all = c.labels_and_annotations();
        let sandbox = if k8s::is_sandbox(&all) || c.sandbox.is_empty() {
            None
        } else {
            client.inspect(&c.sandbox).await.map_err(err)?
        };
        let plain = ContainerInfo {
            id: id.to_owned(),
            name: c.name,
            image: c.image,
            labels: all,
            pid: None,
            running: true,
            // CRI-O's inspect answer carries no OCI spec.
            granted: None,
        };
        Ok(Some(self.pod_identity(
            Runtime::CriO,
            plain,
            sandbox.as_ref().map(|s| &s.labels),
            sandbox.as_ref().map(|s| &s.annotations),
        )))
    }

    /// A container of an engine that runs pods: a pod's container is its owner's workload;
    /// anything else is named as Docker names plain containers.
    fn pod_identity(
        &self,
        runtime: Runtime,
        info: ContainerInfo,
        pod_labels: Option<&Labels>,
        pod_annotations: Option<&Labels>,
    ) -> Identity {
        match k8s::role(
            &info.labels,
            pod_labels,
            pod_annotations,
            self.node.as_deref(),
        ) {
            Some(Role::Sandbox) => Identity::Infrastructure {
                unit: service_of(runtime).to_owned(),
            },
            Some(Role::Container(pc)) => Identity::Named {
                granted: info.granted,
                name: format!("{}/{}", pc.pod, pc.container),
                workload: pc.key(),
                image: info.image,
                labels: info.labels,
            },
            None => self.docker_identity(runtime, info),
        }
    }
}

/// The systemd unit a runtime's own processes run in.
fn service_of(runtime: Runtime) -> &'static str {
    match runtime {
        Runtime::Docker => "docker.service",
        Runtime::Containerd => "containerd.service",
        Runtime::CriO => "crio.service",
        Runtime::Podman => "podman.service",
    }
}

/// Why a client cannot talk to `socket`, found before trying: the reason people act on.
fn socket_problem(socket: &Path) -> Option<String> {
    use std::os::unix::fs::FileTypeExt as _;
    let shown = socket.display();
    match std::fs::metadata(socket) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Some(format!("no socket at {shown} (engine not running here)"));
        }
        Err(e) => return Some(format!("{shown}: {e}")),
        Ok(m) if !m.file_type().is_socket() => return Some(format!("{shown} is not a socket")),
        Ok(_) => {}
    }
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => None,
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Some(format!(
            "permission denied on {shown} (run capspy as root or in the engine's group)"
        )),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            Some(format!("nothing listens on {shown}"))
        }
        Err(e) => Some(format!("{shown}: {e}")),
    }
}

/// One note per engine whose containers were recorded without names, saying why.
pub fn missing_names_notes(
    unnamed: &BTreeMap<String, usize>,
    statuses: Option<&[EngineStatus]>,
) -> Vec<String> {
    unnamed
        .iter()
        .map(|(engine, n)| {
            let why = statuses
                .and_then(|s| s.iter().find(|s| &s.engine == engine))
                .map_or_else(
                    || "its engine was not asked or did not know them".to_owned(),
                    |s| match &s.problem {
                        Some(p) => format!("the {engine} engine was not reachable: {p}"),
                        None => format!("the {engine} engine did not know them"),
                    },
                );
            format!(
                "{n} {engine} container(s) are known by id only (workload container:<id>, no names, labels or pods): {why}"
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_problems_say_what_to_do() {
        let dir = std::env::temp_dir().join(format!("capspy-engines-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let absent = dir.join("absent.sock");
        assert!(
            socket_problem(&absent)
                .unwrap()
                .contains("engine not running here")
        );
        let file = dir.join("file");
        std::fs::write(&file, "").unwrap();
        assert!(socket_problem(&file).unwrap().contains("not a socket"));
        let dead = dir.join("dead.sock");
        drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
        assert!(socket_problem(&dead).unwrap().contains("nothing listens"));
        let live = dir.join("live.sock");
        let _l = std::os::unix::net::UnixListener::bind(&live).unwrap();
        assert_eq!(socket_problem(&live), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn notes_name_the_engine_and_the_reason() {
        let unnamed = BTreeMap::from([("containerd".to_owned(), 3), ("podman".to_owned(), 1)]);
        let statuses = [EngineStatus {
            engine: "containerd".into(),
            socket: "/run/containerd/containerd.sock".into(),
            problem: Some("permission denied on /run/containerd/containerd.sock".into()),
        }];
        let notes = missing_names_notes(&unnamed, Some(&statuses));
        assert_eq!(notes.len(), 2);
        assert!(notes[0].starts_with("3 containerd container(s) are known by id only"));
        assert!(notes[0].ends_with("permission denied on /run/containerd/containerd.sock"));
        assert!(
            notes[1].contains("not asked or did not know them"),
            "{}",
            notes[1]
        );
    }

    /// An engine that starts after capspy is found on a later look, and its containers named.
    #[tokio::test]
    async fn a_late_engine_is_connected_when_it_answers() {
        use crate::attribute::crio::tests::{CONTAINER, SANDBOX, serve};
        let dir = std::env::temp_dir().join(format!("capspy-late-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let sockets = Sockets {
            crio: dir.join("crio.sock"),
            ..Sockets::default()
        };
        let mut engines = Engines::connect(&sockets, None).await;
        assert!(engines.statuses()[3].problem.is_some());
        assert!(!engines.take_change(), "nothing changed since connect");
        serve(
            &dir,
            vec![
                ("/info", "{}"),
                ("/containers/abc123", CONTAINER),
                ("/containers/a1b2c3", SANDBOX),
            ],
        );
        // Not before the retry interval...
        assert_eq!(
            engines.identify(Runtime::CriO, "abc123").await.unwrap(),
            None
        );
        // ... then it is asked again.
        engines.retry_at = [Instant::now(); 4];
        let found = engines.identify(Runtime::CriO, "abc123").await.unwrap();
        let Some(Identity::Named { name, workload, .. }) = found else {
            panic!("{found:?}")
        };
        assert_eq!(workload, "k8s:shop/deployment/web/web");
        assert_eq!(name, "web-7d9f8c6b5-x2k4p/web");
        assert_eq!(engines.statuses()[3].problem, None);
        assert!(engines.take_change());
        assert_eq!(
            engines.identify(Runtime::CriO, "a1b2c3").await.unwrap(),
            Some(Identity::Infrastructure {
                unit: "crio.service".into()
            })
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn absent_engines_are_reported_not_fatal() {
        let dir = Path::new("/nonexistent/capspy");
        let sockets = Sockets {
            docker: dir.join("docker.sock"),
            podman: dir.join("podman.sock"),
            containerd: dir.join("containerd.sock"),
            crio: dir.join("crio.sock"),
        };
        let mut engines = Engines::connect(&sockets, None).await;
        assert_eq!(engines.statuses().len(), 4);
        assert!(engines.statuses().iter().all(|s| s.problem.is_some()));
        for runtime in [
            Runtime::Docker,
            Runtime::Podman,
            Runtime::Containerd,
            Runtime::CriO,
        ] {
            assert_eq!(
                engines.identify(runtime, &"a".repeat(64)).await.unwrap(),
                None
            );
        }
    }
}
