//! Who a cgroup belongs to: a container, a systemd service, or the host.
//!
//! The kernel program keys every check by cgroup v2 id, the inode number of the cgroup's folder.
//! [`CgroupIndex`] turns ids into paths below the v2 root; [`owner_from_path`] reads the owner
//! from the names that container runtimes and systemd give those folders.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirEntryExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Containerd => "containerd",
            Self::CriO => "cri-o",
            Self::Podman => "podman",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// `id` is the full 64-hex container id; `pod_uid` is set for Kubernetes pods (with dashes).
    Container {
        runtime: Runtime,
        id: String,
        pod_uid: Option<String>,
    },
    /// A systemd service of the system manager, e.g. `docker.service`.
    Service { unit: String },
    /// Everything else: the root cgroup, `init.scope`, transient scopes, and all of `user.slice`
    /// outside containers. Interactive sessions (`session-N.scope`) and a user's own services
    /// are a person at work, not a workload to profile.
    Host,
}

/// The owner of the cgroup at `path`, relative to the v2 root with a leading '/'.
///
/// A cgroup nested below a container's (systemd inside the container, Docker's `init`,
/// Docker-in-Docker) belongs to the outermost container: that is what runs on this host.
/// Paths with `.` or `..` components are not real cgroup paths and are attributed to the host;
/// empty components (`//`) are ignored.
///
/// Names are only evidence: whoever may create cgroups (root, or a user in a delegated subtree
/// such as rootless podman's) can name one `docker-<id>.scope`. Cross-check with the runtime's
/// API where it matters.
pub fn owner_from_path(path: &str) -> Owner {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if parts.iter().any(|c| *c == "." || *c == "..") {
        return Owner::Host;
    }
    for (i, name) in parts.iter().enumerate() {
        let ancestors = &parts[..i];
        match classify(name, ancestors) {
            Some(Leaf::Container(runtime, id)) => {
                return Owner::Container {
                    runtime,
                    id: id.to_owned(),
                    pod_uid: ancestors.iter().rev().find_map(|a| pod_uid(a, ancestors)),
                };
            }
            Some(Leaf::Monitor(owner)) => return owner,
            None => {}
        }
    }
    if parts.first() == Some(&"user.slice") {
        // Sessions and a user's own services: people, not workloads (see `Owner::Host`).
        return Owner::Host;
    }
    parts
        .iter()
        .find(|p| p.strip_suffix(".service").is_some_and(is_unit_prefix))
        .map_or(Owner::Host, |unit| Owner::Service {
            unit: (*unit).to_owned(),
        })
}

enum Leaf<'a> {
    Container(Runtime, &'a str),
    Monitor(Owner),
}

/// Whether one path component is a container's cgroup (or a runtime's per-container monitor).
fn classify<'a>(name: &'a str, ancestors: &[&str]) -> Option<Leaf<'a>> {
    // systemd drivers name scopes "<prefix><id>.scope"; cgroupfs drivers use "<prefix><id>".
    let stem = name.strip_suffix(".scope").unwrap_or(name);
    // conmon is CRI-O's and podman's per-container monitor: its checks are the runtime's, never
    // the application's. CRI-O's go with crio.service, as Docker's and containerd's shims run in
    // docker.service and containerd.service; podman has no daemon, so the host.
    if stem.strip_prefix("crio-conmon-").is_some_and(is_id) {
        return Some(Leaf::Monitor(Owner::Service {
            unit: "crio.service".to_owned(),
        }));
    }
    if stem.strip_prefix("libpod-conmon-").is_some_and(is_id) {
        return Some(Leaf::Monitor(Owner::Host));
    }
    let prefixed = [
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("libpod-", Runtime::Podman),
    ];
    for (prefix, runtime) in prefixed {
        if let Some(id) = stem.strip_prefix(prefix).filter(|id| is_id(id)) {
            return Some(Leaf::Container(runtime, id));
        }
    }
    // A bare id names a container only where a runtime puts one.
    if !is_id(name) {
        return None;
    }
    let parent = *ancestors.last()?;
    if parent == "docker" {
        return Some(Leaf::Container(Runtime::Docker, name));
    }
    // The kubelet's cgroupfs layout does not name the runtime. Since dockershim's removal
    // (Kubernetes 1.24) that is containerd unless it says otherwise (CRI-O writes "crio-<id>").
    if pod_uid(parent, &ancestors[..ancestors.len() - 1]).is_some() {
        return Some(Leaf::Container(Runtime::Containerd, name));
    }
    None
}

