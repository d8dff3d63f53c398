//! One module per CLI command.

pub mod baseline;
pub mod bench_probe;
pub mod caps;
pub mod decode;
pub mod diff;
pub mod doctor;
pub mod ls;
pub mod profile;
pub mod record;
pub mod run;
pub mod verify;
pub mod watch;
