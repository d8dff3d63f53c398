//! For `capspy run --container`: the containers a command started (e.g. `docker run`), found as
//! container cgroups that did not exist when the command began. The container runs under the
//! engine, not under the command, so it is not in the command's cgroup.
//!
//! A container someone else starts meanwhile looks the same. For `docker run` (and `podman
//! run`), capspy therefore asks the client to write the id it creates (`--cidfile`) and keeps
//! only that container; for other commands (`docker compose up`, scripts) every new container
//! counts.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::attribution::{CgroupIndex, Owner, owner_from_path};
use crate::docker::Docker;

/// A container the command started.
#[derive(Clone, Debug)]
pub struct Started {
    pub id: String,
    /// cgroup path below the v2 root.
    pub path: String,
    pub name: Option<String>,
    pub image: Option<String>,
    pub workload: Option<String>,
}

pub struct ContainerWatch {
    root: PathBuf,
    index: CgroupIndex,
    before: HashSet<u64>,
    docker: Option<Docker>,
    /// Where the client writes the id of the container it created, if it was asked to.
    cidfile: Option<PathBuf>,
    /// By cgroup id.
    pub started: BTreeMap<u64, Started>,
}

impl ContainerWatch {
    /// Remembers every cgroup that exists now.
    pub async fn begin(root: PathBuf) -> std::io::Result<Self> {
        let mut index = CgroupIndex::new(root.clone());
        index.rescan()?;
        Ok(Self {
            before: index.ids().collect(),
            index,
            root,
            docker: Docker::connect().await,
            cidfile: None,
            started: BTreeMap::new(),
        })
    }

    /// Keeps only the container whose id the client writes to `cidfile`.
    pub fn only_from(&mut self, cidfile: PathBuf) {
        self.cidfile = Some(cidfile);
    }

    /// The id in the cidfile: None while it is not written yet (or no cidfile is used).
    fn created_id(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.cidfile.as_ref()?).ok()?;
        let id = text.trim();
        (!id.is_empty()).then(|| id.to_string())
    }

    /// Whether container `id` may be the command's: it is, unless the client already named
    /// another one.
    fn may_be_ours(&self, id: &str) -> bool {
        self.created_id().is_none_or(|ours| ours == id)
    }

    /// Once the command is over: drops containers that turned out not to be the one it created
    /// (seen before the client wrote its cidfile). No cidfile then means it created none.
    pub fn settle(&mut self) {
        if self.cidfile.is_none() {
            return;
        }
        match self.created_id() {
            Some(ours) => self.started.retain(|_, s| s.id == ours),
            None => self.started.clear(),
        }
    }

    /// Looks at cgroups that made their first checks; keeps the new container ones. Called as
    /// first sightings arrive, while short-lived containers still exist.
    pub async fn observe(&mut self, made: Vec<(u64, String)>, cgroup_ids: Vec<u64>) {
        for (id, path) in made {
            self.index.learn(id, path);
        }
        for id in cgroup_ids {
            if self.before.contains(&id) || self.started.contains_key(&id) {
                continue;
            }
            let Some(path) = self.index.resolve(id) else {
                continue;
            };
            let Owner::Container { id: container, .. } = owner_from_path(&path) else {
                continue;
            };
            if !self.may_be_ours(&container) {
                continue;
            }
            let info = match &self.docker {
                Some(d) => d.inspect(&container).await.ok().flatten(),
                None => None,
            };
            self.started.insert(
                id,
                Started {
                    id: container,
                    path,
                    name: info.as_ref().map(|i| i.name.clone()),
                    workload: info.as_ref().map(|i| crate::docker::workload_of(i).key),
                    image: info.map(|i| i.image),
                },
            );
        }
    }

    /// Whether any started container still has processes (e.g. after `docker run -d`).
    pub fn any_running(&self) -> bool {
        self.started.values().any(|s| {
            if !self.may_be_ours(&s.id) {
                return false;
            }
            let events = self
                .root
                .join(s.path.trim_start_matches('/'))
                .join("cgroup.events");
            std::fs::read_to_string(events)
                .ok()
                .and_then(|t| crate::cgroup::parse_populated(&t))
                .unwrap_or(false)
        })
    }
}

/// Global options of the docker and podman clients that take a value as the next argument.
const GLOBAL_OPTIONS_WITH_VALUE: &[&str] = &[
    "-H",
    "--host",
    "-c",
    "--context",
    "--config",
    "-l",
    "--log-level",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
    "--url",
    "--connection",
    "--root",
    "--runroot",
];

/// For `docker|podman [global options] [container] run ...`: the command with
/// `--cidfile CIDFILE` added after `run`, and the file the client will write. When the command
/// already passes `--cidfile`, it is kept and that file is read. None for any other command.
pub fn with_cidfile(command: &[OsString], cidfile: &Path) -> Option<(Vec<OsString>, PathBuf)> {
    let client = Path::new(command.first()?).file_name()?;
    if client != "docker" && client != "podman" {
        return None;
    }
    let mut i = 1;
    let run_args = loop {
        let arg = command.get(i)?.to_str()?;
        match arg {
            "run" => break i + 1,
            "container" if command.get(i + 1).is_some_and(|a| a == "run") => break i + 2,
            _ if GLOBAL_OPTIONS_WITH_VALUE.contains(&arg) => i += 2,
            _ if arg.starts_with('-') => i += 1,
            // Another subcommand.
            _ => return None,
        }
    };
    let given = command[run_args..].iter().enumerate().find_map(|(j, arg)| {
        let arg = arg.to_str()?;
        if arg == "--cidfile" {
            command.get(run_args + j + 1).map(PathBuf::from)
        } else {
            arg.strip_prefix("--cidfile=").map(PathBuf::from)
        }
    });
    if let Some(path) = given {
        return Some((command.to_vec(), path));
    }
    let mut with = command[..run_args].to_vec();
    with.push(OsString::from("--cidfile"));
    with.push(cidfile.as_os_str().to_owned());
    with.extend(command[run_args..].iter().cloned());
    Some((with, cidfile.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<OsString> {
        s.split(' ').map(OsString::from).collect()
    }

    fn added(s: &str) -> Option<String> {
        let (cmd, path) = with_cidfile(&args(s), Path::new("/t/cid"))?;
        assert_eq!(path, Path::new("/t/cid"));
        Some(
            cmd.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
        )
    }

    #[test]
    fn docker_run_gets_a_cidfile() {
        assert_eq!(
            added("docker run --rm img sh -c x").as_deref(),
            Some("docker run --cidfile /t/cid --rm img sh -c x")
        );
        assert_eq!(
            added("/usr/bin/docker -H unix:///r.sock --debug container run -d img").as_deref(),
            Some("/usr/bin/docker -H unix:///r.sock --debug container run --cidfile /t/cid -d img")
        );
        assert_eq!(
            added("podman run img").as_deref(),
            Some("podman run --cidfile /t/cid img")
        );
    }

    #[test]
    fn a_given_cidfile_is_used_as_is() {
        for s in [
            "docker run --cidfile /u/id img",
            "docker run --cidfile=/u/id img",
        ] {
            let (cmd, path) = with_cidfile(&args(s), Path::new("/t/cid")).unwrap();
            assert_eq!(cmd, args(s));
            assert_eq!(path, Path::new("/u/id"));
        }
    }

    #[test]
    fn other_commands_are_left_alone() {
        for s in [
            "docker compose up",
            "docker start web",
            "docker",
            "docker --host",
            "sh -c docker-run",
            "nerdctl run img",
            "docker -H run",
        ] {
            assert_eq!(added(s), None, "{s}");
        }
    }
}
