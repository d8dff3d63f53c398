//! capspy's own privileges.

use crate::model::caps::{CapSet, Capability};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "capspy needs root, or CAP_BPF and CAP_PERFMON, to load its kernel program (missing: {0})"
    )]
    Missing(String),
    #[error("reading /proc/self/status: {0}")]
    Status(#[from] std::io::Error),
    #[error("dropping capabilities: {0}")]
    Drop(std::io::Error),
}

/// What the daemon (`capspy record`, `capspy watch`) needs to start, as capspy measures itself
/// (`capspy run --format json -- capspy watch ...`): loading and attaching the kernel program
/// (BPF, PERFMON), reading kallsyms' real addresses to classify checks (SYSLOG), emptying its
/// own bounding set (SETPCAP). The measurement also shows NET_ADMIN, asked by the loader's probe
/// of XDP device maps (`map_create`), which capspy does not use: left out. dist/capspy.service,
/// dist/Dockerfile and dist/kubernetes/daemonset.yaml grant exactly these (tested).
pub const DAEMON_CAPABILITIES: [Capability; 4] = [
    Capability::SETPCAP,
    Capability::SYSLOG,
    Capability::PERFMON,
    Capability::BPF,
];

/// The effective set of a process, from `/proc/PID/status` text.
pub fn effective_from_status(status: &str) -> Option<CapSet> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| CapSet::from_hex(v).ok())
}

/// Fails with the names of what is missing when this process cannot load and attach tracing
/// programs: CAP_BPF and CAP_PERFMON (Linux 5.8+), or CAP_SYS_ADMIN, which implies both.
pub fn require_tracing() -> Result<(), PrivilegeError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let eff = effective_from_status(&status).unwrap_or_default();
    missing_for_tracing(eff).map_or(Ok(()), |m| Err(PrivilegeError::Missing(m)))
}

fn missing_for_tracing(eff: CapSet) -> Option<String> {
    if eff.contains(Capability::SYS_ADMIN) {
        return None;
    }
    let missing: Vec<String> = [Capability::BPF, Capability::PERFMON]
        .into_iter()
        .filter(|c| !eff.contains(*c))
        .map(|c| format!("CAP_{c}"))
        .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_missing() {
        assert_eq!(
            missing_for_tracing(CapSet(0)).as_deref(),
            Some("CAP_BPF, CAP_PERFMON")
        );
        assert_eq!(
            missing_for_tracing(CapSet(1 << 39)).as_deref(),
            Some("CAP_PERFMON")
        );
        assert_eq!(missing_for_tracing(CapSet((1 << 39) | (1 << 38))), None);
        assert_eq!(missing_for_tracing(CapSet(1 << 21)), None);
    }

    #[test]
    fn reads_cap_eff_from_status() {
        let status = "Name:\tcat\nCapInh:\t0000000000000000\nCapEff:\t00000000a80425fb\n";
        assert_eq!(effective_from_status(status), Some(CapSet(0xa804_25fb)));
    }
}

