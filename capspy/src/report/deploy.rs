//! The snippets each deployment takes, from one report: docker flags, a compose file,
//! Kubernetes `securityContext`, OCI `process.capabilities`, systemd directives; and JSON/YAML.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use super::Report;
use crate::model::caps::Capability;
use crate::model::check::UserNs;
use crate::profile::Profile;

pub(super) fn json<T: Serialize>(value: &T) -> String {
    // Serializing these plain structs cannot fail; say so rather than print nothing.
    let mut s = serde_json::to_string_pretty(value)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string());
    s.push('\n');
    s
}

pub(super) fn yaml<T: Serialize>(value: &T) -> String {
    serde_saphyr::to_string(value).unwrap_or_else(|e| format!("# capspy: YAML error: {e}\n"))
}

/// A capability as docker, compose and Kubernetes take it: `NET_RAW`.
pub(super) fn bare_names(caps: &BTreeSet<Capability>) -> Vec<String> {
    caps.iter().map(ToString::to_string).collect()
}

/// A capability as OCI and systemd take it: `CAP_NET_RAW`.
pub(super) fn cap_names(caps: &BTreeSet<Capability>) -> Vec<String> {
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
pub(super) fn comment_lines(lines: &[String]) -> String {
    let mut out = String::new();
    for l in lines {
        let _ = writeln!(out, "# {}", comment_safe(l.trim_start()));
    }
    out
}

/// For `# ...` lines of YAML and systemd output: a name with line breaks (including YAML 1.1's
/// NEL, LS, PS) or other control characters would end the comment early.
pub(super) fn comment_safe(s: &str) -> String {
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
pub(super) struct ComposeFile {
    pub(super) services: BTreeMap<String, ComposeService>,
}

#[derive(Serialize, Default)]
#[cfg_attr(test, derive(serde::Deserialize, Debug, PartialEq))]
pub(super) struct ComposeService {
    pub(super) cap_drop: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub(super) cap_add: Vec<String>,
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
pub(super) struct K8sContainer {
    pub(super) name: String,
    #[serde(rename = "securityContext")]
    pub(super) security_context: K8sSecurityContext,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(serde::Deserialize, Debug, PartialEq))]
pub(super) struct K8sSecurityContext {
    pub(super) capabilities: K8sCapabilities,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(serde::Deserialize, Debug, PartialEq))]
pub(super) struct K8sCapabilities {
    pub(super) drop: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub(super) add: Vec<String>,
}

/// A `containers:` list item with the container's `securityContext.capabilities`.
pub(super) fn k8s(report: &Report) -> String {
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
    out.push_str(&comment_lines(&crate::profile::pss::lines(&report.profile)));
    out.push_str(&comment_lines(&non_root_lines(report)));
    out.push_str(&yaml(&[container]));
    out
}

/// An OCI runtime spec's `process.capabilities`: the required set in the three sets the kernel
/// checks and bounds with; nothing inherited or ambient.
#[derive(Serialize)]
#[cfg_attr(test, derive(serde::Deserialize, Debug, PartialEq))]
pub(super) struct OciCapabilities {
    pub(super) bounding: Vec<String>,
    pub(super) effective: Vec<String>,
    pub(super) permitted: Vec<String>,
    pub(super) inheritable: Vec<String>,
    pub(super) ambient: Vec<String>,
}

pub(super) fn oci(report: &Report) -> String {
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
pub(super) fn systemd(report: &Report) -> String {
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
pub(super) fn profile_notes(profile: &Profile) -> Vec<String> {
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
pub(super) fn hook_notes(hook: &str) -> Vec<String> {
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

pub(super) fn flags_for(caps: &BTreeSet<Capability>) -> String {
    let mut flags = String::from("--cap-drop ALL");
    for cap in caps {
        let _ = write!(flags, " --cap-add {cap}");
    }
    flags
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
