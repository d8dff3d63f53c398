//! A fuzzed file opened as a capspy store: `StoreReader::open` may refuse it or read its rows
//! (store API, `capspy ls`, `capspy profile`), never panic, and never changes the file;
//! `StoreWriter::open` either accepts it (an empty file or a real store) or refuses it and
//! leaves it byte-for-byte unchanged.
//!
//! Per run: one file in a per-process folder on /dev/shm (tmpfs), removed after.
#![no_main]

use std::fs;
use std::path::PathBuf;
use std::sync::LazyLock;

use capspy::store::{StoreReader, StoreWriter};
use capspy_fuzz::{read_store, remove_store, scratch_dir, silence_stdout};
use libfuzzer_sys::fuzz_target;

static PATH: LazyLock<PathBuf> = LazyLock::new(|| {
    silence_stdout();
    scratch_dir("store-file").join("store.db")
});

fuzz_target!(|data: &[u8]| {
    let path = &*PATH;
    remove_store(path);
    fs::write(path, data).unwrap();

    if let Ok(store) = StoreReader::open(path) {
        read_store(path, &store);
    }
    assert!(fs::read(path).unwrap() == data, "a reader modified the file");

    match StoreWriter::open(path) {
        Ok(_) => {}
        Err(_) => assert!(
            fs::read(path).unwrap() == data,
            "StoreWriter::open refused the file but modified it"
        ),
    }
    remove_store(path);
});
