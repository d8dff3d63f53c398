//! What verify runs and what the results mean: the profile under test (from a capspy JSON report
//! or given by hand), the runs that test it, and the verdict. No I/O here.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::caps::{CapError, Capability};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("not a capspy JSON report: it has no \"required\" list")]
    NoRequired,
    #[error("not a capspy JSON report: {0}")]
    Shape(&'static str),
    #[error("in the report: {0}")]
    Capability(#[from] CapError),
}

/// The profile under test.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileUnderTest {
    pub required: BTreeSet<Capability>,
    /// Refused and never granted (audited, in the workload, against the initial user namespace):
    /// the workload may need them, or may have fallen back. Verify tries them both ways.
    pub refused: BTreeSet<Capability>,
    /// The traced command's exit status, when the report is of a command (not a container).
    pub recorded_exit: Option<i32>,
    /// The report traced a command itself, not the container(s) it started.
    pub of_a_command: bool,
}

impl ProfileUnderTest {
    pub fn given(caps: impl IntoIterator<Item = Capability>) -> Self {
        Self {
            required: caps.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Reads `required` and `checks` of a report from `capspy run --format json` or
    /// `capspy profile --format json`.
    pub fn from_report(report: &Value) -> Result<Self, ReportError> {
        let required = report["required"]
            .as_array()
            .ok_or(ReportError::NoRequired)?
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or(ReportError::Shape("\"required\" holds a non-string"))?
                    .parse::<Capability>()
                    .map_err(ReportError::from)
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        let checks = match &report["checks"] {
            Value::Null => &Vec::new(),
            Value::Array(a) => a,
            _ => return Err(ReportError::Shape("\"checks\" is not a list")),
        };
        let mut granted = BTreeSet::new();
        let mut denied = BTreeSet::new();
        for check in checks {
            // Older reports have no bucket: everything was the workload's.
            let app = check["bucket"].as_str().is_none_or(|b| b == "app");
            let audited = check["audit"] == "audited";
            let host_level = check["user_namespace"] != "other";
            if !(app && audited && host_level) {
                continue;
            }
            let cap: Capability = check["capability"]
                .as_str()
                .ok_or(ReportError::Shape("a check has no \"capability\""))?
                .parse()?;
            match check["verdict"].as_str() {
                Some("granted") => granted.insert(cap),
                Some("denied") => denied.insert(cap),
                _ => return Err(ReportError::Shape("a check has no \"verdict\"")),
            };
        }
        let refused = denied
            .into_iter()
            .filter(|c| !granted.contains(c) && !required.contains(c))
            .collect();
        let of_a_command = report["subject"]["kind"] == "command";
        let recorded_exit = if of_a_command {
            report["subject"]["exit_code"]
                .as_i64()
                .and_then(|c| i32::try_from(c).ok())
        } else {
            None
        };
        Ok(Self {
            required,
            refused,
            recorded_exit,
            of_a_command,
        })
    }
}

/// One run of the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trial {
    /// The command as written: what "works" means, when nothing else says.
    Baseline,
    /// Exactly the profile.
    Profile,
    /// The profile plus one refused capability (the profile run is the other way).
    WithRefused(Capability),
    /// The profile without one capability: does it break?
    Without(Capability),
}

impl Trial {
    /// The capability set of the run; `None` for the command as written.
    pub fn caps(self, p: &ProfileUnderTest) -> Option<Vec<Capability>> {
        let mut set = p.required.clone();
        match self {
            Self::Baseline => return None,
            Self::Profile => {}
            Self::WithRefused(c) => {
                set.insert(c);
            }
            Self::Without(c) => {
                set.remove(&c);
            }
        }
        Some(set.into_iter().collect())
    }

    pub fn label(self) -> String {
        match self {
            Self::Baseline => "as written".into(),
            Self::Profile => "profile".into(),
            Self::WithRefused(c) => format!("with {c} (refused)"),
            Self::Without(c) => format!("without {c}"),
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Profile => "profile",
            Self::WithRefused(_) => "with_refused",
            Self::Without(_) => "without",
        }
    }

