//! `attribution::owner_from_path`: any string a cgroup path could be (cgroup names are chosen by
//! whoever may create cgroups, so they are untrusted).
#![no_main]

use capspy::attribute::{Owner, owner_from_path};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let owner = owner_from_path(path);
    match &owner {
        Owner::Container { id, pod_uid, .. } => {
            // A container id is 64 lowercase hex digits taken from the path.
            assert_eq!(id.len(), 64, "{path:?} -> {owner:?}");
            assert!(
                id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                "{path:?} -> {owner:?}"
            );
            assert!(path.contains(id.as_str()), "{path:?} -> {owner:?}");
            if let Some(uid) = pod_uid {
                assert!(uid.len() == 32 || uid.len() == 36, "{path:?} -> {owner:?}");
            }
        }
        Owner::Service { unit } => {
            assert!(unit.ends_with(".service"), "{path:?} -> {owner:?}");
            // A unit named in the path, or the runtime owning a per-container monitor there.
            assert!(
                path.split('/').any(|c| c == unit)
                    || (unit == "crio.service" && path.contains("crio-conmon-")),
                "{path:?} -> {owner:?}"
            );
        }
        Owner::Host => {}
    }
    // Empty components are ignored: doubling every slash, or adding a leading one, changes nothing.
    assert_eq!(owner_from_path(&path.replace('/', "//")), owner, "{path:?}");
    assert_eq!(owner_from_path(&format!("/{path}")), owner, "{path:?}");
});
