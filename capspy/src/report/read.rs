//! The one typed reader of a report document (`capspy profile --format json`): what baselines,
//! `capspy diff`, `capspy merge` and `capspy verify` read back. Strict where a mistake would
//! silently widen or narrow what the document says (unknown capability names, wrong types, a
//! foreign or newer document), lenient with fields it does not use, so additive changes to the
//! format keep old readers working.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Coverage, Report};
use crate::model::caps::Capability;
use crate::model::check::{CheckRow, Verdict};
use crate::model::loss::LossCounters;

#[derive(Debug, thiserror::Error)]
pub enum DocError {
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

impl DocError {
    /// The same error, for text that starts `lines` lines into the file.
    pub(crate) fn lines_after(mut self, lines: usize) -> Self {
        if let Self::Syntax { line, .. } | Self::Field { line, .. } = &mut self {
            *line += lines;
        }
        self
    }
}

/// What was profiled, as the document says.
pub use super::Subject as DocSubject;

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

// The document as `Report` writes it; unknown fields are ignored, and fields added
// after version 1 may be missing.
#[derive(Deserialize)]
struct Doc {
    schema_version: u32,
    subject: DocSubject,
    #[serde(default)]
    hook: String,
    #[serde(deserialize_with = "crate::model::caps::deserialize_names")]
    required: BTreeSet<Capability>,
    checks: Vec<CheckRow>,
    #[serde(
        default,
        deserialize_with = "crate::model::caps::deserialize_opt_names"
    )]
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
    pub fn load(path: &Path) -> Result<Self, DocError> {
        let text = fs::read_to_string(path).map_err(|source| DocError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates `text`, read from `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, DocError> {
        // A valid document is read in one pass; the checks below explain an invalid one.
        if let Ok(doc) = serde_json::from_str::<Doc>(text)
            && Self::known_version(doc.schema_version)
        {
            return Ok(Self::from_doc(path, doc));
        }
        Self::parse_checked(path, text)
    }

    fn known_version(version: u32) -> bool {
        (1..=crate::report::SCHEMA_VERSION).contains(&version)
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

    fn parse_checked(path: &Path, text: &str) -> Result<Self, DocError> {
        let p = || path.to_path_buf();
        if text.trim().is_empty() {
            return Err(DocError::Empty { path: p() });
        }
        // Syntax first (a truncated file), then what kind of document it is, then its fields.
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| DocError::Syntax {
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
            return Err(DocError::Foreign {
                path: p(),
                reason: format!("the document is {}, not an object", json_kind(&value)),
            });
        };
        let Some(version) = object.get("schema_version") else {
            return Err(DocError::Foreign {
                path: p(),
                reason: "it has no `schema_version` field".into(),
            });
        };
        let max = crate::report::SCHEMA_VERSION;
        match version.as_u64() {
            Some(v) if (1..=u64::from(max)).contains(&v) => {}
            Some(found) => {
                return Err(DocError::Version {
                    path: p(),
                    found,
                    max,
                });
            }
            None => {
                return Err(DocError::Foreign {
                    path: p(),
                    reason: format!("`schema_version` is {}, not a number", json_kind(version)),
                });
            }
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let doc: Doc = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            DocError::Field {
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
    pub fn load_all(path: &Path) -> Result<Vec<Self>, DocError> {
        let text = fs::read_to_string(path).map_err(|source| DocError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_all(path, &text)
    }

    pub fn parse_all(path: &Path, text: &str) -> Result<Vec<Self>, DocError> {
        if text.trim().is_empty() {
            return Err(DocError::Empty {
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
    fn parse_all_checked(path: &Path, text: &str, from: usize) -> Result<Vec<Self>, DocError> {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const GOOD: &str = r#"{
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

    fn parse(text: &str) -> Result<ProfileDoc, DocError> {
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
        let DocError::Field { line, field, .. } = &e else {
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
        use crate::model::caps::parse_document_name as parse_cap;
        assert_eq!(parse_cap("CAP_41"), Ok(Capability(41)));
        assert_eq!(parse_cap("cap_chown"), Ok(Capability::CHOWN));
        assert!(parse_cap("CAP_").is_err());
    }
}
