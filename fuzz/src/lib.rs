//! Helpers shared by the fuzz targets in `fuzz_targets/`.

use std::fs;
use std::path::{Path, PathBuf};

use capspy::model::loss::LossCounters;
use capspy::commands::ls::{LsArgs, LsFormat, ls};
use capspy::commands::profile::{ProfileArgs, profile};
use capspy::report::{Format, Report};
use capspy::store::StoreReader;
use capspy::report::workloads::{Inventory, Target, droppable};
use clap::ValueEnum as _;

/// A folder for this process's scratch files, on tmpfs when there is one.
pub fn scratch_dir(target: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("capspy-fuzz-{target}-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes a store file and every sibling SQLite or capspy makes next to it.
pub fn remove_store(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal", ".lock"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = fs::remove_file(PathBuf::from(p));
    }
}

/// Sends standard output to /dev/null: `capspy ls` and `capspy profile` print their reports
/// there (libFuzzer writes to standard error).
pub fn silence_stdout() {
    use std::os::fd::AsRawFd as _;
    let null = fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
    // SAFETY: dup2 on two valid descriptors; fd 1 is replaced atomically.
    let r = unsafe { libc::dup2(null.as_raw_fd(), 1) };
    assert!(r == 1, "dup2: {}", std::io::Error::last_os_error());
}

/// Everything a reader does with a store: the store API, the `capspy profile` report of every
/// workload and container in every format, then the `capspy ls` and `capspy profile NAME`
/// commands themselves. Errors are fine; panics are the bugs.
///
/// Each command opens the store again, as it does when run: they are called once per run.
pub fn read_store(path: &Path, store: &StoreReader) {
    let _ = store.sessions();
    let _ = store.checks_by_workload();
    let _ = store.checks_by_subject();
    let mut name = None;
    if let Ok(inventory) = Inventory::load(store) {
        for (key, containers) in inventory.workloads.iter().take(4) {
            report(store, &Target::Workload { key, containers });
            for c in containers.iter().take(2) {
                report(store, &Target::Container(c));
                name = name.or_else(|| c.name.clone());
            }
            name = name.or_else(|| Some(key.clone()));
        }
    }
    let _ = ls(&LsArgs {
        store: path.to_path_buf(),
        format: LsFormat::Text,
    });
    if let Some(name) = name {
        let formats = Format::value_variants();
        let args = ProfileArgs {
            format: Some(formats[name.len() % formats.len()]),
            name: Some(name),
            all: false,
            store: vec![path.to_path_buf()],
            to: None,
            merge_images: false,
            verify: false,
            timeout: std::time::Duration::from_secs(1),
            command: Vec::new(),
        };
        // `profile` is async (its --verify runs containers); without --verify it only reads.
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            let _ = rt.block_on(profile(&args));
        }
    }
}

fn report(store: &StoreReader, target: &Target<'_>) {
    let Ok(profile) = target.profile(store) else {
        return;
    };
    if let Some(granted) = target.granted() {
        let _ = droppable(granted, &profile);
    }
    let report = Report::new(
        target.report_subject(),
        "store",
        profile,
        LossCounters::default(),
    );
    for format in Format::value_variants() {
        let _ = report.render(*format);
    }
}
