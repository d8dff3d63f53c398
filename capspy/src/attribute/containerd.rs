//! Container labels and images from containerd's own API: gRPC on its unix socket (default
//! `/run/containerd/containerd.sock`). Containers the kubelet creates through CRI live in
//! namespace `k8s.io`, Docker's in `moby`, `ctr`'s and nerdctl's in `default`.
//!
//! The messages are the few capspy reads, declared with prost from containerd's published API
//! (`api/services/containers/v1/containers.proto`, `namespaces/v1/namespace.proto`,
//! `version/v1/version.proto`, stable since containerd 1.0; field numbers as there). Fields
//! capspy does not declare are skipped by the decoder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use crate::model::caps::CapSet;

pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";
/// The namespace of containers the kubelet creates through containerd's CRI plugin.
pub const K8S_NAMESPACE: &str = "k8s.io";
const NAMESPACE_HEADER: &str = "containerd-namespace";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("containerd API: {0}")]
    Status(#[from] tonic::Status),
    #[error("containerd API: {0}")]
    Transport(#[from] tonic::transport::Error),
}

#[derive(Clone, PartialEq, prost::Message)]
struct Container {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(map = "string, string", tag = "2")]
    labels: std::collections::HashMap<String, String>,
    #[prost(string, tag = "3")]
    image: String,
    /// The OCI runtime spec the container was created with, as JSON.
    #[prost(message, optional, tag = "5")]
    spec: Option<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GetContainerRequest {
    #[prost(string, tag = "1")]
    id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GetContainerResponse {
    #[prost(message, optional, tag = "1")]
    container: Option<Container>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListContainersRequest {
    #[prost(string, repeated, tag = "1")]
    filters: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListContainersResponse {
    #[prost(message, repeated, tag = "1")]
    containers: Vec<Container>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Namespace {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListNamespacesRequest {
    #[prost(string, tag = "1")]
    filter: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListNamespacesResponse {
    #[prost(message, repeated, tag = "1")]
    namespaces: Vec<Namespace>,
}

/// `google.protobuf.Empty`.
#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
struct VersionResponse {
    #[prost(string, tag = "1")]
    version: String,
}

const GET: &str = "/containerd.services.containers.v1.Containers/Get";
const LIST: &str = "/containerd.services.containers.v1.Containers/List";
const NAMESPACES: &str = "/containerd.services.namespaces.v1.Namespaces/List";
const VERSION: &str = "/containerd.services.version.v1.Version/Version";

/// A containerd container, as capspy needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerdInfo {
    pub id: String,
    pub namespace: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// Bounding | effective from its OCI spec: what it was granted, known after it exited.
    pub granted: Option<CapSet>,
}

impl From<(Container, &str)> for ContainerdInfo {
    fn from((c, namespace): (Container, &str)) -> Self {
        Self {
            id: c.id,
            namespace: namespace.to_owned(),
            image: c.image,
            labels: c.labels.into_iter().collect(),
            granted: c.spec.and_then(|s| oci_granted(&s.value)),
        }
    }
}

/// The union of `process.capabilities.bounding` and `.effective` in an OCI runtime spec
/// (<https://github.com/opencontainers/runtime-spec/blob/v1.2.0/config.md#process>); None when
/// the spec has no capabilities or names one this build does not know.
pub fn oci_granted(spec_json: &[u8]) -> Option<CapSet> {
    #[derive(serde::Deserialize)]
    struct Spec {
        process: Option<Process>,
    }
    #[derive(serde::Deserialize)]
    struct Process {
        capabilities: Option<Caps>,
    }
    #[derive(serde::Deserialize)]
    struct Caps {
        #[serde(default)]
        bounding: Vec<String>,
        #[serde(default)]
        effective: Vec<String>,
    }
    let spec: Spec = serde_json::from_slice(spec_json).ok()?;
    let caps = spec.process?.capabilities?;
    CapSet::from_names(
        caps.bounding
            .iter()
            .chain(&caps.effective)
            .map(String::as_str),
    )
    .ok()
}

/// A client of a local containerd.
#[derive(Clone, Debug)]
pub struct Containerd {
    channel: Channel,
    /// What containerd said it is (`1.6.20~ds1`), for notes.
    pub version: String,
}

impl Containerd {
    /// Connects to the containerd listening at `socket` and asks its version; an error if
    /// nothing answers within a second.
    pub async fn connect(socket: &Path) -> Result<Self, ContainerdError> {
        let path = socket.to_path_buf();
        // The URI is required by the API and unused: the connector dials the socket.
        let channel = Endpoint::from_static("http://containerd.invalid")
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .connect_with_connector(tower::service_fn(move |_| {
                let path: PathBuf = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await?;
        let mut client = Self {
            channel,
            version: String::new(),
        };
        let v: VersionResponse =
            tokio::time::timeout(CONNECT_TIMEOUT, client.call(VERSION, None, Empty {}))
                .await
                .map_err(|_| tonic::Status::deadline_exceeded("no answer to Version"))??;
        client.version = v.version;
        Ok(client)
    }

    async fn call<Req, Resp>(
        &self,
        path: &'static str,
        namespace: Option<&str>,
        message: Req,
    ) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut request = tonic::Request::new(message);
        if let Some(ns) = namespace {
            let value = ns
                .parse()
                .map_err(|_| tonic::Status::invalid_argument("namespace"))?;
            request.metadata_mut().insert(NAMESPACE_HEADER, value);
        }
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        Ok(grpc
            .unary(request, PathAndQuery::from_static(path), codec)
            .await?
            .into_inner())
    }

    /// The container with this id in `namespace`; None if containerd does not know it there.
    pub async fn get(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<Option<ContainerdInfo>, ContainerdError> {
        let request = GetContainerRequest { id: id.to_owned() };
        match self
            .call::<_, GetContainerResponse>(GET, Some(namespace), request)
            .await
        {
            Ok(r) => Ok(r.container.map(|c| (c, namespace).into())),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(s.into()),
        }
    }

    /// The container with this id in whichever namespace has it: `k8s.io` first.
    pub async fn find(&self, id: &str) -> Result<Option<ContainerdInfo>, ContainerdError> {
        if let Some(c) = self.get(K8S_NAMESPACE, id).await? {
            return Ok(Some(c));
        }
        let namespaces: ListNamespacesResponse = self
            .call(NAMESPACES, None, ListNamespacesRequest::default())
            .await?;
        for ns in namespaces.namespaces {
            if ns.name != K8S_NAMESPACE
                && let Some(c) = self.get(&ns.name, id).await?
            {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// The sandbox of the pod with this uid, whose labels are the pod's.
    pub async fn pod_sandbox(
        &self,
        namespace: &str,
        pod_uid: &str,
    ) -> Result<Option<ContainerdInfo>, ContainerdError> {
        let request = ListContainersRequest {
            filters: vec![sandbox_filter(pod_uid)],
        };
        let r: ListContainersResponse = self.call(LIST, Some(namespace), request).await?;
        // Several after a sandbox was recreated: all carry the pod's labels.
        Ok(r.containers
            .into_iter()
            .find(|c| crate::attribute::k8s::is_sandbox(&c.labels.clone().into_iter().collect()))
            .map(|c| (c, namespace).into()))
    }
}

/// containerd's filter syntax (`pkg/filters`): quoted field path and value, `,` for "and".
fn sandbox_filter(pod_uid: &str) -> String {
    let quoted = pod_uid.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "labels.\"{}\"==\"{quoted}\",labels.\"io.cri-containerd.kind\"==\"sandbox\"",
        crate::attribute::k8s::POD_UID
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn container_messages_decode_with_fields_capspy_skips() {
        // A Container as containerd encodes it, with fields capspy does not declare (runtime,
        // spec, snapshotter, sandbox): they are skipped.
        #[derive(Clone, PartialEq, prost::Message)]
        struct Runtime {
            #[prost(string, tag = "1")]
            name: String,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct Full {
            #[prost(string, tag = "1")]
            id: String,
            #[prost(map = "string, string", tag = "2")]
            labels: std::collections::HashMap<String, String>,
            #[prost(string, tag = "3")]
            image: String,
            #[prost(message, optional, tag = "4")]
            runtime: Option<Runtime>,
            #[prost(string, tag = "6")]
            snapshotter: String,
            #[prost(string, tag = "11")]
            sandbox: String,
        }
        let full = Full {
            id: "c73e".into(),
            labels: [("io.kubernetes.pod.name".to_owned(), "web-0".to_owned())].into(),
            image: "docker.io/library/nginx:1.27".into(),
            runtime: Some(Runtime {
                name: "io.containerd.runc.v2".into(),
            }),
            snapshotter: "overlayfs".into(),
            sandbox: "a1b2".into(),
        };
        let c = Container::decode(full.encode_to_vec().as_slice()).unwrap();
        let info = ContainerdInfo::from((c, "k8s.io"));
        assert_eq!(info.id, "c73e");
        assert_eq!(info.image, "docker.io/library/nginx:1.27");
        assert_eq!(info.namespace, "k8s.io");
        assert_eq!(info.labels["io.kubernetes.pod.name"], "web-0");
    }

    /// A spec as containerd's CRI plugin stores it (type `types.containerd.io/opencontainers/
    /// runtime-spec/1/Spec`), trimmed to the fields read.
    #[test]
    fn granted_set_from_the_stored_oci_spec() {
        let spec = br#"{"ociVersion":"1.1.0","process":{"user":{"uid":0,"gid":0},
            "capabilities":{"bounding":["CAP_CHOWN","CAP_NET_RAW"],
            "effective":["CAP_CHOWN","CAP_NET_RAW"],"permitted":["CAP_CHOWN","CAP_NET_RAW"]}}}"#;
        let full = Container {
            id: "c73e".into(),
            spec: Some(Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                value: spec.to_vec(),
            }),
            ..Container::default()
        };
        let c = Container::decode(full.encode_to_vec().as_slice()).unwrap();
        let info = ContainerdInfo::from((c, "k8s.io"));
        assert_eq!(info.granted, Some(CapSet(1 | 1 << 13)));
        // No capabilities object: nothing granted is known (not "none granted").
        assert_eq!(oci_granted(br#"{"process":{"args":["sh"]}}"#), None);
        assert_eq!(
            oci_granted(br#"{"process":{"capabilities":{}}}"#),
            Some(CapSet(0))
        );
        assert_eq!(oci_granted(b"not json"), None);
    }

    #[test]
    fn sandbox_filters_quote_the_uid() {
        assert_eq!(
            sandbox_filter("8b5f2c1e-3d4a"),
            r#"labels."io.kubernetes.pod.uid"=="8b5f2c1e-3d4a",labels."io.cri-containerd.kind"=="sandbox""#
        );
        assert_eq!(
            sandbox_filter(r#"a"b\"#),
            r#"labels."io.kubernetes.pod.uid"=="a\"b\\",labels."io.cri-containerd.kind"=="sandbox""#
        );
    }

    #[tokio::test]
    async fn no_containerd_is_an_error_quickly() {
        let started = std::time::Instant::now();
        assert!(
            Containerd::connect(Path::new("/nonexistent/containerd.sock"))
                .await
                .is_err()
        );
        // A socket that accepts and never answers: the version call times out.
        let dir = std::env::temp_dir().join(format!("capspy-ctrd-{}", std::process::id()));
        let _ = std::fs::create_dir(&dir);
        let silent = dir.join("silent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&silent).unwrap();
        assert!(Containerd::connect(&silent).await.is_err());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(started.elapsed() < Duration::from_secs(4));
    }
}
