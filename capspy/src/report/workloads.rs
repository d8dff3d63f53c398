//! What the store knows, as people ask for it: workloads and their container instances, found by
//! name, with their profiles.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use crate::model::caps::{CapSet, Capability};
use crate::model::check::{CheckRow, ProcessRef, RawCheck};
use crate::profile::Profile;
use crate::report::{Report, Subject as ReportSubject};
use crate::store::{CheckRecord, StoreError, StoreReader, Subject, SubjectKind};

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no workload or container named {name:?} in the store{}", known_hint(.known))]
    NotFound { name: String, known: Vec<String> },
    #[error("{name:?} is ambiguous: it matches {}", .matches.join(", "))]
    Ambiguous { name: String, matches: Vec<String> },
}

const COMPOSE_PROJECT: &str = "com.docker.compose.project";
const COMPOSE_SERVICE: &str = "com.docker.compose.service";
const K8S_CONTAINER: &str = "io.kubernetes.container.name";

fn known_hint(known: &[String]) -> String {
    if known.is_empty() {
        " (it is empty: is `capspy record` running?)".into()
    } else {
        let known: Vec<String> = known.iter().map(|k| one_line(k)).collect();
        format!(" (known: {})", known.join(", "))
    }
}

/// Keys come from labels: a newline in one must not split the one-line error.
fn one_line(s: &str) -> String {
    crate::model::text::printable(s).into_owned()
}

/// Containers grouped by workload key.
pub struct Inventory {
    pub workloads: BTreeMap<String, Vec<Subject>>,
    /// Services and the host: recorded, never mixed into container profiles.
    pub others: Vec<Subject>,
}

impl Inventory {
    pub fn load(store: &StoreReader) -> Result<Self, StoreError> {
        let mut workloads: BTreeMap<String, Vec<Subject>> = BTreeMap::new();
        let mut others = Vec::new();
        for s in store.subjects()? {
            match (&s.kind, &s.workload) {
                (SubjectKind::Container, Some(w)) => {
                    workloads.entry(w.clone()).or_default().push(s);
                }
                _ => others.push(s),
            }
        }
        Ok(Self { workloads, others })
    }

