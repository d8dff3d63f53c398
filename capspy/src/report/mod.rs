//! Turning a profile into what people read or paste: a text table, a JSON document, and the
//! snippets each deployment takes (docker flags, compose, Kubernetes, OCI, systemd), all from the
//! one [`Report`].

mod deploy;
pub mod merge;
pub mod read;
mod text;
pub mod workloads;

pub use deploy::{compose, docker_flags, non_root_lines};
use deploy::{hook_notes, json, k8s, oci, profile_notes, systemd};
use text::text;

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::model::caps::Capability;
use crate::model::caps::serialize_opt_caps;
use crate::model::loss::LossCounters;
use crate::model::text::short_id;
use crate::profile::Profile;

/// Version of the JSON document (`schema/capspy-report.schema.json`); bumped on incompatible
/// changes. 2: `required` follows the DAC and user-namespace rules; findings and over-privilege
/// were added.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table of the checks and a reason per required capability.
    Text,
    /// The versioned JSON document.
    Json,
    /// `docker run` flags.
    Docker,
    /// A docker compose `services:` block.
    Compose,
    /// A Kubernetes container's `securityContext`.
    K8s,
    /// An OCI runtime spec's `process.capabilities`.
    Oci,
    /// systemd `[Service]` capability settings.
    Systemd,
}

/// What was traced. Also what profile documents are read back as (baselines, `capspy diff`,
/// `capspy merge`), lenient with the fields added over time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subject {
    Command {
        argv: Vec<String>,
        /// The command's exit code, or 128 + signal number, as a shell reports it.
        #[serde(default)]
        exit_code: i32,
        /// Tracing stopped early (Ctrl-C): the profile may be incomplete.
        #[serde(default)]
        interrupted: bool,
    },
    /// One container instance.
    Container {
        id: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        image: Option<String>,
        #[serde(default)]
        workload: Option<String>,
    },
    /// Every container of a workload (restarts and replicas merged).
    Workload {
        key: String,
        /// Container ids.
        #[serde(default)]
        containers: Vec<String>,
        /// The images its containers ran, when known.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        images: Vec<String>,
    },
}

/// What re-running the workload proved about its profile.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// Runs of the workload it took.
    pub runs: usize,
    /// The exit status that meant "works".
    pub expected_exit: i32,
    /// The smallest set that was run and worked; `null` when none did.
    #[serde(serialize_with = "serialize_opt_caps")]
    pub working: Option<BTreeSet<Capability>>,
    /// Recorded as required, removed: the workload passed without them.
    pub dropped: Vec<Verified>,
    /// Not recorded as required, added: the workload failed without them.
    pub added: Vec<Verified>,
    /// Why nothing worked, when nothing did.
    pub failure: Option<String>,
}

/// A capability verification moved, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Verified {
    #[serde(serialize_with = "crate::model::caps::serialize_cap")]
    pub capability: Capability,
    pub reason: String,
}

impl Subject {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Command { .. } => "command",
            Self::Container { .. } => "container",
            Self::Workload { .. } => "workload",
        }
    }

    /// The workload key a baseline of this subject applies to.
    pub fn workload(&self) -> Option<&str> {
        match self {
            Self::Workload { key, .. } => Some(key),
            Self::Container { workload, .. } => workload.as_deref(),
            Self::Command { .. } => None,
        }
    }

    /// The images it ran (none for a command).
    pub fn images(&self) -> Vec<String> {
        match self {
            Self::Workload { images, .. } => images.clone(),
            Self::Container { image, .. } => image.iter().cloned().collect(),
            Self::Command { .. } => Vec::new(),
        }
    }

    /// Container ids.
    pub fn containers(&self) -> Vec<String> {
        match self {
            Self::Workload { containers, .. } => containers.clone(),
            Self::Container { id, .. } => vec![id.clone()],
            Self::Command { .. } => Vec::new(),
        }
    }

    /// One line for people: `workload image:demo/busybox:1/pinger`.
    pub fn describe(&self) -> String {
        match self {
            Self::Command { argv, .. } => format!("command `{}`", argv.join(" ")),
            Self::Container { id, name, .. } => format!(
                "container {} ({})",
                name.as_deref().unwrap_or("?"),
                short_id(id)
            ),
            Self::Workload { key, .. } => format!("workload {key}"),
        }
    }
}

