//! The kinds of finding `capspy watch` alerts on, shared by the detector that raises them
//! ([`super::drift`]) and the metrics that count them ([`super::metrics`]).

use serde::Serialize;

/// What a finding says about a workload's check (see [`super::drift`] for when each is raised).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    Drift,
    Attempted,
    NewWorkload,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drift => "drift",
            Self::Attempted => "attempted",
            Self::NewWorkload => "new_workload",
        }
    }

    /// The kind [`Self::as_str`] names.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Drift, Self::Attempted, Self::NewWorkload]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}
