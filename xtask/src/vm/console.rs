//! The `CAPSPY-*` protocol lines on a VM's console: progress on the terminal, and parsing.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

/// Progress on the terminal: the protocol lines in short, the rest (kernel, init) as is.
pub(super) fn echo(label: &str, line: &str) {
    let Some(at) = line.find("CAPSPY-") else {
        let printable = strip_escapes(line);
        if !printable.trim().is_empty() {
            eprintln!("{label}| {printable}");
        }
        return;
    };
    let line = &line[at..];
    if let Some(rest) = line.strip_prefix("CAPSPY-RESULT ") {
        let mut f = rest.splitn(4, ' ');
        let (scenario, hook, status) = (f.next(), f.next(), f.next());
        eprintln!(
            "{label}| {} --hook {}: exit {}",
            scenario.unwrap_or("?"),
            hook.unwrap_or("?"),
            status.unwrap_or("?")
        );
    } else if line.starts_with("CAPSPY-VM-") || line.starts_with("CAPSPY-DOCTOR-EXIT") {
        eprintln!("{label}| {line}");
    }
}

/// The text of a console line without terminal escape sequences (`ESC [ ... letter`) and other
/// control characters, which the firmware prints.
fn strip_escapes(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if !ch.is_control() {
            out.push(ch);
        }
    }
    out
}

pub(super) struct Run {
    pub(super) scenario: String,
    pub(super) hook: String,
    pub(super) status: i32,
    pub(super) report: Option<Value>,
    /// What capspy and the command printed.
    pub(super) log: Vec<String>,
}

#[derive(Default)]
pub(super) struct Doctor {
    pub(super) lines: Vec<String>,
    pub(super) status: Option<i32>,
}

#[derive(Default)]
pub(super) struct Session {
    pub(super) release: String,
    pub(super) runs: Vec<Run>,
    pub(super) doctors: BTreeMap<String, Doctor>,
    /// Lines that looked like results but could not be read (a garbled console line).
    pub(super) garbled: Vec<String>,
}

impl Session {
    pub(super) fn run(&self, scenario: &str, hook: &str) -> Option<&Run> {
        self.runs
            .iter()
            .find(|r| r.scenario == scenario && r.hook == hook)
    }
}

pub(super) fn parse(lines: &[String]) -> Session {
    let mut s = Session::default();
    let mut logs: HashMap<(String, String), Vec<String>> = HashMap::new();
    for line in lines {
        // Firmware escape sequences can precede the first line on the console.
        let Some(at) = line.find("CAPSPY-") else {
            continue;
        };
        let line = &line[at..];
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        match tag {
            "CAPSPY-VM-BEGIN" | "CAPSPY-NATIVE-BEGIN" => s.release = rest.trim().to_string(),
            "CAPSPY-LOG" => {
                let mut f = rest.splitn(3, ' ');
                if let (Some(scenario), Some(hook)) = (f.next(), f.next()) {
                    logs.entry((scenario.into(), hook.into()))
                        .or_default()
                        .push(f.next().unwrap_or("").to_string());
                }
            }
            "CAPSPY-RESULT" => {
                let mut f = rest.splitn(4, ' ');
                let (Some(scenario), Some(hook), Some(Ok(status)), Some(json)) =
                    (f.next(), f.next(), f.next().map(str::parse), f.next())
                else {
                    s.garbled.push(line.to_string());
                    continue;
                };
                let report = if json == "-" {
                    None
                } else if let Ok(v) = serde_json::from_str(json) {
                    Some(v)
                } else {
                    s.garbled.push(line.to_string());
                    continue;
                };
                s.runs.push(Run {
                    scenario: scenario.into(),
                    hook: hook.into(),
                    status,
                    report,
                    log: logs
                        .remove(&(scenario.to_string(), hook.to_string()))
                        .unwrap_or_default(),
                });
            }
            "CAPSPY-DOCTOR" => {
                let (label, text) = rest.split_once(' ').unwrap_or((rest, ""));
                s.doctors
                    .entry(label.into())
                    .or_default()
                    .lines
                    .push(text.to_string());
            }
            "CAPSPY-DOCTOR-EXIT" => {
                let mut f = rest.split_whitespace();
                if let Some(label) = f.next() {
                    s.doctors.entry(label.into()).or_default().status =
                        f.next().and_then(|v| v.parse().ok());
                }
            }
            _ => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::evaluate::strings;

    #[test]
    fn console_lines_are_parsed() {
        let lines: Vec<String> = [
            "\u{1b}[2JCAPSPY-VM-BEGIN 6.1.0-47-cloud-amd64",
            "CAPSPY-LOG ping fexit PING 127.0.0.1",
            r#"CAPSPY-RESULT ping fexit 0 {  "required": [    "NET_RAW"  ],  "hook": "fexit"}"#,
            "CAPSPY-RESULT no-btf kprobe 2 -",
            "CAPSPY-RESULT true fexit 0 {\"trunc",
            "CAPSPY-DOCTOR btf   fexit           loads and attaches",
            "CAPSPY-DOCTOR-EXIT btf 0",
            "[   15.9] reboot: Power down",
        ]
        .map(String::from)
        .to_vec();
        let s = parse(&lines);
        assert_eq!(s.release, "6.1.0-47-cloud-amd64");
        let ping = s.run("ping", "fexit").unwrap();
        assert_eq!(ping.status, 0);
        assert_eq!(ping.log, ["PING 127.0.0.1"]);
        assert_eq!(strings(&ping.report.as_ref().unwrap()["required"]).len(), 1);
        assert!(s.run("no-btf", "kprobe").unwrap().report.is_none());
        assert_eq!(s.garbled.len(), 1);
        let doctor = &s.doctors["btf"];
        assert_eq!(doctor.status, Some(0));
        assert_eq!(doctor.lines, ["  fexit           loads and attaches"]);
    }

    #[test]
    fn escapes_are_stripped() {
        assert_eq!(
            strip_escapes("c\u{1b}[?7l\u{1b}[2J\u{1b}[0mSeaBIOS (version 1.16)\r"),
            "cSeaBIOS (version 1.16)"
        );
    }
}
