//! The store's schema: its tables, the version history and migrations, and how a file is
//! recognised as a capspy store (or refused) before anything is written.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior};

use super::{APPLICATION_ID, StoreError, open_error};
use crate::model::time::now_ms;

/// `PRAGMA user_version` of the schema this build writes; newer stores are refused.
///
/// History: 2 added `checks.origin` (capabilities kept without a check) to the key; a writer
/// migrates a version 1 store, a reader reads it as checks only.
/// 3 added `checks.exe` (the first process's executable); a writer adds the column, a reader
/// of an older store reads none.
/// 4 added subject kind `unattributed` (before, such cgroups were host subjects `cgroup:<id>`)
/// and `sessions.cgroups_lost`; a writer migrates them, a reader reads them as unattributed and
/// no cgroup records lost.
/// 5 added `alerted`, what `capspy watch` has alerted on (a restart does not alert again); a
/// writer adds the table, a reader does not read it.
pub const SCHEMA_VERSION: i32 = 5;
pub(super) const SCHEMA_NAME: &str = "capspy";

pub(super) const SCHEMA: &str = "
CREATE TABLE meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hook TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    -- The last sweep that changed a count or a loss counter.
    last_write_ms INTEGER,
    ended_ms INTEGER,
    -- The kernel program's loss counters, cumulative for the session.
    sightings_lost INTEGER NOT NULL DEFAULT 0,
    checks_overflow INTEGER NOT NULL DEFAULT 0,
    unclassified INTEGER NOT NULL DEFAULT 0,
    -- Version 4: `cgroup_mkdir` records lost.
    cgroups_lost INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE subjects (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('container', 'service', 'host', 'unattributed')),
    runtime TEXT,
    name TEXT,
    image TEXT,
    workload TEXT,
    labels TEXT NOT NULL DEFAULT '{}',
    cap_eff INTEGER,
    cap_bnd INTEGER,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    running INTEGER NOT NULL,
    ended_ms INTEGER
);
CREATE INDEX subjects_workload ON subjects (workload);
-- Cgroup inode numbers can be reused once a cgroup is removed: the mapping is per session.
CREATE TABLE cgroups (
    session INTEGER NOT NULL REFERENCES sessions (id),
    cgroup_id INTEGER NOT NULL,
    subject INTEGER NOT NULL REFERENCES subjects (id),
    PRIMARY KEY (session, cgroup_id)
) WITHOUT ROWID;
CREATE INDEX cgroups_subject ON cgroups (subject);
CREATE TABLE checks (
    session INTEGER NOT NULL REFERENCES sessions (id),
    cgroup_id INTEGER NOT NULL,
    cap INTEGER NOT NULL,
    verdict INTEGER NOT NULL,
    audit INTEGER NOT NULL,
    userns INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    origin INTEGER NOT NULL DEFAULT 0,
    classifier INTEGER NOT NULL,
    count INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    tgid INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    comm TEXT NOT NULL,
    call_path TEXT NOT NULL,
    -- Version 3: the first process's executable, NULL when unknown.
    exe TEXT,
    PRIMARY KEY (session, cgroup_id, cap, verdict, audit, userns, bucket, origin)
) WITHOUT ROWID;
-- Version 5: what `capspy watch` alerted on; capability '' for a new workload.
CREATE TABLE alerted (
    workload TEXT NOT NULL,
    kind TEXT NOT NULL,
    capability TEXT NOT NULL,
    first_ms INTEGER NOT NULL,
    PRIMARY KEY (workload, kind, capability)
) WITHOUT ROWID;
";

/// Version 1 to 2: `origin` joins the key of `checks`. SQLite cannot change a primary key in
/// place, so the table is copied; every version 1 row counted `cap_capable` checks (origin 0).
/// The table's DDL is repeated on purpose: a migration is frozen at the version it makes, while
/// [`SCHEMA`] moves on (later versions add columns through their own steps).
pub(super) const MIGRATE_1_TO_2: &str = "
ALTER TABLE checks RENAME TO checks_v1;
CREATE TABLE checks (
    session INTEGER NOT NULL REFERENCES sessions (id),
    cgroup_id INTEGER NOT NULL,
    cap INTEGER NOT NULL,
    verdict INTEGER NOT NULL,
    audit INTEGER NOT NULL,
    userns INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    origin INTEGER NOT NULL DEFAULT 0,
    classifier INTEGER NOT NULL,
    count INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    tgid INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    comm TEXT NOT NULL,
    call_path TEXT NOT NULL,
    PRIMARY KEY (session, cgroup_id, cap, verdict, audit, userns, bucket, origin)
) WITHOUT ROWID;
INSERT INTO checks (session, cgroup_id, cap, verdict, audit, userns, bucket, origin, classifier,
    count, first_seen_ms, last_seen_ms, pid, tgid, uid, comm, call_path)
SELECT session, cgroup_id, cap, verdict, audit, userns, bucket, 0, classifier, count,
    first_seen_ms, last_seen_ms, pid, tgid, uid, comm, call_path FROM checks_v1;
DROP TABLE checks_v1;
";

/// Version 2 to 3: the first process's executable.
pub(super) const MIGRATE_2_TO_3: &str = "ALTER TABLE checks ADD COLUMN exe TEXT;";