    pub fn capability(self) -> Option<Capability> {
        match self {
            Self::WithRefused(c) | Self::Without(c) => Some(c),
            Self::Baseline | Self::Profile => None,
        }
    }
}

/// The runs after the profile run: each refused capability added, then (with `--minimal`, and
/// only if the profile works) each added capability removed.
pub fn follow_ups(p: &ProfileUnderTest, profile_works: bool, minimal: bool) -> Vec<Trial> {
    let mut trials: Vec<Trial> = p.refused.iter().map(|c| Trial::WithRefused(*c)).collect();
    if minimal && profile_works {
        trials.extend(p.required.iter().map(|c| Trial::Without(*c)));
    }
    trials
}

/// What the runs say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub works: bool,
    /// `None` when not checked (no `--minimal`, or the profile does not work).
    pub minimal: Option<bool>,
    /// Capabilities whose removal did not break the workload.
    pub unneeded: Vec<Capability>,
    /// Refused capabilities that made a failing profile work.
    pub needed_refused: Vec<Capability>,
    /// Refused capabilities that changed nothing or were not needed.
    pub unneeded_refused: Vec<Capability>,
}

impl Verdict {
    /// verify's exit status: 0 if the profile works (and is minimal, when that was asked), else 1.
    pub fn exit_code(&self) -> i32 {
        i32::from(!(self.works && self.minimal != Some(false)))
    }
}

