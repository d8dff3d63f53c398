//! Container labels and annotations from CRI-O's inspect endpoint: plain HTTP on its unix
//! socket (default `/var/run/crio/crio.sock`), `GET /containers/<id>` answering the JSON of
//! CRI-O's `types.ContainerInfo` (`name`, `pid`, `image`, `labels`, `annotations`, `sandbox`,
//! ...). A pod's infrastructure container answers under the sandbox's id, with the pod's
//! labels and annotations.
//!
//! Not tested against a live CRI-O (it is not packaged for Debian): the tests serve the
//! documented JSON from a socket.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const DEFAULT_SOCKET: &str = "/var/run/crio/crio.sock";

#[derive(Debug, thiserror::Error)]
pub enum CrioError {
    #[error("CRI-O {0}")]
    Http(#[from] crate::attribute::unix_http::HttpError),
    #[error("CRI-O's answer is not its container JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The fields of CRI-O's `types.ContainerInfo` capspy reads; others are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct CrioInfo {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub image: String,
    #[serde(default, deserialize_with = "null_is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The pod sandbox's id.
    #[serde(default)]
    pub sandbox: String,
}

fn null_is_empty<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(Option::<BTreeMap<String, String>>::deserialize(d)?.unwrap_or_default())
}

impl CrioInfo {
    pub fn parse(body: &[u8]) -> Result<Self, CrioError> {
        Ok(serde_json::from_slice(body)?)
    }

    /// Labels and annotations together: CRI-O marks sandboxes in its annotations.
    pub fn labels_and_annotations(&self) -> BTreeMap<String, String> {
        let mut all = self.annotations.clone();
        all.extend(self.labels.clone());
        all
    }
}

#[derive(Clone, Debug)]
pub struct Crio {
    socket: PathBuf,
}

impl Crio {
    /// A client of the CRI-O at `socket`: an error if it does not answer `GET /info`.
    pub async fn connect(socket: &Path) -> Result<Self, CrioError> {
        let crio = Self {
            socket: socket.to_path_buf(),
        };
        crate::attribute::unix_http::get(&crio.socket, "/info").await?;
        Ok(crio)
    }

    /// The container (or pod infrastructure container) with this id; None if CRI-O does not
    /// know it.
    pub async fn inspect(&self, id: &str) -> Result<Option<CrioInfo>, CrioError> {
        // Goes into the URL path: only a container id may.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        match crate::attribute::unix_http::get(&self.socket, &format!("/containers/{id}")).await? {
            (404, _) => Ok(None),
            (_, body) => CrioInfo::parse(&body).map(Some),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `GET /containers/<id>` for a Deployment's container, shaped as CRI-O's
    /// `types.ContainerInfo` (server/inspect.go) serializes it.
    pub const CONTAINER: &str = r#"{
        "name": "k8s_web_web-7d9f8c6b5-x2k4p_shop_8b5f2c1e-3d4a-4f6b-9c7e-0a1b2c3d4e5f_0",
        "pid": 4242,
        "image": "registry.example/web:1.4",
        "image_ref": "registry.example/web@sha256:8d23eb8e",
        "created_time": 1764380000000000000,
        "labels": {
            "io.kubernetes.container.name": "web",
            "io.kubernetes.pod.name": "web-7d9f8c6b5-x2k4p",
            "io.kubernetes.pod.namespace": "shop",
            "io.kubernetes.pod.uid": "8b5f2c1e-3d4a-4f6b-9c7e-0a1b2c3d4e5f"
        },
        "annotations": {
            "io.kubernetes.container.hash": "5b1a3e2c",
            "io.kubernetes.cri-o.ContainerType": "container",
            "io.kubernetes.cri-o.SandboxID": "a1b2c3"
        },
        "crio_annotations": {},
        "log_path": "/var/log/pods/shop_web/web/0.log",
        "root": "/var/lib/containers/storage/overlay/x/merged",
        "sandbox": "a1b2c3",
        "ip_addresses": ["10.0.0.7"]
    }"#;

