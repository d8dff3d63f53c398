#!/usr/bin/env bash
# Smoke-fuzz every target (or the TARGETs named) for SECONDS each (default 20), one after another,
# starting from the committed corpus in fuzz/corpus/<target>/.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# The crashes kept in fuzz/artifacts/<target>/ are replayed with the corpus. New corpus entries go
# to fuzz/target/corpus-new/<target>/ (the committed corpus is only read), unless FUZZ_GROW=1,
# which adds them to fuzz/corpus/<target>/. A crash leaves its input in fuzz/artifacts/<target>/
# and fails the run; every target still runs. Exits 0 when all ran clean.
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`), plus what building
# capspy needs (`cargo xtask setup`: bpf-linker and nightly rust-src).
set -euo pipefail

seconds=${1:-20}
shift || true
cd "$(dirname "$0")"

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# Release with debug assertions and overflow checks (cargo-fuzz's default), ASan.
cargo +nightly fuzz build

mkdir -p target
failed=()
for t in "${targets[@]}"; do
    seeds=corpus/$t
    mkdir -p "$seeds" "artifacts/$t"
    # The first folder receives new inputs; the others are only read. Crashes found before (kept
    # in artifacts/) are replayed first, so a regression fails at once.
    if [ "${FUZZ_GROW:-0}" = 1 ]; then
        dirs=("$seeds" "artifacts/$t")
    else
        mkdir -p "target/corpus-new/$t"
        dirs=("target/corpus-new/$t" "$seeds" "artifacts/$t")
    fi
    case $t in
        # Whole SQLite files: the seeds are a real store (48 KiB).
        store_file) opts=(-max_len=65536) ;;
        # Structured rows: full-size inputs from the start (no slow length ramp-up).
        store_rows) opts=(-max_len=4096 -len_control=0) ;;
        *) opts=() ;;
    esac
    log=target/fuzz-$t.log
    if cargo +nightly fuzz run "$t" "${dirs[@]}" -- \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        "${opts[@]}" 2>"$log"; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "fuzz: $t: ${seconds}s, ${runs:-?} runs, clean" >&2
    else
        echo "fuzz: $t: CRASH (log: fuzz/$log)" >&2
        grep -E -A25 'panicked|ERROR: (AddressSanitizer|libFuzzer)|deadly signal' "$log" | head -60 >&2 || tail -40 "$log" >&2
        grep -E 'Test unit written|^Base64' "$log" >&2 || true
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crashes in: ${failed[*]} (inputs in fuzz/artifacts/, logs in fuzz/target/fuzz-*.log)" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a crash" >&2
