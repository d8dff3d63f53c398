//! The daemon's writes: sessions, subjects, each sweep's check rows (one transaction), losses.

use rusqlite::{Connection, TransactionBehavior};

use super::{Alerted, CheckRecord, StoreError, StoreWriter, Subject};
use crate::attribute::engines::EngineStatus;
use crate::model::loss::LossCounters;
use crate::model::time::now_ms;

impl StoreWriter {
    /// The node this store records (`meta` key `host`), for profiles merged from several.
    pub fn set_host(&mut self, host: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO meta (key, value) VALUES ('host', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [host],
        )?;
        Ok(())
    }

    /// Which container engines answered (`meta` key `engines`), so readers can say why
    /// containers have no names.
    pub fn set_engines(&mut self, statuses: &[EngineStatus]) -> Result<(), StoreError> {
        let json = serde_json::to_string(statuses)
            .map_err(|e| StoreError::BadRow(format!("engines: {e}")))?;
        self.conn().execute(
            "INSERT INTO meta (key, value) VALUES ('engines', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [json],
        )?;
        Ok(())
    }

    /// Starts a daemon run; later `upsert_subject` calls map cgroups within it.
    pub fn begin_session(&mut self, hook: &str, started_ms: i64) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO sessions (hook, pid, started_ms) VALUES (?1, ?2, ?3)",
            (hook, std::process::id(), started_ms),
        )?;
        let id = conn.last_insert_rowid();
        self.session = Some(id);
        Ok(id)
    }

    /// Records a clean stop of a session.
    pub fn end_session(&mut self, session: i64, ended_ms: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE sessions SET ended_ms = ?2 WHERE id = ?1",
            (session, ended_ms),
        )?;
        Ok(())
    }

    /// Inserts or refreshes a subject and maps `cgroup_id` to it for the current session.
    /// Known fields are kept when the new value is unknown; first/last seen widen.
    pub fn upsert_subject(&mut self, cgroup_id: u64, subject: &Subject) -> Result<(), StoreError> {
        let session = self.session.ok_or(StoreError::NoSession)?;
        let labels = serde_json::to_string(&subject.labels)
            .map_err(|e| StoreError::BadRow(format!("labels: {e}")))?;
        let tx = self
            .conn()
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let id: i64 = tx
            .prepare_cached(
                "INSERT INTO subjects (key, kind, runtime, name, image, workload, labels, cap_eff,
                     cap_bnd, first_seen_ms, last_seen_ms, running, ended_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,
                     CASE WHEN ?12 THEN NULL ELSE ?13 END)
                 ON CONFLICT (key) DO UPDATE SET
                     kind = excluded.kind,
                     runtime = coalesce(excluded.runtime, runtime),
                     name = coalesce(excluded.name, name),
                     image = coalesce(excluded.image, image),
                     workload = coalesce(excluded.workload, workload),
                     labels = CASE WHEN excluded.labels = '{}' THEN labels ELSE excluded.labels END,
                     cap_eff = coalesce(excluded.cap_eff, cap_eff),
                     cap_bnd = coalesce(excluded.cap_bnd, cap_bnd),
                     first_seen_ms = min(first_seen_ms, excluded.first_seen_ms),
                     last_seen_ms = max(last_seen_ms, excluded.last_seen_ms),
                     running = excluded.running,
                     ended_ms = CASE WHEN excluded.running THEN NULL
                                     ELSE coalesce(excluded.ended_ms, ended_ms) END
                 RETURNING id",
            )?
            .query_row(
                rusqlite::params![
                    subject.key,
                    subject.kind.as_str(),
                    subject.runtime,
                    subject.name,
                    subject.image,
                    subject.workload,
                    labels,
                    subject.cap_eff.map(u64_to_sql),
                    subject.cap_bnd.map(u64_to_sql),
                    subject.first_seen_ms,
                    subject.last_seen_ms,
                    subject.running,
                    subject.ended_ms,
                ],
                |r| r.get(0),
            )?;
        tx.prepare_cached(
            "INSERT INTO cgroups (session, cgroup_id, subject) VALUES (?1, ?2, ?3)
             ON CONFLICT (session, cgroup_id) DO UPDATE SET subject = excluded.subject",
        )?
        .execute((session, u64_to_sql(cgroup_id), id))?;
        tx.commit()?;
        Ok(())
    }

    /// Writes check rows of cumulative values in one transaction (see [`Self::write_sweep`]).
    pub fn write_checks(&mut self, session: i64, checks: &[CheckRecord]) -> Result<(), StoreError> {
        self.write_sweep(session, checks, None)
    }

    /// Writes one sweep in one transaction: its changed check rows, and the kernel program's loss
    /// counters (cumulative, so idempotent). Re-writing a sweep is a no-op; counts and last-seen
    /// never go backwards; first-seen and the example are kept, except that a call path arriving
    /// after an empty one fills it in.
    pub fn write_sweep(
        &mut self,
        session: i64,
        checks: &[CheckRecord],
        losses: Option<&LossCounters>,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn()
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO checks (session, cgroup_id, cap, verdict, audit, userns, bucket,
                     classifier, count, first_seen_ms, last_seen_ms, pid, tgid, uid, comm,
                     call_path, origin, exe)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                     ?17, ?18)
                 ON CONFLICT (session, cgroup_id, cap, verdict, audit, userns, bucket, origin)
                 DO UPDATE SET
                     classifier = excluded.classifier,
                     count = max(count, excluded.count),
                     last_seen_ms = max(last_seen_ms, excluded.last_seen_ms),
                     call_path = CASE WHEN call_path = '[]' THEN excluded.call_path
                                      ELSE call_path END,
                     exe = coalesce(exe, excluded.exe)",
            )?;
            for c in checks {
                let call_path = serde_json::to_string(&c.call_path)
                    .map_err(|e| StoreError::BadRow(format!("call path: {e}")))?;
                stmt.execute(rusqlite::params![
                    session,
                    u64_to_sql(c.cgroup_id),
                    c.cap,
                    c.verdict,
                    c.audit,
                    c.userns,
                    c.bucket,
                    c.classifier,
                    i64::try_from(c.count).unwrap_or(i64::MAX),
                    c.first_seen_ms,
                    c.last_seen_ms,
                    c.pid,
                    c.tgid,
                    c.uid,
                    c.comm,
                    call_path,
                    c.origin,
                    c.exe,
                ])?;
            }
        }
        tx.prepare_cached("UPDATE sessions SET last_write_ms = ?2 WHERE id = ?1")?
            .execute((session, now_ms()))?;
        if let Some(losses) = losses {
            tx.prepare_cached(
                "UPDATE sessions SET sightings_lost = ?2, checks_overflow = ?3, unclassified = ?4,
                     cgroups_lost = ?5
                 WHERE id = ?1",
            )?
            .execute((
                session,
                u64_to_sql(losses.sightings_lost),
                u64_to_sql(losses.checks_overflow),
                u64_to_sql(losses.unclassified),
                u64_to_sql(losses.cgroups_lost),
            ))?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Marks a running subject as ended. Returns false if it is unknown or already ended.
    pub fn mark_ended(&mut self, key: &str, ended_ms: i64) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE subjects SET running = 0, ended_ms = ?2, last_seen_ms = max(last_seen_ms, ?2)
             WHERE key = ?1 AND running",
            (key, ended_ms),
        )?;
        Ok(n > 0)
    }

    /// Marks ended every running subject that has no cgroup in `session`: after a restart,
    /// once the live cgroups have been attributed, what the killed daemon saw running and is
    /// gone now. Returns how many.
    pub fn end_unseen(&mut self, session: i64, ended_ms: i64) -> Result<usize, StoreError> {
        let n = self.conn().execute(
            "UPDATE subjects SET running = 0, ended_ms = ?2
             WHERE running AND id NOT IN (SELECT subject FROM cgroups WHERE session = ?1)",
            (session, ended_ms),
        )?;
        Ok(n)
    }

    /// Keeps what was alerted (once each; the first time is kept).
    pub fn note_alerted(&mut self, alerted: &[Alerted]) -> Result<(), StoreError> {
        if alerted.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn()
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO alerted (workload, kind, capability, first_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
            )?;
            let now = now_ms();
            for a in alerted {
                insert.execute((
                    &a.workload,
                    &a.kind,
                    a.capability.as_deref().unwrap_or(""),
                    now,
                ))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The read-write connection (a reader's is read-only).
    fn conn(&mut self) -> &mut Connection {
        &mut self.store.conn
    }
}

/// SQLite integers are i64; ids and masks are u64 bit patterns.
pub(super) fn u64_to_sql(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}
