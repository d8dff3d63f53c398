//! The cgroup files capspy parses: `/proc/self/mountinfo` (`cgroup::v2_root_from_mountinfo`,
//! including its octal unescaping of mount points) and `cgroup.events`
//! (`cgroup::parse_populated`).
#![no_main]

use capspy::kernel::cgroup::{parse_populated, v2_root_from_mountinfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(root) = v2_root_from_mountinfo(text) {
        // Only a line with a cgroup2 filesystem type (first word after " - ") yields a root.
        assert!(
            text.lines().any(|l| l
                .split_once(" - ")
                .and_then(|(_, post)| post.split_whitespace().next())
                == Some("cgroup2")),
            "{text:?} -> {root:?}"
        );
    }
    let _ = parse_populated(text);
});
