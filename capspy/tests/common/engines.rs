//! Container engines other than Docker, started and stopped by the tests: a containerd of its
//! own (Debian's package, which docker.io pulls in) holding the test image, with containers
//! made the way the kubelet's CRI plugin makes them; and podman's API service.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{signal, v2_root};

/// A containerd with its own root, state and socket; stopped (after its containers) on drop.
pub struct Containerd {
    child: Child,
    pub socket: PathBuf,
    state: PathBuf,
    /// (cgroup path, container id) of each container made, removed on drop.
    made: Vec<(String, String)>,
}

impl Containerd {
    /// Starts one whose files live under `dir` and `/run/<name>`, and imports `image` from
    /// Docker (`docker save | ctr images import`).
    pub fn start(dir: &Path, name: &str, image: &str) -> Self {
        let state = PathBuf::from("/run").join(name);
        std::fs::create_dir_all(&state).unwrap();
        let socket = state.join("containerd.sock");
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--root")
            .arg(dir.join("containerd-root"))
            .arg("--state")
            .arg(state.join("state"))
            .arg("--address")
            .arg(&socket)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd is installed (Debian's containerd package)");
        let c = Self {
            child,
            socket,
            state,
            made: Vec::new(),
        };
        let start = Instant::now();
        while !c.ctr(&["version"]).status.success() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "containerd did not start: {}",
                std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let archive = dir.join("image.tar");
        super::docker(&["save", image, "-o", archive.to_str().unwrap()]);
        let out = c.ctr(&[
            "-n",
            "k8s.io",
            "images",
            "import",
            archive.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "ctr import: {out:?}");
        c
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ctr is installed")
    }

    /// `ctr -n NAMESPACE run -d` of `image` as container `id` in cgroup `cgroup`, with
    /// `labels`, running `cmd`.
    pub fn run(
        &mut self,
        namespace: &str,
        image: &str,
        id: &str,
        cgroup: &str,
        labels: &[(&str, &str)],
        cmd: &[&str],
    ) {
        let mut args = vec!["-n", namespace, "run", "-d", "--cgroup", cgroup];
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for l in &labels {
            args.extend(["--label", l]);
        }
        args.extend([image, id]);
        args.extend(cmd);
        let out = self.ctr(&args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.made
            .push((cgroup.to_owned(), format!("{namespace}/{id}")));
    }

    /// Waits until the container in `cgroup` has exited (its cgroup is empty).
    pub fn wait_exited(cgroup: &str) {
        let root = v2_root();
        let events = root
            .join(cgroup.trim_start_matches('/'))
            .join("cgroup.events");
        let start = Instant::now();
        while std::fs::read_to_string(&events).is_ok_and(|e| e.contains("populated 1")) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{cgroup} still runs"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Removes container `namespace/id`: task killed and deleted, then the container.
    fn remove(&self, namespaced: &str) {
        let (ns, id) = namespaced.split_once('/').unwrap();
        let _ = self.ctr(&["-n", ns, "tasks", "kill", "-s", "SIGKILL", id]);
        for _ in 0..50 {
            if self
                .ctr(&["-n", ns, "tasks", "delete", id])
                .status
                .success()
                || !self
                    .ctr(&["-n", ns, "tasks", "ls", "-q"])
                    .stdout
                    .windows(id.len())
                    .any(|w| w == id.as_bytes())
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.ctr(&["-n", ns, "containers", "delete", id]);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for (_, id) in self.made.iter().rev() {
            self.remove(id);
        }
        signal(&self.child, libc::SIGTERM);
        let _ = self.child.wait();
        // runc leaves the kubelet-style parents it made (`/kubepods/besteffort/pod<uid>`, in
        // every hierarchy): remove the empty ones, deepest first.
        for (cgroup, _) in &self.made {
            remove_empty_parents(cgroup);
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// rmdir of `cgroup` and its parents in every mounted hierarchy; only empty ones go.
fn remove_empty_parents(cgroup: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut roots: Vec<PathBuf> = hierarchies.flatten().map(|e| e.path()).collect();
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    for root in roots {
        let mut path = root.join(cgroup.trim_start_matches('/'));
        while path != root && path.starts_with(&root) {
            if std::fs::remove_dir(&path).is_err() && path.exists() {
                break;
            }
            if !path.pop() {
                break;
            }
        }
    }
}

/// podman's Docker-compatible API (`podman system service`) on a socket of its own; stopped
/// on drop.
pub struct PodmanService {
    child: Child,
    pub socket: PathBuf,
}

impl PodmanService {
    pub fn start(dir: &Path) -> Self {
        let socket = dir.join("podman.sock");
        let log = std::fs::File::create(dir.join("podman-service.log")).unwrap();
        let child = Command::new("podman")
            .args(["system", "service", "--time", "0"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("podman is installed (Debian's podman package)");
        let start = Instant::now();
        while !answers_ping(&socket) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "podman system service did not start: {}",
                std::fs::read_to_string(dir.join("podman-service.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, socket }
    }
}

/// Whether the API on `socket` answers `GET /_ping` (the first request can take seconds while
/// podman sets its runtime up).
fn answers_ping(socket: &Path) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut answer = String::new();
    stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n")
        .is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.")
        && answer.contains(" 200 ")
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        signal(&self.child, libc::SIGTERM);
        let _ = self.child.wait();
    }
}
