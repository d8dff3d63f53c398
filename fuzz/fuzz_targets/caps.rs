//! Capability names (`--cap-add` style, `CAP_` prefix optional, any case) and the hex masks of
//! `/proc/PID/status`, with their round trips; `capspy decode`'s listing of a mask and
//! `capspy caps`' parsing of a whole status file.
#![no_main]

use capspy::model::caps::{CapSet, Capability};
use capspy::commands::caps::{parse_status, show};
use capspy::commands::decode::names;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(cap) = s.parse::<Capability>() {
        // Only named capabilities parse, and a parsed name prints back as its canonical name.
        assert!(Capability::all().any(|c| c == cap), "{s:?} -> {cap:?}");
        let canonical = cap.to_string();
        assert_eq!(canonical, cap.name(), "{s:?}");
        let upper = s.trim().to_ascii_uppercase();
        assert_eq!(
            upper.strip_prefix("CAP_").unwrap_or(&upper),
            canonical,
            "{s:?}"
        );
        assert_eq!(canonical.parse::<Capability>(), Ok(cap), "{s:?}");
        assert_eq!(format!("CAP_{canonical}").parse::<Capability>(), Ok(cap));
        assert_eq!(canonical.to_ascii_lowercase().parse::<Capability>(), Ok(cap));
    }

    if let Ok(set) = CapSet::from_hex(s) {
        // The members re-encode to the same mask...
        let members: Vec<Capability> = set.iter().collect();
        let rebuilt = members.iter().fold(0u64, |m, c| m | 1u64 << c.0);
        assert_eq!(rebuilt, set.0, "{s:?}");
        assert!(members.windows(2).all(|w| w[0] < w[1]), "{s:?}");
        assert!(members.iter().all(|&c| set.contains(c)), "{s:?}");
        assert_eq!(members.len(), set.0.count_ones() as usize, "{s:?}");
        // ... and the mask prints back (as /proc prints it) to a string that parses to itself.
        for printed in [format!("{:016x}", set.0), format!("0x{:x}", set.0)] {
            assert_eq!(CapSet::from_hex(&printed), Ok(set), "{s:?} -> {printed}");
        }
        // Every named member's name parses back to the member.
        for c in members.iter().filter(|c| c.0 < 41) {
            assert_eq!(c.name().parse::<Capability>(), Ok(*c));
        }
        // `capspy decode`: one line per member.
        assert_eq!(names(set).lines().count(), members.len().max(1), "{s:?}");
    }

    // `capspy caps`: a status file's name is escaped, so the listing is always six lines.
    if let Ok(p) = parse_status(1, s) {
        let out = show(&p);
        assert_eq!(out.lines().count(), 6, "{s:?} -> {out:?}");
    }
});
