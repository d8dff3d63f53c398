//! Linux capabilities: numbers, names, and the bit masks of `/proc/PID/status`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::Serializer;

/// Names from `include/uapi/linux/capability.h`, indexed by number, without the `CAP_` prefix.
const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// A capability by number. Numbers past `CAP_LAST_CAP` (40) are kept, so a newer kernel's
/// capability still shows up (as `CAP_41`) instead of vanishing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Capability(pub u8);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapError {
    #[error("unknown capability name {0:?} (expected e.g. NET_RAW or CAP_NET_RAW)")]
    UnknownName(String),
    #[error("invalid capability mask {0:?} (expected hex digits, e.g. 00000000a80425fb)")]
    InvalidMask(String),
}

impl Capability {
    pub const CHOWN: Self = Self(0);
    pub const DAC_OVERRIDE: Self = Self(1);
    pub const DAC_READ_SEARCH: Self = Self(2);
    pub const FSETID: Self = Self(4);
    pub const SETGID: Self = Self(6);
    pub const SETUID: Self = Self(7);
    pub const SETPCAP: Self = Self(8);
    pub const NET_BIND_SERVICE: Self = Self(10);
    pub const NET_ADMIN: Self = Self(12);
    pub const NET_RAW: Self = Self(13);
    pub const SYS_PTRACE: Self = Self(19);
    pub const SYS_ADMIN: Self = Self(21);
    pub const AUDIT_WRITE: Self = Self(29);
    pub const SYSLOG: Self = Self(34);
    pub const PERFMON: Self = Self(38);
    pub const BPF: Self = Self(39);

    /// Every capability this build knows, in number order.
    pub fn all() -> impl Iterator<Item = Self> {
        (0..NAMES.len()).map(|n| Self(u8::try_from(n).unwrap_or(u8::MAX)))
    }

    /// The name without `CAP_`, as docker's `--cap-add` takes it.
    pub fn name(self) -> String {
        NAMES
            .get(usize::from(self.0))
            .map_or_else(|| format!("{}", self.0), |n| (*n).to_string())
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match NAMES.get(usize::from(self.0)) {
            Some(name) => f.write_str(name),
            None => write!(f, "CAP_{}", self.0),
        }
    }
}

impl FromStr for Capability {
    type Err = CapError;

    /// Accepts `NET_RAW`, `CAP_NET_RAW`, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        NAMES
            .iter()
            .position(|n| *n == bare)
            .and_then(|n| u8::try_from(n).ok())
            .map(Self)
            .ok_or_else(|| CapError::UnknownName(s.to_string()))
    }
}

/// A capability as profile documents write it: `NET_RAW`, `CAP_NET_RAW`, or `CAP_41` for one
/// newer than the build that wrote it.
pub fn parse_document_name(s: &str) -> Result<Capability, String> {
    if let Some(n) = s.strip_prefix("CAP_").and_then(|n| n.parse::<u8>().ok()) {
        return Ok(Capability(n));
    }
    s.parse().map_err(|e: CapError| e.to_string())
}

pub fn deserialize_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Capability, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    parse_document_name(&s).map_err(serde::de::Error::custom)
}

pub fn deserialize_names<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeSet<Capability>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Name(#[serde(deserialize_with = "deserialize_name")] Capability);
    Ok(<Vec<Name> as serde::Deserialize>::deserialize(d)?
        .into_iter()
        .map(|c| c.0)
        .collect())
}

/// `null` or a list of names.
pub fn deserialize_opt_names<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::collections::BTreeSet<Capability>>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Names(
        #[serde(deserialize_with = "deserialize_names")] std::collections::BTreeSet<Capability>,
    );
    Ok(<Option<Names> as serde::Deserialize>::deserialize(d)?.map(|n| n.0))
}

/// A set of capabilities as the kernel's 64-bit mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSet(pub u64);

impl CapSet {
    /// The 14 capabilities Docker grants a container by default (moby's
    /// `oci/caps/defaults.go`).
    pub const DOCKER_DEFAULT: Self = Self(0xa804_25fb);

