//! The embedded store of what `capspy record` observed: SQLite (WAL) through rusqlite.
//!
//! Counting model: every daemon run is a *session*. The kernel map holds cumulative counts since
//! the program was loaded, and a restarted daemon reloads it, so one session = one load. A check
//! row is keyed by (session, cgroup id, cap, verdict, audit, userns, bucket) and holds that
//! session's latest cumulative values: writing the same sweep twice changes nothing, and a total
//! is a sum over sessions. Each sweep is one transaction, so a daemon killed at any moment leaves
//! the store as of its last committed sweep.
//!
//! Durability: WAL with `synchronous=NORMAL`. A committed sweep survives the process being
//! killed (it is in the WAL in the page cache); an OS crash or power loss may lose the sweeps
//! committed since the last checkpoint, never the store's consistency.
//!
//! Safety of other files: a writer validates a file before writing anything (SQLite magic,
//! `application_id`, schema version, `meta` table, `quick_check`) using a read-only connection;
//! a foreign, damaged or newer file is refused and left byte-for-byte unchanged. One writer at a
//! time: an exclusive `flock` on `<path>.lock` (SQLite's own locks only serialize transactions,
//! they would let two daemons interleave sessions).
//!
//! Readers: read-only connections work while the writer runs. A reader that is not the owner
//! needs read access to the database, `-wal` and `-shm` files (SQLite creates the last two with
//! the database file's mode and owner) and search access to the folder; it needs no write access
//! anywhere. When no writer is running the `-wal`/`-shm` files do not exist and a reader that may
//! not create them opens the database as immutable: a snapshot as of the writer's last stop.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension as _, TransactionBehavior};

pub const DEFAULT_PATH: &str = "/var/lib/capspy/capspy.db";

/// `PRAGMA application_id` of a capspy store: "caps" in ASCII.
pub const APPLICATION_ID: i32 = 0x6361_7073;
/// `PRAGMA user_version` of the schema this build writes; newer stores are refused.
///
/// History: 2 added `checks.origin` (capabilities kept without a check) to the key; a writer
/// migrates a version 1 store, a reader reads it as checks only.
/// 3 added `checks.exe` (the first process's executable); a writer adds the column, a reader
/// of an older store reads none.
pub const SCHEMA_VERSION: i32 = 3;
const SCHEMA_NAME: &str = "capspy";
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hook TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    last_write_ms INTEGER,
    ended_ms INTEGER,
    -- The kernel program's loss counters, cumulative for the session.
    sightings_lost INTEGER NOT NULL DEFAULT 0,
    checks_overflow INTEGER NOT NULL DEFAULT 0,
    unclassified INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE subjects (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('container', 'service', 'host')),
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
";

/// Version 1 to 2: `origin` joins the key of `checks`. SQLite cannot change a primary key in
/// place, so the table is copied; every version 1 row counted `cap_capable` checks (origin 0).
const MIGRATE_1_TO_2: &str = "
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
const MIGRATE_2_TO_3: &str = "ALTER TABLE checks ADD COLUMN exe TEXT;";
const TABLES: [&str; 5] = ["meta", "sessions", "subjects", "cgroups", "checks"];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no capspy store at {} (has `capspy record` run?)", path.display())]
    Missing { path: PathBuf },
    #[error("{action} {}: {source}{}", path.display(), access_hint(source))]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "{} is in use by another capspy daemon{}; stop it first",
        path.display(),
        holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { path: PathBuf, holder: Option<u32> },
    #[error("{} is not a capspy store ({reason}); left untouched", path.display())]
    NotAStore { path: PathBuf, reason: String },
    #[error(
        "{} has store schema version {found}, newer than this capspy supports ({supported}); \
         left untouched: use a newer capspy",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: i32,
        supported: i32,
    },
    #[error("{} is damaged ({detail}); left untouched", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("opening the store {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "{}: SQLite could not switch to WAL mode (journal_mode is {mode}); the store needs a \
         local filesystem",
        path.display()
    )]
    NoWal { path: PathBuf, mode: String },
    #[error("the store is open read-only")]
    ReadOnly,
    #[error("no recording session has begun on this store")]
    NoSession,
    #[error("malformed row in the store: {0}")]
    BadRow(String),
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

fn access_hint(e: &io::Error) -> &'static str {
    if e.kind() == io::ErrorKind::PermissionDenied {
        " (reading the store needs read access to it and its -wal/-shm files, and search \
         access to its folder)"
    } else {
        ""
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectKind {
    Container,
    Service,
    #[default]
    Host,
}

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Container => "container",
            Self::Service => "service",
            Self::Host => "host",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "container" => Some(Self::Container),
            "service" => Some(Self::Service),
            "host" => Some(Self::Host),
            _ => None,
        }
    }
}

/// What a cgroup belongs to. `None` and empty `labels` mean "unknown": an upsert never erases
/// what an earlier one knew (e.g. a later session without the Docker API).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Subject {
    pub kind: SubjectKind,
    /// Container id (64 hex), systemd unit name, or "host".
    pub key: String,
    pub runtime: Option<String>,
    pub name: Option<String>,
    pub image: Option<String>,
    pub workload: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub cap_eff: Option<u64>,
    pub cap_bnd: Option<u64>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub running: bool,
    pub ended_ms: Option<i64>,
}

/// One aggregation key's cumulative values. In summed results `cgroup_id` is 0, `count` is the
/// sum, the `first_seen_ms`/`last_seen_ms` span all rows, and the example (pid, tgid, uid, comm,
/// classifier, call path) comes from the earliest row that has a call path, else the earliest.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CheckRecord {
    pub cgroup_id: u64,
    pub cap: u8,
    pub verdict: u8,
    pub audit: u8,
    pub userns: u8,
    pub bucket: u8,
    /// `capspy_common::ORIGIN_*`: a check, or a capability kept without one.
    pub origin: u8,
    pub classifier: u8,
    pub count: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub comm: String,
    pub call_path: Vec<String>,
    /// The first process's executable, when it was read (stores before version 2 have none).
    pub exe: Option<String>,
}

