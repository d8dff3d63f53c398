//! Turning a profile into what people read or paste: a text table, a JSON document, and the
//! snippets each deployment takes (docker flags, compose, Kubernetes, OCI, systemd), all from the
//! one [`Report`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::caps::Capability;
use crate::collector::LossCounters;
use crate::profile::{
    AuditClass, Bucket, CheckRow, Classifier, Finding, ProcessRef, Profile, UserNs, Verdict,
    serialize_opt_caps,
};
use crate::text::{printable, short_id};

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
    #[serde(serialize_with = "crate::profile::serialize_cap")]
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
        serialize_with = "crate::profile::serialize_time",
        deserialize_with = "crate::profile::deserialize_time"
    )]
    pub first_seen: SystemTime,
    #[serde(
        serialize_with = "crate::profile::serialize_time",
        deserialize_with = "crate::profile::deserialize_time"
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

fn json<T: Serialize>(value: &T) -> String {
    // Serializing these plain structs cannot fail; say so rather than print nothing.
    let mut s = serde_json::to_string_pretty(value)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string());
    s.push('\n');
    s
}

fn yaml<T: Serialize>(value: &T) -> String {
    serde_saphyr::to_string(value).unwrap_or_else(|e| format!("# capspy: YAML error: {e}\n"))
}

/// A capability as docker, compose and Kubernetes take it: `NET_RAW`.
fn bare_names(caps: &BTreeSet<Capability>) -> Vec<String> {
    caps.iter().map(ToString::to_string).collect()
}

/// A capability as OCI and systemd take it: `CAP_NET_RAW`.
fn cap_names(caps: &BTreeSet<Capability>) -> Vec<String> {
    caps.iter()
        .map(|c| {
            let name = c.to_string();
            if name.starts_with("CAP_") {
                name
            } else {
                format!("CAP_{name}")
            }
        })
        .collect()
}

/// `# line` for each line.
fn comment_lines(lines: &[String]) -> String {
    let mut out = String::new();
    for l in lines {
        let _ = writeln!(out, "# {}", comment_safe(l.trim_start()));
    }
    out
}

/// For `# ...` lines of YAML and systemd output: a name with line breaks (including YAML 1.1's
/// NEL, LS, PS) or other control characters would end the comment early.
fn comment_safe(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                c.escape_unicode().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[derive(Serialize)]
#[cfg_attr(test, derive(serde::Deserialize, Debug, PartialEq))]
struct ComposeFile {
    services: BTreeMap<String, ComposeService>,
}

#[derive(Serialize, Default)]
#[cfg_attr(test, derive(serde::Deserialize, Debug, PartialEq))]
struct ComposeService {
    cap_drop: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    cap_add: Vec<String>,
}

/// `services.<name>.cap_drop: [ALL]` and `cap_add`, one service per report; two reports with
/// one name (should not happen) get the union, which is sufficient for both.
pub fn compose(reports: &[Report]) -> String {
    let mut required: BTreeMap<String, BTreeSet<Capability>> = BTreeMap::new();
    for r in reports {
        required
            .entry(r.name())
            .or_default()
            .extend(r.profile.required.iter().copied());
    }
    let file = ComposeFile {
        services: required
            .into_iter()
            .map(|(name, caps)| {
                let service = ComposeService {
                    cap_drop: vec!["ALL".into()],
                    cap_add: bare_names(&caps),
                };
                (name, service)
            })
            .collect(),
    };
    let mut out = String::from(
        "# capspy: least privilege observed; merge into your compose file's services\n",
    );
    for r in reports {
        out.push_str(&comment_lines(&non_root_lines(r)));
    }
    out.push_str(&yaml(&file));
    out
}

#[derive(Serialize)]
#[cfg_attr(test, derive(serde::Deserialize, Debug, PartialEq))]
struct K8sContainer {
    name: String,
    #[serde(rename = "securityContext")]
    security_context: K8sSecurityContext,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(serde::Deserialize, Debug, PartialEq))]
struct K8sSecurityContext {
    capabilities: K8sCapabilities,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(serde::Deserialize, Debug, PartialEq))]
struct K8sCapabilities {
    drop: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    add: Vec<String>,
}

