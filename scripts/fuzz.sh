#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/) for FUZZ_SECONDS each (default 60), then
# merges what it found into the committed corpus (fuzz/corpus/<target>/, minimized).
#
#   scripts/fuzz.sh                       # all targets, 60 s each
#   FUZZ_SECONDS=10 scripts/fuzz.sh icmp  # one target, 10 s
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). libFuzzer needs nightly compiler flags: a
# nightly toolchain is used when rustup has one, else stable with RUSTC_BOOTSTRAP=1.
# Exit status: 0 when no target crashed; 1 otherwise, with the crashing inputs in
# fuzz/artifacts/<target>/ (copy each to fuzz/regressions/<target>/ so tests/fuzz_regressions.rs
# replays it).
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
# No sanitizer by default: the fuzzed code is safe Rust (bounds and overflow checks are on via
# --debug-assertions), and AddressSanitizer would double the build. FUZZ_SANITIZER=address to use it.
sanitizer=${FUZZ_SANITIZER:-none}
all_targets=(config duration icmp api_json target_files)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

command -v cargo-fuzz > /dev/null || { echo "fuzz.sh: cargo-fuzz missing: cargo install cargo-fuzz" >&2; exit 2; }
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    toolchain=()
    export RUSTC_BOOTSTRAP=1
fi

# Build once for all targets (the first build compiles every dependency with coverage).
cargo "${toolchain[@]}" fuzz build --release --debug-assertions --sanitizer "$sanitizer"

failed=()
for t in "${targets[@]}"; do
    work=fuzz/corpus-work/$t
    mkdir -p "$work" "fuzz/corpus/$t" "fuzz/artifacts/$t"
    echo "== $t: ${seconds}s"
    # New inputs go to the work dir; the committed corpus is read as a seed directory.
    log=fuzz/artifacts/$t/run.log
    rc=0
    cargo "${toolchain[@]}" fuzz run --release --debug-assertions --sanitizer "$sanitizer" "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 > "$log" 2>&1 || rc=$?
    grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::new_units_added|SUMMARY|Done )' "$log" | sed 's/^/   /' || true
    if [ "$rc" -ne 0 ] || ls "fuzz/artifacts/$t"/crash-* "fuzz/artifacts/$t"/oom-* "fuzz/artifacts/$t"/timeout-* > /dev/null 2>&1; then
        tail -40 "$log" >&2
        failed+=("$t")
        continue
    fi
    # Keep the committed corpus small: add the new inputs, then minimize in place.
    find "$work" -type f -exec cp -n {} "fuzz/corpus/$t/" \;
    cargo "${toolchain[@]}" fuzz cmin --release --debug-assertions --sanitizer "$sanitizer" "$t" "fuzz/corpus/$t" \
        -- -max_len=4096 > /dev/null 2>&1 || echo "   (cmin failed; corpus kept unminimized)"
    rm -rf "$work"
    echo "   corpus: $(ls "fuzz/corpus/$t" | wc -l) files, $(du -sh "fuzz/corpus/$t" | cut -f1)"
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz.sh: no crash in ${targets[*]} (${seconds}s each)"
