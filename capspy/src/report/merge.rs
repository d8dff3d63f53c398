//! Profiles from many nodes, one per workload (`capspy merge`, `capspy profile --store A --store
//! B`): the check rows of every node, each kept with its node, go through the same rules as one
//! node's ([`Profile::from_checks`]), so a rule that pairs checks (DAC_READ_SEARCH instead of
//! DAC_OVERRIDE) sees every node's writes. Merging the results instead (a union of `required`)
//! would keep DAC_READ_SEARCH where one node's write needs DAC_OVERRIDE.
//!
//! A node's rows found in several inputs (a later export of the same store, or a merged profile
//! merged again) are taken once, with the largest count: merging again changes no row.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use crate::model::caps::{CapSet, Capability};
use crate::model::check::{AuditClass, Bucket, CheckRow, Origin, UserNs, Verdict};
use crate::model::loss::LossCounters;
use crate::profile::Profile;
use crate::report::read::{DocSubject, ProfileDoc};
use crate::report::{Coverage, Report};

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(
        "{0}: the profile of a command has no workload to merge into (merge profiles of \
         workloads or containers)"
    )]
    NoWorkload(String),
    #[error("nothing to merge")]
    Empty,
}

/// One aggregation key of a node: what tells a node's rows apart, so that a capability kept with
/// `capset` or a check for ids the caller holds (optional) never folds into a check of the same
/// capability, verdict and class.
type RowKey = (
    String,
    Bucket,
    Capability,
    Origin,
    Verdict,
    AuditClass,
    UserNs,
    bool,
);

/// One workload's profiles (of one image set, unless images are merged).
#[derive(Default)]
struct Group {
    rows: BTreeMap<RowKey, CheckRow>,
    hosts: BTreeSet<String>,
    containers: BTreeSet<String>,
    images: BTreeSet<String>,
    /// The union of what the inputs were granted...
    granted: BTreeSet<Capability>,
    /// ...unless one of them did not know.
    granted_unknown: bool,
    losses: BTreeMap<String, LossCounters>,
    hooks: BTreeSet<String>,
    notes: Vec<String>,
}

/// Merges `docs` into one report per workload, in workload order; a workload whose inputs ran
/// different images gets one report per image set unless `merge_images`.
pub fn merge(docs: Vec<ProfileDoc>, merge_images: bool) -> Result<Vec<Report>, MergeError> {
    let mut merger = Merger::new(merge_images);
    for doc in docs {
        merger.add(doc)?;
    }
    merger.finish()
}

/// [`merge`] one document at a time, so a thousand nodes' files need not all be held at once.
pub struct Merger {
    merge_images: bool,
    groups: BTreeMap<(String, Vec<String>), Group>,
}

impl Merger {
    pub fn new(merge_images: bool) -> Self {
        Self {
            merge_images,
            groups: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, doc: ProfileDoc) -> Result<(), MergeError> {
        let Some(key) = doc.subject.workload().map(str::to_string) else {
            return Err(MergeError::NoWorkload(doc.source));
        };
        let images = if self.merge_images {
            Vec::new()
        } else {
            let mut images = doc.subject.images();
            images.sort();
            images.dedup();
            images
        };
        self.groups.entry((key, images)).or_default().add(doc);
        Ok(())
    }

    pub fn finish(self) -> Result<Vec<Report>, MergeError> {
        if self.groups.is_empty() {
            return Err(MergeError::Empty);
        }
        Ok(self
            .groups
            .into_iter()
            .map(|((key, _), group)| group.into_report(key))
            .collect())
    }
}

impl Group {
    fn add(&mut self, doc: ProfileDoc) {
        // Without a node name (stores and documents from before it was kept), the input stands
        // for its node.
        let host = doc.host.clone().unwrap_or_else(|| doc.source.clone());
        match &doc.coverage {
            Some(c) => self.hosts.extend(c.hosts.iter().cloned()),
            None => {
                self.hosts.insert(host.clone());
            }
        }
        self.containers.extend(doc.subject.containers());
        self.images.extend(doc.subject.images());
        match &doc.granted {
            Some(g) => self.granted.extend(g),
            None => self.granted_unknown = true,
        }
        let losses = self.losses.entry(host.clone()).or_default();
        losses.sightings_lost = losses.sightings_lost.max(doc.losses.sightings_lost);
        losses.checks_overflow = losses.checks_overflow.max(doc.losses.checks_overflow);
        losses.unclassified = losses.unclassified.max(doc.losses.unclassified);
        losses.cgroups_lost = losses.cgroups_lost.max(doc.losses.cgroups_lost);
        self.hooks.insert(doc.hook);
        for note in doc.notes {
            if !self.notes.contains(&note) {
                self.notes.push(note);
            }
        }
        for mut row in doc.checks {
            let row_host = row.host.get_or_insert_with(|| host.clone()).clone();
            self.hosts.insert(row_host.clone());
            let key = (
                row_host,
                row.bucket,
                row.capability,
                row.origin,
                row.verdict,
                row.audit,
                row.user_namespace,
                row.optional.is_some(),
            );
            match self.rows.entry(key) {
                Entry::Vacant(e) => {
                    e.insert(row);
                }
                Entry::Occupied(mut e) => same_node(e.get_mut(), row),
            }
        }
    }

