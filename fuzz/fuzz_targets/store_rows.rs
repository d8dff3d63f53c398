//! The store's rows: a real capspy store (made once per process with `StoreWriter::open` and
//! the writer API) gets fuzzed rows inserted behind capspy's back, with any SQLite value in any
//! column the schema lets through (wrong types, negative and huge integers, invalid JSON in
//! `labels` and `call_path`, unknown kinds, dangling references). The readers (`capspy ls` and
//! `capspy profile` paths) must answer or fail with an error, never panic.
#![no_main]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use arbitrary::Arbitrary;
use capspy::store::{CheckRecord, StoreReader, StoreWriter, Subject, SubjectKind};
use capspy_fuzz::{read_store, remove_store, scratch_dir, silence_stdout};
use libfuzzer_sys::fuzz_target;
use rusqlite::types::Value;

#[derive(Arbitrary, Debug)]
enum Val {
    Null,
    Small(i8),
    Int(i64),
    Real(f64),
    Text(String),
    /// Text that is nearly what a column holds, to get past the readers' first checks.
    Kind(u8),
    Json(u8, String),
    /// A near container id: hex with one odd character somewhere (ids get shortened for display).
    Id(u8, char),
    Blob(Vec<u8>),
}

impl Val {
    fn sql(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Small(n) => Value::Integer(i64::from(*n)),
            Val::Int(n) => Value::Integer(*n),
            Val::Real(f) => Value::Real(*f),
            Val::Text(s) => Value::Text(s.clone()),
            Val::Kind(k) => {
                let kinds = ["container", "service", "host", "Container", ""];
                Value::Text(kinds[usize::from(*k) % kinds.len()].to_owned())
            }
            Val::Json(k, s) => Value::Text(match k % 6 {
                0 => "[]".to_owned(),
                1 => "{}".to_owned(),
                2 => format!("[{}]", serde_json::Value::String(s.clone())),
                3 => format!("{{\"a\":{}}}", serde_json::Value::String(s.clone())),
                4 => format!("[{s}]"),
                _ => format!("{{{s}}}"),
            }),
            Val::Id(at, c) => {
                let mut id = "0123456789abcdef".repeat(4);
                id.insert(usize::from(*at) % 65, *c);
                Value::Text(id)
            }
            Val::Blob(b) => Value::Blob(b.clone()),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Row {
    Session([Val; 6]),
    Subject([Val; 14]),
    Cgroup([Val; 3]),
    Check([Val; 16]),
    Meta(Val, Val),
}

const SESSION_SQL: &str = "INSERT OR IGNORE INTO sessions (id, hook, pid, started_ms, last_write_ms, ended_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const SUBJECT_SQL: &str = "INSERT OR IGNORE INTO subjects (id, key, kind, runtime, name, image, workload, labels, cap_eff, cap_bnd, first_seen_ms, last_seen_ms, running, ended_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";
const CGROUP_SQL: &str =
    "INSERT OR IGNORE INTO cgroups (session, cgroup_id, subject) VALUES (?1, ?2, ?3)";
const CHECK_SQL: &str = "INSERT OR IGNORE INTO checks (session, cgroup_id, cap, verdict, audit, userns, bucket, classifier, count, first_seen_ms, last_seen_ms, pid, tgid, uid, comm, call_path) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";
const META_SQL: &str = "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)";

/// A valid store with one session, a container subject mapped to one cgroup and two checks,
/// written through capspy's own API, as bytes.
static TEMPLATE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let path = scratch_dir("store-rows-template").join("template.db");
    let _ = fs::remove_file(&path);
    {
        let mut store = StoreWriter::open(&path).unwrap();
        let session = store.begin_session("fexit", 1_000).unwrap();
        let subject = Subject {
            kind: SubjectKind::Container,
            key: "a".repeat(64),
            runtime: Some("docker".into()),
            name: Some("pinger".into()),
            image: Some("demo/busybox:1".into()),
            workload: Some("image:demo/busybox:1/pinger".into()),
            labels: BTreeMap::from([("k".into(), "v".into())]),
            cap_eff: Some(0xa80425fb),
            cap_bnd: Some(0xa80425fb),
            first_seen_ms: 1_000,
            last_seen_ms: 2_000,
            running: true,
            ended_ms: None,
        };
        store.upsert_subject(42, &subject).unwrap();
        let check = CheckRecord {
            cgroup_id: 42,
            cap: 13,
            verdict: 1,
            audit: 1,
            count: 3,
            first_seen_ms: 1_000,
            last_seen_ms: 2_000,
            pid: 7,
            tgid: 7,
            comm: "ping".into(),
            call_path: vec!["inet_create+0x10b".into()],
            ..CheckRecord::default()
        };
        let mut other = check.clone();
        other.cap = 21;
        other.call_path.clear();
        store.write_checks(session, &[check, other]).unwrap();
    }
    // Rollback-journal mode from here on: opening and closing a WAL store costs -wal/-shm files
    // and a checkpoint each time. Readers take either mode.
    rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))
        .unwrap();
    let bytes = fs::read(&path).unwrap();
    remove_store(&path);
    bytes
});

static PATH: LazyLock<PathBuf> = LazyLock::new(|| {
    silence_stdout();
    scratch_dir("store-rows").join("store.db")
});

fn insert(conn: &rusqlite::Connection, sql: &str, vals: &[&Val]) {
    let vals: Vec<Value> = vals.iter().map(|v| v.sql()).collect();
    // Rows the schema refuses (NOT NULL) are skipped: a real file could not hold them either.
    let _ = conn.execute(sql, rusqlite::params_from_iter(vals));
}

fuzz_target!(|rows: Vec<Row>| {
    if rows.len() > 64 {
        return;
    }
    let path: &Path = &PATH;
    remove_store(path);
    fs::write(path, &*TEMPLATE).unwrap();
    {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA foreign_keys = OFF; \
             PRAGMA ignore_check_constraints = ON;",
        )
        .unwrap();
        for row in &rows {
            match row {
                Row::Session(v) => insert(&conn, SESSION_SQL, &v.each_ref()),
                Row::Subject(v) => insert(&conn, SUBJECT_SQL, &v.each_ref()),
                Row::Cgroup(v) => insert(&conn, CGROUP_SQL, &v.each_ref()),
                Row::Check(v) => insert(&conn, CHECK_SQL, &v.each_ref()),
                Row::Meta(k, v) => insert(&conn, META_SQL, &[k, v]),
            }
        }
    }

    if let Ok(store) = StoreReader::open(path) {
        read_store(path, &store);
    }
    remove_store(path);
});