    /// Parses a hex mask as `/proc/PID/status` prints it (`CapEff: 00000000a80425fb`), with or
    /// without `0x`.
    pub fn from_hex(s: &str) -> Result<Self, CapError> {
        let t = s.trim();
        let digits = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        if digits.is_empty() || digits.len() > 16 {
            return Err(CapError::InvalidMask(s.to_string()));
        }
        u64::from_str_radix(digits, 16)
            .map(Self)
            .map_err(|_| CapError::InvalidMask(s.to_string()))
    }

    /// The set of `names` as engines and systemd write them (`NET_RAW`, `CAP_NET_RAW`,
    /// `cap_net_raw`); the first unknown name is the error.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, CapError> {
        names.into_iter().try_fold(Self(0), |set, name| {
            let cap: Capability = name.parse()?;
            Ok(set.with(cap))
        })
    }

    #[must_use]
    pub fn with(self, cap: Capability) -> Self {
        Self(self.0 | 1u64.checked_shl(u32::from(cap.0)).unwrap_or(0))
    }

    #[must_use]
    pub fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// Every capability this build knows.
    pub fn all() -> Self {
        Capability::all().fold(Self(0), Self::with)
    }

    pub fn contains(self, cap: Capability) -> bool {
        cap.0 < 64 && self.0 & (1 << cap.0) != 0
    }

    /// Members in number order, including bits this build has no name for.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        (0..64u8).map(Capability).filter(move |c| self.contains(*c))
    }
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde passes fields by reference"
)]
pub(crate) fn serialize_cap<S: Serializer>(cap: &Capability, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&cap.to_string())
}

pub(crate) fn serialize_caps<S: Serializer>(
    caps: &BTreeSet<Capability>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(caps.iter().map(ToString::to_string))
}

#[expect(clippy::ref_option, reason = "serde passes fields by reference")]
pub(crate) fn serialize_opt_caps<S: Serializer>(
    caps: &Option<BTreeSet<Capability>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match caps {
        Some(caps) => serialize_caps(caps, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_41_capabilities_round_trip_by_name_and_number() {
        assert_eq!(Capability::all().count(), 41);
        for cap in Capability::all() {
            let parsed: Capability = cap.name().parse().unwrap();
            assert_eq!(parsed, cap);
            let prefixed: Capability = format!("cap_{}", cap.name().to_lowercase())
                .parse()
                .unwrap();
            assert_eq!(prefixed, cap);
        }
    }

    #[test]
    fn numbers_match_the_kernel_header() {
        let expect = [
            ("CHOWN", 0),
            ("NET_BIND_SERVICE", 10),
            ("NET_RAW", 13),
            ("SYS_ADMIN", 21),
            ("AUDIT_WRITE", 29),
            ("SETFCAP", 31),
            ("SYSLOG", 34),
            ("PERFMON", 38),
            ("BPF", 39),
            ("CHECKPOINT_RESTORE", 40),
        ];
        for (name, number) in expect {
            assert_eq!(
                name.parse::<Capability>().unwrap(),
                Capability(number),
                "{name}"
            );
        }
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!("NET_RAWR".parse::<Capability>().is_err());
        assert!("".parse::<Capability>().is_err());
        assert_eq!(Capability(41).to_string(), "CAP_41");
    }

    #[test]
    fn docker_default_mask_decodes_to_its_14_capabilities() {
        let set = CapSet::from_hex("00000000a80425fb").unwrap();
        assert_eq!(set, CapSet::DOCKER_DEFAULT);
        let names: Vec<String> = set.iter().map(Capability::name).collect();
        assert_eq!(
            names,
            [
                "CHOWN",
                "DAC_OVERRIDE",
                "FOWNER",
                "FSETID",
                "KILL",
                "SETGID",
                "SETUID",
                "SETPCAP",
                "NET_BIND_SERVICE",
                "NET_RAW",
                "SYS_CHROOT",
                "MKNOD",
                "AUDIT_WRITE",
                "SETFCAP"
            ]
        );
    }

    #[test]
    fn bad_masks_are_errors() {
        for bad in ["", "xyz", "0x", "00000000000000000", "-1"] {
            assert!(CapSet::from_hex(bad).is_err(), "{bad:?}");
        }
        assert_eq!(CapSet::from_hex("0x3").unwrap().iter().count(), 2);
    }
}
