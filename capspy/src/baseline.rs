//! Baselines: the profile a workload is expected to stay within, one JSON file per workload (the
//! JSON profile format of `capspy profile --format json`), and the comparison of two profiles.
//!
//! Loading is strict where a mistake would silently widen or narrow a baseline (unknown
//! capability names, wrong types, a foreign or newer document) and lenient with fields it does not
//! use, so additive changes to the format keep old readers working.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::caps::Capability;
use crate::collector::LossCounters;
use crate::profile::{CheckRow, Verdict};
use crate::render::{Coverage, Report};

/// Encoded file names longer than this are shortened and suffixed with a hash (NAME_MAX is 255).
const MAX_STEM: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: the file is empty", .path.display())]
    Empty { path: PathBuf },
    #[error("{}:{line}:{column}: {message}", .path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}:{line}:{column}: field `{field}`: {message}", .path.display())]
    Field {
        path: PathBuf,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },
    #[error("{}: not a capspy profile: {reason}", .path.display())]
    Foreign { path: PathBuf, reason: String },
    #[error(
        "{}: field `schema_version`: {found} is not a version this capspy reads (1 to {max})",
        .path.display()
    )]
    Version { path: PathBuf, found: u64, max: u32 },
    #[error(
        "{}: field `subject.kind`: a baseline is the profile of a workload or a container, not of \
         a {kind} (make one with `capspy baseline save`)",
        .path.display()
    )]
    NotWorkload { path: PathBuf, kind: &'static str },
    #[error(
        "{} and {} are both baselines of workload {key:?}",
        .first.display(),
        .second.display()
    )]
    Duplicate {
        key: String,
        first: PathBuf,
        second: PathBuf,
    },
}

impl BaselineError {
    /// The same error, for text that starts `lines` lines into the file.
    fn lines_after(mut self, lines: usize) -> Self {
        if let Self::Syntax { line, .. } | Self::Field { line, .. } = &mut self {
            *line += lines;
        }
        self
    }
}

/// What was profiled, as the document says.
pub use crate::render::Subject as DocSubject;

/// A profile document as read back: what baselines, `capspy diff` and `capspy merge` use.
#[derive(Clone, Debug)]
pub struct ProfileDoc {
    /// The file it was read from, or `store:NAME`.
    pub source: String,
    pub subject: DocSubject,
    /// What the workload needs: granted, audited checks by the application.
    pub required: BTreeSet<Capability>,
    /// Capabilities the application tried and was denied (audited checks): known attempts.
    pub attempted: BTreeSet<Capability>,
    /// The attach method, `store`, or the methods of a merged profile.
    pub hook: String,
    pub checks: Vec<CheckRow>,
    /// What the subject was granted, when known.
    pub granted: Option<BTreeSet<Capability>>,
    pub losses: LossCounters,
    pub notes: Vec<String>,
    /// The node it was observed on.
    pub host: Option<String>,
    /// Set for a merged profile.
    pub coverage: Option<Coverage>,
}

// The document as `render::Report` writes it; unknown fields are ignored, and fields added
// after version 1 may be missing.
#[derive(Deserialize)]
struct Doc {
    schema_version: u32,
    subject: DocSubject,
    #[serde(default)]
    hook: String,
    #[serde(deserialize_with = "crate::caps::deserialize_names")]
    required: BTreeSet<Capability>,
    checks: Vec<CheckRow>,
    #[serde(default, deserialize_with = "crate::caps::deserialize_opt_names")]
    granted: Option<BTreeSet<Capability>>,
    #[serde(default)]
    losses: LossCounters,
    #[serde(default)]
    notes: Vec<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    coverage: Option<Coverage>,
}

/// Denied checks that show a need (the profile's rule, [`CheckRow::shows_need`]): what the
/// application tried.
fn attempted(checks: &[CheckRow]) -> BTreeSet<Capability> {
    checks
        .iter()
        .filter(|c| c.shows_need() && c.verdict == Verdict::Denied)
        .map(|c| c.capability)
        .collect()
}