/// Version 3 to 4: the `cgroup_mkdir` ring's losses, and subject kind `unattributed`, for the `cgroup:<id>` subjects that were host
/// ones. SQLite changes a CHECK only by copying the table (a frozen copy of its DDL, as a
/// migration needs); foreign keys are off while `subjects` is swapped.
pub(super) const MIGRATE_3_TO_4: &str = "
CREATE TABLE subjects_v4 (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('container', 'service', 'host', 'unattributed')),
    runtime TEXT,
    name TEXT,
    image TEXT,
    workload TEXT,
    labels TEXT NOT NULL DEFAULT '{}',
    cap_eff INTEGER,
    cap_bnd INTEGER,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    running INTEGER NOT NULL,
    ended_ms INTEGER
);
INSERT INTO subjects_v4 (id, key, kind, runtime, name, image, workload, labels, cap_eff,
    cap_bnd, first_seen_ms, last_seen_ms, running, ended_ms)
SELECT id, key,
    CASE WHEN kind = 'host' AND key LIKE 'cgroup:%' THEN 'unattributed' ELSE kind END,
    runtime, name, image, workload, labels, cap_eff, cap_bnd, first_seen_ms, last_seen_ms,
    running, ended_ms FROM subjects;
DROP TABLE subjects;
ALTER TABLE subjects_v4 RENAME TO subjects;
CREATE INDEX subjects_workload ON subjects (workload);
ALTER TABLE sessions ADD COLUMN cgroups_lost INTEGER NOT NULL DEFAULT 0;
";
/// Version 4 to 5: what `capspy watch` alerted on (a frozen copy of the DDL above).
pub(super) const MIGRATE_4_TO_5: &str = "
CREATE TABLE alerted (
    workload TEXT NOT NULL,
    kind TEXT NOT NULL,
    capability TEXT NOT NULL,
    first_ms INTEGER NOT NULL,
    PRIMARY KEY (workload, kind, capability)
) WITHOUT ROWID;
";
pub(super) const TABLES: [&str; 5] = ["meta", "sessions", "subjects", "cgroups", "checks"];

/// What validation found in a file that looks like SQLite.
pub(super) enum Found {
    /// No schema at all: a file we created and never initialized (or crashed initializing).
    Empty,
    /// A store of this schema version (at most [`SCHEMA_VERSION`]).
    Store(i32),
}

/// Reads the identity of a SQLite file without writing: ours and current, or empty.
pub(super) fn inspect(conn: &Connection, path: &Path) -> Result<Found, StoreError> {
    let sql_err = |e| open_error(path, e);
    let not_a_store = |reason: String| StoreError::NotAStore {
        path: path.to_path_buf(),
        reason,
    };
    let app_id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(sql_err)?;
    let version: i32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_err)?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(sql_err)?;
    if app_id == 0 && version == 0 && objects == 0 {
        return Ok(Found::Empty);
    }
    if app_id != APPLICATION_ID {
        return Err(not_a_store(format!(
            "a SQLite database with application_id {app_id:#x}, not capspy's"
        )));
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("schema version {version}"),
        });
    }
    for table in TABLES {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .map_err(sql_err)?;
        if n != 1 {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("table {table} is missing"),
            });
        }
    }
    let meta = |key: &str| -> Result<Option<String>, StoreError> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(sql_err)
    };
    let name = meta("schema")?;
    let meta_version = meta("version")?;
    if name.as_deref() != Some(SCHEMA_NAME)
        || meta_version.as_deref() != Some(version.to_string().as_str())
    {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "meta table says schema {name:?} version {meta_version:?}, header says {version}"
            ),
        });
    }
    Ok(Found::Store(version))
}

pub(super) fn quick_check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare("PRAGMA quick_check(5)")
        .map_err(|e| open_error(path, e))?;
    let problems: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .and_then(Iterator::collect)
        .map_err(|e| open_error(path, e))?;
    if problems.len() == 1 && problems[0] == "ok" {
        Ok(())
    } else {
        Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: problems.join("; "),
        })
    }
}

/// Brings a store of an older schema version to [`SCHEMA_VERSION`], in one transaction.
pub(super) fn migrate(conn: &mut Connection, from: i32) -> Result<(), StoreError> {
    // Off while a referenced table is copied (SQLite ignores the pragma inside a transaction).
    conn.execute_batch("PRAGMA foreign_keys = OFF")?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if from < 2 {
        tx.execute_batch(MIGRATE_1_TO_2)?;
    }
    if from < 3 {
        tx.execute_batch(MIGRATE_2_TO_3)?;
    }
    if from < 4 {
        tx.execute_batch(MIGRATE_3_TO_4)?;
    }
    if from < 5 {
        tx.execute_batch(MIGRATE_4_TO_5)?;
    }
    let broken: i64 = tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
        r.get(0)
    })?;
    if broken > 0 {
        return Err(StoreError::BadRow(format!(
            "migrating from version {from}: {broken} rows lost their references"
        )));
    }
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'version'",
        [SCHEMA_VERSION.to_string()],
    )?;
    // Pragmas cannot take parameters; the value is a constant.
    tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))?;
    tx.commit()?;
    Ok(())
}

pub(super) fn init_schema(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('schema', ?1), ('version', ?2), ('created_ms', ?3)",
        (
            SCHEMA_NAME,
            SCHEMA_VERSION.to_string(),
            now_ms().to_string(),
        ),
    )?;
    // Pragmas cannot take parameters; both values are constants.
    tx.execute_batch(&format!(
        "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
    ))?;
    tx.commit()?;
    Ok(())
}
