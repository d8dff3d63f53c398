//! Baselines: the profile a workload is expected to stay within, one JSON file per workload (the
//! JSON profile format of `capspy profile --format json`), and the comparison of two profiles.
//!
//! Loading is strict where a mistake would silently widen or narrow a baseline (unknown
//! capability names, wrong types, a foreign or newer document) and lenient with fields it does not
//! use, so additive changes to the format keep old readers working.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::model::caps::Capability;
use crate::report::read::{DocError, ProfileDoc};

/// Encoded file names longer than this are shortened and suffixed with a hash (NAME_MAX is 255).
const MAX_STEM: usize = 200;

/// One workload's baseline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Baseline {
    pub workload: String,
    pub file: PathBuf,
    pub required: BTreeSet<Capability>,
    pub attempted: BTreeSet<Capability>,
}

/// Every baseline in a folder, by workload key.
#[derive(Clone, Debug, Default)]
pub struct Baselines {
    pub by_workload: BTreeMap<String, Baseline>,
}

impl Baselines {
    /// Loads every `*.json` file of `dir` (not hidden ones); any invalid file is an error, so a
    /// typo never leaves a workload unmonitored.
    pub fn load_dir(dir: &Path) -> Result<Self, DocError> {
        let io_err = |source| DocError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(io_err)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| is_baseline_name(p))
            .collect();
        files.sort();
        let mut by_workload: BTreeMap<String, Baseline> = BTreeMap::new();
        for file in files {
            let doc = ProfileDoc::load(&file)?;
            let Some(key) = doc.subject.workload().map(str::to_string) else {
                return Err(DocError::NotWorkload {
                    path: file,
                    kind: doc.subject.kind(),
                });
            };
            if let Some(first) = by_workload.get(&key) {
                return Err(DocError::Duplicate {
                    key,
                    first: first.file.clone(),
                    second: file,
                });
            }
            by_workload.insert(
                key.clone(),
                Baseline {
                    workload: key,
                    file,
                    required: doc.required,
                    attempted: doc.attempted,
                },
            );
        }
        Ok(Self { by_workload })
    }

    pub fn get(&self, workload: &str) -> Option<&Baseline> {
        self.by_workload.get(workload)
    }

    pub fn len(&self) -> usize {
        self.by_workload.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_workload.is_empty()
    }
}

fn is_baseline_name(p: &Path) -> bool {
    let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    // Exactly `.json`: `capspy baseline save` writes no other spelling.
    !name.starts_with('.') && p.extension().is_some_and(|e| e == "json") && p.is_file()
}

/// A file name for a workload key that stays inside the folder whatever the key holds: bytes
/// other than ASCII letters, digits, `_`, `-` and a non-leading `.` are percent-encoded (so `/`,
/// NUL, `..` and newlines cannot appear), and very long keys are shortened with a hash suffix.
/// The key itself is read back from the file's content, never from its name.
pub fn file_name(key: &str) -> String {
    let mut stem = String::with_capacity(key.len());
    for (i, b) in key.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            stem.push(char::from(b));
        } else {
            let _ = write!(stem, "%{b:02X}");
        }
    }
    if stem.is_empty() {
        stem.push_str("%00");
    }
    if stem.len() > MAX_STEM {
        // Cut at a character boundary of the (ASCII) encoding, away from a half escape.
        let mut cut = MAX_STEM - 17;
        while stem.as_bytes()[cut - 1] == b'%' || stem.as_bytes()[cut.saturating_sub(2)] == b'%' {
            cut -= 1;
        }
        stem = format!("{}~{:016x}", &stem[..cut], fnv1a(key.as_bytes()));
    }
    stem.push_str(".json");
    stem
}

/// FNV-1a, 64 bits: a stable name suffix, not a security boundary.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Writes `json` as the baseline of `key` in `dir` (created if missing), replacing an older one
/// atomically: a temporary file created exclusively (never through a planted symlink), then
/// renamed over the target.
pub fn write(dir: &Path, key: &str, json: &str) -> Result<PathBuf, DocError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DocError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let name = file_name(key);
    let target = dir.join(&name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(json.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &target)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&target)(e));
    }
    Ok(target)
}

/// What CURRENT needs beyond BASELINE.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// Required by CURRENT, not by BASELINE: drift.
    #[serde(serialize_with = "names")]
    pub added: BTreeSet<Capability>,
    /// Tried and denied by CURRENT, neither required nor tried in BASELINE: not a need, but news.
    #[serde(serialize_with = "names")]
    pub attempted: BTreeSet<Capability>,
    /// Required by BASELINE, unused by CURRENT: could be dropped if CURRENT is representative.
    #[serde(serialize_with = "names")]
    pub unused: BTreeSet<Capability>,
}