    /// Finds what NAME means, in this order: a workload key; a container name (several
    /// instances of one name, e.g. after restarts, mean their workload); a container id prefix;
    /// a systemd service (`nginx.service`) or `host`; the last part of a workload key (`pinger`
    /// for `image:busybox/pinger`) or a service without `.service` (`nginx`).
    pub fn find(&self, name: &str) -> Result<Target<'_>, LookupError> {
        if let Some((key, containers)) = self.workloads.get_key_value(name) {
            return Ok(Target::Workload { key, containers });
        }
        let containers = || self.workloads.values().flatten();
        let by_name: Vec<&Subject> = containers()
            .filter(|c| c.name.as_deref() == Some(name))
            .collect();
        match by_name.as_slice() {
            [one] => return Ok(Target::Container(one)),
            [first, ..] if same_workload(&by_name) => {
                if let Some(target) = first.workload.as_deref().and_then(|w| self.workload(w)) {
                    return Ok(target);
                }
            }
            [] => {}
            many => return Err(ambiguous(name, many.iter().map(|c| c.key.clone()))),
        }
        if name.len() >= 4 {
            let by_id: Vec<&Subject> = containers().filter(|c| c.key.starts_with(name)).collect();
            match by_id.as_slice() {
                [one] => return Ok(Target::Container(one)),
                [] => {}
                many => return Err(ambiguous(name, many.iter().map(|c| c.key.clone()))),
            }
        }
        if let Some(group) = self.others.iter().find(|s| s.key == name) {
            return Ok(Target::HostGroup(group));
        }
        if let Some(found) = self.kubernetes(name) {
            return found;
        }
        let by_tail: Vec<&String> = self
            .workloads
            .keys()
            .filter(|k| k.rsplit('/').next() == Some(name))
            .collect();
        let not_found = || LookupError::NotFound {
            name: name.into(),
            known: self
                .workloads
                .keys()
                .chain(self.others.iter().map(|s| &s.key))
                .cloned()
                .collect(),
        };
        let by_unit = self
            .others
            .iter()
            .find(|s| s.key.strip_suffix(".service") == Some(name));
        match (by_tail.as_slice(), by_unit) {
            ([key], None) => self.workload(key).ok_or_else(not_found),
            ([], Some(unit)) => Ok(Target::HostGroup(unit)),
            ([], None) => Err(not_found()),
            (keys, unit) => Err(ambiguous(
                name,
                keys.iter()
                    .map(|k| (*k).clone())
                    .chain(unit.map(|u| u.key.clone())),
            )),
        }
    }

    /// A Kubernetes workload by `NAMESPACE/OWNER[/CONTAINER]`, `NAMESPACE/KIND/OWNER[/CONTAINER]`
    /// or a pod's name (its containers' `io.kubernetes.pod.name` label). None when NAME is none
    /// of these.
    fn kubernetes(&self, name: &str) -> Option<Result<Target<'_>, LookupError>> {
        let asked: Vec<&str> = name.split('/').collect();
        let matches: Vec<&String> = if (2..=4).contains(&asked.len()) {
            self.workloads
                .keys()
                .filter(|key| {
                    let Some(parts) = key.strip_prefix("k8s:") else {
                        return false;
                    };
                    let parts: Vec<&str> = parts.split('/').collect();
                    let [ns, kind, owner, container] = parts[..] else {
                        return false;
                    };
                    match asked[..] {
                        [n, o] => n == ns && o == owner,
                        [n, o, c] => {
                            n == ns && ((o == owner && c == container) || (o == kind && c == owner))
                        }
                        [n, k, o, c] => n == ns && k == kind && o == owner && c == container,
                        _ => false,
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        let matches = if matches.is_empty() {
            let mut by_pod: Vec<&String> = self
                .workloads
                .iter()
                .filter(|(_, cs)| {
                    cs.iter().any(|c| {
                        c.labels
                            .get(crate::attribute::k8s::POD_NAME)
                            .map(String::as_str)
                            == Some(name)
                    })
                })
                .map(|(k, _)| k)
                .collect();
            by_pod.dedup();
            by_pod
        } else {
            matches
        };
        match matches.as_slice() {
            [] => None,
            [one] => self.workload(one).map(Ok),
            many => Some(Err(ambiguous(name, many.iter().map(|k| (*k).clone())))),
        }
    }

    /// The namespace of a Kubernetes workload: its containers' label, else the key's.
    pub fn namespace(key: &str, containers: &[Subject]) -> Option<String> {
        let rest = key.strip_prefix("k8s:")?;
        containers
            .iter()
            .find_map(|c| c.labels.get(crate::attribute::k8s::POD_NAMESPACE).cloned())
            .or_else(|| rest.split('/').next().map(str::to_owned))
    }

    /// Notes on containers recorded without names, per engine, with the reason the store kept.
    pub fn missing_names(&self, store: &StoreReader) -> Result<Vec<String>, StoreError> {
        let mut unnamed: BTreeMap<String, usize> = BTreeMap::new();
        for c in self.workloads.values().flatten() {
            if c.name.is_none() {
                *unnamed
                    .entry(c.runtime.clone().unwrap_or_else(|| "unknown".into()))
                    .or_default() += 1;
            }
        }
        if unnamed.is_empty() {
            return Ok(Vec::new());
        }
        let statuses = store.engines()?;
        Ok(crate::attribute::engines::missing_names_notes(
            &unnamed,
            statuses.as_deref(),
        ))
    }

    /// Every workload of a compose project, by the project label of its containers (a
    /// workload key is only a hint: labels can hold any character, `/` included). Empty when
    /// NAME is no compose project.
    pub fn compose_project(&self, project: &str) -> Vec<Target<'_>> {
        self.workloads
            .iter()
            .filter(|(_, containers)| {
                containers
                    .iter()
                    .any(|c| c.labels.get(COMPOSE_PROJECT).map(String::as_str) == Some(project))
            })
            .map(|(key, containers)| Target::Workload { key, containers })
            .collect()
    }

    fn workload(&self, key: &str) -> Option<Target<'_>> {
        let (key, containers) = self.workloads.get_key_value(key)?;
        Some(Target::Workload { key, containers })
    }
}

