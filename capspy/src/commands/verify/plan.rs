//! What verify runs and what the results mean: the profile under test (from a capspy JSON report
//! or given by hand), the runs that test it, and the verdict. No I/O here.

use std::collections::BTreeSet;

use serde::Deserialize as _;
use serde_json::Value;

use crate::model::caps::{CapError, CapSet, Capability};
use crate::model::check::{CheckClass, UserNs};

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
    /// What the recorded container was granted, when the report says.
    pub granted: Option<BTreeSet<Capability>>,
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
        let required = cap_list(
            report["required"]
                .as_array()
                .ok_or(ReportError::NoRequired)?,
            "\"required\" holds a non-string",
        )?;
        let checks = match &report["checks"] {
            Value::Null => &Vec::new(),
            Value::Array(a) => a,
            _ => return Err(ReportError::Shape("\"checks\" is not a list")),
        };
        let mut granted = BTreeSet::new();
        let mut denied = BTreeSet::new();
        for check in checks {
            // The profile's own rule; fields older reports lack default to what they meant.
            let class = CheckClass::deserialize(check)
                .map_err(|_| ReportError::Shape("a check has no valid \"verdict\" or \"audit\""))?;
            if !class.shows_need() || class.user_namespace == UserNs::Other {
                continue;
            }
            let cap: Capability = check["capability"]
                .as_str()
                .ok_or(ReportError::Shape("a check has no \"capability\""))?
                .parse()?;
            if class.makes_required() {
                granted.insert(cap);
            } else {
                denied.insert(cap);
            }
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
        let granted = match &report["granted"] {
            Value::Array(a) => Some(cap_list(a, "\"granted\" holds a non-string")?),
            _ => None,
        };
        Ok(Self {
            required,
            refused,
            recorded_exit,
            of_a_command,
            granted,
        })
    }

    /// What the command as written has, where a missing capability is searched: the recorded
    /// container's granted set, else Docker's default set.
    pub fn pool(&self) -> BTreeSet<Capability> {
        self.granted
            .clone()
            .unwrap_or_else(|| CapSet::DOCKER_DEFAULT.iter().collect())
    }
}

fn cap_list(names: &[Value], bad: &'static str) -> Result<BTreeSet<Capability>, ReportError> {
    names
        .iter()
        .map(|v| {
            v.as_str()
                .ok_or(ReportError::Shape(bad))?
                .parse::<Capability>()
                .map_err(ReportError::from)
        })
        .collect()
}

/// What a run is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrialKind {
    /// The command as written: what "works" means, when nothing else says.
    Baseline,
    /// Exactly the profile.
    Profile,
    /// The profile plus one refused capability.
    WithRefused(Capability),
    /// The profile plus everything else the engine grants unrestricted: is what is missing
    /// among it?
    Defaults,
    /// The profile plus part of the rest of the engine's set: which capability is missing?
    Search,
    /// The set that works so far without one capability: does it break?
    Without(Capability),
}

/// One run of the workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trial {
    pub kind: TrialKind,
    /// The capability set of the run; `None` for the command as written.
    pub caps: Option<BTreeSet<Capability>>,
}

impl Trial {
    pub fn baseline() -> Self {
        Self {
            kind: TrialKind::Baseline,
            caps: None,
        }
    }

    fn with(kind: TrialKind, caps: BTreeSet<Capability>) -> Self {
        Self {
            kind,
            caps: Some(caps),
        }
    }