/// A `containers:` list item with the container's `securityContext.capabilities`.
fn k8s(report: &Report) -> String {
    let container = K8sContainer {
        name: report.name(),
        security_context: K8sSecurityContext {
            capabilities: K8sCapabilities {
                drop: vec!["ALL".into()],
                add: bare_names(&report.profile.required),
            },
        },
    };
    let mut out =
        String::from("# capspy: least privilege observed; merge into the pod spec's containers\n");
    out.push_str(&comment_lines(&non_root_lines(report)));
    out.push_str(&yaml(&[container]));
    out
}

/// An OCI runtime spec's `process.capabilities`: the required set in the three sets the kernel
/// checks and bounds with; nothing inherited or ambient.
#[derive(Serialize)]
#[cfg_attr(test, derive(serde::Deserialize, Debug, PartialEq))]
struct OciCapabilities {
    bounding: Vec<String>,
    effective: Vec<String>,
    permitted: Vec<String>,
    inheritable: Vec<String>,
    ambient: Vec<String>,
}

fn oci(report: &Report) -> String {
    let caps = cap_names(&report.profile.required);
    json(&OciCapabilities {
        bounding: caps.clone(),
        effective: caps.clone(),
        permitted: caps,
        inheritable: Vec::new(),
        ambient: Vec::new(),
    })
}

/// A `[Service]` drop-in. The empty assignments first reset what the unit set (systemd merges
/// repeated capability settings); an empty bounding set means no capabilities at all. Ambient
/// capabilities give the set to a service that runs as a non-root `User=`.
fn systemd(report: &Report) -> String {
    let caps = cap_names(&report.profile.required).join(" ");
    let mut out = format!(
        "# capspy: least privilege observed for {}\n[Service]\nCapabilityBoundingSet=\n",
        comment_safe(&report.name())
    );
    if !caps.is_empty() {
        let _ = writeln!(out, "CapabilityBoundingSet={caps}");
    }
    out.push_str("AmbientCapabilities=\n");
    if !caps.is_empty() {
        let _ = writeln!(out, "AmbientCapabilities={caps}");
    }
    out
}

/// Caveats that follow from the profile itself.
fn profile_notes(profile: &Profile) -> Vec<String> {
    let mut notes = Vec::new();
    if !profile.userns_only.is_empty() {
        notes.push(
            "userns-only capabilities were granted against a user namespace other than the \
             initial one, such as one the workload created (unshare, sandboxes): held there \
             without any cap_add. If the workload itself runs in a user namespace (Docker \
             userns-remap, rootless Docker or Podman), its engine's --cap-add still governs \
             them: add them there"
                .to_string(),
        );
    }
    if profile
        .explanations
        .iter()
        .any(|f| f.user_namespace == UserNs::Unknown)
    {
        notes.push(
            "the kernel had no BTF to tell user namespaces apart: checks of unknown user \
             namespace count as the host's"
                .to_string(),
        );
    }
    notes
}

/// Symbol-based hooks miss the call sites where the compiler inlined `cap_capable`
/// (measured on Debian 5.10, 6.1 and 6.12 by `cargo xtask vm-test`; see docs/kernel-matrix.md).
fn hook_notes(hook: &str) -> Vec<String> {
    match hook {
        "fexit" | "kprobe" => vec![format!(
            "{hook} cannot see checks where the kernel inlined cap_capable (cap_task_prctl, \
             cap_capset, cap_vm_enough_memory, cap_mmap_addr on many kernels): e.g. SETPCAP for \
             prctl(PR_SET_SECUREBITS) and SYS_RAWIO for mmap below mmap_min_addr are missed; \
             see docs/kernel-matrix.md"
        )],
        _ => Vec::new(),
    }
}

/// `--cap-drop ALL --cap-add X ...`, the form docker run takes.
pub fn docker_flags(profile: &Profile) -> String {
    flags_for(&profile.required)
}

fn flags_for(caps: &BTreeSet<Capability>) -> String {
    let mut flags = String::from("--cap-drop ALL");
    for cap in caps {
        let _ = write!(flags, " --cap-add {cap}");
    }
    flags
}