fn ambiguous(name: &str, matches: impl Iterator<Item = String>) -> LookupError {
    LookupError::Ambiguous {
        name: name.into(),
        matches: matches.map(|m| one_line(&m)).collect(),
    }
}

fn same_workload(subjects: &[&Subject]) -> bool {
    // Two instances of one name in one workload: a restart, not an ambiguity.
    subjects.windows(2).all(|w| w[0].workload == w[1].workload)
}

pub enum Target<'a> {
    Workload {
        key: &'a str,
        containers: &'a [Subject],
    },
    Container(&'a Subject),
    /// A systemd service or the host's other processes (`host`): recorded by `capspy record`
    /// like containers, but never part of a container workload.
    HostGroup(&'a Subject),
}

impl Target<'_> {
    /// Its report from the store, with the node the store was recorded on.
    pub fn report(&self, store: &StoreReader) -> Result<Report, StoreError> {
        let mut report = Report::new(
            self.report_subject(),
            "store",
            self.profile(store)?,
            // Store-wide: a lost record cannot say whose it was.
            store.losses()?,
        )
        .with_service_name(self.service_name())
        .with_host(store.host()?);
        let containers: &[Subject] = match self {
            Target::Workload { containers, .. } => containers,
            Target::Container(c) => std::slice::from_ref(*c),
            Target::HostGroup(_) => &[],
        };
        let unnamed = Inventory {
            workloads: BTreeMap::from([(String::new(), containers.to_vec())]),
            others: Vec::new(),
        };
        report.notes.extend(unnamed.missing_names(store)?);
        Ok(report)
    }

    pub fn profile(&self, store: &StoreReader) -> Result<Profile, StoreError> {
        let records = match self {
            Target::Workload { key, .. } => store.checks_for_workload(key)?,
            Target::Container(c) | Target::HostGroup(c) => store.checks_for_subject(&c.key)?,
        };
        Ok(profile_from_records(&records).with_granted(self.granted()))
    }

    /// The name a compose service or Kubernetes container of this target has: its compose
    /// service or Kubernetes container label, else the container's name. None when neither is
    /// known (the report then derives one from the subject).
    pub fn service_name(&self) -> Option<String> {
        let containers: &[Subject] = match self {
            Target::Workload { containers, .. } => containers,
            Target::Container(c) => std::slice::from_ref(*c),
            Target::HostGroup(s) => {
                return Some(s.key.strip_suffix(".service").unwrap_or(&s.key).to_string());
            }
        };
        let label = |key: &str| {
            containers
                .iter()
                .find_map(|c| c.labels.get(key).filter(|v| !v.is_empty()).cloned())
        };
        label(COMPOSE_SERVICE)
            .or_else(|| label(K8S_CONTAINER))
            .or_else(|| match self {
                // A workload's key already has the name without its replica index.
                Target::Container(c) => c.name.clone(),
                Target::Workload { .. } | Target::HostGroup(_) => None,
            })
    }

    pub fn report_subject(&self) -> ReportSubject {
        match self {
            Target::Workload { key, containers } => ReportSubject::Workload {
                key: (*key).to_string(),
                containers: containers.iter().map(|c| c.key.clone()).collect(),
                images: containers
                    .iter()
                    .filter_map(|c| c.image.clone())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            },
            Target::Container(c) => ReportSubject::Container {
                id: c.key.clone(),
                name: c.name.clone(),
                image: c.image.clone(),
                workload: c.workload.clone(),
            },
            Target::HostGroup(s) => ReportSubject::Workload {
                key: host_group_key(s),
                containers: Vec::new(),
                images: Vec::new(),
            },
        }
    }

    /// What the containers (or a service's processes) were granted: the union of their bounding
    /// and effective sets. None for the host, a group of unrelated processes.
    pub fn granted(&self) -> Option<CapSet> {
        let containers: &[Subject] = match self {
            Target::Workload { containers, .. } => containers,
            Target::Container(c) => std::slice::from_ref(*c),
            Target::HostGroup(s) if s.kind == SubjectKind::Service => std::slice::from_ref(*s),
            Target::HostGroup(_) => return None,
        };
        granted_of(containers)
    }
}