    pub fn label(&self, p: &ProfileUnderTest) -> String {
        match self.kind {
            TrialKind::Baseline => "as written".into(),
            TrialKind::Profile => "profile".into(),
            TrialKind::WithRefused(c) => format!("with {c} (refused)"),
            TrialKind::Defaults => "with the engine's defaults".into(),
            TrialKind::Search => {
                let added = self
                    .caps
                    .iter()
                    .flatten()
                    .filter(|c| !p.required.contains(c))
                    .count();
                format!("search: {added} back")
            }
            TrialKind::Without(c) => format!("without {c}"),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.kind {
            TrialKind::Baseline => "baseline",
            TrialKind::Profile => "profile",
            TrialKind::WithRefused(_) => "with_refused",
            TrialKind::Defaults => "defaults",
            TrialKind::Search => "search",
            TrialKind::Without(_) => "without",
        }
    }

    pub fn capability(&self) -> Option<Capability> {
        match self.kind {
            TrialKind::WithRefused(c) | TrialKind::Without(c) => Some(c),
            _ => None,
        }
    }
}

/// Where the plan stands.
#[derive(Clone, Debug)]
enum Step {
    Profile,
    /// Trying the refused capabilities one at a time: the index of the one under test.
    Refused(usize),
    Defaults,
    /// Finding a missing capability by bisection over `candidates`, in order: `base` plus the
    /// first `lo` fails, `base` plus the first `hi` works. With `probe`, `base` alone is
    /// under test first (it may already work).
    Bisect {
        base: BTreeSet<Capability>,
        candidates: Vec<Capability>,
        lo: usize,
        hi: usize,
        probe: bool,
    },
    /// Removing the profile's capabilities one at a time from the set that works, keeping
    /// each removal that still works: the index of the one under test.
    Minimize(usize),
    Done,
}

/// The runs after the reference, chosen one at a time from the results so far. A failing
/// profile is completed from the refused capabilities, then by bisecting the rest of what the
/// engine grants unrestricted (one missing capability costs about log2 of that set's size);
/// with `minimal`, the set that works is then reduced one capability at a time, each removal
/// kept when the workload still works, so the result was itself run and worked.
#[derive(Clone, Debug)]
pub struct Planner {
    profile: ProfileUnderTest,
    minimal: bool,
    /// What the engine grants the command as written.
    pool: BTreeSet<Capability>,
    step: Step,
    /// The smallest set that worked so far.
    working: Option<BTreeSet<Capability>>,
    verdict: Conclusion,
}

impl Planner {
    /// `pool`: the capabilities the command as written has (the report's `granted`, else
    /// Docker's default set).
    pub fn new(profile: ProfileUnderTest, minimal: bool, pool: BTreeSet<Capability>) -> Self {
        Self {
            profile,
            minimal,
            pool,
            step: Step::Profile,
            working: None,
            verdict: Conclusion::default(),
        }
    }

    /// The next run, `None` when done.
    pub fn next(&self) -> Option<Trial> {
        let required = &self.profile.required;
        Some(match &self.step {
            Step::Profile => Trial::with(TrialKind::Profile, required.clone()),
            Step::Refused(i) => {
                let c = *self.refused().get(*i)?;
                let mut caps = required.clone();
                caps.insert(c);
                Trial::with(TrialKind::WithRefused(c), caps)
            }
            Step::Defaults => Trial::with(TrialKind::Defaults, &self.pool | required),
            Step::Bisect {
                base,
                candidates,
                lo,
                hi,
                probe,
            } => {
                let n = bisect_point(*lo, *hi, *probe);
                let mut caps = base.clone();
                caps.extend(&candidates[..n]);
                Trial::with(TrialKind::Search, caps)
            }
            Step::Minimize(i) => {
                let c = *self.queue().get(*i)?;
                let mut caps = self.working.clone()?;
                caps.remove(&c);
                Trial::with(TrialKind::Without(c), caps)
            }
            Step::Done => return None,
        })
    }

    /// The result of the run [`Planner::next`] gave.
    pub fn record(&mut self, works: bool) {
        let Some(trial) = self.next() else { return };
        if works {
            self.working.clone_from(&trial.caps);
        }
        self.step = match std::mem::replace(&mut self.step, Step::Done) {
            Step::Profile => {
                self.verdict.works = works;
                if works {
                    self.minimize()
                } else {
                    self.after_refused(0)
                }
            }
            Step::Refused(i) => {
                let c = self.refused()[i];
                if works {
                    self.verdict.needed_refused.push(c);
                    self.minimize()
                } else {
                    self.verdict.unneeded_refused.push(c);
                    self.after_refused(i + 1)
                }
            }
            Step::Defaults => {
                if works {
                    let candidates: Vec<Capability> = self
                        .pool
                        .difference(&self.profile.required)
                        .copied()
                        .collect();
                    Step::Bisect {
                        base: self.profile.required.clone(),
                        lo: 0,
                        hi: candidates.len(),
                        candidates,
                        probe: false,
                    }
                    .settle(self)
                } else {
                    self.verdict.beyond_pool = true;
                    Step::Done
                }
            }
            Step::Bisect {
                base,
                candidates,
                lo,
                hi,
                probe,
            } => {
                if probe && works {
                    self.minimize()
                } else {
                    let mid = bisect_point(lo, hi, probe);
                    let (lo, hi) = if works { (lo, mid) } else { (mid, hi) };
                    Step::Bisect {
                        base,
                        candidates,
                        lo,
                        hi,
                        probe: false,
                    }
                    .settle(self)
                }
            }
            Step::Minimize(i) => {
                let c = self.queue()[i];
                if works {
                    self.verdict.unneeded.push(c);
                } else {
                    self.verdict.needed.push(c);
                }
                Step::Minimize(i + 1).settle(self)
            }
            Step::Done => Step::Done,
        };
    }