    /// The same pod's infrastructure container: the pod's labels and annotations.
    pub const SANDBOX: &str = r#"{
        "name": "k8s_POD_web-7d9f8c6b5-x2k4p_shop_8b5f2c1e-3d4a-4f6b-9c7e-0a1b2c3d4e5f_0",
        "pid": 4200,
        "image": "registry.k8s.io/pause:3.9",
        "labels": {
            "app": "web",
            "pod-template-hash": "7d9f8c6b5",
            "io.kubernetes.pod.name": "web-7d9f8c6b5-x2k4p",
            "io.kubernetes.pod.namespace": "shop",
            "io.kubernetes.pod.uid": "8b5f2c1e-3d4a-4f6b-9c7e-0a1b2c3d4e5f"
        },
        "annotations": {
            "kubernetes.io/config.source": "api",
            "io.kubernetes.cri-o.ContainerType": "sandbox"
        },
        "sandbox": "a1b2c3",
        "ip_addresses": null
    }"#;

    #[test]
    fn documented_json_gives_the_pod_and_its_owner() {
        let c = CrioInfo::parse(CONTAINER.as_bytes()).unwrap();
        let s = CrioInfo::parse(SANDBOX.as_bytes()).unwrap();
        assert_eq!(c.image, "registry.example/web:1.4");
        assert_eq!(c.sandbox, "a1b2c3");
        assert!(crate::attribute::k8s::is_sandbox(
            &s.labels_and_annotations()
        ));
        assert!(!crate::attribute::k8s::is_sandbox(
            &c.labels_and_annotations()
        ));
        let role =
            crate::attribute::k8s::role(&c.labels, Some(&s.labels), Some(&s.annotations), None);
        let Some(crate::attribute::k8s::Role::Container(pc)) = role else {
            panic!("{role:?}")
        };
        assert_eq!(pc.key(), "k8s:shop/deployment/web/web");
    }

    #[test]
    fn missing_and_null_fields_are_empty() {
        let c = CrioInfo::parse(br#"{"labels":null,"annotations":null}"#).unwrap();
        assert_eq!(c, CrioInfo::default());
        assert!(CrioInfo::parse(b"not json").is_err());
        assert!(CrioInfo::parse(br#"{"labels":{"a":1}}"#).is_err());
    }

    /// Serves each request's answer from `answers` (by path) on a socket, as CRI-O would.
    pub fn serve(dir: &Path, answers: Vec<(&'static str, &'static str)>) -> PathBuf {
        use std::io::{Read as _, Write as _};
        let sock = dir.join("crio.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut buf = [0u8; 1024];
                let n = stream.read(&mut buf).unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = request.split(' ').nth(1).unwrap_or_default();
                let response = answers.iter().find(|(p, _)| *p == path).map_or_else(
                    || "HTTP/1.0 404 Not Found\r\n\r\nnot found".to_owned(),
                    |(_, body)| format!("HTTP/1.0 200 OK\r\n\r\n{body}"),
                );
                let _ = stream.write_all(response.as_bytes());
            }
        });
        sock
    }

    #[tokio::test]
    async fn inspects_over_the_socket() {
        let dir = std::env::temp_dir().join(format!("capspy-crio-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let sock = serve(
            &dir,
            vec![
                ("/info", r#"{"storage_root":"/var/lib/containers/storage"}"#),
                ("/containers/abc123", CONTAINER),
                ("/containers/a1b2c3", SANDBOX),
            ],
        );
        let crio = Crio::connect(&sock).await.unwrap();
        let c = crio.inspect("abc123").await.unwrap().unwrap();
        assert_eq!(c.labels["io.kubernetes.container.name"], "web");
        let s = crio.inspect(&c.sandbox).await.unwrap().unwrap();
        assert_eq!(s.labels["pod-template-hash"], "7d9f8c6b5");
        assert_eq!(crio.inspect("fff").await.unwrap(), None);
        assert_eq!(crio.inspect("../info").await.unwrap(), None);
        assert!(
            Crio::connect(&dir.join("absent.sock")).await.is_err(),
            "no socket"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