fn text(report: &Report) -> String {
    let mut out = String::new();
    header(&mut out, report);
    let checks = &report.profile.checks;
    let in_bucket = |b: Bucket| checks.iter().filter(|c| c.bucket == b).collect::<Vec<_>>();
    let (app, runtime, borrowed) = (
        in_bucket(Bucket::App),
        in_bucket(Bucket::Runtime),
        in_bucket(Bucket::Borrowed),
    );
    if app.is_empty() {
        out.push_str("No capability checks were observed.\n");
    } else {
        table(&mut out, &app);
    }
    if !runtime.is_empty() {
        out.push_str(
            "\nContainer runtime setup (before the entrypoint; not the workload's needs):",
        );
        table(&mut out, &runtime);
    }
    if !borrowed.is_empty() {
        out.push_str(
            "\nOn other credentials (the kernel acting for someone else, e.g. overlayfs copy-up):",
        );
        table(&mut out, &borrowed);
    }
    let profile = &report.profile;
    let denied = app.iter().any(|c| c.verdict == Verdict::Denied);
    out.push('\n');
    if profile.required.is_empty() {
        out.push_str("Required: none\n");
    } else {
        let names = bare_names(&profile.required);
        let _ = writeln!(out, "Required: {}", names.join(", "));
        findings(&mut out, &profile.explanations, false);
    }
    if !profile.refused.is_empty() {
        out.push_str(
            "Refused (only ever denied; not required, but the workload may need it: verify by \
             running without it):\n",
        );
        findings(&mut out, &profile.refused, true);
    }
    if !profile.userns_only.is_empty() {
        out.push_str(
            "User namespace only (granted inside a user namespace other than the initial one; \
             not a host-level cap_add):\n",
        );
        findings(&mut out, &profile.userns_only, true);
    }
    if !profile.advisory.is_empty() {
        let _ = writeln!(
            out,
            "Advisory only: {} (noaudit checks only choose a behaviour: never required)",
            bare_names(&profile.advisory).join(", ")
        );
    }
    behaviour_sections(&mut out, report);
    if denied && profile.refused.is_empty() {
        out.push_str(
            "Denied checks are not required on their own (programs often fall back); verify by running without them.\n",
        );
    }
    if let (Some(granted), Some(droppable)) = (&profile.granted, &profile.droppable) {
        let _ = writeln!(
            out,
            "Granted: {} of 41; droppable (granted, never required): {}",
            granted.len(),
            if droppable.is_empty() {
                "none".to_string()
            } else {
                bare_names(droppable).join(", ")
            }
        );
    }
    let l = &report.losses;
    if l.checks_overflow > 0 || l.sightings_lost > 0 || l.unclassified > 0 {
        let _ = writeln!(
            out,
            "Warning: {} checks did not fit the kernel map, {} first-sighting records were lost (their counts were recovered from the map), {} checks could not be classified.",
            l.checks_overflow, l.sightings_lost, l.unclassified
        );
    }
    for note in &report.notes {
        let _ = writeln!(out, "Note: {note}");
    }
    if let Some(v) = &report.verification {
        verification(&mut out, v);
    }
    let _ = writeln!(out, "Apply: {}", report.docker_flags);
    out
}

fn verification(out: &mut String, v: &Verification) {
    match &v.failure {
        None => {
            let _ = writeln!(
                out,
                "Verified by {} run(s) of the workload: it exits with {} under the flags below; Required lists only what removal proved needed.",
                v.runs, v.expected_exit
            );
        }
        Some(why) => {
            let _ = writeln!(
                out,
                "Not verified ({} run(s)): {why}; the flags below are the recorded ones.",
                v.runs
            );
        }
    }
    for d in &v.dropped {
        let _ = writeln!(out, "  dropped {}: {}", d.capability, d.reason);
    }
    for a in &v.added {
        let _ = writeln!(out, "  added {}: {}", a.capability, a.reason);
    }
}

/// The text report's optional, unproven and non-root sections.
fn behaviour_sections(out: &mut String, report: &Report) {
    let profile = &report.profile;
    if !profile.optional.is_empty() {
        out.push_str(
            "Optional (checked only where the kernel picks a behaviour; no call fails without \
             them, so never required):\n",
        );
        findings(out, &profile.optional, true);
    }
    if !profile.unproven.is_empty() {
        out.push_str(
            "Unproven (required, but programs often go on without them; `capspy verify \
             --minimal -- <your docker run command>` removes each and re-runs):\n",
        );
        for u in &profile.unproven {
            let _ = writeln!(out, "  {:<18} {}", u.capability.to_string(), u.reason);
        }
    }
    for line in non_root_lines(report) {
        let _ = writeln!(out, "{line}");
    }
}

