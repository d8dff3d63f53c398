//! Smoke test of `cargo xtask bench`: the quick run goes through every phase (variants attached
//! and stopped, fake containers made and removed, stores written and read) and prints every
//! table. It asserts no timing: those belong in BENCHMARKS.md, not in a pass/fail.
//!
//! Needs root (BPF programs, cgroups), bpftrace, bpftool, gcc, make, nginx and wrk, as CI has.

use std::path::PathBuf;
use std::process::Command;

/// Removed on drop, so a failing run leaves nothing in /tmp either.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn quick_bench_prints_every_table_and_cleans_up() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("capspy-bench-smoke-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let report = dir.0.join("BENCHMARKS.md");
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench", "--quick", "--output"])
        .arg(&report)
        .output()
        .expect("running xtask");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "xtask bench --quick failed: {}\n{stderr}",
        out.status
    );
    for needle in [
        "### 1. Per-check cost",
        "| baseline |",
        "| floor |",
        "| capspy |",
        "| bpftrace |",
        "| stream |",
        "| capspy / floor |",
        "| capspy / bpftrace |",
        "### 1c. The aggregation alone",
        "| cgrp |",
        "| capspy, hash only − capspy (what the storage saves capspy) |",
        "### 1d. capspy's program, stage by stage",
        "| capspy − floor, inside the program |",
        "### 2. The daemon's own cost",
        "### 3. Scale",
        "| attributed exactly",
        "| map | type | key B |",
        // Named, with its entries counted: bpftool is there (CI installs it).
        "| CHECKS | hash | 16 |",
        "### 4. Reading",
        "`capspy ls`",
        "### 5. What real work pays",
        "| nginx under wrk: p99 latency, ms |",
        "| `make -j2`: wall s |",
        "| nothing, again (A/A) |",
        "### 5b. What the tracer itself spends",
    ] {
        assert!(stdout.contains(needle), "no {needle:?} in:\n{stdout}");
    }
    assert!(
        !stdout.contains("needs bpftool"),
        "bpftool did not name the maps or count their entries:\n{stdout}"
    );
    // Every fake container was attributed: the quick run makes 20.
    assert!(
        stdout.contains("| 20 / 20 | all | **met** |"),
        "attribution:\n{stdout}"
    );
    let written = std::fs::read_to_string(&report).unwrap();
    assert!(written.contains("## Reproduce") && written.contains(stdout.trim()));
    // Nothing of the bench is left behind.
    let leftovers: Vec<_> = std::fs::read_dir("/sys/fs/cgroup/unified/docker")
        .or_else(|_| std::fs::read_dir("/sys/fs/cgroup/docker"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.get(8..12) == Some("be4c"))
                .collect()
        })
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "cgroups left: {leftovers:?}");
}
