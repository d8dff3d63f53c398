//! Watching for drift: baselines (the profile a workload is expected to stay within), the
//! detector that judges each new check against them, and the Prometheus metrics it exports.

pub mod alert;
pub mod baseline;
pub mod drift;
pub mod http;
pub mod metrics;