/// How reports name a service or the host: `service:nginx.service`, `host`.
pub fn host_group_key(s: &Subject) -> String {
    match s.kind {
        SubjectKind::Service => format!("service:{}", s.key),
        _ => s.key.clone(),
    }
}

pub fn granted_of(containers: &[Subject]) -> Option<CapSet> {
    containers
        .iter()
        .filter_map(|c| match (c.cap_bnd, c.cap_eff) {
            (None, None) => None,
            (b, e) => Some(b.unwrap_or(0) | e.unwrap_or(0)),
        })
        .reduce(|a, b| a | b)
        .map(CapSet)
}

pub fn profile_from_records(records: &[CheckRecord]) -> Profile {
    Profile::from_checks(records.iter().map(row_from_record).collect())
}

fn row_from_record(r: &CheckRecord) -> CheckRow {
    let time = |ms: i64| UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    CheckRow::from_raw(
        RawCheck {
            cap: r.cap,
            verdict: r.verdict,
            audit: r.audit,
            userns: r.userns,
            bucket: r.bucket,
            classifier: r.classifier,
            origin: r.origin,
        },
        r.count,
        (time(r.first_seen_ms), time(r.last_seen_ms)),
        ProcessRef {
            pid: r.pid,
            tgid: r.tgid,
            uid: r.uid,
            comm: r.comm.clone(),
            exe: r.exe.clone(),
        },
        r.call_path.clone(),
    )
}

