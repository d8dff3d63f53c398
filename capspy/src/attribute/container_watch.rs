//! For `capspy run --container`: the containers a command started (e.g. `docker run`), found as
//! container cgroups that did not exist when the command began. The container runs under the
//! engine, not under the command, so it is not in the command's cgroup.
//!
//! A container someone else starts meanwhile looks the same. For `docker run` (and `podman
//! run`), capspy therefore asks the client to write the id it creates (`--cidfile`) and keeps
//! only that container; for other commands (`docker compose up`, scripts) every new container
//! counts.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use crate::attribute::engines::{Engines, Identity, Sockets};
use crate::attribute::{CgroupIndex, Owner, owner_from_path};
use crate::model::caps::CapSet;

/// A container the command started.
#[derive(Clone, Debug)]
pub struct Started {
    pub id: String,
    /// cgroup path below the v2 root.
    pub path: String,
    pub name: Option<String>,
    pub image: Option<String>,
    pub workload: Option<String>,
    /// What its engine's record says it was granted (bounding | effective); else the union of
    /// what its processes held, once one was read.
    pub granted: Option<CapSet>,
    /// Whether `granted` is the engine's: then its processes are not read.
    granted_by_engine: bool,
}

pub struct ContainerWatch {
    root: PathBuf,
    index: CgroupIndex,
    before: HashSet<u64>,
    engines: Engines,
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
            engines: Engines::connect(&Sockets::default(), None).await,
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
            let Owner::Container {
                runtime,
                id: container,
                ..
            } = owner_from_path(&path)
            else {
                continue;
            };
            if !self.may_be_ours(&container) {
                continue;
            }
            let (name, image, workload, granted) =
                match self.engines.identify(runtime, &container).await {
                    Ok(Some(Identity::Named {
                        name,
                        image,
                        workload,
                        granted,
                        ..
                    })) => (Some(name), Some(image), Some(workload), granted),
                    // A pod's sandbox is the runtime's, not a container the command started.
                    Ok(Some(Identity::Infrastructure { .. })) => continue,
                    Ok(None) | Err(_) => (None, None, None, None),
                };
            self.started.insert(
                id,
                Started {
                    id: container,
                    path,
                    name,
                    workload,
                    image,
                    granted_by_engine: granted.is_some(),
                    granted,
                },
            );
        }
        self.read_granted();
    }

    /// Reads what the started containers' processes hold, while they run, for those whose
    /// engine did not say: the entrypoint's sets only exist between its exec and its exit.
    pub fn read_granted(&mut self) {
        for s in self.started.values_mut().filter(|s| !s.granted_by_engine) {
            let (eff, bnd) = crate::kernel::cgroup::granted_caps(&self.root, &s.path);
            if eff.is_some() || bnd.is_some() {
                let now = eff.unwrap_or(0) | bnd.unwrap_or(0);
                s.granted = Some(CapSet(s.granted.map_or(0, |g| g.0) | now));
            }
        }
    }

    /// The union of what the started containers held, when any was read.
    pub fn granted(&self) -> Option<CapSet> {
        self.started
            .values()
            .filter_map(|s| s.granted)
            .reduce(|a, b| CapSet(a.0 | b.0))
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
                .and_then(|t| crate::kernel::cgroup::parse_populated(&t))
                .unwrap_or(false)
        })
    }
}
