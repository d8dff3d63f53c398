//! The shipped Prometheus rules (dist/prometheus/) pass `promtool check rules` and their unit
//! tests (`promtool test rules`). promtool comes with Debian's `prometheus` package (CI installs
//! it); without it these tests say so and pass.

use std::path::PathBuf;
use std::process::Command;

fn dist() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist/prometheus")
}

fn promtool(args: &[&str]) -> Option<String> {
    let out = match Command::new("promtool")
        .args(args)
        .current_dir(dist())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: promtool is not installed (apt-get install prometheus)");
            return None;
        }
        Err(e) => panic!("running promtool: {e}"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    Some(text)
}

#[test]
fn the_rules_are_valid() {
    if let Some(out) = promtool(&["check", "rules", "capspy-rules.yaml"]) {
        assert!(out.contains("SUCCESS"), "{out}");
    }
}

#[test]
fn the_rules_pass_their_unit_tests() {
    if let Some(out) = promtool(&["test", "rules", "capspy-rules.test.yaml"]) {
        assert!(out.contains("SUCCESS"), "{out}");
    }
}