/// The pod uid of a kubelet pod cgroup: `kubepods-<qos>-pod<uid with _>.slice` (systemd) or
/// `pod<uid>` below `kubepods` (cgroupfs).
fn pod_uid(name: &str, ancestors: &[&str]) -> Option<String> {
    if let Some(stem) = name.strip_suffix(".slice") {
        let (_, last) = stem.rsplit_once('-')?;
        let uid = last.strip_prefix("pod")?.replace('_', "-");
        return (stem.contains("kubepods") && is_pod_uid(&uid)).then_some(uid);
    }
    let uid = name.strip_prefix("pod")?;
    (ancestors.iter().any(|a| a.contains("kubepods")) && is_pod_uid(uid)).then(|| uid.to_owned())
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Container ids are 64 lowercase hex digits in every runtime here.
pub fn is_id(s: &str) -> bool {
    s.len() == 64 && is_lower_hex(s)
}

/// A UUID (API pods) or the 32-hex manifest hash the kubelet gives static pods.
fn is_pod_uid(s: &str) -> bool {
    const UUID_GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    if s.len() == 32 {
        return is_lower_hex(s);
    }
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == UUID_GROUPS.len()
        && groups
            .iter()
            .zip(UUID_GROUPS)
            .all(|(g, n)| g.len() == n && is_lower_hex(g))
}

/// The part of a unit name before `.service`, as systemd allows it.
fn is_unit_prefix(s: &str) -> bool {
    !s.is_empty()
        && s.len() < 250
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'-' | b'@' | b'\\')
        })
}

/// How soon an id that a walk did not find may trigger another walk. A cgroup removed before
/// we first saw it keeps missing; without this each of its checks would cost a walk.
const MISS_RETRY: Duration = Duration::from_millis(200);
/// How long a removed cgroup stays resolvable: its last checks may be read after it is gone.
const KEEP_REMOVED: Duration = Duration::from_mins(1);

struct Entry {
    path: String,
    /// When a walk first failed to find it.
    gone_since: Option<Instant>,
}

/// Cgroup id → path below the v2 root, kept current by walking the hierarchy on a miss.
///
/// Memory follows the live hierarchy: a walk drops cgroups that have been gone for a minute,
/// and the list of recent misses only holds ids younger than the retry interval.
pub struct CgroupIndex {
    root: PathBuf,
    entries: HashMap<u64, Entry>,
    misses: HashMap<u64, Instant>,
    keep_removed: Duration,
    walks: u64,
}

impl CgroupIndex {
    /// `root` is the v2 mount point ([`crate::kernel::cgroup::v2_root`]); nothing is read until needed.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            entries: HashMap::new(),
            misses: HashMap::new(),
            keep_removed: KEEP_REMOVED,
            walks: 0,
        }
    }

    /// The path of cgroup `id` ("/" for the root), walking the hierarchy if it is not known yet.
    /// None if no walk found it: created and removed in between, or not a cgroup id.
    pub fn resolve(&mut self, id: u64) -> Option<String> {
        if let Some(e) = self.entries.get(&id) {
            return Some(e.path.clone());
        }
        let now = Instant::now();
        if self
            .misses
            .get(&id)
            .is_some_and(|t| now.duration_since(*t) < MISS_RETRY)
        {
            return None;
        }
        // An unreadable root leaves what we know in place; the miss still throttles retries.
        let _ = self.rescan_at(now);
        if let Some(e) = self.entries.get(&id) {
            return Some(e.path.clone());
        }
        self.misses.insert(id, now);
        None
    }

    /// Learns a cgroup from its creation (the kernel's `cgroup_mkdir`), before any walk could.
    pub fn learn(&mut self, id: u64, path: String) {
        self.misses.remove(&id);
        self.entries.insert(
            id,
            Entry {
                path,
                gone_since: None,
            },
        );
    }

    /// Walks the hierarchy now: learns new cgroups and forgets long-removed ones.
    pub fn rescan(&mut self) -> io::Result<()> {
        self.rescan_at(Instant::now())
    }

    /// Every known cgroup id, removed ones still kept included.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.keys().copied()
    }

    /// How many cgroups are known, removed ones still kept included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn rescan_at(&mut self, now: Instant) -> io::Result<()> {
        self.misses
            .retain(|_, t| now.duration_since(*t) < MISS_RETRY);
        let found = walk(&self.root)?;
        self.walks += 1;
        let mut seen: HashMap<u64, String> = found.into_iter().collect();
        let keep = self.keep_removed;
        self.entries.retain(|id, e| {
            if let Some(path) = seen.remove(id) {
                e.path = path;
                e.gone_since = None;
                true
            } else {
                let since = *e.gone_since.get_or_insert(now);
                now.duration_since(since) < keep
            }
        });
        for (id, path) in seen {
            self.misses.remove(&id);
            self.entries.insert(
                id,
                Entry {
                    path,
                    gone_since: None,
                },
            );
        }
        Ok(())
    }
}