/// Granted capabilities that were never required: what `--cap-drop` can take away.
pub fn droppable(granted: CapSet, profile: &Profile) -> Vec<Capability> {
    granted
        .iter()
        .filter(|c| !profile.required.contains(c))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn container(key: &str, workload: &str, labels: &[(&str, &str)]) -> Subject {
        Subject {
            kind: SubjectKind::Container,
            key: key.into(),
            runtime: Some("docker".into()),
            name: Some(format!("{key}-name")),
            image: Some("busybox".into()),
            workload: Some(workload.into()),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect::<BTreeMap<_, _>>(),
            cap_eff: None,
            cap_bnd: None,
            first_seen_ms: 0,
            last_seen_ms: 0,
            running: true,
            ended_ms: None,
        }
    }

    #[test]
    fn services_and_the_host_are_found_after_containers() {
        let group = |kind, key: &str| Subject {
            kind,
            key: key.into(),
            name: None,
            image: None,
            workload: None,
            runtime: None,
            ..container("x", "x", &[])
        };
        let inventory = Inventory {
            workloads: BTreeMap::from([(
                "image:busybox/nginx".to_string(),
                vec![container("c1", "image:busybox/nginx", &[])],
            )]),
            others: vec![
                group(SubjectKind::Service, "nginx.service"),
                group(SubjectKind::Host, "host"),
            ],
        };
        let Ok(Target::HostGroup(s)) = inventory.find("nginx.service") else {
            panic!("nginx.service")
        };
        assert_eq!(host_group_key(s), "service:nginx.service");
        // A unit without `.service` is as loose a match as a workload key's last part.
        assert!(matches!(
            inventory.find("nginx"),
            Err(LookupError::Ambiguous { .. })
        ));
        let Ok(Target::HostGroup(h)) = inventory.find("host") else {
            panic!("host")
        };
        assert_eq!(host_group_key(h), "host");
        assert_eq!(Target::HostGroup(h).granted(), None);
        assert!(matches!(
            inventory.find("image:busybox/nginx"),
            Ok(Target::Workload { .. })
        ));
        let Err(LookupError::NotFound { known, .. }) = inventory.find("nope") else {
            panic!("nope")
        };
        assert!(known.contains(&"nginx.service".to_string()), "{known:?}");
    }

    #[test]
    fn a_compose_project_is_found_by_its_label_and_names_its_services() {
        let project = "shop/\n\"x\"";
        let inventory = Inventory {
            workloads: BTreeMap::from([
                (
                    "compose:a/api".to_string(),
                    vec![container(
                        "c1",
                        "compose:a/api",
                        &[(COMPOSE_PROJECT, project), (COMPOSE_SERVICE, "api")],
                    )],
                ),
                (
                    "compose:a/db".to_string(),
                    vec![container(
                        "c2",
                        "compose:a/db",
                        &[(COMPOSE_PROJECT, project), (COMPOSE_SERVICE, "db: x")],
                    )],
                ),
                (
                    "image:busybox/other".to_string(),
                    vec![container("c3", "image:busybox/other", &[])],
                ),
            ]),
            others: Vec::new(),
        };
        let targets = inventory.compose_project(project);
        let names: Vec<Option<String>> = targets.iter().map(Target::service_name).collect();
        assert_eq!(names, [Some("api".into()), Some("db: x".into())]);
        assert!(inventory.compose_project("a").is_empty());
        let other = inventory.find("c3-name").unwrap();
        assert_eq!(other.service_name(), Some("c3-name".into()));
        let other = inventory.find("image:busybox/other").unwrap();
        assert_eq!(other.service_name(), None);
    }

    #[test]
    fn kubernetes_workloads_by_namespace_owner_container_and_pod() {
        use crate::attribute::k8s::POD_NAME;
        let pod = |key: &str, workload: &str, pod: &str| {
            (
                workload.to_string(),
                vec![container(key, workload, &[(POD_NAME, pod)])],
            )
        };
        let inventory = Inventory {
            workloads: BTreeMap::from([
                pod("c1", "k8s:shop/deployment/web/web", "web-7d9f8c6b5-x2k4p"),
                pod(
                    "c2",
                    "k8s:shop/deployment/web/sidecar",
                    "web-7d9f8c6b5-x2k4p",
                ),
                pod("c3", "k8s:shop/statefulset/db/db", "db-0"),
                pod("c4", "k8s:shop/pod/db-1/db", "db-1"),
                pod("c5", "k8s:other/deployment/web/web", "web-6b474476c4-zq9vw"),
            ]),
            others: Vec::new(),
        };
        let key = |name: &str| match inventory.find(name) {
            Ok(Target::Workload { key, .. }) => key.to_string(),
            Ok(_) => panic!("{name}: not a workload"),
            Err(e) => panic!("{name}: {e}"),
        };
        assert_eq!(key("shop/web/sidecar"), "k8s:shop/deployment/web/sidecar");
        assert_eq!(
            key("shop/deployment/web/web"),
            "k8s:shop/deployment/web/web"
        );
        assert_eq!(key("shop/statefulset/db"), "k8s:shop/statefulset/db/db");
        assert_eq!(key("shop/db"), "k8s:shop/statefulset/db/db");
        assert_eq!(key("shop/db-1"), "k8s:shop/pod/db-1/db");
        assert_eq!(key("db-0"), "k8s:shop/statefulset/db/db");
        assert_eq!(key("sidecar"), "k8s:shop/deployment/web/sidecar");
        // Two containers in the pod, two namespaces, two owners: say which.
        for name in [
            "shop/web",
            "shop/deployment/web",
            "web-7d9f8c6b5-x2k4p",
            "web",
            "db",
        ] {
            assert!(
                matches!(inventory.find(name), Err(LookupError::Ambiguous { .. })),
                "{name}"
            );
        }
        for name in ["shop/nothing", "nowhere/web", "a/b/c/d/e", "/"] {
            assert!(
                matches!(inventory.find(name), Err(LookupError::NotFound { .. })),
                "{name}"
            );
        }
    }
}
