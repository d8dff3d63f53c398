//! Opening the store: the writer (one at a time, under a lock, after validating the file) and
//! readers (read-only, or immutable when they may not create the WAL files).

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::schema::{Found, SCHEMA_VERSION, init_schema, inspect, migrate, quick_check};
use super::{StoreError, StoreReader, StoreWriter, open_error};

pub(super) const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl StoreWriter {
    /// Opens (creating if missing) the store for the one recording daemon.
    pub fn open(path: &Path) -> Result<StoreWriter, StoreError> {
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
        Ok(StoreWriter {
            store: StoreReader {
                conn,
                path: path.to_path_buf(),
                version: SCHEMA_VERSION,
            },
            session: None,
            _lock: lock,
        })
    }
}

impl StoreReader {
    /// Opens the store read-only; works while a writer runs, and without write access anywhere.
    pub fn open(path: &Path) -> Result<StoreReader, StoreError> {
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
        Ok(StoreReader {
            conn,
            path: path.to_path_buf(),
            version,
        })
    }
}

/// `<path><suffix>`, the way SQLite names its -wal and -shm files.
pub(super) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub(super) fn create_parent(path: &Path) -> Result<(), StoreError> {
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
pub(super) fn take_lock(path: &Path) -> Result<File, StoreError> {
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
pub(super) fn file_len(path: &Path) -> Result<u64, StoreError> {
    fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| StoreError::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        })
}

pub(super) fn check_file(path: &Path) -> Result<(), StoreError> {
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

pub(super) fn open_conn(path: &Path, mode: OpenFlags) -> Result<Connection, StoreError> {
    // No SQLITE_OPEN_CREATE (the file exists) and no SQLITE_OPEN_URI (the path is literal).
    let conn = Connection::open_with_flags(path, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| open_error(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // A crafted file with our application id must not get to run its schema's functions.
    conn.execute_batch("PRAGMA trusted_schema = OFF")?;
    Ok(conn)
}

pub(super) fn open_reader_conn(
    path: &Path,
    immutable: bool,
) -> Result<(Connection, i32), StoreError> {
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

pub(super) fn uri_escape(path: &Path) -> String {
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
pub(super) fn needs_wal_files(e: &StoreError) -> bool {
    let (StoreError::Open { source, .. } | StoreError::Sqlite(source)) = e else {
        return false;
    };
    matches!(
        source.sqlite_error_code(),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen)
    )
}