impl Diff {
    pub fn between(baseline: &ProfileDoc, current: &ProfileDoc) -> Self {
        Self {
            added: &current.required - &baseline.required,
            attempted: current
                .attempted
                .iter()
                .filter(|c| !baseline.required.contains(c) && !baseline.attempted.contains(c))
                .copied()
                .collect(),
            unused: &baseline.required - &current.required,
        }
    }

    pub fn is_drift(&self) -> bool {
        !self.added.is_empty()
    }
}

fn names<S: serde::Serializer>(caps: &BTreeSet<Capability>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(caps.iter().map(ToString::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::loss::LossCounters;
    use crate::report::read::DocSubject;
    use crate::report::read::tests::GOOD;

    #[test]
    fn hostile_keys_make_safe_file_names() {
        assert_eq!(
            file_name("image:demo/busybox:1/pinger"),
            "image%3Ademo%2Fbusybox%3A1%2Fpinger.json"
        );
        for key in [
            "../../etc/passwd",
            "..",
            ".",
            "",
            "/abs",
            "a\nb\"c'$(x)",
            "k8s:ns/\u{0}/x",
            "é/ü",
        ] {
            let name = file_name(key);
            assert!(
                !name.contains('/') && !name.contains('\0'),
                "{key:?} -> {name}"
            );
            assert!(!name.starts_with('.'), "{key:?} -> {name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"%._-~".contains(&b)),
                "{name}"
            );
            assert_eq!(Path::new(&name).components().count(), 1);
        }
        let long = "x/".repeat(300);
        let name = file_name(&long);
        assert!(name.len() <= 255, "{}", name.len());
        assert_ne!(file_name(&long), file_name(&format!("{long}y")));
    }

    #[test]
    fn save_and_load_a_folder() {
        let dir = std::env::temp_dir().join(format!("capspy-baseline-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = write(&dir, "image:demo/busybox:1/pinger", GOOD).unwrap();
        assert_eq!(path.parent(), Some(dir.as_path()));
        // Written again: replaced, not duplicated; no temporary file left.
        write(&dir, "image:demo/busybox:1/pinger", GOOD).unwrap();
        fs::write(dir.join("README.md"), "not a baseline").unwrap();
        let all = Baselines::load_dir(&dir).unwrap();
        assert_eq!(all.len(), 1);
        let b = all.get("image:demo/busybox:1/pinger").unwrap();
        assert_eq!(b.required, BTreeSet::from([Capability::NET_RAW]));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);

        // Two files for one workload: refused, naming both.
        fs::write(dir.join("copy.json"), GOOD).unwrap();
        let e = Baselines::load_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("copy.json") && e.contains("pinger.json"), "{e}");
        fs::remove_file(dir.join("copy.json")).unwrap();

        // A command's profile is no baseline.
        let command = r#"{"schema_version": 1, "subject": {"kind": "command", "argv": ["ping"],
            "exit_code": 0, "interrupted": false}, "required": [], "checks": []}"#;
        fs::write(dir.join("cmd.json"), command).unwrap();
        let e = Baselines::load_dir(&dir).unwrap_err().to_string();
        assert!(
            e.contains("cmd.json") && e.contains("not of a command"),
            "{e}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    fn doc(required: &[Capability], attempted: &[Capability]) -> ProfileDoc {
        ProfileDoc {
            source: "x".into(),
            subject: DocSubject::Workload {
                key: "w".into(),
                containers: Vec::new(),
                images: Vec::new(),
            },
            required: required.iter().copied().collect(),
            attempted: attempted.iter().copied().collect(),
            hook: "store".into(),
            checks: Vec::new(),
            granted: None,
            losses: LossCounters::default(),
            notes: Vec::new(),
            host: None,
            coverage: None,
        }
    }

    #[test]
    fn diff_finds_what_current_needs_beyond_the_baseline() {
        use Capability as C;
        let base = doc(&[C::NET_RAW], &[C::SYS_ADMIN]);
        let same = Diff::between(&base, &doc(&[C::NET_RAW], &[]));
        assert!(!same.is_drift());
        assert_eq!(same, Diff::default());

        let more = Diff::between(&base, &doc(&[C::NET_RAW, C::CHOWN], &[]));
        assert!(more.is_drift());
        assert_eq!(more.added, BTreeSet::from([C::CHOWN]));

        // Attempts: news only when the baseline neither needs nor tried them; never drift.
        let tried = Diff::between(
            &base,
            &doc(&[C::NET_RAW], &[C::SYS_ADMIN, C::BPF, C::NET_RAW]),
        );
        assert!(!tried.is_drift());
        assert_eq!(tried.attempted, BTreeSet::from([C::BPF]));

        // Needing less is no drift; what went unused is reported.
        let less = Diff::between(&base, &doc(&[], &[]));
        assert!(!less.is_drift());
        assert_eq!(less.unused, BTreeSet::from([C::NET_RAW]));
    }
}