/// Every folder below `root` (and `root` itself, as "/") with its inode number.
///
/// The inode comes from the directory entry (`d_ino`), which kernfs fills with the same number
/// `stat` gives: no `stat` per cgroup keeps a walk of thousands of cgroups in milliseconds.
/// Folders that vanish mid-walk are skipped; only an unreadable root is an error.
fn walk(root: &Path) -> io::Result<Vec<(u64, String)>> {
    let mut out = vec![(fs::metadata(root)?.ino(), "/".to_owned())];
    // Folders to read, opened one at a time: a wide level must not hold thousands of fds.
    let mut todo = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = todo.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if rel.is_empty() => return Err(e),
            Err(_) => continue,
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            // Lossy: a non-UTF-8 name can never look like a container id or unit name.
            let path = format!("{rel}/{}", entry.file_name().to_string_lossy());
            out.push((entry.ino(), path.clone()));
            todo.push((entry.path(), path));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4c2a8e9b1d0c7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e";
    const ID2: &str = "9d1e7a3bc40f5e2d8a6b9c0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c";
    const UID: &str = "8b5f2c1e-3d4a-4f6b-9c7e-0a1b2c3d4e5f";

    fn container(runtime: Runtime, id: &str, pod_uid: Option<&str>) -> Owner {
        Owner::Container {
            runtime,
            id: id.to_owned(),
            pod_uid: pod_uid.map(str::to_owned),
        }
    }

    fn service(unit: &str) -> Owner {
        Owner::Service {
            unit: unit.to_owned(),
        }
    }

    #[test]
    fn runtimes_display_as_their_usual_names() {
        let shown: Vec<String> = [
            Runtime::Docker,
            Runtime::Containerd,
            Runtime::CriO,
            Runtime::Podman,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(shown, ["docker", "containerd", "cri-o", "podman"]);
    }

    #[test]
    fn docker_cgroupfs_and_systemd_drivers() {
        let docker = container(Runtime::Docker, ID, None);
        assert_eq!(owner_from_path(&format!("/docker/{ID}")), docker);
        assert_eq!(
            owner_from_path(&format!("/system.slice/docker-{ID}.scope")),
            docker
        );
        // Rootless Docker with the systemd driver lives in the user's delegated subtree.
        assert_eq!(
            owner_from_path(&format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/docker-{ID}.scope"
            )),
            docker
        );
    }

    #[test]
    fn nested_cgroups_belong_to_the_outermost_container() {
        let docker = container(Runtime::Docker, ID, None);
        for path in [
            format!("/docker/{ID}/init"),
            format!("/docker/{ID}/system.slice/nginx.service"),
            format!("/system.slice/docker-{ID}.scope/init.scope"),
            format!("/system.slice/docker-{ID}.scope/user.slice/user-0.slice/session-1.scope"),
            // Docker-in-Docker: the inner container runs inside the outer one on this host.
            format!("/docker/{ID}/docker/{ID2}"),
        ] {
            assert_eq!(owner_from_path(&path), docker, "{path}");
        }
    }

    #[test]
    fn kubernetes_with_the_systemd_driver() {
        let uid_ = UID.replace('-', "_");
        assert_eq!(
            owner_from_path(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope"
            )),
            container(Runtime::Containerd, ID, Some(UID))
        );
        assert_eq!(
            owner_from_path(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/crio-{ID}.scope"
            )),
            container(Runtime::CriO, ID, Some(UID))
        );
        // Guaranteed pods have no QoS level slice.
        assert_eq!(
            owner_from_path(&format!(
                "/kubepods.slice/kubepods-pod{uid_}.slice/docker-{ID}.scope"
            )),
            container(Runtime::Docker, ID, Some(UID))
        );
        // kind nodes run the kubelet with --cgroup-root=/kubelet.
        assert_eq!(
            owner_from_path(&format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope"
            )),
            container(Runtime::Containerd, ID, Some(UID))
        );
    }

    #[test]
    fn kubernetes_with_the_cgroupfs_driver() {
        let want = container(Runtime::Containerd, ID, Some(UID));
        for qos in ["burstable/", "besteffort/", ""] {
            let path = format!("/kubepods/{qos}pod{UID}/{ID}");
            assert_eq!(owner_from_path(&path), want, "{path}");
        }
        assert_eq!(
            owner_from_path(&format!("/kubepods/burstable/pod{UID}/crio-{ID}")),
            container(Runtime::CriO, ID, Some(UID))
        );
        // Static pods' uid is the manifest's hash, without dashes.
        let hash = "6a1c9e0b8f7d4e2a5c3b1d9f8e7a6c5b";
        assert_eq!(
            owner_from_path(&format!("/kubepods/besteffort/pod{hash}/{ID}")),
            container(Runtime::Containerd, ID, Some(hash))
        );
        // The pod cgroup itself and its pause-less leftovers are not a container.
        assert_eq!(owner_from_path(&format!("/kubepods/pod{UID}")), Owner::Host);
        assert_eq!(owner_from_path("/kubepods/burstable"), Owner::Host);
    }

    #[test]
    fn cri_o_scopes_and_its_monitor() {
        assert_eq!(
            owner_from_path(&format!("/system.slice/crio-{ID}.scope")),
            container(Runtime::CriO, ID, None)
        );
        assert_eq!(
            owner_from_path(&format!("crio-{ID}.scope")),
            container(Runtime::CriO, ID, None)
        );
        let uid_ = UID.replace('-', "_");
        for path in [
            format!("/system.slice/crio-conmon-{ID}.scope"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/crio-conmon-{ID}.scope"
            ),
            format!("/kubepods/burstable/pod{UID}/crio-conmon-{ID}"),
        ] {
            assert_eq!(owner_from_path(&path), service("crio.service"), "{path}");
        }
    }

    #[test]
    fn podman_rootful_rootless_and_its_monitor() {
        let podman = container(Runtime::Podman, ID, None);
        for path in [
            format!("/machine.slice/libpod-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
            format!("/libpod_parent/libpod-{ID}"),
        ] {
            assert_eq!(owner_from_path(&path), podman, "{path}");
        }
        assert_eq!(
            owner_from_path(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
            Owner::Host
        );
    }

    #[test]
    fn systemd_services() {
        assert_eq!(
            owner_from_path("/system.slice/docker.service"),
            service("docker.service")
        );
        assert_eq!(
            owner_from_path("/system.slice/containerd.service"),
            service("containerd.service")
        );
        assert_eq!(
            owner_from_path("/system.slice/nginx.service/worker"),
            service("nginx.service")
        );
        assert_eq!(
            owner_from_path("/system.slice/system-getty.slice/getty@tty1.service"),
            service("getty@tty1.service")
        );
        assert_eq!(
            owner_from_path("/machine.slice/systemd-nspawn@web.service/payload"),
            service("systemd-nspawn@web.service")
        );
    }

    #[test]
    fn host_cgroups() {
        for path in [
            "/",
            "",
            "/init.scope",
            "/system.slice",
            "/system.slice/run-r3b1c2d.scope",
            "/user.slice",
            "/user.slice/user-1000.slice/session-3.scope",
            "/user.slice/user-1000.slice/user@1000.service",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/pipewire.service",
            "/docker",
            "/kubepods.slice",
            "/capspy-run-4242",
        ] {
            assert_eq!(owner_from_path(path), Owner::Host, "{path}");
        }
    }

    #[test]
    fn malformed_ids_are_not_containers() {
        let short = &ID[..63];
        let upper = ID.to_uppercase();
        for path in [
            format!("/docker/{short}"),
            format!("/docker/{upper}"),
            format!("/docker/{ID}0"),
            format!("/docker/{ID}.scope.bak"),
            format!("/docker/g{}", &ID[1..]),
            format!("/system.slice/docker-{short}.scope"),
            format!("/system.slice/docker-{upper}.scope"),
            format!("/system.slice/docker-{ID}.scope-x"),
            format!("/system.slice/docker-{ID}x.scope"),
            format!("/system.slice/docker--{ID}.scope"),
            format!("/system.slice/{ID}"),
            format!("/{ID}"),
            format!("/kubepods/burstable/podnot-a-uid/{ID}"),
            format!("/elsewhere/pod{UID}/{ID}"),
            "/docker/".to_owned(),
            "/system.slice/docker-.scope".to_owned(),
            "/system.slice/.service".to_owned(),
        ] {
            assert!(
                !matches!(owner_from_path(&path), Owner::Container { .. }),
                "{path}"
            );
        }
        assert_eq!(
            owner_from_path(&format!("/system.slice/docker-{short}.scope")),
            Owner::Host
        );
    }

    #[test]
    fn dot_components_and_double_slashes() {
        assert_eq!(
            owner_from_path(&format!("/docker/{ID}/..")),
            Owner::Host,
            "a path that climbs out is not the container's"
        );
        assert_eq!(
            owner_from_path(&format!("/system.slice/../docker/{ID}")),
            Owner::Host
        );
        assert_eq!(owner_from_path(&format!("/./docker/{ID}")), Owner::Host);
        assert_eq!(
            owner_from_path("/system.slice/nginx.service/.."),
            Owner::Host
        );
        assert_eq!(
            owner_from_path(&format!("//docker//{ID}/")),
            container(Runtime::Docker, ID, None)
        );
        assert_eq!(
            owner_from_path("//system.slice//cron.service"),
            service("cron.service")
        );
    }

    #[test]
    fn unit_names_with_odd_characters_are_host() {
        assert_eq!(owner_from_path("/system.slice/a b.service"), Owner::Host);
        assert_eq!(
            owner_from_path("/system.slice/\u{e9}t\u{e9}.service"),
            Owner::Host
        );
        assert_eq!(
            owner_from_path("/system.slice/dev-disk-by\\x2duuid.service"),
            service("dev-disk-by\\x2duuid.service")
        );
    }

    /// A folder tree under the temp dir, removed on drop: the index works on any tree.
    struct TempTree(PathBuf);

    impl TempTree {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!("capspy-attr-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir(&p).unwrap();
            Self(p)
        }
        fn mkdir(&self, rel: &str) -> u64 {
            let p = self.0.join(rel);
            fs::create_dir_all(&p).unwrap();
            fs::metadata(&p).unwrap().ino()
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn index_maps_inodes_to_paths() {
        let tree = TempTree::new("map");
        let c = tree.mkdir(&format!("docker/{ID}"));
        let s = tree.mkdir("system.slice/cron.service");
        fs::write(tree.0.join("system.slice/cgroup.procs"), "").unwrap();
        let root = fs::metadata(&tree.0).unwrap().ino();
        let mut index = CgroupIndex::new(tree.0.clone());
        assert_eq!(index.resolve(c), Some(format!("/docker/{ID}")));
        assert_eq!(
            index.resolve(s).as_deref(),
            Some("/system.slice/cron.service")
        );
        assert_eq!(index.resolve(root).as_deref(), Some("/"));
        assert_eq!(index.walks, 1, "later lookups hit the cache");
        assert_eq!(index.len(), 5, "files are not cgroups");
    }

    #[test]
    fn repeated_misses_do_not_walk_every_time() {
        let tree = TempTree::new("miss");
        let mut index = CgroupIndex::new(tree.0.clone());
        let gone = u64::MAX - 7;
        assert_eq!(index.resolve(gone), None);
        for _ in 0..1000 {
            assert_eq!(index.resolve(gone), None);
        }
        assert_eq!(index.walks, 1);
        std::thread::sleep(MISS_RETRY + Duration::from_millis(20));
        assert_eq!(index.resolve(gone), None);
        assert_eq!(index.walks, 2, "retried once the interval passed");
        // A different unknown id (a cgroup created since) walks at once.
        let fresh = tree.mkdir("fresh");
        assert_eq!(index.resolve(fresh).as_deref(), Some("/fresh"));
        assert_eq!(index.walks, 3);
        assert!(index.misses.len() <= 1);
    }

    #[test]
    fn removed_cgroups_are_kept_a_while_then_forgotten() {
        let tree = TempTree::new("rm");
        let a = tree.mkdir("a");
        let b = tree.mkdir("b");
        let mut index = CgroupIndex::new(tree.0.clone());
        index.rescan().unwrap();
        assert_eq!(index.len(), 3);
        fs::remove_dir(tree.0.join("a")).unwrap();
        index.rescan().unwrap();
        assert_eq!(
            index.resolve(a).as_deref(),
            Some("/a"),
            "late checks still resolve"
        );
        index.keep_removed = Duration::ZERO;
        index.rescan().unwrap();
        assert_eq!(index.len(), 2);
        assert_eq!(index.resolve(b).as_deref(), Some("/b"));
        // Renamed (moved) folders keep their inode: the path follows.
        fs::rename(tree.0.join("b"), tree.0.join("c")).unwrap();
        index.rescan().unwrap();
        assert_eq!(index.resolve(b).as_deref(), Some("/c"));
    }

    #[test]
    fn missing_root_resolves_nothing() {
        let mut index = CgroupIndex::new(PathBuf::from("/nonexistent/capspy-attr"));
        assert_eq!(index.resolve(1), None);
        assert!(index.rescan().is_err());
        assert!(index.is_empty());
    }

    /// Root only: a real cgroup's id is its folder's inode, and walking many is fast.
    #[test]
    fn index_follows_real_cgroups() {
        let root = match crate::kernel::cgroup::v2_root() {
            Ok(r) if unsafe { libc::geteuid() } == 0 => r,
            _ => {
                eprintln!("skipped: needs root and a cgroup v2 hierarchy");
                return;
            }
        };
        let base = root.join(format!("capspy-attr-test-{}", std::process::id()));
        if fs::create_dir(&base).is_err() {
            eprintln!("skipped: cannot create a cgroup under {}", root.display());
            return;
        }
        let n = 2000;
        let made: Vec<(u64, PathBuf)> = (0..n)
            .filter_map(|i| {
                let p = base.join(format!("{i:x}"));
                fs::create_dir(&p).ok()?;
                Some((fs::metadata(&p).ok()?.ino(), p))
            })
            .collect();
        let rel = format!("/{}", base.file_name().unwrap().to_string_lossy());
        let mut index = CgroupIndex::new(root.clone());
        let started = Instant::now();
        let (first_id, first_path) = &made[0];
        let resolved = index.resolve(*first_id);
        let took = started.elapsed();
        let total = index.len();
        let last = index.resolve(made[made.len() - 1].0);
        for (_, p) in made.iter().rev() {
            let _ = fs::remove_dir(p);
        }
        let _ = fs::remove_dir(&base);
        index.keep_removed = Duration::ZERO;
        index.rescan().unwrap();
        eprintln!("walked {total} cgroups in {took:?}");

        assert_eq!(made.len(), n);
        assert_eq!(
            resolved,
            Some(format!("{rel}/0")),
            "{}",
            first_path.display()
        );
        assert_eq!(last, Some(format!("{rel}/{:x}", n - 1)));
        assert!(took < Duration::from_millis(250), "walk took {took:?}");
        // The ids of removed cgroups are forgotten by a rescan.
        assert_eq!(index.resolve(*first_id), None);
        assert!(!base.exists(), "test cgroup removed");
        assert_eq!(
            index.resolve(fs::metadata(&root).unwrap().ino()).as_deref(),
            Some("/")
        );
    }
}
