//! What commands read: sessions, subjects, and check rows summed per subject or workload.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use rusqlite::OptionalExtension as _;

use super::{Alerted, CheckRecord, Session, StoreError, StoreReader, Subject, SubjectKind};
use crate::attribute::engines::EngineStatus;

impl StoreReader {
    /// The node this store was recorded on; None for stores written before it was kept.
    pub fn host(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'host'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
            .filter(|h| !h.is_empty()))
    }

    /// What `capspy watch` alerted on, sorted; none in a store older than version 5.
    pub fn alerted(&self) -> Result<Vec<Alerted>, StoreError> {
        if self.version < 5 {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT workload, kind, capability FROM alerted ORDER BY workload, kind, capability",
        )?;
        let rows = stmt.query_map([], |r| {
            let capability: String = r.get(2)?;
            Ok(Alerted {
                workload: r.get(0)?,
                kind: r.get(1)?,
                capability: (!capability.is_empty()).then_some(capability),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// What the kernel program could not keep, over every session.
    pub fn losses(&self) -> Result<crate::model::loss::LossCounters, StoreError> {
        let mut total = crate::model::loss::LossCounters::default();
        for session in self.sessions()? {
            total.add(&session.losses);
        }
        Ok(total)
    }

    /// What [`StoreWriter::set_engines`](super::StoreWriter::set_engines) kept; None for stores written before it was kept.
    pub fn engines(&self) -> Result<Option<Vec<EngineStatus>>, StoreError> {
        let Some(json) = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'engines'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
        else {
            return Ok(None);
        };
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| StoreError::BadRow(format!("engines: {e}")))
    }

    pub fn sessions(&self) -> Result<Vec<Session>, StoreError> {
        let cgroups_lost = if self.version >= 4 {
            "cgroups_lost"
        } else {
            "0"
        };
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT id, hook, pid, started_ms, last_write_ms, ended_ms,
                    sightings_lost, checks_overflow, unclassified, {cgroups_lost}
             FROM sessions ORDER BY id"
        ))?;
        let rows = stmt.query_map([], |r| {
            Ok(Session {
                id: r.get(0)?,
                hook: r.get(1)?,
                pid: r.get(2)?,
                started_ms: r.get(3)?,
                last_write_ms: r.get(4)?,
                ended_ms: r.get(5)?,
                losses: crate::model::loss::LossCounters {
                    sightings_lost: u64_from_sql(r.get(6)?),
                    checks_overflow: u64_from_sql(r.get(7)?),
                    unclassified: u64_from_sql(r.get(8)?),
                    cgroups_lost: u64_from_sql(r.get(9)?),
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every subject, ordered by kind, workload and key.
    pub fn subjects(&self) -> Result<Vec<Subject>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT kind, key, runtime, name, image, workload, labels, cap_eff, cap_bnd,
                 first_seen_ms, last_seen_ms, running, ended_ms
             FROM subjects ORDER BY kind, workload, key",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let kind: String = r.get(0)?;
            let key: String = r.get(1)?;
            let labels: String = r.get(6)?;
            out.push(Subject {
                kind: SubjectKind::parse(&kind, &key)
                    .ok_or_else(|| StoreError::BadRow(format!("subject kind {kind:?}")))?,
                key,
                runtime: r.get(2)?,
                name: r.get(3)?,
                image: r.get(4)?,
                workload: r.get(5)?,
                labels: serde_json::from_str(&labels)
                    .map_err(|e| StoreError::BadRow(format!("labels {labels:?}: {e}")))?,
                cap_eff: r.get::<_, Option<i64>>(7)?.map(u64_from_sql),
                cap_bnd: r.get::<_, Option<i64>>(8)?.map(u64_from_sql),
                first_seen_ms: r.get(9)?,
                last_seen_ms: r.get(10)?,
                running: r.get(11)?,
                ended_ms: r.get(12)?,
            });
        }
        Ok(out)
    }

    /// One subject's checks, summed over sessions and cgroups.
    pub fn checks_for_subject(&self, key: &str) -> Result<Vec<CheckRecord>, StoreError> {
        let mut all = self.grouped_checks("s.key", "s.key = ?1", Some(key))?;
        Ok(all.remove(key).unwrap_or_default())
    }

    /// A workload's checks, summed over all its subjects, sessions and cgroups.
    pub fn checks_for_workload(&self, workload: &str) -> Result<Vec<CheckRecord>, StoreError> {
        let mut all = self.grouped_checks("s.workload", "s.workload = ?1", Some(workload))?;
        Ok(all.remove(workload).unwrap_or_default())
    }

    /// Every workload's summed checks in one scan (for `ls`).
    pub fn checks_by_workload(&self) -> Result<BTreeMap<String, Vec<CheckRecord>>, StoreError> {
        self.grouped_checks("s.workload", "s.workload IS NOT NULL", None)
    }

    /// Every subject's summed checks in one scan, by subject key.
    pub fn checks_by_subject(&self) -> Result<BTreeMap<String, Vec<CheckRecord>>, StoreError> {
        self.grouped_checks("s.key", "1", None)
    }

    /// Whether the checks table has the `exe` column: a store of version 1, which a reader
    /// does not migrate, has not.
    pub(super) fn has_exe(&self) -> Result<bool, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM pragma_table_info('checks') WHERE name = 'exe'",
            [],
            |r| r.get(0),
        )?;
        Ok(n == 1)
    }

    /// Sums check rows by (`group`, aggregation key). `group` and `filter` are SQL fragments
    /// from this module, never from input.
    pub(super) fn grouped_checks(
        &self,
        group: &str,
        filter: &str,
        param: Option<&str>,
    ) -> Result<BTreeMap<String, Vec<CheckRecord>>, StoreError> {
        // A version 1 store (read as it is) has only checks.
        let origin = if self.version >= 2 { "c.origin" } else { "0" };
        let sql = format!(
            "SELECT {group}, c.cap, c.verdict, c.audit, c.userns, c.bucket, c.classifier, c.count,
                 c.first_seen_ms, c.last_seen_ms, c.pid, c.tgid, c.uid, c.comm, c.call_path,
                 c.session, c.cgroup_id, {origin}, {exe}
             FROM subjects s
             JOIN cgroups g ON g.subject = s.id
             JOIN checks c ON c.session = g.session AND c.cgroup_id = g.cgroup_id
             WHERE {filter}",
            exe = if self.has_exe()? { "c.exe" } else { "NULL" }
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = match param {
            Some(p) => stmt.query([p])?,
            None => stmt.query([])?,
        };
        let mut groups: BTreeMap<String, BTreeMap<AggKey, Acc>> = BTreeMap::new();
        while let Some(r) = rows.next()? {
            let (group, rec, call_path, rank) = decode_row(r)?;
            let key = (
                rec.cap,
                rec.verdict,
                rec.audit,
                rec.userns,
                rec.bucket,
                rec.origin,
            );
            match groups.entry(group).or_default().entry(key) {
                Entry::Vacant(v) => {
                    v.insert(Acc {
                        rec,
                        call_path,
                        rank,
                    });
                }
                Entry::Occupied(mut o) => o.get_mut().add(rec, call_path, rank),
            }
        }
        groups
            .into_iter()
            .map(|(group, accs)| {
                let recs = accs
                    .into_values()
                    .map(Acc::finish)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((group, recs))
            })
            .collect()
    }
}

/// One row of [`StoreReader::grouped_checks`]'s query: its group, the check (without its
/// call path), the call path as stored, and the rank that picks the example.
fn decode_row(r: &rusqlite::Row<'_>) -> Result<(String, CheckRecord, String, Rank), StoreError> {
    let group: String = r.get(0)?;
    let count: i64 = r.get(7)?;
    let call_path: String = r.get(14)?;
    let rank = (
        call_path == "[]",
        r.get::<_, i64>(8)?,
        r.get::<_, i64>(15)?,
        r.get::<_, i64>(16)?,
    );
    let rec = CheckRecord {
        cgroup_id: 0,
        cap: r.get(1)?,
        verdict: r.get(2)?,
        audit: r.get(3)?,
        userns: r.get(4)?,
        bucket: r.get(5)?,
        origin: r.get(17)?,
        classifier: r.get(6)?,
        count: u64::try_from(count)
            .map_err(|_| StoreError::BadRow(format!("negative count {count}")))?,
        first_seen_ms: rank.1,
        last_seen_ms: r.get(9)?,
        pid: r.get(10)?,
        tgid: r.get(11)?,
        uid: r.get(12)?,
        comm: r.get(13)?,
        call_path: Vec::new(),
        exe: r.get(18)?,
    };
    Ok((group, rec, call_path, rank))
}

pub(super) type AggKey = (u8, u8, u8, u8, u8, u8);
/// Which row gives the example: one with a call path first, then the earliest.
pub(super) type Rank = (bool, i64, i64, i64);

pub(super) struct Acc {
    rec: CheckRecord,
    call_path: String,
    rank: Rank,
}

impl Acc {
    fn add(&mut self, rec: CheckRecord, call_path: String, rank: Rank) {
        let first_seen_ms = self.rec.first_seen_ms.min(rec.first_seen_ms);
        let count = self.rec.count.saturating_add(rec.count);
        let last_seen_ms = self.rec.last_seen_ms.max(rec.last_seen_ms);
        if rank < self.rank {
            self.rec = rec;
            self.call_path = call_path;
            self.rank = rank;
        }
        self.rec.first_seen_ms = first_seen_ms;
        self.rec.count = count;
        self.rec.last_seen_ms = last_seen_ms;
    }

    fn finish(mut self) -> Result<CheckRecord, StoreError> {
        self.rec.call_path = serde_json::from_str(&self.call_path)
            .map_err(|e| StoreError::BadRow(format!("call path {:?}: {e}", self.call_path)))?;
        Ok(self.rec)
    }
}

pub(super) fn u64_from_sql(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}
