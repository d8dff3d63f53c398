//! One module per CLI command.

pub mod bench_probe;
pub mod doctor;
pub mod ls;
pub mod profile;
pub mod record;
pub mod run;
pub mod verify;