/// How much of the fleet a merged profile covers (`capspy merge`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    /// The nodes whose observations it holds, sorted.
    pub hosts: Vec<String>,
    /// Container instances, over every node.
    pub instances: usize,
    /// The earliest and latest observation.
    #[serde(
        serialize_with = "crate::model::time::serialize_time",
        deserialize_with = "crate::model::time::deserialize_time"
    )]
    pub first_seen: SystemTime,
    #[serde(
        serialize_with = "crate::model::time::serialize_time",
        deserialize_with = "crate::model::time::deserialize_time"
    )]
    pub last_seen: SystemTime,
}

/// A profile with its context: the unit every output format renders.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub subject: Subject,
    /// The attach method that produced the observations.
    pub hook: String,
    #[serde(flatten)]
    pub profile: Profile,
    pub docker_flags: String,
    pub losses: LossCounters,
    /// Caveats that apply to this report (e.g. the hook's blind spots).
    pub notes: Vec<String>,
    /// What re-running the workload under the profile proved (`--verify`); `required` is then
    /// the set that was run and worked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// The node the observations were made on (`record --node`, else its host name), when one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// For a profile merged from several nodes: which, how many instances, what time span.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Coverage>,
    /// The command that re-runs the workload and keeps only what removal proves (`capspy run
    /// --container --verify -- ...`), when capspy knows how to re-run it and something is
    /// unproven; it runs as printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_command: Option<String>,
    /// The service or container name the compose, Kubernetes and systemd outputs use; derived
    /// from the subject unless set (a compose service label, say).
    #[serde(skip)]
    pub service_name: Option<String>,
}

impl Report {
    pub fn new(subject: Subject, hook: &str, profile: Profile, losses: LossCounters) -> Self {
        let mut notes = hook_notes(hook);
        notes.extend(profile_notes(&profile));
        Self {
            schema_version: SCHEMA_VERSION,
            subject,
            hook: hook.to_string(),
            docker_flags: docker_flags(&profile),
            notes,
            profile,
            losses,
            verification: None,
            host: None,
            coverage: None,
            verify_command: None,
            service_name: None,
        }
    }

    /// Takes the verified set as `required`: what removal proved not needed leaves the profile,
    /// what a failing run proved missing joins it.
    #[must_use]
    pub fn with_verification(mut self, v: Verification) -> Self {
        if let Some(working) = &v.working {
            let p = &mut self.profile;
            p.required.clone_from(working);
            p.explanations.retain(|f| working.contains(&f.capability));
            // Each capability left was removed once and proved needed.
            p.unproven.clear();
            p.droppable = p
                .granted
                .as_ref()
                .map(|g| g.difference(working).copied().collect());
            self.docker_flags = docker_flags(p);
        }
        self.verification = Some(v);
        self
    }

    #[must_use]
    pub fn with_host(mut self, host: Option<String>) -> Self {
        self.host = host;
        self
    }

    #[must_use]
    pub fn with_service_name(mut self, name: Option<String>) -> Self {
        self.service_name = name;
        self
    }