impl ProfileDoc {
    /// Reads and validates a profile document.
    pub fn load(path: &Path) -> Result<Self, BaselineError> {
        let text = fs::read_to_string(path).map_err(|source| BaselineError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates `text`, read from `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, BaselineError> {
        // A valid document is read in one pass; the checks below explain an invalid one.
        if let Ok(doc) = serde_json::from_str::<Doc>(text)
            && Self::known_version(doc.schema_version)
        {
            return Ok(Self::from_doc(path, doc));
        }
        Self::parse_checked(path, text)
    }

    fn known_version(version: u32) -> bool {
        (1..=crate::render::SCHEMA_VERSION).contains(&version)
    }

    fn from_doc(path: &Path, doc: Doc) -> Self {
        Self {
            source: path.display().to_string(),
            subject: doc.subject,
            required: doc.required,
            attempted: attempted(&doc.checks),
            hook: doc.hook,
            checks: doc.checks,
            granted: doc.granted,
            losses: doc.losses,
            notes: doc.notes,
            host: doc.host,
            coverage: doc.coverage,
        }
    }

    fn parse_checked(path: &Path, text: &str) -> Result<Self, BaselineError> {
        let p = || path.to_path_buf();
        if text.trim().is_empty() {
            return Err(BaselineError::Empty { path: p() });
        }
        // Syntax first (a truncated file), then what kind of document it is, then its fields.
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| BaselineError::Syntax {
                path: p(),
                line: e.line(),
                column: e.column(),
                message: if e.is_eof() {
                    format!("{}: the file ends early (truncated?)", bare_message(&e))
                } else {
                    bare_message(&e)
                },
            })?;
        let Some(object) = value.as_object() else {
            return Err(BaselineError::Foreign {
                path: p(),
                reason: format!("the document is {}, not an object", json_kind(&value)),
            });
        };
        let Some(version) = object.get("schema_version") else {
            return Err(BaselineError::Foreign {
                path: p(),
                reason: "it has no `schema_version` field".into(),
            });
        };
        let max = crate::render::SCHEMA_VERSION;
        match version.as_u64() {
            Some(v) if (1..=u64::from(max)).contains(&v) => {}
            Some(found) => {
                return Err(BaselineError::Version {
                    path: p(),
                    found,
                    max,
                });
            }
            None => {
                return Err(BaselineError::Foreign {
                    path: p(),
                    reason: format!("`schema_version` is {}, not a number", json_kind(version)),
                });
            }
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let doc: Doc = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            BaselineError::Field {
                path: p(),
                line: inner.line(),
                column: inner.column(),
                field,
                message: bare_message(&inner),
            }
        })?;
        Ok(Self::from_doc(path, doc))
    }

    /// A report as a document, as if rendered and read back (`capspy diff` with names in the
    /// store, `capspy profile --store A --store B`).
    pub fn from_report(source: String, report: &Report) -> Self {
        Self {
            source,
            subject: report.subject.clone(),
            required: report.profile.required.clone(),
            attempted: attempted(&report.profile.checks),
            hook: report.hook.clone(),
            checks: report.profile.checks.clone(),
            granted: report.profile.granted.clone(),
            losses: report.losses,
            notes: report.notes.clone(),
            host: report.host.clone(),
            coverage: report.coverage.clone(),
        }
    }

    /// Every document of a file: one, or several one after another (`capspy profile --all
    /// --format json`). Errors name the file and the line in it.
    pub fn load_all(path: &Path) -> Result<Vec<Self>, BaselineError> {
        let text = fs::read_to_string(path).map_err(|source| BaselineError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_all(path, &text)
    }

    pub fn parse_all(path: &Path, text: &str) -> Result<Vec<Self>, BaselineError> {
        if text.trim().is_empty() {
            return Err(BaselineError::Empty {
                path: path.to_path_buf(),
            });
        }
        // Valid documents in one pass each; from the first that is not, the checked reading.
        let mut docs = Vec::new();
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Doc>();
        loop {
            let start = stream.byte_offset();
            match stream.next() {
                None => return Ok(docs),
                Some(Ok(doc)) if Self::known_version(doc.schema_version) => {
                    docs.push(Self::from_doc(path, doc));
                }
                Some(_) => {
                    docs.extend(Self::parse_all_checked(path, text, start)?);
                    return Ok(docs);
                }
            }
        }
    }

    /// The documents of `text` from byte `from` on, each checked by [`Self::parse`], with line
    /// numbers counted from the file's start.
    fn parse_all_checked(path: &Path, text: &str, from: usize) -> Result<Vec<Self>, BaselineError> {
        let mut docs = Vec::new();
        let rest = &text[from..];
        let mut stream =
            serde_json::Deserializer::from_str(rest).into_iter::<serde::de::IgnoredAny>();
        let mut start = 0;
        while let Some(item) = stream.next() {
            let end = stream.byte_offset();
            // On a syntax error, the rest of the file is parsed alone for a precise message.
            let part = if item.is_ok() {
                &rest[start..end]
            } else {
                &rest[start..]
            };
            let lines = text[..from + start].matches('\n').count();
            let doc = Self::parse_checked(path, part).map_err(|e| e.lines_after(lines))?;
            docs.push(doc);
            start = end;
        }
        Ok(docs)
    }
}

/// serde_json's message without its " at line L column C" tail (we print those ourselves).
fn bare_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let tail = format!(" at line {} column {}", e.line(), e.column());
    full.strip_suffix(&tail).unwrap_or(&full).to_string()
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

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
    pub fn load_dir(dir: &Path) -> Result<Self, BaselineError> {
        let io_err = |source| BaselineError::Io {
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
                return Err(BaselineError::NotWorkload {
                    path: file,
                    kind: doc.subject.kind(),
                });
            };
            if let Some(first) = by_workload.get(&key) {
                return Err(BaselineError::Duplicate {
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
pub fn write(dir: &Path, key: &str, json: &str) -> Result<PathBuf, BaselineError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BaselineError::Io { path, source }
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

    const GOOD: &str = r#"{
  "schema_version": 1,
  "subject": { "kind": "workload", "key": "image:demo/busybox:1/pinger", "containers": ["abc"] },
  "hook": "store",
  "required": ["NET_RAW"],
  "checks": [
    { "capability": "NET_RAW", "verdict": "granted", "audit": "audited", "bucket": "app", "count": 2 },
    { "capability": "SETUID", "verdict": "denied", "audit": "audited", "bucket": "app", "count": 1 },
    { "capability": "SYS_ADMIN", "verdict": "denied", "audit": "advisory", "bucket": "app", "count": 9 },
    { "capability": "SYS_ADMIN", "verdict": "granted", "audit": "audited", "bucket": "runtime", "count": 4 }
  ],
  "docker_flags": "--cap-drop ALL --cap-add NET_RAW",
  "some_future_field": {"ignored": true}
}"#;

    fn parse(text: &str) -> Result<ProfileDoc, BaselineError> {
        ProfileDoc::parse(Path::new("base/pinger.json"), text)
    }

    #[test]
    fn a_valid_document_loads() {
        let doc = parse(GOOD).unwrap();
        assert_eq!(doc.subject.workload(), Some("image:demo/busybox:1/pinger"));
        assert_eq!(doc.required, BTreeSet::from([Capability::NET_RAW]));
        // Only denied, audited, application checks are known attempts.
        assert_eq!(doc.attempted, BTreeSet::from([Capability(7)]));
    }

    #[test]
    fn a_file_of_several_documents_loads_each_and_errors_name_the_line() {
        let two = format!("{GOOD}\n{GOOD}\n");
        let docs = ProfileDoc::parse_all(Path::new("all.json"), &two).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].required, BTreeSet::from([Capability::NET_RAW]));
        assert_eq!(docs[1].checks.len(), 4);
        // The second document's bad field, at its line in the file.
        let bad = format!(
            "{GOOD}\n{}",
            GOOD.replace(r#""capability": "SETUID""#, r#""capability": "SETUIDD""#)
        );
        let e = ProfileDoc::parse_all(Path::new("all.json"), &bad).unwrap_err();
        let lines = GOOD.lines().count();
        assert!(
            e.to_string()
                .starts_with(&format!("all.json:{}:", lines + 8)),
            "{e}"
        );
        // Truncated after the first.
        let cut = format!("{GOOD}\n{}", &GOOD[..40]);
        let e = ProfileDoc::parse_all(Path::new("all.json"), &cut)
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn a_truncated_file_names_file_line_and_column() {
        let cut = &GOOD[..GOOD.find("\"checks\"").unwrap() + 11];
        let e = parse(cut).unwrap_err().to_string();
        assert!(e.starts_with("base/pinger.json:6:13: "), "{e}");
        assert!(
            e.contains("EOF while parsing") && e.contains("truncated"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_field_names_its_path_and_line() {
        let bad = GOOD.replace(r#""capability": "SETUID""#, r#""capability": "SETUIDD""#);
        let e = parse(&bad).unwrap_err();
        let BaselineError::Field { line, field, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!((*line, field.as_str()), (8, "checks[1].capability"), "{e}");
        assert!(e.to_string().contains("unknown capability name"), "{e}");

        let bad = GOOD.replace(r#""required": ["NET_RAW"]"#, r#""required": "NET_RAW""#);
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.starts_with("base/pinger.json:5:"), "{e}");
        assert!(e.contains("field `required`"), "{e}");

        let bad = GOOD.replace(r#""verdict": "granted""#, r#""verdict": "maybe""#);
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.contains("field `checks[0].verdict`"), "{e}");
    }

    #[test]
    fn a_missing_field_is_named() {
        let bad = GOOD.replace(r#""required": ["NET_RAW"],"#, "");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.contains("missing field `required`"), "{e}");
    }

    #[test]
    fn foreign_and_future_documents_are_refused() {
        for (text, want) in [
            (
                r#"{"name": "left-pad", "version": "1.3.0"}"#,
                "no `schema_version`",
            ),
            ("[1, 2, 3]", "an array, not an object"),
            (r#"{"schema_version": "1"}"#, "a string, not a number"),
            (
                r#"{"schema_version": 99, "subject": {}}"#,
                "99 is not a version",
            ),
            ("   \n", "the file is empty"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.starts_with("base/pinger.json"), "{e}");
        }
    }

    #[test]
    fn unknown_capability_numbers_round_trip() {
        use crate::caps::parse_document_name as parse_cap;
        assert_eq!(parse_cap("CAP_41"), Ok(Capability(41)));
        assert_eq!(parse_cap("cap_chown"), Ok(Capability::CHOWN));
        assert!(parse_cap("CAP_").is_err());
    }

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
