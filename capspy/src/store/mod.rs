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

mod open;
mod read;
mod schema;
mod write;

pub use schema::SCHEMA_VERSION;

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode};

pub const DEFAULT_PATH: &str = "/var/lib/capspy/capspy.db";

/// `PRAGMA application_id` of a capspy store: "caps" in ASCII.
pub const APPLICATION_ID: i32 = 0x6361_7073;

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

/// The error for a file SQLite could not open, named by what SQLite found.
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

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectKind {
    Container,
    Service,
    #[default]
    Host,
    /// A cgroup whose path could not be learnt (removed before capspy could resolve it, its
    /// `cgroup_mkdir` record lost): key `cgroup:<id>`, kept apart so that its checks are
    /// visible, never merged into the host.
    Unattributed,
}

/// Subject keys of cgroups that could not be attributed: `cgroup:<id>`.
pub const UNATTRIBUTED_PREFIX: &str = "cgroup:";

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Container => "container",
            Self::Service => "service",
            Self::Host => "host",
            Self::Unattributed => "unattributed",
        }
    }

    /// A stored kind; a store before version 4 kept unattributed cgroups as host subjects with
    /// their `cgroup:<id>` key.
    fn parse(s: &str, key: &str) -> Option<Self> {
        match s {
            "container" => Some(Self::Container),
            "service" => Some(Self::Service),
            "host" if key.starts_with(UNATTRIBUTED_PREFIX) => Some(Self::Unattributed),
            "host" => Some(Self::Host),
            "unattributed" => Some(Self::Unattributed),
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

/// A finding `capspy watch` alerted on, kept so that a restarted daemon does not alert again:
/// the workload, the kind (`drift`, `attempted`, `new_workload`) and the capability's name
/// (None for a new workload).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Alerted {
    pub workload: String,
    pub kind: String,
    pub capability: Option<String>,
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
    pub losses: crate::model::loss::LossCounters,
}

/// A store opened read-only: what `ls`, `profile`, `diff`, `baseline` and the reports read.
/// It has no method that writes:
///
/// ```compile_fail
/// # fn f(path: &std::path::Path) -> Result<(), capspy::store::StoreError> {
/// let mut reader = capspy::store::StoreReader::open(path)?;
/// reader.begin_session("tp_btf", 0)?;
/// # Ok(()) }
/// ```
///
/// while a [`StoreWriter`] reads through it and writes:
///
/// ```no_run
/// # fn f(path: &std::path::Path) -> Result<(), capspy::store::StoreError> {
/// let mut writer = capspy::store::StoreWriter::open(path)?;
/// writer.begin_session("tp_btf", 0)?;
/// let _ = writer.sessions()?;
/// # Ok(()) }
/// ```
pub struct StoreReader {
    conn: Connection,
    path: PathBuf,
    /// The schema version of the file (a reader may read an older one as it is).
    version: i32,
}

/// The store of the one recording daemon, under its lock; it reads as a [`StoreReader`].
pub struct StoreWriter {
    // Field order matters: the connection closes (and checkpoints) before the lock is released.
    store: StoreReader,
    session: Option<i64>,
    _lock: File,
}

impl std::fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreReader")
            .field("path", &self.path)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for StoreWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWriter")
            .field("path", &self.store.path)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl StoreReader {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl std::ops::Deref for StoreWriter {
    type Target = StoreReader;

    fn deref(&self) -> &StoreReader {
        &self.store
    }
}

impl StoreWriter {
    /// The session begun by this writer, if any.
    pub fn session(&self) -> Option<i64> {
        self.session
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, OpenOptions};
    use std::io::BufRead as _;
    use std::io::Write as _;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    use std::os::unix::process::CommandExt as _;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    use super::open::{SQLITE_MAGIC, sibling};
    use super::schema::SCHEMA;
    use crate::model::time::now_ms;

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
        downgrade_to_version_3(&path);
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
                SCHEMA[SCHEMA.find("CREATE TABLE checks").unwrap()..SCHEMA.find("-- Version 5").unwrap()]
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
        let old = StoreReader::open(&path).unwrap();
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
        let mut rows = StoreReader::open(&path)
            .unwrap()
            .checks_for_subject("c1")
            .unwrap();
        rows.sort_by_key(|r| r.origin);
        assert_eq!(rows, vec![want, summed(kept)]);
    }

    /// A store with one session, one container on cgroup 7 and one check.
    fn small_store(path: &Path) -> StoreWriter {
        let mut store = StoreWriter::open(path).unwrap();
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
    fn reopen_writer(path: &Path) -> Result<StoreWriter, StoreError> {
        let start = Instant::now();
        loop {
            match StoreWriter::open(path) {
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
        let mut store = StoreWriter::open(&dir.db()).unwrap();
        assert_eq!(
            store.host().unwrap(),
            None,
            "a store from before it was kept"
        );
        store.set_host("node-a").unwrap();
        store.set_host("node-b").unwrap();
        drop(store);
        let reader = StoreReader::open(&dir.db()).unwrap();
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
        downgrade_to_version_3(path);
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
        let reader = StoreReader::open(&dir.db()).unwrap();
        assert_eq!(reader.checks_for_subject("c1").unwrap(), [old.clone()]);
        drop(reader);
        // The writer migrates, keeps every row, and stores executables from then on.
        let mut writer = StoreWriter::open(&dir.db()).unwrap();
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
        let rows = StoreReader::open(&dir.db())
            .unwrap()
            .checks_for_subject("c1")
            .unwrap();
        let new = rows.iter().find(|r| r.cap == 1).unwrap();
        assert_eq!(new.exe.as_deref(), Some("/usr/bin/chown"));
    }

    /// Turns a store back into what version 3 wrote: subject kinds without `unattributed`, no
    /// `sessions.cgroups_lost`.
    fn downgrade_to_version_3(path: &Path) {
        let conn = Connection::open(path).unwrap();
        let subjects = &SCHEMA[SCHEMA.find("CREATE TABLE subjects").unwrap()..];
        let subjects = &subjects[..subjects.find("CREATE INDEX").unwrap()];
        conn.execute_batch(&format!(
            "PRAGMA foreign_keys = OFF;
             BEGIN;
             {}
             INSERT INTO subjects_v3 SELECT * FROM subjects;
             DROP TABLE subjects;
             ALTER TABLE subjects_v3 RENAME TO subjects;
             CREATE INDEX subjects_workload ON subjects (workload);
             ALTER TABLE sessions DROP COLUMN cgroups_lost;
             DROP TABLE alerted;
             UPDATE meta SET value = '3' WHERE key = 'version';
             PRAGMA user_version = 3;
             COMMIT;",
            subjects
                .replace(", 'unattributed'", "")
                .replace("TABLE subjects", "TABLE subjects_v3")
        ))
        .unwrap();
    }

    /// A store as version 3 wrote it, with a cgroup whose path was never learnt stored as host
    /// subject `cgroup:42`.
    fn version_3_store(path: &Path) {
        drop(small_store(path));
        downgrade_to_version_3(path);
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "INSERT INTO subjects (id, key, kind, first_seen_ms, last_seen_ms, running)
                 VALUES (42, 'cgroup:42', 'host', 1000, 1000, 0);
             INSERT INTO cgroups VALUES (1, 42, 42);
             INSERT INTO checks (session, cgroup_id, cap, verdict, audit, userns, bucket,
                 classifier, count, first_seen_ms, last_seen_ms, pid, tgid, uid, comm, call_path)
                 VALUES (1, 42, 7, 0, 1, 0, 0, 2, 5, 1100, 1200, 11, 11, 0, 'setuid', '[]');",
        )
        .unwrap();
        // What version 3 allowed: no unattributed kind.
        assert!(
            conn.execute(
                "UPDATE subjects SET kind = 'unattributed' WHERE id = 42",
                []
            )
            .is_err()
        );
    }

    fn kinds(store: &StoreReader) -> Vec<(String, SubjectKind)> {
        store
            .subjects()
            .unwrap()
            .into_iter()
            .map(|s| (s.key, s.kind))
            .collect()
    }

    #[test]
    fn a_version_3_store_is_read_with_unattributed_cgroups_and_migrated_by_the_writer() {
        let dir = TempDir::new();
        let path = dir.db();
        version_3_store(&path);
        let want = vec![
            ("c1".to_owned(), SubjectKind::Container),
            ("cgroup:42".to_owned(), SubjectKind::Unattributed),
        ];
        let setuid = |store: &StoreReader| -> Vec<u64> {
            let rows = store.checks_for_subject("cgroup:42").unwrap();
            rows.iter().map(|c| c.count).collect()
        };
        let reader = StoreReader::open(&path).unwrap();
        assert_eq!(kinds(&reader), want);
        assert_eq!(setuid(&reader), [5]);
        // Version 3 had no cgroups_lost column: none read.
        assert_eq!(reader.losses().unwrap().cgroups_lost, 0);
        drop(reader);

        let mut writer = StoreWriter::open(&path).unwrap();
        let stored: String = writer
            .conn
            .query_row(
                "SELECT kind FROM subjects WHERE key = 'cgroup:42'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored, "unattributed");
        assert_eq!(kinds(&writer), want);
        assert_eq!(setuid(&writer), [5]);
        assert_eq!(
            writer.checks_for_subject("c1").unwrap(),
            [summed(check(7, 0, 3, 1_100, 1_200))]
        );
        let broken: i64 = writer
            .conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(broken, 0);
        // The new kind and loss counter are written from then on.
        let session = writer.begin_session("tp_btf", 2_000).unwrap();
        let lost = crate::model::loss::LossCounters {
            cgroups_lost: 2,
            ..Default::default()
        };
        writer.write_sweep(session, &[], Some(&lost)).unwrap();
        assert_eq!(writer.losses().unwrap(), lost);
        let gone = Subject {
            kind: SubjectKind::Unattributed,
            key: "cgroup:43".into(),
            ..Subject::default()
        };
        writer.upsert_subject(43, &gone).unwrap();
        drop(writer);
        let version: i32 = Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let reader = StoreReader::open(&path).unwrap();
        assert_eq!(kinds(&reader).len(), 3);
    }

    #[test]
    fn what_was_alerted_is_kept_once_and_a_version_4_store_gains_the_table() {
        let dir = TempDir::new();
        let path = dir.db();
        drop(small_store(&path));
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "DROP TABLE alerted;
                 UPDATE meta SET value = '4' WHERE key = 'version';
                 PRAGMA user_version = 4;",
            )
            .unwrap();
        assert!(
            StoreReader::open(&path)
                .unwrap()
                .alerted()
                .unwrap()
                .is_empty()
        );
        let mut writer = StoreWriter::open(&path).unwrap();
        let drift = Alerted {
            workload: "image:busybox/web".into(),
            kind: "drift".into(),
            capability: Some("CHOWN".into()),
        };
        let new = Alerted {
            workload: "image:busybox/web".into(),
            kind: "new_workload".into(),
            capability: None,
        };
        writer.note_alerted(&[drift.clone(), new.clone()]).unwrap();
        writer.note_alerted(std::slice::from_ref(&drift)).unwrap();
        drop(writer);
        let reader = StoreReader::open(&path).unwrap();
        assert_eq!(reader.alerted().unwrap(), [drift, new]);
    }

    #[test]
    fn hostile_strings_and_extreme_values_round_trip() {
        let dir = TempDir::new();
        let mut store = StoreWriter::open(&dir.db()).unwrap();
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
        let mut store = StoreWriter::open(&dir.db()).unwrap();
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
        let mut store = StoreWriter::open(&dir.db()).unwrap();
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
        match StoreWriter::open(&path) {
            Err(StoreError::Locked { holder, .. }) => {
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        // The first is unharmed, and readers are not locked out.
        assert_eq!(first.checks_for_subject("c1").unwrap()[0].count, 3);
        assert_eq!(
            StoreReader::open(&path)
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
            StoreReader::open(&path).unwrap().subjects().unwrap().len(),
            1
        );
    }

    /// Opens `path` as a writer and as a reader, expects both to fail as `check` says, and the
    /// file to be unchanged.
    fn assert_refused(path: &Path, check: impl Fn(&StoreError) -> bool) {
        let before = bytes(path);
        for result in [
            reopen_writer(path).map(drop),
            StoreReader::open(path).map(drop),
        ] {
            match result {
                Err(e) => {
                    assert!(check(&e), "unexpected error: {e}");
                    eprintln!("refused as expected: {e}");
                }
                Ok(()) => panic!("{} was accepted", path.display()),
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
        // StoreWriter::open write to it and then fail.
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
            StoreWriter::open(&sub),
            Err(StoreError::NotAStore { .. })
        ));
        assert!(matches!(
            StoreReader::open(&sub),
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
    fn reader_sees_the_writer_s_commits() {
        let dir = TempDir::new();
        let path = dir.db();
        assert!(matches!(
            StoreReader::open(&path),
            Err(StoreError::Missing { .. })
        ));
        let mut writer = small_store(&path);
        let session = writer.session().unwrap();
        let reader = StoreReader::open(&path).unwrap();
        assert_eq!(reader.checks_for_subject("c1").unwrap()[0].count, 3);
        writer
            .write_checks(session, &[check(7, 0, 10, 1_100, 1_500)])
            .unwrap();
        assert_eq!(reader.checks_for_subject("c1").unwrap()[0].count, 10);
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
        let mut store = StoreWriter::open(Path::new(&path)).unwrap();
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
        match StoreReader::open(Path::new(&path)).and_then(|s| s.checks_for_subject("c1")) {
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
        let mut store = StoreWriter::open(&path).unwrap();
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
        let reader = StoreReader::open(&path).unwrap();
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