    fn into_report(self, key: String) -> Report {
        let checks: Vec<CheckRow> = self.rows.into_values().collect();
        let seen = checks
            .iter()
            .map(|c| c.first_seen)
            .filter(|t| *t > SystemTime::UNIX_EPOCH);
        let coverage = Coverage {
            hosts: self.hosts.iter().cloned().collect(),
            instances: self.containers.len(),
            first_seen: seen.min().unwrap_or(SystemTime::UNIX_EPOCH),
            last_seen: checks
                .iter()
                .map(|c| c.last_seen)
                .max()
                .unwrap_or(SystemTime::UNIX_EPOCH),
        };
        let granted = (!self.granted_unknown).then(|| {
            CapSet(
                self.granted
                    .iter()
                    .filter(|c| c.0 < 64)
                    .fold(0, |mask, c| mask | 1 << c.0),
            )
        });
        let mut losses = LossCounters::default();
        for l in self.losses.values() {
            losses.add(l);
        }
        let hook = self.hooks.into_iter().collect::<Vec<_>>().join("+");
        let subject = DocSubject::Workload {
            key,
            containers: self.containers.into_iter().collect(),
            images: self.images.into_iter().collect(),
        };
        let mut report = Report::new(
            subject,
            &hook,
            Profile::from_checks(checks).with_granted(granted),
            losses,
        );
        for note in self.notes {
            if !report.notes.contains(&note) {
                report.notes.push(note);
            }
        }
        if let [one] = coverage.hosts.as_slice() {
            report.host = Some(one.clone());
        }
        report.coverage = Some(coverage);
        report
    }
}

/// One node's key seen again: cumulative counts, so the larger; times widened; the evidence of
/// whichever has a call path, earliest first.
fn same_node(kept: &mut CheckRow, other: CheckRow) {
    kept.count = kept.count.max(other.count);
    kept.last_seen = kept.last_seen.max(other.last_seen);
    let earlier = other.first_seen < kept.first_seen;
    if (earlier && !other.call_path.is_empty()) || kept.call_path.is_empty() {
        kept.example = other.example;
        kept.call_path = other.call_path;
        kept.classified_by = other.classified_by;
    }
    kept.first_seen = kept.first_seen.min(other.first_seen);
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::report::{Format, Subject};

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn row(cap: Capability, verdict: Verdict, count: u64, path: &[&str], secs: u64) -> CheckRow {
        let mut r = crate::profile::tests::row(cap, verdict, AuditClass::Audited, count);
        r.call_path = path.iter().map(|f| (*f).to_string()).collect();
        r.first_seen = at(secs);
        r.last_seen = at(secs + 10);
        r
    }

    /// A node's profile of `key` as `capspy profile --format json` writes it, read back.
    fn node(
        host: &str,
        key: &str,
        image: &str,
        containers: &[&str],
        rows: Vec<CheckRow>,
    ) -> ProfileDoc {
        let report = Report::new(
            Subject::Workload {
                key: key.into(),
                containers: containers.iter().map(|c| (*c).to_string()).collect(),
                images: vec![image.into()],
            },
            "store",
            Profile::from_checks(rows).with_granted(Some(CapSet(1 << 1 | 1 << 13))),
            LossCounters {
                sightings_lost: 1,
                ..LossCounters::default()
            },
        )
        .with_host(Some(host.into()));
        ProfileDoc::parse(
            Path::new(&format!("{host}.json")),
            &report.render(Format::Json),
        )
        .unwrap()
    }

    const READ: &[&str] = &["capable_wrt_inode_uidgid+0x39", "generic_permission+0x1cf"];
    const OVERRIDE: &[&str] = &["capable_wrt_inode_uidgid+0x39", "generic_permission+0x11a"];

    fn reader(host: &str) -> ProfileDoc {
        node(
            host,
            "k8s:shop/web/app",
            "web:1",
            &[&format!("{host}-c1")],
            vec![
                row(Capability::DAC_OVERRIDE, Verdict::Granted, 2, OVERRIDE, 5),
                row(Capability::DAC_READ_SEARCH, Verdict::Denied, 2, READ, 5),
                row(
                    Capability::NET_RAW,
                    Verdict::Granted,
                    3,
                    &["inet_create+0x10b"],
                    1,
                ),
            ],
        )
    }

    #[test]
    fn the_dac_rule_sees_every_nodes_writes() {
        // Alone, each reader needs DAC_READ_SEARCH only.
        let a = reader("node-a");
        assert!(
            a.required.contains(&Capability::DAC_READ_SEARCH),
            "{:?}",
            a.required
        );
        assert!(!a.required.contains(&Capability::DAC_OVERRIDE));
        // node-b also writes: a DAC_OVERRIDE check with no denial before it.
        let b = node(
            "node-b",
            "k8s:shop/web/app",
            "web:1",
            &["node-b-c1"],
            vec![
                row(Capability::DAC_OVERRIDE, Verdict::Granted, 1, OVERRIDE, 20),
                row(
                    Capability::NET_RAW,
                    Verdict::Granted,
                    4,
                    &["inet_create+0x10b"],
                    30,
                ),
            ],
        );
        // A union of the results would say DAC_READ_SEARCH + DAC_OVERRIDE... or keep the
        // reader's verdict; the rule on every row says DAC_OVERRIDE.
        let merged = merge(vec![a.clone(), b], false).unwrap();
        assert_eq!(merged.len(), 1);
        let m = &merged[0];
        assert_eq!(
            m.profile.required,
            BTreeSet::from([Capability::DAC_OVERRIDE, Capability::NET_RAW])
        );
        let c = m.coverage.as_ref().unwrap();
        assert_eq!(c.hosts, ["node-a", "node-b"]);
        assert_eq!(c.instances, 2);
        assert_eq!((c.first_seen, c.last_seen), (at(1), at(40)));
        // Counts summed over nodes in the findings, each node's evidence kept in its rows.
        let net_raw = &m.profile.explanations[1];
        assert_eq!(net_raw.capability, Capability::NET_RAW);
        assert_eq!(net_raw.evidence.count, 7);
        let hosts: Vec<_> = m
            .profile
            .checks
            .iter()
            .filter(|r| r.capability == Capability::NET_RAW)
            .map(|r| (r.host.as_deref().unwrap(), r.count))
            .collect();
        assert_eq!(hosts, [("node-a", 3), ("node-b", 4)]);
        assert_eq!(m.losses.sightings_lost, 2);
        assert_eq!(m.profile.droppable, Some(BTreeSet::new()));

        // Readers only, on two nodes: still DAC_READ_SEARCH.
        let readers = merge(vec![a, reader("node-c")], false).unwrap();
        assert!(
            readers[0]
                .profile
                .required
                .contains(&Capability::DAC_READ_SEARCH)
        );
        assert!(
            !readers[0]
                .profile
                .required
                .contains(&Capability::DAC_OVERRIDE)
        );
    }

    #[test]
    fn merging_is_idempotent_and_the_output_is_a_profile() {
        let a = reader("node-a");
        let b = reader("node-b");
        let once = merge(vec![a.clone(), b.clone()], false).unwrap().remove(0);
        let json = once.render(Format::Json);
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../schema/capspy-report.schema.json"))
                .unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let errors: Vec<String> = jsonschema::validator_for(&schema)
            .unwrap()
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:#?}\n{json}");
        assert!(value["coverage"]["hosts"].is_array() && value["checks"][0]["host"].is_string());
        let back = ProfileDoc::parse(Path::new("merged.json"), &json).unwrap();
        assert_eq!(back.required, once.profile.required);
        assert_eq!(back.subject.workload(), Some("k8s:shop/web/app"));
        // Merged again with one of its own inputs (a later export of node-a): the same rows
        // and result (losses excepted: a merged input no longer says which node lost what).
        let twice = merge(vec![back, a], false).unwrap().remove(0);
        let rows = |r: &Report| serde_json::to_string(&r.profile).unwrap();
        assert_eq!(rows(&twice), rows(&once));
        assert_eq!(twice.coverage, once.coverage);
        // That a baseline folder loads it is tests/merge.rs's (`baseline check` on the output).
    }

    #[test]
    fn kept_and_optional_rows_stay_apart_from_checks() {
        // One node: setgid(getgid()), an own-id check of SETGID (optional), a needed
        // setgid(www-data) with the same verdict and class, and NET_BIND_SERVICE kept with
        // capset next to a check of it. In either order of rows, and exported twice.
        let mut own = row(
            Capability::SETGID,
            Verdict::Granted,
            5,
            &["__sys_setgid"],
            2,
        );
        own.optional = Some("own id".into());
        let needed = row(
            Capability::SETGID,
            Verdict::Granted,
            1,
            &["__sys_setgid"],
            1,
        );
        let mut kept = row(Capability::NET_BIND_SERVICE, Verdict::Granted, 1, &[], 3);
        kept.origin = Origin::Capset;
        let bind = row(
            Capability::NET_BIND_SERVICE,
            Verdict::Granted,
            2,
            &["inet_bind"],
            4,
        );
        for rows in [
            vec![own.clone(), needed.clone(), kept.clone(), bind.clone()],
            vec![bind.clone(), kept.clone(), needed.clone(), own.clone()],
        ] {
            let a = node("node-a", "k8s:shop/web/app", "web:1", &["c1"], rows);
            let m = merge(vec![a.clone(), a], false).unwrap().remove(0);
            let mut rows: Vec<_> = m
                .profile
                .checks
                .iter()
                .map(|r| (r.capability, r.origin, r.optional.is_some(), r.count))
                .collect();
            rows.sort();
            assert_eq!(
                rows,
                [
                    (Capability::SETGID, Origin::Check, false, 1),
                    (Capability::SETGID, Origin::Check, true, 5),
                    (Capability::NET_BIND_SERVICE, Origin::Check, false, 2),
                    (Capability::NET_BIND_SERVICE, Origin::Capset, false, 1),
                ]
            );
            assert_eq!(
                m.profile.required,
                BTreeSet::from([Capability::NET_BIND_SERVICE, Capability::SETGID])
            );
        }
    }

    #[test]
    fn images_are_kept_apart_unless_asked() {
        let v1 = reader("node-a");
        let mut v2 = reader("node-b");
        v2.subject = Subject::Workload {
            key: "k8s:shop/web/app".into(),
            containers: vec!["node-b-c1".into()],
            images: vec!["web:2".into()],
        };
        let apart = merge(vec![v1.clone(), v2.clone()], false).unwrap();
        assert_eq!(apart.len(), 2);
        assert_eq!(apart[0].subject.images(), ["web:1"]);
        assert_eq!(apart[1].subject.images(), ["web:2"]);
        let together = merge(vec![v1, v2], true).unwrap();
        assert_eq!(together.len(), 1);
        assert_eq!(together[0].subject.images(), ["web:1", "web:2"]);
    }

    #[test]
    fn a_command_profile_cannot_be_merged() {
        let mut doc = reader("node-a");
        doc.subject = Subject::Command {
            argv: vec!["ping".into()],
            exit_code: 0,
            interrupted: false,
        };
        let e = merge(vec![doc], false).unwrap_err().to_string();
        assert!(
            e.starts_with("node-a.json: the profile of a command"),
            "{e}"
        );
    }
}
