//! capspy's own diagnostics (`log::warn!` and friends from every stage) on standard error, as
//! `capspy: warning: ...` lines. `CAPSPY_LOG=error|warn|info|debug|trace` sets the level
//! (default `warn`); an unknown value is refused at start with a one-line error.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        eprintln!("capspy: {level}: {}", record.args());
    }

    fn flush(&self) {}
}

/// Installs the logger; `Err` names a bad `CAPSPY_LOG`.
pub fn init() -> Result<(), String> {
    let level = match std::env::var("CAPSPY_LOG") {
        Err(_) => LevelFilter::Warn,
        Ok(v) => parse(&v)
            .ok_or_else(|| format!("CAPSPY_LOG={v:?}: use error, warn, info, debug or trace"))?,
    };
    log::set_max_level(level);
    // Only fails if a logger is already set (a second call): nothing to do then.
    let _ = log::set_logger(&Stderr);
    Ok(())
}

fn parse(v: &str) -> Option<LevelFilter> {
    match v.trim().to_ascii_lowercase().as_str() {
        "off" => Some(LevelFilter::Off),
        "error" => Some(LevelFilter::Error),
        "warn" | "warning" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse() {
        assert_eq!(parse("DEBUG"), Some(LevelFilter::Debug));
        assert_eq!(parse(" warning "), Some(LevelFilter::Warn));
        assert_eq!(parse("off"), Some(LevelFilter::Off));
        assert_eq!(parse("loud"), None);
    }
}