/// What a report says about capabilities a non-root process was refused, one line each plus the
/// Dockerfile line and the flags that go with it; empty when there are none. Every format
/// carries them: as lines of the text report, comments in YAML, standard error for `docker`.
pub fn non_root_lines(report: &Report) -> Vec<String> {
    let non_root = &report.profile.non_root;
    if non_root.is_empty() {
        return Vec::new();
    }
    let mut lines = vec!["Non-root (--cap-add alone does not reach these):".to_string()];
    for n in non_root {
        lines.push(format!("  {:<18} {}", n.capability.to_string(), n.reason));
        if let Some(line) = &n.dockerfile {
            lines.push(format!("  {:<18} Dockerfile: {line}", ""));
        }
    }
    let mut with: BTreeSet<Capability> = report.profile.required.clone();
    with.extend(non_root.iter().map(|n| n.capability));
    lines.push(format!(
        "  With file capabilities, apply: {}",
        flags_for(&with)
    ));
    lines
}

/// The first line: what was traced.
fn header(out: &mut String, report: &Report) {
    match &report.subject {
        Subject::Command {
            argv,
            exit_code,
            interrupted,
        } => {
            let _ = writeln!(
                out,
                "capspy: `{}` exited with {exit_code}{}; hook {}",
                printable(&argv.join(" ")),
                if *interrupted {
                    " (interrupted: partial profile)"
                } else {
                    ""
                },
                report.hook
            );
        }
        Subject::Container {
            id,
            name,
            image,
            workload,
        } => {
            let _ = writeln!(
                out,
                "capspy: container {} ({}), image {}, workload {}",
                printable(name.as_deref().unwrap_or("?")),
                printable(short_id(id)),
                printable(image.as_deref().unwrap_or("?")),
                printable(workload.as_deref().unwrap_or("?")),
            );
        }
        Subject::Workload {
            key, containers, ..
        } => {
            let _ = writeln!(
                out,
                "capspy: workload {}, {} container instance(s)",
                printable(key),
                containers.len()
            );
        }
    }
    if let Some(c) = &report.coverage {
        let hosts: Vec<String> = c.hosts.iter().map(|h| printable(h).into_owned()).collect();
        let _ = writeln!(
            out,
            "merged from {} host(s) ({}), {} instance(s), {} .. {}",
            c.hosts.len(),
            hosts.join(", "),
            c.instances,
            seconds(c.first_seen),
            seconds(c.last_seen)
        );
    }
}

fn table(out: &mut String, checks: &[&CheckRow]) {
    let _ = writeln!(
        out,
        "\n{:<20} {:<9} {:<8} {:<9} {:<13} {:<8} {:>8}  {:<19}  {:<19}  {:<30} CALL PATH",
        "CAPABILITY",
        "ORIGIN",
        "VERDICT",
        "AUDIT",
        "CLASSIFIED BY",
        "USERNS",
        "COUNT",
        "FIRST SEEN (UTC)",
        "LAST SEEN",
        "FIRST PROCESS"
    );
    for c in checks {
        let process = process_str(&c.example);
        // The generic frames say nothing about who asked; show the first callers past them.
        let path: Vec<&str> = c
            .call_path
            .iter()
            .map(String::as_str)
            .filter(|f| !f.starts_with("security_capable+"))
            .take(3)
            .collect();
        let _ = writeln!(
            out,
            "{:<20} {:<9} {:<8} {:<9} {:<13} {:<8} {:>8}  {:<19}  {:<19}  {:<30} {}",
            c.capability.to_string(),
            c.origin.name(),
            verdict_str(c.verdict),
            audit_str(c.audit),
            classifier_str(c.classified_by),
            userns_str(c.user_namespace),
            c.count,
            seconds(c.first_seen),
            seconds(c.last_seen),
            process,
            path.join(" <- ")
        );
    }
}

