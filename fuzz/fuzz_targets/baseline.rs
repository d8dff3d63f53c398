//! Baseline and profile files (`capspy baseline`, `capspy watch`, `capspy diff`): the JSON
//! profile document loader `report::read::ProfileDoc::parse` (what `ProfileDoc::load` and
//! `Baselines::load_dir` run on each file), what is done with a loaded document, and
//! `baseline::file_name` on the same text as a workload key.
#![no_main]

use std::path::Path;

use capspy::report::read::ProfileDoc;
use capspy::watch::baseline::{Diff, file_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(doc) = ProfileDoc::parse(Path::new("fuzz.json"), text) {
        let _ = doc.subject.describe();
        let _ = doc.subject.workload();
        // A document never drifts from itself.
        let diff = Diff::between(&doc, &doc);
        assert!(!diff.is_drift(), "{text:?}");
        assert_eq!(diff, Diff::default(), "{text:?}");
        // Required capabilities print as names that load back.
        for cap in &doc.required {
            assert_eq!(
                cap.to_string().parse::<capspy::model::caps::Capability>().ok(),
                (cap.0 < 41).then_some(*cap)
            );
        }
    }

    // The file name of a workload key stays inside its folder.
    let name = file_name(text);
    assert!(name.ends_with(".json") && name.len() <= 255, "{text:?} -> {name:?}");
    assert!(!name.starts_with('.'), "{text:?} -> {name:?}");
    assert!(
        name.bytes().all(|b| b.is_ascii_graphic() && b != b'/'),
        "{text:?} -> {name:?}"
    );
});