/// `exit` is `None` for a run that timed out.
pub fn judge(expected: i32, minimal: bool, results: &[(Trial, Option<i32>)]) -> Verdict {
    let ok = |exit: &Option<i32>| *exit == Some(expected);
    let works = results
        .iter()
        .any(|(t, exit)| *t == Trial::Profile && ok(exit));
    let mut v = Verdict {
        works,
        minimal: None,
        unneeded: Vec::new(),
        needed_refused: Vec::new(),
        unneeded_refused: Vec::new(),
    };
    for (trial, exit) in results {
        match trial {
            Trial::Without(c) if ok(exit) => v.unneeded.push(*c),
            Trial::WithRefused(c) if ok(exit) && !works => v.needed_refused.push(*c),
            Trial::WithRefused(c) => v.unneeded_refused.push(*c),
            _ => {}
        }
    }
    if minimal && works {
        v.minimal = Some(v.unneeded.is_empty());
    }
    v
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(cap: &str, verdict: &str, audit: &str) -> Value {
        json!({"capability": cap, "verdict": verdict, "audit": audit, "bucket": "app",
               "user_namespace": "initial", "count": 1})
    }

    #[test]
    fn a_report_gives_required_and_only_refused_capabilities() {
        let mut runtime = check("SYS_CHROOT", "denied", "audited");
        runtime["bucket"] = json!("runtime");
        let mut userns = check("SYS_ADMIN", "denied", "audited");
        userns["user_namespace"] = json!("other");
        let report = json!({
            "schema_version": 1,
            "subject": {"kind": "container", "id": "abc"},
            "required": ["DAC_OVERRIDE", "NET_RAW"],
            "checks": [
                check("NET_RAW", "granted", "audited"),
                // Refused then granted the alternative: READ_SEARCH is only refused.
                check("DAC_READ_SEARCH", "denied", "audited"),
                check("DAC_OVERRIDE", "granted", "audited"),
                // Refused once, granted another time: not "only refused".
                check("NET_RAW", "denied", "audited"),
                // Advisory denials never count (the overcommit heuristic).
                check("SYS_ADMIN", "denied", "advisory"),
                check("SYS_RESOURCE", "denied", "advisory"),
                runtime,
                userns,
                check("SYSLOG", "denied", "audited"),
            ]
        });
        let p = ProfileUnderTest::from_report(&report).unwrap();
        assert_eq!(
            p.required,
            BTreeSet::from([Capability::DAC_OVERRIDE, Capability::NET_RAW])
        );
        assert_eq!(
            p.refused,
            BTreeSet::from([Capability::DAC_READ_SEARCH, Capability::SYSLOG])
        );
        assert_eq!(p.recorded_exit, None);
        assert!(!p.of_a_command);
    }

    #[test]
    fn a_command_report_carries_its_exit_status() {
        let report = json!({"subject": {"kind": "command", "argv": ["x"], "exit_code": 3},
                            "required": [], "checks": []});
        let p = ProfileUnderTest::from_report(&report).unwrap();
        assert_eq!(p.recorded_exit, Some(3));
        assert!(p.of_a_command);
    }

    #[test]
    fn malformed_reports_are_errors() {
        assert!(matches!(
            ProfileUnderTest::from_report(&json!({"checks": []})),
            Err(ReportError::NoRequired)
        ));
        assert!(matches!(
            ProfileUnderTest::from_report(&json!({"required": ["NET_RAWR"]})),
            Err(ReportError::Capability(_))
        ));
        assert!(matches!(
            ProfileUnderTest::from_report(&json!({"required": [], "checks": 3})),
            Err(ReportError::Shape(_))
        ));
    }

    #[test]
    fn trials_set_the_capabilities_they_say() {
        let p = ProfileUnderTest {
            required: BTreeSet::from([Capability::NET_ADMIN, Capability::NET_RAW]),
            refused: BTreeSet::from([Capability::SYSLOG]),
            ..ProfileUnderTest::default()
        };
        assert_eq!(Trial::Baseline.caps(&p), None);
        assert_eq!(
            Trial::Profile.caps(&p),
            Some(vec![Capability::NET_ADMIN, Capability::NET_RAW])
        );
        assert_eq!(
            Trial::Without(Capability::NET_RAW).caps(&p),
            Some(vec![Capability::NET_ADMIN])
        );
        assert_eq!(
            Trial::WithRefused(Capability::SYSLOG).caps(&p),
            Some(vec![
                Capability::NET_ADMIN,
                Capability::NET_RAW,
                Capability::SYSLOG
            ])
        );
        assert_eq!(
            follow_ups(&p, true, true),
            [
                Trial::WithRefused(Capability::SYSLOG),
                Trial::Without(Capability::NET_ADMIN),
                Trial::Without(Capability::NET_RAW)
            ]
        );
        // No removals when the profile already fails, or without --minimal.
        assert_eq!(
            follow_ups(&p, false, true),
            [Trial::WithRefused(Capability::SYSLOG)]
        );
        assert_eq!(
            follow_ups(&p, true, false),
            [Trial::WithRefused(Capability::SYSLOG)]
        );
    }

    #[test]
    fn a_working_profile_whose_every_removal_breaks_is_minimal() {
        let v = judge(
            0,
            true,
            &[
                (Trial::Profile, Some(0)),
                (Trial::Without(Capability::NET_ADMIN), Some(1)),
                (Trial::Without(Capability::NET_RAW), None),
            ],
        );
        assert!(v.works);
        assert_eq!(v.minimal, Some(true));
        assert_eq!(v.exit_code(), 0);
    }

    #[test]
    fn a_removal_that_still_works_makes_it_not_minimal() {
        let v = judge(
            0,
            true,
            &[
                (Trial::Profile, Some(0)),
                (Trial::Without(Capability::CHOWN), Some(0)),
                (Trial::Without(Capability::NET_RAW), Some(1)),
            ],
        );
        assert_eq!(v.minimal, Some(false));
        assert_eq!(v.unneeded, [Capability::CHOWN]);
        assert_eq!(v.exit_code(), 1);
        // Without --minimal the same runs only say it works.
        assert_eq!(judge(0, false, &[(Trial::Profile, Some(0))]).exit_code(), 0);
    }

    #[test]
    fn success_is_the_expected_status_not_zero() {
        let v = judge(3, false, &[(Trial::Profile, Some(3))]);
        assert!(v.works);
        let v = judge(3, false, &[(Trial::Profile, Some(0))]);
        assert!(!v.works);
        assert_eq!(v.exit_code(), 1);
    }

    #[test]
    fn a_refused_capability_that_fixes_a_failing_profile_is_needed() {
        let v = judge(
            0,
            true,
            &[
                (Trial::Profile, Some(1)),
                (Trial::WithRefused(Capability::DAC_READ_SEARCH), Some(0)),
                (Trial::WithRefused(Capability::SYSLOG), Some(1)),
            ],
        );
        assert!(!v.works);
        assert_eq!(v.minimal, None);
        assert_eq!(v.needed_refused, [Capability::DAC_READ_SEARCH]);
        assert_eq!(v.unneeded_refused, [Capability::SYSLOG]);
        assert_eq!(v.exit_code(), 1);
        // When the profile works, a refused capability is not needed either way.
        let v = judge(
            0,
            false,
            &[
                (Trial::Profile, Some(0)),
                (Trial::WithRefused(Capability::DAC_READ_SEARCH), Some(0)),
            ],
        );
        assert!(v.needed_refused.is_empty());
        assert_eq!(v.unneeded_refused, [Capability::DAC_READ_SEARCH]);
    }

    #[test]
    fn a_timed_out_profile_run_does_not_work() {
        let v = judge(0, true, &[(Trial::Profile, None)]);
        assert!(!v.works);
        assert_eq!(v.exit_code(), 1);
    }
}