    pub fn verdict(&self) -> Conclusion {
        let mut v = self.verdict.clone();
        v.working.clone_from(&self.working);
        if self.minimal && v.works {
            v.minimal = Some(v.unneeded.is_empty());
        }
        v
    }

    /// Refused capabilities the profile does not hold, in order.
    fn refused(&self) -> Vec<Capability> {
        self.profile
            .refused
            .difference(&self.profile.required)
            .copied()
            .collect()
    }

    /// What `--minimal` removes in turn: the profile's own capabilities (those found missing
    /// were proven needed by the search).
    fn queue(&self) -> Vec<Capability> {
        self.profile.required.iter().copied().collect()
    }

    fn after_refused(&mut self, i: usize) -> Step {
        if i < self.refused().len() {
            Step::Refused(i)
        } else if self.pool.is_subset(&self.profile.required) {
            // The profile run already had all of it.
            self.verdict.beyond_pool = true;
            Step::Done
        } else {
            Step::Defaults
        }
    }

    fn minimize(&mut self) -> Step {
        if self.minimal {
            Step::Minimize(0).settle(self)
        } else {
            Step::Done
        }
    }
}

/// How many candidates the next search run adds: none when probing the base alone.
fn bisect_point(lo: usize, hi: usize, probe: bool) -> usize {
    if probe { 0 } else { lo + (hi - lo) / 2 }
}

impl Step {
    /// Moves past steps with nothing left to run.
    fn settle(self, plan: &mut Planner) -> Self {
        match self {
            Self::Minimize(i) if i >= plan.queue().len() => Self::Done,
            Self::Bisect {
                mut base,
                mut candidates,
                lo,
                hi,
                ..
            } if hi - lo == 1 => {
                // base + first lo fails, base + first hi works: candidates[lo] is missing.
                let c = candidates[lo];
                plan.verdict.missing.push(c);
                base.insert(c);
                if lo == 0 {
                    return plan.minimize();
                }
                candidates.truncate(lo);
                Self::Bisect {
                    base,
                    hi: candidates.len(),
                    candidates,
                    lo: 0,
                    probe: true,
                }
            }
            other => other,
        }
    }
}

/// What the runs say (named apart from a check's [`Verdict`](crate::model::check::Verdict)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conclusion {
    /// The profile as given works.
    pub works: bool,
    /// `None` when not checked (no `--minimal`, or the profile does not work).
    pub minimal: Option<bool>,
    /// Capabilities whose removal did not break the workload (removed for good).
    pub unneeded: Vec<Capability>,
    /// Capabilities whose removal broke the workload.
    pub needed: Vec<Capability>,
    /// Refused capabilities that made a failing profile work.
    pub needed_refused: Vec<Capability>,
    /// Refused capabilities that did not make it work.
    pub unneeded_refused: Vec<Capability>,
    /// Capabilities outside the profile that a failing profile needs, found by bisecting the
    /// rest of the engine's set.
    pub missing: Vec<Capability>,
    /// The profile fails even with everything the engine grants: what it lacks is no
    /// capability of that set.
    pub beyond_pool: bool,
    /// The smallest set that was run and worked.
    pub working: Option<BTreeSet<Capability>>,
}