/// One daemon run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Session {
    pub id: i64,
    pub hook: String,
    pub pid: u32,
    pub started_ms: i64,
    pub last_write_ms: Option<i64>,
    /// Set by a clean stop; `None` for the running session or one that was killed.
    pub ended_ms: Option<i64>,
    pub losses: crate::collector::LossCounters,
}

pub struct Store {
    // Field order matters: the connection closes (and checkpoints) before the lock is released.
    conn: Connection,
    path: PathBuf,
    writable: bool,
    session: Option<i64>,
    /// The schema version of the file (a reader may read an older one as it is).
    version: i32,
    _lock: Option<File>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("writable", &self.writable)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

/// What validation found in a file that looks like SQLite.
enum Found {
    /// No schema at all: a file we created and never initialized (or crashed initializing).
    Empty,
    /// A store of this schema version (at most [`SCHEMA_VERSION`]).
    Store(i32),
}

impl Store {
    /// Opens (creating if missing) the store for the one recording daemon.
    pub fn open_writer(path: &Path) -> Result<Store, StoreError> {
        create_parent(path)?;
        let lock = take_lock(path)?;
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(StoreError::Io {
                    action: "creating",
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        check_file(path)?;

        // Validate through a read-only connection so nothing (not even a hot journal rollback
        // of a foreign database) is written before we know the file is ours.
        let found = {
            let ro = open_conn(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            let found = inspect(&ro, path)?;
            if matches!(found, Found::Store(_)) {
                quick_check(&ro, path)?;
            }
            found
        };

        // capspy makes its stores in an empty file. A SQLite database without tables is someone
        // else's, and initializing it could fail half-way after writing to it.
        if matches!(found, Found::Empty) && file_len(path)? > 0 {
            return Err(StoreError::NotAStore {
                path: path.to_path_buf(),
                reason: "a SQLite database without capspy's tables".into(),
            });
        }

        let mut conn = open_conn(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        // The schema goes in before the switch to WAL: in rollback mode a crash mid-way rolls the
        // file back to empty, so the next start finds either nothing or a whole store.
        match found {
            Found::Empty => init_schema(&mut conn)?,
            Found::Store(version) if version < SCHEMA_VERSION => migrate(&mut conn, version)?,
            Found::Store(_) => {}
        }
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal {
                path: path.to_path_buf(),
                mode,
            });
        }
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA journal_size_limit = 67108864;",
        )?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            writable: true,
            session: None,
            version: SCHEMA_VERSION,
            _lock: Some(lock),
        })
    }