/// `  NET_RAW  reason [evidence]` lines of a findings section.
fn findings(out: &mut String, list: &[Finding], with_evidence: bool) {
    for f in list {
        let _ = write!(out, "  {:<18} {}", f.capability.to_string(), f.reason);
        if with_evidence {
            let e = &f.evidence;
            let processes: Vec<String> = e.processes.iter().take(3).map(process_str).collect();
            let _ = write!(
                out,
                " [{} check(s) {} .. {}, by {}{}]",
                e.count,
                seconds(e.first_seen),
                seconds(e.last_seen),
                processes.join(", "),
                if e.processes.len() > 3 { ", ..." } else { "" }
            );
        }
        out.push('\n');
    }
}

fn process_str(p: &ProcessRef) -> String {
    format!("{} (pid {}, uid {})", printable(&p.comm), p.tgid, p.uid)
}

/// `2026-11-29 00:18:02`: the text table's time, to the second.
fn seconds(t: SystemTime) -> String {
    let full = rfc3339(t);
    full.get(..19).unwrap_or(&full).replacen('T', " ", 1)
}

fn verdict_str(v: Verdict) -> &'static str {
    match v {
        Verdict::Granted => "granted",
        Verdict::Denied => "denied",
    }
}

fn audit_str(a: AuditClass) -> &'static str {
    match a {
        AuditClass::Audited => "audited",
        AuditClass::Advisory => "advisory",
    }
}

fn classifier_str(c: Classifier) -> &'static str {
    match c {
        Classifier::Opts => "opts",
        Classifier::CallPath => "call path",
        Classifier::Unclassified => "unclassified",
        Classifier::Syscall => "syscall",
        Classifier::Evidence => "evidence",
    }
}

fn userns_str(u: UserNs) -> &'static str {
    match u {
        UserNs::Initial => "initial",
        UserNs::Other => "other",
        UserNs::Unknown => "unknown",
    }
}

/// The inverse of [`rfc3339`]: `2026-11-29T00:18:02.123Z` (any number of fraction digits, or
/// none; UTC only, as capspy writes it).
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let bare = text.strip_suffix('Z')?;
    let (date, clock) = bare.split_once('T')?;
    let mut ymd = date.split('-');
    let (year, month, day): (i64, i64, i64) = (
        ymd.next()?.parse().ok()?,
        ymd.next()?.parse().ok()?,
        ymd.next()?.parse().ok()?,
    );
    if ymd.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut parts = hms.split(':');
    let (hour, minute, second): (u64, u64, u64) = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    if parts.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    if !frac.bytes().all(|c| c.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    // Days since 1970-01-01 from a civil date (Howard Hinnant's algorithm).
    let shifted = year - i64::from(month <= 2);
    let era = shifted.div_euclid(400);
    let yoe = shifted.rem_euclid(400);
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let secs = days
        .checked_mul(86_400)?
        .checked_add(hour * 3600 + minute * 60 + second)?;
    UNIX_EPOCH.checked_add(std::time::Duration::new(secs, nanos))
}

/// `2026-11-29T00:18:02.123Z`, UTC, millisecond precision.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::caps::CapSet;
    use crate::profile::Origin;
    use crate::profile::tests::{fact, row};

    fn report(rows: Vec<crate::profile::CheckRow>) -> Report {
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
        assert!(t.contains("call path"), "{t}");
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
    fn times_parse_back() {
        for secs in [0, 951_782_400, 1_800_000_000, 4_102_444_800] {
            for ms in [0, 1, 999] {
                let t = UNIX_EPOCH + std::time::Duration::from_millis(secs * 1000 + ms);
                assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{}", rfc3339(t));
            }
        }
        assert_eq!(
            parse_rfc3339("2026-11-29T01:56:58Z"),
            Some(UNIX_EPOCH + std::time::Duration::from_secs(1_795_917_418))
        );
        for bad in [
            "",
            "2026-11-29",
            "2026-13-01T00:00:00Z",
            "2026-11-29T01:56:58+01:00",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn json_reports_validate_against_the_schema_file() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../schema/capspy-report.schema.json")).unwrap();
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
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_millis(951_782_400_250); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.250Z");
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
