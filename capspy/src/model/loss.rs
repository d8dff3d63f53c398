//! What capspy could not see: counters the kernel program keeps about its own losses.

/// Counters the kernel program keeps about its own losses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LossCounters {
    /// First-sighting records the ring buffer had no room for.
    pub sightings_lost: u64,
    /// Checks whose new key did not fit in the aggregation map.
    pub checks_overflow: u64,
    /// Checks whose call path could not be read (counted as audited).
    pub unclassified: u64,
    /// `cgroup_mkdir` records the ring buffer had no room for: a cgroup removed before a walk
    /// found it is stored unattributed. Absent from documents written before it (0).
    #[serde(default)]
    pub cgroups_lost: u64,
}

impl LossCounters {
    /// Adds `other`'s counts (another session's, or another node's).
    pub fn add(&mut self, other: &LossCounters) {
        self.sightings_lost = self.sightings_lost.saturating_add(other.sightings_lost);
        self.checks_overflow = self.checks_overflow.saturating_add(other.checks_overflow);
        self.unclassified = self.unclassified.saturating_add(other.unclassified);
        self.cgroups_lost = self.cgroups_lost.saturating_add(other.cgroups_lost);
    }
}
