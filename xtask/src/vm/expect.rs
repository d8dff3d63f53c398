//! What each scenario must show, per hook and kernel, as this test measured it.

/// The `capspy run` scenarios of scenarios.sh, and what each needs whatever the hook sees.
pub(super) const SCENARIOS: &[(&str, &[&str])] = &[
    ("ping", &["NET_RAW"]),
    ("chown", &["CHOWN"]),
    ("true", &[]),
    ("children", &["CHOWN", "NET_RAW"]),
    ("proc-stat", &[]),
    ("bset-drop", &[]),
    ("securebits", &[]),
    ("capset", &[]),
    ("mmap-zero", &[]),
];

/// One capability check made through a known caller of `cap_capable`.
pub(super) struct Probe {
    pub(super) scenario: &'static str,
    pub(super) cap: &'static str,
    /// Whether the check, once seen, belongs in the profile.
    pub(super) required: bool,
    /// Where the kernel makes the check.
    pub(super) site: &'static str,
}

pub(super) const PROBES: &[Probe] = &[
    Probe {
        scenario: "true",
        cap: "SYS_ADMIN",
        required: false,
        site: "cap_vm_enough_memory (overcommit heuristic, noaudit)",
    },
    Probe {
        scenario: "bset-drop",
        cap: "SETPCAP",
        required: true,
        site: "prctl(PR_CAPBSET_DROP): cap_task_prctl -> ns_capable",
    },
    Probe {
        scenario: "securebits",
        cap: "SETPCAP",
        required: true,
        site: "prctl(PR_SET_SECUREBITS): cap_task_prctl itself",
    },
    Probe {
        scenario: "capset",
        cap: "SETPCAP",
        required: false,
        site: "capset(2): cap_capset (cap_inh_is_capped)",
    },
    Probe {
        scenario: "mmap-zero",
        cap: "SYS_RAWIO",
        required: true,
        site: "mmap below vm.mmap_min_addr: cap_mmap_addr",
    },
];

/// Measured by this test: the probes a hook on the `cap_capable` symbol (fexit, kprobe) does not
/// see, per kernel series, because the compiler inlined `cap_capable` into the caller
/// (the disassembly of cap_vm_enough_memory, cap_task_prctl, cap_capset and cap_mmap_addr has no
/// reference to cap_capable on 6.1.0-47 and 6.12.117+deb12; 5.10.0-43 shows the same four by
/// this test). The tracepoint is inside `cap_capable` and sees them all.
const MEASURED_BLIND_SPOTS: &[(&str, &[&str])] = &[
    ("5.10", &["true", "securebits", "capset", "mmap-zero"]),
    ("6.1", &["true", "securebits", "capset", "mmap-zero"]),
    ("6.12", &["true", "securebits", "capset", "mmap-zero"]),
];

/// Whether `hook` should see `probe` on kernel `release`; None when not measured there.
pub(super) fn expected_visibility(hook: &str, release: &str, probe: &Probe) -> Option<bool> {
    if hook == "tracepoint" {
        return Some(true);
    }
    let series = kernel_series(release);
    MEASURED_BLIND_SPOTS
        .iter()
        .find(|(s, _)| *s == series)
        .map(|(_, missed)| !missed.contains(&probe.scenario))
}

/// "6.1.0-47-cloud-amd64" -> "6.1".
pub(super) fn kernel_series(release: &str) -> String {
    release.split('.').take(2).collect::<Vec<_>>().join(".")
}

pub(super) fn kernel_version(release: &str) -> (u32, u32) {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

pub(super) fn expected_classifier(hook: &str) -> &'static str {
    if hook == "tracepoint" {
        "call_path"
    } else {
        "opts"
    }
}

pub(super) fn hook_matches(requested: &str, reported: &str) -> bool {
    match requested {
        "tracepoint" => matches!(reported, "tp_btf" | "raw_tracepoint" | "tracepoint"),
        other => other == reported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_series("6.1.0-47-cloud-amd64"), "6.1");
        assert_eq!(kernel_version("6.18.44-fc-v669"), (6, 18));
        assert_eq!(kernel_version("6.1.0-47-cloud-amd64"), (6, 1));
        let securebits = PROBES.iter().find(|p| p.scenario == "securebits").unwrap();
        assert_eq!(
            expected_visibility("fexit", "6.1.0-50-cloud-amd64", securebits),
            Some(false)
        );
        assert_eq!(
            expected_visibility("tracepoint", "6.18.44", securebits),
            Some(true)
        );
        assert_eq!(
            expected_visibility("kprobe", "5.10.0-43-cloud-amd64", securebits),
            Some(false)
        );
        assert_eq!(
            expected_visibility("kprobe", "5.4.0-30-amd64", securebits),
            None
        );
    }
}