/// `struct __user_cap_header_struct` and `__user_cap_data_struct` from
/// `include/uapi/linux/capability.h` (version 3: two data words for 64 capabilities).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Gives up every capability for good, once the kernel program is attached and every privileged
/// file is open: the daemon then only reads maps through fds it holds, `/proc` and cgroupfs, and
/// writes its own store, none of which needs a capability. Applies to the calling thread and the
/// threads it starts later, so call it while the process has a single thread.
pub fn drop_all() -> Result<(), PrivilegeError> {
    // SAFETY: plain prctl/capset calls with valid arguments; failures are checked.
    unsafe {
        // No exec can give anything back, even a setuid one.
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(PrivilegeError::Drop(std::io::Error::last_os_error()));
        }
        // The bounding set first: dropping from it needs CAP_SETPCAP, which goes last.
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                // EINVAL: past the kernel's last capability.
                break;
            }
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData::default(); 2];
        if libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) != 0 {
            return Err(PrivilegeError::Drop(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// The recipes in dist/ grant exactly [`DAEMON_CAPABILITIES`].
#[cfg(test)]
mod recipes {
    use super::*;

    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use serde_json::Value;

    fn kubernetes_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/kubernetes")
    }

    /// Every manifest of dist/kubernetes, by file name.
    fn manifests() -> Vec<(String, Value)> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(kubernetes_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                let value: Value = serde_saphyr::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                (p.file_name().unwrap().to_string_lossy().into_owned(), value)
            })
            .collect()
    }

    fn kind<'a>(all: &'a [(String, Value)], kind: &str) -> &'a Value {
        &all.iter()
            .find(|(_, v)| v["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} manifest"))
            .1
    }

    fn names(caps: &[Capability]) -> BTreeSet<String> {
        caps.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn every_manifest_parses_and_the_kustomization_lists_them() {
        let all = manifests();
        assert!(
            all.len() >= 7,
            "{:?}",
            all.iter().map(|m| &m.0).collect::<Vec<_>>()
        );
        let kustomization = kind(&all, "Kustomization");
        let listed: BTreeSet<&str> = kustomization["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        for (file, value) in &all {
            if value["kind"] == "Kustomization" {
                continue;
            }
            assert!(value["apiVersion"].is_string(), "{file}");
            assert!(value["metadata"]["name"].is_string(), "{file}");
            assert!(
                listed.contains(file.as_str()),
                "{file} is not in kustomization.yaml"
            );
            if value["kind"] != "Namespace" {
                assert_eq!(value["metadata"]["namespace"], "capspy", "{file}");
            }
        }
    }

    #[test]
    fn the_daemonset_grants_exactly_the_measured_capabilities() {
        let all = manifests();
        let ds = kind(&all, "DaemonSet");
        let pod = &ds["spec"]["template"]["spec"];
        assert_eq!(pod["hostPID"], true);
        assert!(
            pod["hostNetwork"].is_null(),
            "metrics go on the pod IP, not the node's"
        );
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1);
        let c = &containers[0];
        let sc = &c["securityContext"];
        assert_eq!(sc["privileged"], false);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        let added: BTreeSet<String> = sc["capabilities"]["add"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(added, names(&DAEMON_CAPABILITIES));

        // Metrics on the pod's IP from the downward API; the node's name for merged profiles.
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let after = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1];
        assert_eq!(after("--metrics"), "$(POD_IP):9464");
        assert_eq!(after("--node"), "$(NODE_NAME)");
        let env = |name: &str| {
            c["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == name)
                .map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone())
        };
        assert_eq!(env("POD_IP"), Some(Value::from("status.podIP")));
        assert_eq!(env("NODE_NAME"), Some(Value::from("spec.nodeName")));

        // Host paths: read-only except the store.
        let volumes = pod["volumes"].as_array().unwrap();
        let host_path = |name: &str| {
            volumes
                .iter()
                .find(|v| v["name"] == name)
                .and_then(|v| v["hostPath"]["path"].as_str())
        };
        for m in c["volumeMounts"].as_array().unwrap() {
            let name = m["name"].as_str().unwrap();
            let writable = m["readOnly"] != true;
            assert_eq!(writable, name == "store", "{name}");
        }
        for (name, path) in [
            ("cgroup", "/sys/fs/cgroup"),
            ("btf", "/sys/kernel/btf"),
            ("tracefs", "/sys/kernel/tracing"),
            ("docker-socket", "/var/run/docker.sock"),
            ("store", "/var/lib/capspy"),
        ] {
            assert_eq!(host_path(name), Some(path), "{name}");
        }

        // The Service selects the pods and names the port the ServiceMonitor scrapes.
        let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
        let service = kind(&all, "Service");
        for (k, v) in service["spec"]["selector"].as_object().unwrap() {
            assert_eq!(&pod_labels[k], v, "service selector {k}");
        }
        assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
        let monitor = kind(&all, "ServiceMonitor");
        assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
        for (k, v) in monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(
                &service["metadata"]["labels"][k], v,
                "servicemonitor selector {k}"
            );
        }
        // The rules' `job="capspy"` is the Service's name.
        assert_eq!(service["metadata"]["name"], "capspy");
    }

    /// The systemd unit and the Dockerfile grant the same set.
    #[test]
    fn the_other_recipes_grant_the_same_set() {
        let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist");
        let unit = std::fs::read_to_string(dist.join("capspy.service")).unwrap();
        for key in ["CapabilityBoundingSet=", "AmbientCapabilities="] {
            let line = unit.lines().find(|l| l.starts_with(key)).unwrap();
            let caps: BTreeSet<String> = line[key.len()..]
                .split_whitespace()
                .map(|c| c.trim_start_matches("CAP_").to_string())
                .collect();
            assert_eq!(caps, names(&DAEMON_CAPABILITIES), "{line}");
        }
        let dockerfile = std::fs::read_to_string(dist.join("Dockerfile")).unwrap();
        // The `docker run` line of the recipe.
        let run = dockerfile
            .lines()
            .find(|l| l.contains("--cap-drop ALL"))
            .unwrap();
        let caps: BTreeSet<String> = run
            .split("--cap-add ")
            .skip(1)
            .map(|s| s.split_whitespace().next().unwrap().to_string())
            .collect();
        assert_eq!(caps, names(&DAEMON_CAPABILITIES));
    }
}
