//! One module per CLI command.

pub mod doctor;
pub mod run;