impl Conclusion {
    /// verify's exit status: 0 if the profile works (and is minimal, when that was asked), else 1.
    pub fn exit_code(&self) -> i32 {
        i32::from(!(self.works && self.minimal != Some(false)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::profile::Profile;
    use crate::profile::tests::{SETGID_CHMOD, raw};

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

    const CHOWN: Capability = Capability::CHOWN;
    const DAC_OVERRIDE: Capability = Capability::DAC_OVERRIDE;
    const DAC_READ_SEARCH: Capability = Capability::DAC_READ_SEARCH;
    const NET_RAW: Capability = Capability::NET_RAW;
    const SYSLOG: Capability = Capability::SYSLOG;

    fn set(caps: &[Capability]) -> BTreeSet<Capability> {
        caps.iter().copied().collect()
    }

    fn docker() -> BTreeSet<Capability> {
        CapSet::DOCKER_DEFAULT.iter().collect()
    }

    fn profile(required: &[Capability], refused: &[Capability]) -> ProfileUnderTest {
        ProfileUnderTest {
            required: set(required),
            refused: set(refused),
            ..ProfileUnderTest::default()
        }
    }

    /// Runs the plan against a workload that works when `works` says so.
    fn simulate(
        p: &ProfileUnderTest,
        minimal: bool,
        works: impl Fn(&BTreeSet<Capability>) -> bool,
    ) -> (Vec<Trial>, Conclusion) {
        let mut plan = Planner::new(p.clone(), minimal, p.pool());
        let mut runs = Vec::new();
        while let Some(t) = plan.next() {
            assert!(runs.len() < 64, "the plan does not end: {runs:?}");
            let ok = works(t.caps.as_ref().unwrap());
            runs.push(t);
            plan.record(ok);
        }
        (runs, plan.verdict())
    }

    fn kinds(runs: &[Trial]) -> Vec<TrialKind> {
        runs.iter().map(|t| t.kind).collect()
    }

    #[test]
    fn a_working_profile_whose_every_removal_breaks_is_minimal() {
        let p = profile(&[Capability::NET_ADMIN, NET_RAW], &[SYSLOG]);
        let (runs, v) = simulate(&p, true, |c| {
            c.contains(&NET_RAW) && c.contains(&Capability::NET_ADMIN)
        });
        // A refused capability is not tried when the profile works already.
        assert_eq!(
            kinds(&runs),
            [
                TrialKind::Profile,
                TrialKind::Without(Capability::NET_ADMIN),
                TrialKind::Without(NET_RAW)
            ]
        );
        assert_eq!(runs[1].caps, Some(set(&[NET_RAW])));
        assert!(v.works);
        assert_eq!(v.minimal, Some(true));
        assert_eq!(v.needed, [Capability::NET_ADMIN, NET_RAW]);
        assert_eq!(v.working, Some(p.required.clone()));
        assert_eq!(v.exit_code(), 0);
        // Without --minimal, one run.
        let (runs, v) = simulate(&p, false, |_| true);
        assert_eq!(kinds(&runs), [TrialKind::Profile]);
        assert_eq!((v.works, v.minimal, v.exit_code()), (true, None, 0));
    }

    #[test]
    fn removals_that_still_work_are_kept_so_the_result_was_run() {
        let p = profile(&[CHOWN, NET_RAW], &[]);
        let (runs, v) = simulate(&p, true, |c| c.contains(&NET_RAW));
        assert_eq!(v.minimal, Some(false));
        assert_eq!(v.unneeded, [CHOWN]);
        assert_eq!(v.needed, [NET_RAW]);
        assert_eq!(v.working, Some(set(&[NET_RAW])));
        assert_eq!(v.exit_code(), 1);
        // The second removal starts from the first one's set.
        assert_eq!(runs[2].caps, Some(BTreeSet::new()));
        // Either of two capabilities suffices: removed one at a time from the original set,
        // both would look unneeded; kept removals leave exactly one.
        let p = profile(&[DAC_OVERRIDE, DAC_READ_SEARCH], &[]);
        let (_, v) = simulate(&p, true, |c| {
            c.contains(&DAC_OVERRIDE) || c.contains(&DAC_READ_SEARCH)
        });
        assert_eq!(v.unneeded, [DAC_OVERRIDE]);
        assert_eq!(v.working, Some(set(&[DAC_READ_SEARCH])));
    }

    #[test]
    fn a_refused_capability_that_fixes_a_failing_profile_is_needed() {
        let p = profile(&[CHOWN], &[DAC_READ_SEARCH, SYSLOG]);
        let (runs, v) = simulate(&p, true, |c| {
            c.contains(&DAC_READ_SEARCH) && c.contains(&CHOWN)
        });
        assert_eq!(
            kinds(&runs),
            [
                TrialKind::Profile,
                TrialKind::WithRefused(DAC_READ_SEARCH),
                TrialKind::Without(CHOWN)
            ]
        );
        assert!(!v.works);
        assert_eq!(v.minimal, None);
        assert_eq!(v.needed_refused, [DAC_READ_SEARCH]);
        assert_eq!(v.working, Some(set(&[CHOWN, DAC_READ_SEARCH])));
        assert_eq!(v.exit_code(), 1);
    }

    #[test]
    fn a_missing_capability_is_found_by_bisection_of_the_engine_set() {
        // Every one of Docker's 14, alone missing from an empty profile: found in the defaults
        // run plus at most ceil(log2(14)) = 4 searches, and one to confirm it alone suffices.
        for needed in docker() {
            let p = profile(&[], &[SYSLOG]);
            let (runs, v) = simulate(&p, false, |c| c.contains(&needed));
            assert_eq!(v.missing, [needed], "{runs:?}");
            assert_eq!(v.unneeded_refused, [SYSLOG]);
            assert_eq!(v.working, Some(set(&[needed])), "{runs:?}");
            assert!(!v.beyond_pool);
            assert_eq!(runs[2].kind, TrialKind::Defaults);
            let searches = runs.iter().filter(|t| t.kind == TrialKind::Search).count();
            assert!(searches <= 5, "{needed}: {runs:?}");
            // The last search that worked ran exactly the result.
            assert!(runs.iter().any(|t| t.caps == v.working));
        }
    }

    #[test]
    fn two_missing_capabilities_are_both_found() {
        let p = profile(&[NET_RAW], &[]);
        let (_, v) = simulate(&p, true, |c| {
            [CHOWN, NET_RAW, Capability(31)]
                .iter()
                .all(|x| c.contains(x))
        });
        let mut missing = v.missing.clone();
        missing.sort();
        assert_eq!(missing, [CHOWN, Capability(31)]);
        assert_eq!(v.working, Some(set(&[CHOWN, NET_RAW, Capability(31)])));
        // The profile's own capability was then checked, and is needed.
        assert_eq!(v.needed, [NET_RAW]);
    }

    #[test]
    fn a_need_beyond_the_engine_set_is_said_so() {
        let p = profile(&[NET_RAW], &[]);
        let (runs, v) = simulate(&p, true, |c| c.contains(&Capability::SYS_ADMIN));
        assert_eq!(kinds(&runs), [TrialKind::Profile, TrialKind::Defaults]);
        assert!(v.beyond_pool);
        assert!(v.missing.is_empty());
        assert_eq!(v.working, None);
        // A profile that already holds the whole set: nothing more to try.
        let p = profile(&docker().into_iter().collect::<Vec<_>>(), &[]);
        let (runs, v) = simulate(&p, false, |_| false);
        assert_eq!(kinds(&runs), [TrialKind::Profile]);
        assert!(v.beyond_pool);
    }

    #[test]
    fn the_pool_is_what_the_report_says_was_granted() {
        let mut p = profile(&[], &[]);
        assert_eq!(p.pool(), docker());
        p.granted = Some(set(&[Capability::SYS_ADMIN, NET_RAW]));
        assert_eq!(p.pool(), set(&[Capability::SYS_ADMIN, NET_RAW]));
        let (_, v) = simulate(&p, false, |c| c.contains(&Capability::SYS_ADMIN));
        assert_eq!(v.missing, [Capability::SYS_ADMIN]);
    }

    #[test]
    fn profile_baseline_drift_and_verify_plan_agree() {
        use crate::model::check::Verdict;
        let rows = vec![
            raw(Capability::FSETID, Verdict::Granted, false, 0, SETGID_CHMOD),
            raw(
                Capability::NET_RAW,
                Verdict::Granted,
                false,
                0,
                &["security_capable+0x3b", "inet_create+0x10b"],
            ),
            raw(
                Capability::SYSLOG,
                Verdict::Denied,
                false,
                0,
                &["security_capable+0x3b", "do_syslog+0x1"],
            ),
            raw(
                Capability::SYS_ADMIN,
                Verdict::Granted,
                true,
                0,
                &["security_vm_enough_memory_mm+0x36"],
            ),
        ];
        let profile = Profile::from_checks(rows);
        assert_eq!(profile.required, BTreeSet::from([Capability::NET_RAW]));
        let report = crate::report::Report::new(
            crate::report::Subject::Container {
                id: "c".into(),
                name: None,
                image: None,
                workload: None,
            },
            "tp_btf",
            profile.clone(),
            crate::model::loss::LossCounters::default(),
        );
        let json = report.render(crate::report::Format::Json);
        let doc =
            crate::report::read::ProfileDoc::parse(std::path::Path::new("r.json"), &json).unwrap();
        assert_eq!(doc.required, profile.required);
        assert_eq!(doc.attempted, BTreeSet::from([Capability::SYSLOG]));
        let plan = ProfileUnderTest::from_report(&serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(plan.required, profile.required);
        assert_eq!(plan.refused, BTreeSet::from([Capability::SYSLOG]));
        // Drift judges the same rows the same way: only NET_RAW would be drift from nothing.
        let detector =
            crate::watch::drift::Detector::new(crate::watch::baseline::Baselines::default());
        let drift: BTreeSet<Capability> = profile
            .checks
            .iter()
            .filter(|c| {
                detector.classify("w", c.capability, c.class())
                    == Some(crate::watch::alert::AlertKind::Drift)
            })
            .map(|c| c.capability)
            .collect();
        assert_eq!(drift, profile.required);
    }
}
