//! `capspy decode HEX`: the capability names of a mask as `/proc/PID/status` prints it
//! (what `capsh --decode` does, without needing capsh in the image).

use anyhow::Result;

use crate::model::caps::{CapSet, Capability};

#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// A capability mask in hex, e.g. 00000000a80425fb (Docker's default set) or 0x3000.
    pub mask: String,
}

pub fn decode(args: &DecodeArgs) -> Result<i32> {
    let set = CapSet::from_hex(&args.mask)?;
    print!("{}", names(set));
    Ok(0)
}

/// One capability per line, in number order; bits this build has no name for say so.
pub fn names(set: CapSet) -> String {
    let lines = name_list(set);
    if lines.is_empty() {
        return "(none)\n".into();
    }
    lines.join("\n") + "\n"
}

/// The members' names in number order, `bit N (unknown)` for bits past the last known one.
pub fn name_list(set: CapSet) -> Vec<String> {
    let known = Capability::all().count();
    set.iter()
        .map(|c| {
            if usize::from(c.0) < known {
                c.name()
            } else {
                format!("bit {} (unknown)", c.0)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_default_and_unknown_bits() {
        let out = names(CapSet::from_hex("00000000a80425fb").unwrap());
        assert_eq!(out.lines().count(), 14);
        assert!(out.starts_with("CHOWN\nDAC_OVERRIDE\n"), "{out}");
        assert!(out.ends_with("AUDIT_WRITE\nSETFCAP\n"), "{out}");
        let out = names(CapSet(1 << 45 | 1 << 40 | 1 << 63));
        assert_eq!(
            out,
            "CHECKPOINT_RESTORE\nbit 45 (unknown)\nbit 63 (unknown)\n"
        );
        assert_eq!(names(CapSet(0)), "(none)\n");
    }

    #[test]
    fn all_41_known_bits_have_names() {
        let out = names(CapSet::from_hex("000001ffffffffff").unwrap());
        assert_eq!(out.lines().count(), 41);
        assert!(!out.contains("unknown"), "{out}");
    }
}
