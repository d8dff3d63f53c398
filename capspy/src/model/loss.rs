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
}
