//! One module per CLI command.

pub mod baseline;
pub mod bench_probe;
pub mod caps;
pub mod decode;
pub mod diff;
pub mod docker_cli;
pub mod doctor;
pub mod logger;
pub mod ls;
pub mod merge;
pub mod profile;
pub mod record;
pub mod run;
pub mod verify;
pub mod watch;

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};

/// A command's own output stream, where its report goes without `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Writes a report to `--output FILE`, to standard output for `--output -`, else to `default`.
pub fn emit(text: &str, output: Option<&Path>, default: Stream) -> Result<()> {
    let stream = match output {
        Some(path) if path != Path::new("-") => {
            return std::fs::write(path, text)
                .with_context(|| format!("writing the report to {}", path.display()));
        }
        Some(_) => Stream::Stdout,
        None => default,
    };
    match stream {
        Stream::Stdout => std::io::stdout().lock().write_all(text.as_bytes())?,
        Stream::Stderr => std::io::stderr().lock().write_all(text.as_bytes())?,
    }
    Ok(())
}