    /// The name compose and Kubernetes outputs give this subject.
    pub fn name(&self) -> String {
        if let Some(name) = &self.service_name {
            return name.clone();
        }
        match &self.subject {
            Subject::Command { argv, .. } => argv
                .first()
                .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
                .unwrap_or_default(),
            Subject::Container { id, name, .. } => {
                name.clone().unwrap_or_else(|| short_id(id).to_string())
            }
            // `compose:project/service`, `k8s:ns/owner/container`, `image:ref/name`.
            Subject::Workload { key, .. } => key.rsplit('/').next().unwrap_or(key).to_string(),
        }
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Text => text(self),
            Format::Json => json(self),
            Format::Docker => format!("{}\n", self.docker_flags),
            Format::Compose => compose(std::slice::from_ref(self)),
            Format::K8s => k8s(self),
            Format::Oci => oci(self),
            Format::Systemd => systemd(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::deploy::{ComposeFile, K8sContainer, OciCapabilities};
    use super::*;
    use crate::model::caps::CapSet;
    use crate::model::check::{AuditClass, Bucket, Origin, UserNs, Verdict};
    use crate::profile::tests::{fact, row};

    fn report(rows: Vec<crate::model::check::CheckRow>) -> Report {
        Report::new(
            Subject::Command {
                argv: vec!["ping".into(), "-c1".into(), "127.0.0.1".into()],
                exit_code: 0,
                interrupted: false,
            },
            "tp_btf",
            Profile::from_checks(rows),
            LossCounters::default(),
        )
    }

    #[test]
    fn docker_flags_list_required_in_order() {
        let r = report(vec![
            row(
                Capability::NET_RAW,
                Verdict::Granted,
                AuditClass::Audited,
                1,
            ),
            row(Capability::CHOWN, Verdict::Granted, AuditClass::Audited, 1),
            row(
                Capability::SYS_ADMIN,
                Verdict::Granted,
                AuditClass::Advisory,
                9,
            ),
        ]);
        assert_eq!(
            r.render(Format::Docker),
            "--cap-drop ALL --cap-add CHOWN --cap-add NET_RAW\n"
        );
    }

    /// The unproven section ends with the command that proves them, when capspy has one (the
    /// command itself runs in tests/verify.rs), and in JSON too.
    #[test]
    fn unproven_capabilities_come_with_the_command_that_proves_them() {
        let mut r = report(vec![row(
            Capability::CHOWN,
            Verdict::Granted,
            AuditClass::Audited,
            1,
        )]);
        let text = r.render(Format::Text);
        assert!(text.contains("Unproven (required"), "{text}");
        assert!(
            text.contains("To prove them: capspy run --container --verify, or capspy profile"),
            "{text}"
        );
        r.verify_command =
            Some("capspy run --container --verify -- docker run --rm img".to_string());
        let text = r.render(Format::Text);
        assert!(
            text.contains(
                "\n  To prove them: capspy run --container --verify -- docker run --rm img\n"
            ),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&r.render(Format::Json)).unwrap();
        assert_eq!(
            json["verify_command"],
            "capspy run --container --verify -- docker run --rm img"
        );
    }

    #[test]
    fn nothing_required_is_drop_all() {
        let r = report(vec![]);
        assert_eq!(r.render(Format::Docker), "--cap-drop ALL\n");
        assert!(r.render(Format::Text).contains("Required: none"));
    }

    #[test]
    fn json_has_versioned_required_and_checks() {
        let r = report(vec![
            row(
                Capability::NET_RAW,
                Verdict::Granted,
                AuditClass::Audited,
                1,
            ),
            row(
                Capability::SYS_ADMIN,
                Verdict::Denied,
                AuditClass::Advisory,
                7,
            ),
        ]);
        let v: serde_json::Value = serde_json::from_str(&r.render(Format::Json)).unwrap();
        assert_eq!(v["schema_version"], SCHEMA_VERSION);
        assert_eq!(v["required"], serde_json::json!(["NET_RAW"]));
        assert_eq!(v["subject"]["kind"], "command");
        assert_eq!(v["subject"]["exit_code"], 0);
        let checks = v["checks"].as_array().unwrap();
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[1]["capability"], "SYS_ADMIN");
        assert_eq!(checks[1]["verdict"], "denied");
        assert_eq!(checks[1]["audit"], "advisory");
        assert_eq!(checks[1]["classified_by"], "call_path");
        assert_eq!(checks[1]["origin"], "check");
        assert_eq!(checks[1]["count"], 7);
        assert_eq!(checks[1]["example"]["comm"], "ping");
        assert_eq!(checks[0]["first_seen"], "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn text_names_each_check_and_the_flags() {
        let r = report(vec![row(
            Capability::NET_RAW,
            Verdict::Granted,
            AuditClass::Audited,
            1,
        )]);
        let t = r.render(Format::Text);
        assert!(t.contains("NET_RAW"), "{t}");
        assert!(t.contains("granted"), "{t}");
        assert!(t.contains("call_path"), "{t}");
        assert!(t.contains("Required: NET_RAW"), "{t}");
        assert!(t.contains("Apply: --cap-drop ALL --cap-add NET_RAW"), "{t}");
    }

    #[test]
    fn symbol_hooks_carry_their_blind_spots() {
        let mut r = report(vec![]);
        assert!(r.notes.is_empty());
        r = Report::new(
            r.subject.clone(),
            "fexit",
            Profile::default(),
            LossCounters::default(),
        );
        assert!(r.render(Format::Text).contains("PR_SET_SECUREBITS"));
    }

    /// Names that break naive YAML, JSON, shell or terminal output.
    const HOSTILE: &[&str] = &[
        "web",
        "a\nb: c",
        "\"quoted' name",
        "- item",
        "key: value",
        "#comment",
        "&anchor *alias",
        "!!python/object",
        "yes",
        "off",
        "null",
        "~",
        "0x10",
        " padded ",
        "line\u{2028}separator",
        "next\u{85}line",
        "tab\there",
        "",
        "{flow}",
        "[seq]",
        "$(rm -rf /); `id` | x > y",
        "crlf\r\ninjected: true",
        "nul\u{0}byte",
        "\u{1b}[31mred",
        "---",
        "? complex",
    ];

    /// A report with every list filled: required with reasons, a refusal, a userns-only grant,
    /// advisory checks, granted and droppable, and a runtime row.
    fn full_report(subject: Subject) -> Report {
        let mut nested = row(
            Capability::SYS_ADMIN,
            Verdict::Granted,
            AuditClass::Audited,
            2,
        );
        nested.user_namespace = UserNs::Other;
        let mut runc = row(
            Capability(8), // SETPCAP
            Verdict::Granted,
            AuditClass::Audited,
            3,
        );
        runc.bucket = Bucket::Runtime;
        runc.example.comm = "runc:[2:INIT]".into();
        let profile = Profile::from_checks(vec![
            row(
                Capability::NET_RAW,
                Verdict::Granted,
                AuditClass::Audited,
                1,
            ),
            row(
                Capability::NET_BIND_SERVICE,
                Verdict::Granted,
                AuditClass::Audited,
                1,
            ),
            row(Capability::SYSLOG, Verdict::Denied, AuditClass::Audited, 4),
            row(
                Capability::SYS_ADMIN,
                Verdict::Denied,
                AuditClass::Advisory,
                40,
            ),
            nested,
            runc,
        ])
        .with_granted(Some(CapSet::from_hex("00000000a80425fb").unwrap()));
        Report::new(subject, "tp_btf", profile, LossCounters::default())
    }

    fn subjects(name: &str) -> Vec<Subject> {
        vec![
            Subject::Command {
                argv: vec![name.into(), "-c1".into()],
                exit_code: 0,
                interrupted: false,
            },
            Subject::Container {
                id: "0123456789abcdef".repeat(4),
                name: Some(name.into()),
                image: Some(format!("{name}:latest")),
                workload: Some(format!("compose:{name}/{name}")),
            },
            Subject::Workload {
                key: format!("image:busybox/{name}"),
                containers: vec!["0123456789ab".into()],
                images: vec!["busybox:1".into()],
            },
        ]
    }

    #[test]
    fn json_reports_validate_against_the_schema_file() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../schema/capspy-report.schema.json"))
                .unwrap();
        let validator = jsonschema::validator_for(&schema).expect("the schema is valid");
        let mut reports = vec![
            report(vec![]),
            Report::new(
                Subject::Command {
                    argv: vec![],
                    exit_code: 130,
                    interrupted: true,
                },
                "fexit",
                Profile::default(),
                LossCounters {
                    sightings_lost: 1,
                    checks_overflow: 2,
                    unclassified: 3,
                    cgroups_lost: 4,
                },
            ),
        ];
        for name in HOSTILE {
            reports.extend(subjects(name).into_iter().map(full_report));
        }
        // Capabilities kept without a check: a required one and a refused one.
        reports.push(report(vec![
            fact(
                Capability(25), // SYS_TIME
                Origin::Capset,
                Verdict::Granted,
                105,
            ),
            fact(
                Capability(23), // SYS_NICE
                Origin::Ambient,
                Verdict::Denied,
                105,
            ),
        ]));
        for r in &reports {
            let v: serde_json::Value = serde_json::from_str(&r.render(Format::Json)).unwrap();
            let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{errors:#?}\n{v:#}");
        }
        // The schema is strict: a field it does not document fails.
        let mut v: serde_json::Value =
            serde_json::from_str(&reports[0].render(Format::Json)).unwrap();
        v["surprise"] = serde_json::json!(1);
        assert!(!validator.is_valid(&v));
    }

    #[test]
    fn json_carries_findings_and_over_privilege() {
        let r = full_report(subjects("pinger").remove(1));
        let v: serde_json::Value = serde_json::from_str(&r.render(Format::Json)).unwrap();
        assert_eq!(
            v["required"],
            serde_json::json!(["NET_BIND_SERVICE", "NET_RAW"])
        );
        assert_eq!(v["explanations"][0]["capability"], "NET_BIND_SERVICE");
        assert!(
            v["explanations"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("listen on a high port instead")
        );
        assert_eq!(v["refused"][0]["capability"], "SYSLOG");
        assert_eq!(v["refused"][0]["evidence"]["count"], 4);
        assert_eq!(v["userns_only"][0]["capability"], "SYS_ADMIN");
        assert_eq!(v["userns_only"][0]["user_namespace"], "other");
        assert_eq!(v["advisory"], serde_json::json!([]));
        assert_eq!(v["granted"].as_array().unwrap().len(), 14);
        // NET_BIND_SERVICE and NET_RAW are in Docker's default set: 12 left to drop.
        assert_eq!(v["droppable"].as_array().unwrap().len(), 12);
        assert!(v["notes"][0].as_str().unwrap().contains("userns-remap"));
        let plain = report(vec![]);
        let v: serde_json::Value = serde_json::from_str(&plain.render(Format::Json)).unwrap();
        assert!(v["granted"].is_null() && v["droppable"].is_null());
    }

    #[test]
    fn compose_round_trips_for_hostile_service_names() {
        for name in HOSTILE {
            for subject in subjects(name) {
                let r = full_report(subject);
                let out = r.render(Format::Compose);
                let body: String = out
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .collect::<Vec<_>>()
                    .join("\n");
                let parsed: ComposeFile = serde_saphyr::from_str(&body)
                    .unwrap_or_else(|e| panic!("{name:?}: {e}\n{out}"));
                let service = &parsed.services[&r.name()];
                assert_eq!(service.cap_drop, ["ALL"], "{out}");
                assert_eq!(service.cap_add, ["NET_BIND_SERVICE", "NET_RAW"], "{out}");
                assert_eq!(parsed.services.len(), 1);
            }
        }
    }

    #[test]
    fn compose_is_the_guides_block() {
        let r = report(vec![row(
            Capability::NET_BIND_SERVICE,
            Verdict::Granted,
            AuditClass::Audited,
            1,
        )])
        .with_service_name(Some("api".into()));
        assert_eq!(
            r.render(Format::Compose),
            "# capspy: least privilege observed; merge into your compose file's services\n\
             services:\n  api:\n    cap_drop:\n    - ALL\n    cap_add:\n    - NET_BIND_SERVICE\n"
        );
        // Nothing required: no empty cap_add.
        let none = report(vec![]).with_service_name(Some("nginx".into()));
        assert!(
            none.render(Format::Compose)
                .ends_with("services:\n  nginx:\n    cap_drop:\n    - ALL\n")
        );
    }

    #[test]
    fn compose_project_lists_every_service() {
        let api = report(vec![row(
            Capability::NET_BIND_SERVICE,
            Verdict::Granted,
            AuditClass::Audited,
            1,
        )])
        .with_service_name(Some("api".into()));
        let nginx = report(vec![]).with_service_name(Some("nginx".into()));
        let parsed: ComposeFile = serde_saphyr::from_str(&compose(&[api, nginx])).unwrap();
        assert_eq!(parsed.services.len(), 2);
        assert_eq!(parsed.services["api"].cap_add, ["NET_BIND_SERVICE"]);
        assert!(parsed.services["nginx"].cap_add.is_empty());
    }

    #[test]
    fn k8s_round_trips_for_hostile_container_names() {
        for name in HOSTILE {
            for subject in subjects(name) {
                let r = full_report(subject);
                let out = r.render(Format::K8s);
                let parsed: Vec<K8sContainer> =
                    serde_saphyr::from_str(&out).unwrap_or_else(|e| panic!("{name:?}: {e}\n{out}"));
                assert_eq!(parsed.len(), 1);
                assert_eq!(parsed[0].name, r.name());
                let caps = &parsed[0].security_context.capabilities;
                assert_eq!(caps.drop, ["ALL"]);
                assert_eq!(caps.add, ["NET_BIND_SERVICE", "NET_RAW"]);
            }
        }
        let r = report(vec![]).with_service_name(Some("web".into()));
        assert!(
            r.render(Format::K8s).ends_with(
                "- name: web\n  securityContext:\n    capabilities:\n      drop:\n      - ALL\n"
            ),
            "{}",
            r.render(Format::K8s)
        );
    }

    #[test]
    fn oci_is_the_process_capabilities_object() {
        let r = full_report(subjects("x").remove(0));
        let parsed: OciCapabilities = serde_json::from_str(&r.render(Format::Oci)).unwrap();
        let want = vec![
            "CAP_NET_BIND_SERVICE".to_string(),
            "CAP_NET_RAW".to_string(),
        ];
        assert_eq!(
            parsed,
            OciCapabilities {
                bounding: want.clone(),
                effective: want.clone(),
                permitted: want,
                inheritable: vec![],
                ambient: vec![],
            }
        );
    }

    #[test]
    fn systemd_resets_then_sets_both_lines() {
        let r = full_report(subjects("x").remove(0));
        let out = r.render(Format::Systemd);
        let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "[Service]",
                "CapabilityBoundingSet=",
                "CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW",
                "AmbientCapabilities=",
                "AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW",
            ]
        );
        let none = report(vec![]).render(Format::Systemd);
        assert!(none.ends_with("[Service]\nCapabilityBoundingSet=\nAmbientCapabilities=\n"));
    }

    #[test]
    fn hostile_names_cannot_add_lines_to_text_or_comments() {
        for name in HOSTILE {
            for subject in subjects(name) {
                let r = full_report(subject);
                for format in [Format::Systemd, Format::Docker] {
                    let out = r.render(format);
                    // Every line is one the renderer wrote: a comment, a section or a setting.
                    for line in out.lines() {
                        assert!(
                            line.starts_with('#')
                                || line.starts_with('[')
                                || line.starts_with("Capability")
                                || line.starts_with("Ambient")
                                || line.starts_with("--cap-drop ALL"),
                            "{name:?}: {line:?}"
                        );
                    }
                }
                let text = r.render(Format::Text);
                assert!(!text.contains('\u{1b}'), "{name:?}");
                assert!(!text.contains("\ninjected"), "{name:?}");
                assert!(text.lines().next().unwrap().starts_with("capspy: "));
            }
        }
    }

    #[test]
    fn text_gives_reasons_refusals_and_what_to_drop() {
        let t = full_report(subjects("pinger").remove(1)).render(Format::Text);
        assert!(t.contains("Required: NET_BIND_SERVICE, NET_RAW"), "{t}");
        assert!(
            t.contains("bound a port below 1024; or listen on a high port instead"),
            "{t}"
        );
        assert!(t.contains("Refused"), "{t}");
        assert!(t.contains("SYSLOG"), "{t}");
        assert!(t.contains("User namespace only"), "{t}");
        assert!(
            t.contains("droppable (granted, never required): CHOWN, DAC_OVERRIDE"),
            "{t}"
        );
        assert!(t.contains("FIRST SEEN"), "{t}");
        assert!(t.contains("2023-11-14 22:13:20"), "{t}");
        assert!(t.contains("Container runtime setup"), "{t}");
        assert!(t.contains("Apply: --cap-drop ALL --cap-add NET_BIND_SERVICE --cap-add NET_RAW"));
    }

    #[test]
    fn non_root_advice_reaches_every_format() {
        let mut denied = row(
            Capability::NET_BIND_SERVICE,
            Verdict::Denied,
            AuditClass::Audited,
            1,
        );
        denied.example.uid = 1000;
        denied.example.comm = "nc".into();
        denied.example.exe = Some("/bin/busybox".into());
        let r = report(vec![denied]);
        let setcap = "RUN setcap cap_net_bind_service+ep /bin/busybox";
        let text = r.render(Format::Text);
        assert!(text.contains(&format!("Dockerfile: {setcap}")), "{text}");
        assert!(
            text.contains(
                "With file capabilities, apply: --cap-drop ALL --cap-add NET_BIND_SERVICE"
            ),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&r.render(Format::Json)).unwrap();
        assert_eq!(json["non_root"][0]["dockerfile"], setcap);
        assert_eq!(json["non_root"][0]["process"]["exe"], "/bin/busybox");
        for format in [Format::Compose, Format::K8s] {
            let out = r.render(format);
            assert!(out.contains(&format!("# Dockerfile: {setcap}")), "{out}");
        }
        // The docker format stays the flags alone (the commands print the advice on stderr).
        assert_eq!(r.render(Format::Docker), "--cap-drop ALL\n");
    }
}