    /// Opens the store read-only; works while a writer runs, and without write access anywhere.
    pub fn open_reader(path: &Path) -> Result<Store, StoreError> {
        check_file(path)?;
        let (conn, version) = match open_reader_conn(path, false) {
            Ok(conn) => conn,
            // No -wal means no writer is running (a clean stop removes it); a reader that may
            // not create -wal/-shm in the folder can then read the file as it is.
            Err(e) if needs_wal_files(&e) && !sibling(path, "-wal").exists() => {
                open_reader_conn(path, true)?
            }
            Err(e) if needs_wal_files(&e) => {
                // Say which file is unreadable rather than SQLite's "unable to open".
                for suffix in ["-wal", "-shm"] {
                    let p = sibling(path, suffix);
                    if let Err(source) = File::open(&p) {
                        return Err(StoreError::Io {
                            action: "reading",
                            path: p,
                            source,
                        });
                    }
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            writable: false,
            session: None,
            version,
            _lock: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The session begun by this store, if any.
    pub fn session(&self) -> Option<i64> {
        self.session
    }

    /// The node this store records (`meta` key `host`), for profiles merged from several.
    pub fn set_host(&mut self, host: &str) -> Result<(), StoreError> {
        self.writer()?.execute(
            "INSERT INTO meta (key, value) VALUES ('host', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [host],
        )?;
        Ok(())
    }

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

    /// Starts a daemon run; later `upsert_subject` calls map cgroups within it.
    pub fn begin_session(&mut self, hook: &str, started_ms: i64) -> Result<i64, StoreError> {
        let conn = self.writer()?;
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
        self.writer()?.execute(
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
            .writer()?
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

    /// Writes one sweep of cumulative values in one transaction. Re-writing a sweep is a no-op;
    /// counts and last-seen never go backwards; first-seen and the example are kept, except that
    /// a call path arriving after an empty one fills it in.
    pub fn write_checks(&mut self, session: i64, checks: &[CheckRecord]) -> Result<(), StoreError> {
        let tx = self
            .writer()?
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
        tx.execute(
            "UPDATE sessions SET last_write_ms = ?2 WHERE id = ?1",
            (session, now_ms()),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Marks a running subject as ended. Returns false if it is unknown or already ended.
    pub fn mark_ended(&mut self, key: &str, ended_ms: i64) -> Result<bool, StoreError> {
        let n = self.writer()?.execute(
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
        let n = self.writer()?.execute(
            "UPDATE subjects SET running = 0, ended_ms = ?2
             WHERE running AND id NOT IN (SELECT subject FROM cgroups WHERE session = ?1)",
            (session, ended_ms),
        )?;
        Ok(n)
    }

    /// The kernel program's loss counters for this session (cumulative, so idempotent).
    pub fn write_losses(
        &mut self,
        session: i64,
        losses: &crate::collector::LossCounters,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE sessions SET sightings_lost = ?2, checks_overflow = ?3, unclassified = ?4
             WHERE id = ?1",
            (
                session,
                u64_to_sql(losses.sightings_lost),
                u64_to_sql(losses.checks_overflow),
                u64_to_sql(losses.unclassified),
            ),
        )?;
        Ok(())
    }

    pub fn sessions(&self) -> Result<Vec<Session>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, hook, pid, started_ms, last_write_ms, ended_ms,
                    sightings_lost, checks_overflow, unclassified
             FROM sessions ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Session {
                id: r.get(0)?,
                hook: r.get(1)?,
                pid: r.get(2)?,
                started_ms: r.get(3)?,
                last_write_ms: r.get(4)?,
                ended_ms: r.get(5)?,
                losses: crate::collector::LossCounters {
                    sightings_lost: u64_from_sql(r.get(6)?),
                    checks_overflow: u64_from_sql(r.get(7)?),
                    unclassified: u64_from_sql(r.get(8)?),
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
            let labels: String = r.get(6)?;
            out.push(Subject {
                kind: SubjectKind::parse(&kind)
                    .ok_or_else(|| StoreError::BadRow(format!("subject kind {kind:?}")))?,
                key: r.get(1)?,
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

    fn writer(&mut self) -> Result<&mut Connection, StoreError> {
        if self.writable {
            Ok(&mut self.conn)
        } else {
            Err(StoreError::ReadOnly)
        }
    }

    /// Whether the checks table has the `exe` column: a store of version 1, which a reader
    /// does not migrate, has not.
    fn has_exe(&self) -> Result<bool, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM pragma_table_info('checks') WHERE name = 'exe'",
            [],
            |r| r.get(0),
        )?;
        Ok(n == 1)
    }

    /// Sums check rows by (`group`, aggregation key). `group` and `filter` are SQL fragments
    /// from this module, never from input.
    fn grouped_checks(
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

type AggKey = (u8, u8, u8, u8, u8, u8);
/// Which row gives the example: one with a call path first, then the earliest.
type Rank = (bool, i64, i64, i64);

struct Acc {
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

/// SQLite integers are i64; ids and masks are u64 bit patterns.
fn u64_to_sql(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

fn u64_from_sql(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `<path><suffix>`, the way SQLite names its -wal and -shm files.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn create_parent(path: &Path) -> Result<(), StoreError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::Io {
                action: "creating",
                path: dir.to_path_buf(),
                source,
            }),
        _ => Ok(()),
    }
}

/// Takes the writer's lock and records our pid in it for the error the next daemon prints.
fn take_lock(path: &Path) -> Result<File, StoreError> {
    let lock_path = sibling(path, ".lock");
    let io_err = |action, source| StoreError::Io {
        action,
        path: lock_path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| io_err("opening", e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(StoreError::Locked {
                path: path.to_path_buf(),
                holder: text.trim().parse().ok(),
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_err("locking", e)),
    }
    file.set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(|e| io_err("writing", e))?;
    Ok(file)
}

/// Checks, before SQLite sees it, that the path is a regular file that is empty or starts with
/// the SQLite header: SQLite is then never pointed at arbitrary bytes.
fn file_len(path: &Path) -> Result<u64, StoreError> {
    fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| StoreError::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        })
}

fn check_file(path: &Path) -> Result<(), StoreError> {
    let not_a_store = |reason: &str| StoreError::NotAStore {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(StoreError::Io {
                action: "opening",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let io_err = |source| StoreError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    };
    if !file.metadata().map_err(io_err)?.is_file() {
        return Err(not_a_store("not a regular file"));
    }
    let mut head = Vec::with_capacity(SQLITE_MAGIC.len());
    (&file)
        .take(SQLITE_MAGIC.len() as u64)
        .read_to_end(&mut head)
        .map_err(io_err)?;
    if !head.is_empty() && head != SQLITE_MAGIC {
        return Err(not_a_store("not a SQLite database"));
    }
    Ok(())
}

fn open_conn(path: &Path, mode: OpenFlags) -> Result<Connection, StoreError> {
    // No SQLITE_OPEN_CREATE (the file exists) and no SQLITE_OPEN_URI (the path is literal).
    let conn = Connection::open_with_flags(path, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| open_error(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // A crafted file with our application id must not get to run its schema's functions.
    conn.execute_batch("PRAGMA trusted_schema = OFF")?;
    Ok(conn)
}

fn open_reader_conn(path: &Path, immutable: bool) -> Result<(Connection, i32), StoreError> {
    let conn = if immutable {
        let abs = fs::canonicalize(path).map_err(|source| StoreError::Io {
            action: "resolving",
            path: path.to_path_buf(),
            source,
        })?;
        let uri = format!("file:{}?immutable=1", uri_escape(&abs));
        let conn = Connection::open_with_flags(
            uri,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| open_error(path, e))?;
        conn.execute_batch("PRAGMA trusted_schema = OFF")?;
        conn
    } else {
        open_conn(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?
    };
    conn.execute_batch("PRAGMA query_only = ON")?;
    match inspect(&conn, path)? {
        Found::Store(version) => Ok((conn, version)),
        Found::Empty => Err(StoreError::NotAStore {
            path: path.to_path_buf(),
            reason: "empty: no recording has been written yet".into(),
        }),
    }
}

fn uri_escape(path: &Path) -> String {
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A read-only open that failed because SQLite could not create or write -wal/-shm.
fn needs_wal_files(e: &StoreError) -> bool {
    let (StoreError::Open { source, .. } | StoreError::Sqlite(source)) = e else {
        return false;
    };
    matches!(
        source.sqlite_error_code(),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen)
    )
}

fn open_error(path: &Path, source: rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => StoreError::NotAStore {
            path,
            reason: "not a SQLite database".into(),
        },
        Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path,
            detail: source.to_string(),
        },
        _ => StoreError::Open { path, source },
    }
}

/// Reads the identity of a SQLite file without writing: ours and current, or empty.
fn inspect(conn: &Connection, path: &Path) -> Result<Found, StoreError> {
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

fn quick_check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
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
fn migrate(conn: &mut Connection, from: i32) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if from < 2 {
        tx.execute_batch(MIGRATE_1_TO_2)?;
    }
    if from < 3 {
        tx.execute_batch(MIGRATE_2_TO_3)?;
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

fn init_schema(conn: &mut Connection) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use std::io::BufRead as _;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    use std::os::unix::process::CommandExt as _;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    use super::*;

    /// A fresh folder under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "capspy-store-{}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed),
                now_ms()
            ));
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn db(&self) -> PathBuf {
            self.0.join("capspy.db")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn container(id: &str, workload: &str) -> Subject {
        Subject {
            kind: SubjectKind::Container,
            key: id.to_owned(),
            runtime: Some("docker".into()),
            name: Some(format!("name-{id}")),
            image: Some("busybox".into()),
            workload: Some(workload.to_owned()),
            labels: BTreeMap::from([("com.docker.compose.service".into(), "web".into())]),
            cap_eff: Some(0xa80_425fb),
            cap_bnd: Some(0xa80_425fb),
            first_seen_ms: 1_000,
            last_seen_ms: 2_000,
            running: true,
            ended_ms: None,
        }
    }

    fn check(cgroup_id: u64, cap: u8, count: u64, first: i64, last: i64) -> CheckRecord {
        CheckRecord {
            cgroup_id,
            cap,
            verdict: 0,
            audit: 1,
            userns: 0,
            bucket: 0,
            origin: 0,
            classifier: 2,
            count,
            first_seen_ms: first,
            last_seen_ms: last,
            pid: 10,
            tgid: 10,
            uid: 0,
            comm: "chown".into(),
            call_path: vec!["chown_common".into(), "capable_wrt_inode_uidgid".into()],
            exe: Some("/usr/bin/chown".into()),
        }
    }

    fn summed(mut c: CheckRecord) -> CheckRecord {
        c.cgroup_id = 0;
        c
    }

    #[test]
    fn a_version_1_store_is_read_as_checks_and_migrated_by_the_writer() {
        let dir = TempDir::new();
        let path = dir.db();
        drop(small_store(&path));
        // Turn it back into what capspy wrote before `origin` existed.
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "BEGIN;
                 ALTER TABLE checks RENAME TO checks_v2;
                 {}
                 INSERT INTO checks SELECT session, cgroup_id, cap, verdict, audit, userns,
                     bucket, classifier, count, first_seen_ms, last_seen_ms, pid, tgid, uid,
                     comm, call_path FROM checks_v2;
                 DROP TABLE checks_v2;
                 UPDATE meta SET value = '1' WHERE key = 'version';
                 PRAGMA user_version = 1;
                 COMMIT;",
                SCHEMA[SCHEMA.find("CREATE TABLE checks").unwrap()..]
                    .replace("    origin INTEGER NOT NULL DEFAULT 0,\n", "")
                    .replace(
                        "    -- Version 3: the first process's executable, NULL when unknown.\n    exe TEXT,\n",
                        ""
                    )
                    .replace(", bucket, origin)", ", bucket)")
            ))
            .unwrap();
        }
        // Version 1 had no executables.
        let mut want = summed(check(7, 0, 3, 1_100, 1_200));
        want.exe = None;
        let old = Store::open_reader(&path).unwrap();
        assert_eq!(old.checks_for_subject("c1").unwrap(), vec![want.clone()]);
        drop(old);

        let mut store = reopen_writer(&path).unwrap();
        let session = store.begin_session("tp_btf", 3_000).unwrap();
        store
            .upsert_subject(7, &container("c1", "image:busybox/web"))
            .unwrap();
        // The same capability kept with capset is a row of its own.
        let mut kept = check(7, 0, 1, 3_100, 3_100);
        kept.origin = capspy_common::ORIGIN_CAPSET;
        store.write_checks(session, &[kept.clone()]).unwrap();
        drop(store);
        let version: i32 = Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let mut rows = Store::open_reader(&path)
            .unwrap()
            .checks_for_subject("c1")
            .unwrap();
        rows.sort_by_key(|r| r.origin);
        assert_eq!(rows, vec![want, summed(kept)]);
    }

    /// A store with one session, one container on cgroup 7 and one check.
    fn small_store(path: &Path) -> Store {
        let mut store = Store::open_writer(path).unwrap();
        let session = store.begin_session("tp_btf", 1_000).unwrap();
        store
            .upsert_subject(7, &container("c1", "image:busybox/web"))
            .unwrap();
        store
            .write_checks(session, &[check(7, 0, 3, 1_100, 1_200)])
            .unwrap();
        store
    }

    /// Runs this test binary as a child on one `#[ignore]`d helper test of this module.
    fn child(helper: &str, exe: &Path, env: &[(&str, &str)]) -> Command {
        let module = module_path!()
            .split_once("::")
            .map_or(module_path!(), |m| m.1);
        let mut cmd = Command::new(exe);
        cmd.args([
            &format!("{module}::{helper}"),
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        cmd
    }

    /// Reopens a store this process had open. A child forked by a parallel test holds a copy
    /// of our lock's file description until it execs, so the lock can outlive our drop for a
    /// moment.
    fn reopen_writer(path: &Path) -> Result<Store, StoreError> {
        let start = Instant::now();
        loop {
            match Store::open_writer(path) {
                Err(StoreError::Locked { .. }) if start.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => return other,
            }
        }
    }

    fn bytes(path: &Path) -> Vec<u8> {
        fs::read(path).unwrap()
    }

    #[test]
    fn the_node_name_is_kept_and_replaced() {
        let dir = TempDir::new();
        let mut store = Store::open_writer(&dir.db()).unwrap();
        assert_eq!(
            store.host().unwrap(),
            None,
            "a store from before it was kept"
        );
        store.set_host("node-a").unwrap();
        store.set_host("node-b").unwrap();
        drop(store);
        let reader = Store::open_reader(&dir.db()).unwrap();
        assert_eq!(reader.host().unwrap().as_deref(), Some("node-b"));
        // Written by this build, read and reopened for writing by it: still a valid store.
        drop(reader);
        reopen_writer(&dir.db()).unwrap();
    }

    #[test]
    fn round_trip() {
        let dir = TempDir::new();
        let store = small_store(&dir.db());
        assert_eq!(
            store.subjects().unwrap(),
            vec![container("c1", "image:busybox/web")]
        );
        let want = vec![summed(check(7, 0, 3, 1_100, 1_200))];
        assert_eq!(store.checks_for_subject("c1").unwrap(), want);
        assert_eq!(
            store.checks_for_workload("image:busybox/web").unwrap(),
            want
        );
        assert_eq!(
            store.checks_by_workload().unwrap(),
            BTreeMap::from([("image:busybox/web".to_owned(), want.clone())])
        );
        assert_eq!(
            store.checks_by_subject().unwrap(),
            BTreeMap::from([("c1".to_owned(), want)])
        );
        assert!(store.checks_for_subject("nope").unwrap().is_empty());
        let sessions = store.sessions().unwrap();
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0].hook, "tp_btf");
        assert!(sessions[0].last_write_ms.is_some());
    }

    /// A store as version 2 wrote it: no `exe` column.
    fn downgrade_to_version_2(path: &Path) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "ALTER TABLE checks DROP COLUMN exe;
             UPDATE meta SET value = '2' WHERE key = 'version';
             PRAGMA user_version = 2;",
        )
        .unwrap();
    }

    #[test]
    fn a_version_2_store_is_read_without_executables_and_migrated_by_the_writer() {
        let dir = TempDir::new();
        drop(small_store(&dir.db()));
        downgrade_to_version_2(&dir.db());
        let mut old = summed(check(7, 0, 3, 1_100, 1_200));
        old.exe = None;
        // A reader does not write: it reads the old schema, without executables.
        let reader = Store::open_reader(&dir.db()).unwrap();
        assert_eq!(reader.checks_for_subject("c1").unwrap(), [old.clone()]);
        drop(reader);
        // The writer migrates, keeps every row, and stores executables from then on.
        let mut writer = Store::open_writer(&dir.db()).unwrap();
        assert_eq!(writer.checks_for_subject("c1").unwrap(), [old]);
        let session = writer.begin_session("tp_btf", 2_000).unwrap();
        writer
            .upsert_subject(8, &container("c1", "image:busybox/web"))
            .unwrap();
        writer
            .write_checks(session, &[check(8, 1, 1, 2_100, 2_100)])
            .unwrap();
        drop(writer);
        let version: i32 = Connection::open(dir.db())
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let rows = Store::open_reader(&dir.db())
            .unwrap()
            .checks_for_subject("c1")
            .unwrap();
        let new = rows.iter().find(|r| r.cap == 1).unwrap();
        assert_eq!(new.exe.as_deref(), Some("/usr/bin/chown"));
    }

    #[test]
    fn hostile_strings_and_extreme_values_round_trip() {
        let dir = TempDir::new();
        let mut store = Store::open_writer(&dir.db()).unwrap();
        let session = store.begin_session("kprobe", 0).unwrap();
        let mut s = container("k'; DROP TABLE checks;--", "w\n\"x\"");
        s.labels
            .insert("a\0b".into(), "{\"json\": [1]}\n- yaml".into());
        s.cap_eff = Some(u64::MAX);
        store.upsert_subject(u64::MAX, &s).unwrap();
        let mut c = check(u64::MAX, 255, u64::MAX, i64::MIN, i64::MAX);
        c.comm = "a\tb\u{7f}é".into();
        c.call_path = vec![String::new(), "x\"y".into()];
        store.write_checks(session, &[c.clone()]).unwrap();
        assert_eq!(store.subjects().unwrap(), vec![s.clone()]);
        let got = store.checks_for_subject(&s.key).unwrap();
        // u64 counts beyond i64::MAX are clamped: unreachable in practice.
        c.count = u64::try_from(i64::MAX).unwrap();
        assert_eq!(got, vec![summed(c)]);
    }

    #[test]
    fn rewriting_a_sweep_does_not_double_count() {
        let dir = TempDir::new();
        let mut store = Store::open_writer(&dir.db()).unwrap();
        let session = store.begin_session("tp_btf", 1_000).unwrap();
        store.upsert_subject(7, &container("c1", "w")).unwrap();
        let mut first = check(7, 0, 3, 1_100, 1_200);
        first.call_path.clear(); // its ring buffer record was not read yet
        store.write_checks(session, &[first.clone()]).unwrap();
        store.write_checks(session, &[first.clone()]).unwrap();
        assert_eq!(store.checks_for_subject("c1").unwrap()[0].count, 3);

        // The next sweep: cumulative values grew, another pid, the call path is known now.
        let mut next = check(7, 0, 5, 1_150, 1_900);
        next.pid = 99;
        store.write_checks(session, &[next.clone()]).unwrap();
        store.write_checks(session, &[next.clone()]).unwrap();
        // An older sweep written late never moves values backwards.
        store.write_checks(session, &[first.clone()]).unwrap();
        let got = store.checks_for_subject("c1").unwrap();
        let mut want = summed(first);
        want.count = 5;
        want.last_seen_ms = 1_900;
        want.call_path = next.call_path;
        assert_eq!(got, vec![want]);
    }

    #[test]
    fn sessions_sum_and_cgroup_ids_are_scoped_by_session() {
        let dir = TempDir::new();
        let path = dir.db();
        drop(small_store(&path)); // session 1: c1 on cgroup 7, CHOWN x3 at 1100..1200

        let mut store = reopen_writer(&path).unwrap();
        let s2 = store.begin_session("tp_btf", 5_000).unwrap();
        // The daemon restarted: the kernel counts restart from zero.
        let mut c1 = container("c1", "image:busybox/web");
        c1.first_seen_ms = 5_000;
        c1.last_seen_ms = 6_000;
        store.upsert_subject(8, &c1).unwrap();
        let mut again = check(8, 0, 4, 5_100, 5_500);
        again.pid = 77;
        // Cgroup 7 was reused by another container in this session.
        store
            .upsert_subject(7, &container("c2", "image:busybox/web"))
            .unwrap();
        store
            .write_checks(s2, &[again, check(7, 21, 1, 5_200, 5_200)])
            .unwrap();

        let got = store.checks_for_subject("c1").unwrap();
        let mut want = summed(check(7, 0, 7, 1_100, 5_500));
        want.pid = 10; // the example is the earliest
        assert_eq!(got, vec![want.clone()]);
        assert_eq!(
            store.checks_for_subject("c2").unwrap(),
            vec![summed(check(7, 21, 1, 5_200, 5_200))]
        );
        let workload = store.checks_for_workload("image:busybox/web").unwrap();
        assert_eq!(workload, vec![want, summed(check(7, 21, 1, 5_200, 5_200))]);
        let subjects = store.subjects().unwrap();
        assert_eq!(subjects.len(), 2);
        assert_eq!(
            (subjects[0].first_seen_ms, subjects[0].last_seen_ms),
            (1_000, 6_000)
        );
    }

    #[test]
    fn subject_upserts_keep_known_fields_and_end() {
        let dir = TempDir::new();
        let mut store = small_store(&dir.db());
        let mut bare = container("c1", "ignored");
        bare.name = None;
        bare.image = None;
        bare.workload = None;
        bare.labels.clear();
        bare.cap_eff = None;
        store.upsert_subject(9, &bare).unwrap();
        let got = &store.subjects().unwrap()[0];
        assert_eq!(got, &container("c1", "image:busybox/web"));

        assert!(store.mark_ended("c1", 3_000).unwrap());
        assert!(!store.mark_ended("c1", 4_000).unwrap());
        assert!(!store.mark_ended("unknown", 4_000).unwrap());
        let got = &store.subjects().unwrap()[0];
        assert_eq!(
            (got.running, got.ended_ms, got.last_seen_ms),
            (false, Some(3_000), 3_000)
        );

        // A restart of the same container (docker restart keeps its id).
        store
            .upsert_subject(9, &container("c1", "image:busybox/web"))
            .unwrap();
        let got = &store.subjects().unwrap()[0];
        assert_eq!((got.running, got.ended_ms), (true, None));

        // A new session where c1 is not seen again ends it; the host, seen, stays.
        let s2 = store.begin_session("tp_btf", 9_000).unwrap();
        let host = Subject {
            kind: SubjectKind::Host,
            key: "host".into(),
            runtime: None,
            name: None,
            image: None,
            workload: None,
            labels: BTreeMap::new(),
            cap_eff: None,
            cap_bnd: None,
            first_seen_ms: 9_000,
            last_seen_ms: 9_000,
            running: true,
            ended_ms: None,
        };
        store.upsert_subject(1, &host).unwrap();
        assert_eq!(store.end_unseen(s2, 9_001).unwrap(), 1);
        let by_key: BTreeMap<_, _> = store
            .subjects()
            .unwrap()
            .into_iter()
            .map(|s| (s.key.clone(), s))
            .collect();
        assert_eq!(by_key["c1"].ended_ms, Some(9_001));
        assert!(by_key["host"].running);
        store.end_session(s2, 9_500).unwrap();
        assert_eq!(store.sessions().unwrap()[1].ended_ms, Some(9_500));
    }

    #[test]
    fn upsert_before_a_session_and_writes_to_unknown_sessions_fail() {
        let dir = TempDir::new();
        let mut store = Store::open_writer(&dir.db()).unwrap();
        assert!(matches!(
            store.upsert_subject(1, &container("c", "w")),
            Err(StoreError::NoSession)
        ));
        assert!(store.write_checks(42, &[check(1, 0, 1, 0, 0)]).is_err());
    }

    #[test]
    fn lock_refuses_a_second_writer_until_the_first_closes() {
        let dir = TempDir::new();
        let path = dir.db();
        let first = small_store(&path);
        match Store::open_writer(&path) {
            Err(StoreError::Locked { holder, .. }) => {
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        // The first is unharmed, and readers are not locked out.
        assert_eq!(first.checks_for_subject("c1").unwrap()[0].count, 3);
        assert_eq!(
            Store::open_reader(&path)
                .unwrap()
                .checks_for_subject("c1")
                .unwrap()[0]
                .count,
            3
        );
        drop(first);
        let again = reopen_writer(&path).unwrap();
        assert_eq!(again.checks_for_subject("c1").unwrap()[0].count, 3);
    }

    #[test]
    fn created_private() {
        let dir = TempDir::new();
        let path = dir.0.join("a/b/capspy.db");
        let store = small_store(&path);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.0.join("a")), 0o700);
        assert_eq!(mode(&dir.0.join("a/b")), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&sibling(&path, ".lock")), 0o600);
        // SQLite gives its side files the database's mode.
        assert_eq!(mode(&sibling(&path, "-wal")), 0o600);
        assert_eq!(mode(&sibling(&path, "-shm")), 0o600);
        drop(store);
    }

    #[test]
    fn an_empty_file_becomes_a_store() {
        let dir = TempDir::new();
        let path = dir.db();
        File::create(&path).unwrap();
        drop(small_store(&path));
        assert_eq!(
            Store::open_reader(&path).unwrap().subjects().unwrap().len(),
            1
        );
    }

    /// Opens `path` as a writer and as a reader, expects both to fail as `check` says, and the
    /// file to be unchanged.
    fn assert_refused(path: &Path, check: impl Fn(&StoreError) -> bool) {
        let before = bytes(path);
        for result in [reopen_writer(path), Store::open_reader(path)] {
            match result {
                Err(e) => {
                    assert!(check(&e), "unexpected error: {e}");
                    eprintln!("refused as expected: {e}");
                }
                Ok(_) => panic!("{} was accepted", path.display()),
            }
            assert!(bytes(path) == before, "{} was modified", path.display());
        }
    }

    #[test]
    fn foreign_sqlite_file_is_refused_untouched() {
        let dir = TempDir::new();
        let path = dir.db();
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1);",
        )
        .unwrap();
        drop(conn);
        assert_refused(&path, |e| matches!(e, StoreError::NotAStore { .. }));
        // Another application's id, even with our tables, is not ours either.
        let path = dir.0.join("other.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!("{SCHEMA} PRAGMA application_id = 42;"))
            .unwrap();
        drop(conn);
        assert_refused(&path, |e| matches!(e, StoreError::NotAStore { .. }));
    }

    #[test]
    fn sqlite_file_without_tables_is_refused_untouched() {
        let dir = TempDir::new();
        // A database with only a header (found by fuzz/ store_file): accepting it as empty made
        // open_writer write to it and then fail.
        let path = dir.db();
        let mut header = SQLITE_MAGIC.to_vec();
        header.extend_from_slice(&[0x10, 0x00, 0x01, 0x01, 0x00, 0x40, 0x20, 0x20, 0x04]);
        header.resize(101, 0);
        for at in [0x34, 0x55, 0x64] {
            header[at] = 0x0d;
        }
        fs::write(&path, &header).unwrap();
        assert_refused(&path, |e| {
            matches!(e, StoreError::NotAStore { .. } | StoreError::Corrupt { .. })
        });
        // A valid database that never had a table.
        let path = dir.0.join("vacuumed.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("VACUUM")
            .unwrap();
        assert!(!bytes(&path).is_empty());
        assert_refused(&path, |e| matches!(e, StoreError::NotAStore { .. }));
    }

    #[test]
    fn random_bytes_and_directories_are_refused_untouched() {
        let dir = TempDir::new();
        let path = dir.db();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let noise: Vec<u8> = (0..10_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect();
        fs::write(&path, &noise).unwrap();
        assert_refused(&path, |e| matches!(e, StoreError::NotAStore { .. }));
        // The SQLite magic followed by noise.
        let mut fake = SQLITE_MAGIC.to_vec();
        fake.extend_from_slice(&noise);
        fs::write(&path, &fake).unwrap();
        assert_refused(&path, |e| {
            matches!(e, StoreError::NotAStore { .. } | StoreError::Corrupt { .. })
        });
        let sub = dir.0.join("d.db");
        fs::create_dir(&sub).unwrap();
        assert!(matches!(
            Store::open_writer(&sub),
            Err(StoreError::NotAStore { .. })
        ));
        assert!(matches!(
            Store::open_reader(&sub),
            Err(StoreError::NotAStore { .. })
        ));
    }

    #[test]
    fn truncated_store_is_refused_untouched() {
        let dir = TempDir::new();
        let path = dir.db();
        {
            let mut store = small_store(&path);
            let s = store.session().unwrap();
            // Enough rows for several pages.
            let many: Vec<_> = (0..2_000u64)
                .map(|i| check(i, u8::try_from(i % 41).unwrap(), 1, 0, 0))
                .collect();
            store.write_checks(s, &many).unwrap();
        }
        let len = fs::metadata(&path).unwrap().len();
        assert!(
            !sibling(&path, "-wal").exists(),
            "a clean close checkpoints"
        );
        assert!(len > 8 * 4096, "store is only {len} bytes");
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len / 2).unwrap();
        drop(file);
        assert_refused(&path, |e| matches!(e, StoreError::Corrupt { .. }));
        // Shorter than a header.
        fs::write(&path, &SQLITE_MAGIC[..10]).unwrap();
        assert_refused(&path, |e| matches!(e, StoreError::NotAStore { .. }));
    }

    #[test]
    fn newer_schema_is_refused_untouched() {
        let dir = TempDir::new();
        let path = dir.db();
        drop(small_store(&path));
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA user_version = 99; UPDATE meta SET value = '99' WHERE key = 'version';",
        )
        .unwrap();
        drop(conn);
        assert_refused(&path, |e| {
            matches!(
                e,
                StoreError::NewerSchema {
                    found: 99,
                    supported: SCHEMA_VERSION,
                    ..
                }
            )
        });
    }

    #[test]
    fn reader_sees_the_writer_s_commits_and_cannot_write() {
        let dir = TempDir::new();
        let path = dir.db();
        assert!(matches!(
            Store::open_reader(&path),
            Err(StoreError::Missing { .. })
        ));
        let mut writer = small_store(&path);
        let session = writer.session().unwrap();
        let mut reader = Store::open_reader(&path).unwrap();
        assert_eq!(reader.checks_for_subject("c1").unwrap()[0].count, 3);
        writer
            .write_checks(session, &[check(7, 0, 10, 1_100, 1_500)])
            .unwrap();
        assert_eq!(reader.checks_for_subject("c1").unwrap()[0].count, 10);
        assert!(matches!(
            reader.begin_session("x", 0),
            Err(StoreError::ReadOnly)
        ));
        assert!(matches!(
            reader.mark_ended("c1", 0),
            Err(StoreError::ReadOnly)
        ));
        drop(writer);
        assert_eq!(reader.checks_for_subject("c1").unwrap()[0].count, 10);
    }

    /// Child side of the crash tests: writes sweeps of cumulative counts (every key of sweep
    /// `i` has count `i`) until it is killed.
    #[test]
    #[ignore = "helper run by the crash tests in a child process"]
    fn crash_child() {
        let Ok(path) = std::env::var("CAPSPY_STORE_TEST_DB") else {
            return;
        };
        let sweeps: u64 = std::env::var("CAPSPY_STORE_TEST_SWEEPS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(u64::MAX);
        let mut store = Store::open_writer(Path::new(&path)).unwrap();
        let session = store.begin_session("tp_btf", now_ms()).unwrap();
        for cg in 0..10 {
            store
                .upsert_subject(cg, &container(&format!("c{cg}"), "w"))
                .unwrap();
        }
        // Ready once: after the last sweep if there is a last one, else after the first.
        let ready_at = if sweeps == u64::MAX { 1 } else { sweeps };
        let started = Instant::now();
        let mut i = 1;
        loop {
            let sweep: Vec<_> = (0..50)
                .map(|k| check(k % 10, u8::try_from(k / 10).unwrap(), i, 1, 1))
                .collect();
            store.write_checks(session, &sweep).unwrap();
            if i == ready_at {
                // libtest has printed "test ... " without a newline: start a line.
                println!("\n@@READY");
                io::stdout().flush().unwrap();
            }
            // Bounded, in case the parent dies before killing us.
            if i >= sweeps || started.elapsed() > Duration::from_mins(1) {
                std::thread::sleep(Duration::from_mins(1));
                return;
            }
            i += 1;
        }
    }

    fn run_and_kill(path: &Path, sweeps: Option<u64>, after: Duration) {
        let exe = std::env::current_exe().unwrap();
        let sweeps = sweeps.map(|n| n.to_string());
        let mut env = vec![("CAPSPY_STORE_TEST_DB", path.to_str().unwrap())];
        if let Some(n) = &sweeps {
            env.push(("CAPSPY_STORE_TEST_SWEEPS", n));
        }
        let mut proc = child("crash_child", &exe, &env).spawn().unwrap();
        let stdout = io::BufReader::new(proc.stdout.take().unwrap());
        let ready = stdout.lines().map_while(Result::ok).any(|l| l == "@@READY");
        assert!(ready, "child did not start writing");
        std::thread::sleep(after);
        proc.kill().unwrap(); // SIGKILL
        proc.wait().unwrap();
    }

    #[test]
    fn committed_sweeps_survive_sigkill() {
        let dir = TempDir::new();
        let path = dir.db();
        run_and_kill(&path, Some(3), Duration::ZERO);
        assert!(
            sibling(&path, "-wal").exists(),
            "the kill left an uncheckpointed WAL"
        );
        let store = reopen_writer(&path).unwrap();
        assert_eq!(store.checks_for_workload("w").unwrap().len(), 5);
        assert!(
            store
                .checks_for_workload("w")
                .unwrap()
                .iter()
                .all(|c| c.count == 30)
        );
    }

    #[test]
    fn killed_at_random_moments_the_store_stays_consistent() {
        let dir = TempDir::new();
        let path = dir.db();
        let mut x = u64::from(std::process::id()) | 1;
        for _ in 0..10 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            run_and_kill(&path, None, Duration::from_millis(x % 150));
        }
        let store = reopen_writer(&path).unwrap();
        let sessions = store.sessions().unwrap();
        assert_eq!(sessions.len(), 10);
        // Sweeps are atomic: within a session every key holds the same sweep's count.
        let mut stmt = store
            .conn
            .prepare(
                "SELECT session, min(count), max(count), count(*) FROM checks GROUP BY session",
            )
            .unwrap();
        let per_session: Vec<(i64, i64, i64, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(per_session.len(), 10);
        let mut total = 0;
        for (session, min, max, rows) in &per_session {
            assert_eq!((min, rows), (max, &50), "session {session} is torn");
            total += u64::try_from(*min).unwrap();
        }
        eprintln!("sweeps committed per session: {per_session:?}");
        // Totals are the sum of each session's last sweep, nothing doubled.
        let summed = store.checks_for_workload("w").unwrap();
        assert_eq!(summed.len(), 5);
        assert!(summed.iter().all(|c| c.count == total * 10));
    }

    /// Child side of the permission test: reads the store and prints what it found.
    #[test]
    #[ignore = "helper run by reader_needs_only_read_access as another user"]
    fn reader_child() {
        let Ok(path) = std::env::var("CAPSPY_STORE_TEST_DB") else {
            return;
        };
        match Store::open_reader(Path::new(&path)).and_then(|s| s.checks_for_subject("c1")) {
            Ok(checks) => println!("\n@@COUNT {}", checks.first().map_or(0, |c| c.count)),
            Err(e) => println!("\n@@ERROR {e}"),
        }
    }

    /// Opening as uid 65534 needs root to switch users; it is skipped otherwise.
    #[test]
    fn reader_needs_only_read_access() {
        let dir = TempDir::new();
        let probe = dir.0.join("probe");
        File::create(&probe).unwrap();
        if fs::metadata(&probe).unwrap().uid() != 0 {
            eprintln!("skipped: needs root to run a reader as uid 65534");
            return;
        }
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755)).unwrap();
        // The test binary may sit in a folder uid 65534 cannot reach.
        let exe = dir.0.join("test-exe");
        fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.db();
        let read_as_nobody = || {
            let out = child(
                "reader_child",
                &exe,
                &[("CAPSPY_STORE_TEST_DB", path.to_str().unwrap())],
            )
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines()
                .find_map(|l| l.strip_prefix("@@"))
                .unwrap_or_else(|| panic!("child printed no result: {text}"))
                .to_owned()
        };

        // Private as created: a clear permission error.
        let mut writer = small_store(&path);
        let got = read_as_nobody();
        eprintln!("0600 store, writer running: {got}");
        assert!(
            got.starts_with("ERROR ") && got.contains("ermission denied"),
            "{got}"
        );

        // Readable by others (0644 file, 0755 folder): -wal/-shm are created with the
        // database's mode when the writer next opens it.
        drop(writer);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        writer = reopen_writer(&path).unwrap();
        let session = writer.begin_session("tp_btf", 2_000).unwrap();
        writer.upsert_subject(7, &container("c1", "w")).unwrap();
        writer
            .write_checks(session, &[check(7, 0, 4, 2_100, 2_200)])
            .unwrap();
        let mode = fs::metadata(sibling(&path, "-shm"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        let got = read_as_nobody();
        eprintln!("0644 store, writer running: {got}");
        assert_eq!(got, "COUNT 7");

        // Writer stopped: no -wal/-shm, and the reader may not create them.
        drop(writer);
        assert!(!sibling(&path, "-wal").exists());
        let got = read_as_nobody();
        eprintln!("0644 store, writer stopped: {got}");
        assert_eq!(got, "COUNT 7");

        // Writer killed: its -wal/-shm stay behind with the database's mode.
        run_and_kill(&path, Some(2), Duration::ZERO);
        assert!(sibling(&path, "-wal").exists());
        let got = read_as_nobody();
        eprintln!("0644 store, writer killed: {got}");
        assert_eq!(got, "COUNT 9");
    }

    #[test]
    fn ten_thousand_workloads_read_fast() {
        let dir = TempDir::new();
        let path = dir.db();
        let mut store = Store::open_writer(&path).unwrap();
        let session = store.begin_session("tp_btf", 0).unwrap();
        let t = Instant::now();
        let mut sweep = Vec::new();
        for i in 0..10_000u64 {
            let id = format!("{i:064x}");
            store
                .upsert_subject(i, &container(&id, &format!("image:busybox/w{i}")))
                .unwrap();
            for cap in [0, 12, 21] {
                sweep.push(check(i, cap, i + 1, 1, 2));
            }
        }
        store.write_checks(session, &sweep).unwrap();
        let write = t.elapsed();
        drop(store);

        let t = Instant::now();
        let store = reopen_writer(&path).unwrap();
        let reopen = t.elapsed();
        drop(store);

        let t = Instant::now();
        let reader = Store::open_reader(&path).unwrap();
        let subjects = reader.subjects().unwrap();
        let listed = t.elapsed();
        let mut n = 0;
        for s in &subjects {
            n += reader
                .checks_for_workload(s.workload.as_deref().unwrap())
                .unwrap()
                .len();
        }
        let per_workload = t.elapsed();
        assert_eq!((subjects.len(), n), (10_000, 30_000));
        let t = Instant::now();
        let bulk = reader.checks_by_workload().unwrap();
        let bulk_time = t.elapsed();
        assert_eq!(bulk.len(), 10_000);
        eprintln!(
            "10,000 subjects x 3 checks: write {write:?}, writer reopen (quick_check) {reopen:?}, \
             subjects() {listed:?}, + checks_for_workload() x 10,000 {per_workload:?}, \
             checks_by_workload() {bulk_time:?}, file {} KiB",
            fs::metadata(&path).unwrap().len() / 1024
        );
        // Smoke checks, generous for debug builds on a busy 2-core machine.
        assert!(
            listed + bulk_time < Duration::from_secs(2),
            "{listed:?} + {bulk_time:?}"
        );
        assert!(per_workload < Duration::from_secs(5), "{per_workload:?}");
    }
}
