#!/usr/bin/env bash
# Fuzzing (a script, not CI): the cargo-fuzz targets in fuzz/, each run for a bounded time with libFuzzer.
#
#   bench/fuzz.sh                          every target, FUZZ_SECONDS (default 60) each
#   FUZZ_SECONDS=300 bench/fuzz.sh unpack  some targets, longer
#   FUZZ_ARGS="-jobs=2 -workers=2" bench/fuzz.sh cri_spec   more libFuzzer flags
#
# Installs cargo-fuzz when missing; builds on the stable toolchain with RUSTC_BOOTSTRAP=1 (cargo fuzz passes
# nightly flags). Each target starts from its committed seeds (fuzz/corpus/<target>, read only) plus what earlier
# runs found (fuzz/corpus-work/<target>, where new inputs go; not committed). Prints executions per target and
# exits non-zero if any target crashed, timed out or ran out of memory, leaving the input that did it in
# fuzz/artifacts/<target>/ and the run's log in fuzz/artifacts/<target>.log. Reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -a --fuzz-dir fuzz <target> fuzz/artifacts/<target>/crash-…
set -uo pipefail
cd "$(dirname "$0")/.."
ALL=(cri_spec unpack spdy_frame websocket_frame image_reference config)
SECONDS_EACH=${FUZZ_SECONDS:-60}
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${ALL[@]}")
for t in "${targets[@]}"; do
    [[ " ${ALL[*]} " == *" $t "* ]] || { echo "fuzz.sh: unknown target $t (targets: ${ALL[*]})" >&2; exit 2; }
done
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz >&2 || exit 2
fi
# -a: debug assertions and overflow checks on, as in the tests.
cargo fuzz build -a --fuzz-dir fuzz >&2 || { echo "fuzz.sh: build failed" >&2; exit 2; }

failed=0
rows=()
for t in "${targets[@]}"; do
    work=fuzz/corpus-work/$t
    log=fuzz/artifacts/$t.log
    mkdir -p "$work" "fuzz/artifacts/$t"
    dict=()
    [[ -f fuzz/dicts/$t.dict ]] && dict=("-dict=fuzz/dicts/$t.dict")
    echo "fuzz.sh: $t for ${SECONDS_EACH}s (log: $log)" >&2
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    cargo fuzz run -a --fuzz-dir fuzz "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        "${dict[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    # The final stats, else the last progress line (`#N ... exec/s: ...`) of a run that stopped early.
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    [[ -n $execs ]] || execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    per_second=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    corpus=$(find "$work" -type f | wc -l)
    if [[ $rc -eq 0 ]]; then
        status=ok
    else
        failed=1
        status="FAILED (exit $rc): $(grep -m1 -oE 'ERROR: libFuzzer: [a-z-]+|panicked at [^ ]+' "$log" || echo 'see log')"
        artifact=$(sed -n 's/.*Test unit written to //p' "$log" | tail -1)
        [[ -n $artifact ]] && status+=", input: $artifact"
    fi
    rows+=("$(printf '%-16s %12s %10s %8s  %s' "$t" "${execs:-?}" "${per_second:-?}" "$corpus" "$status")")
done

printf '%-16s %12s %10s %8s  %s\n' target executions exec/s corpus status
printf '%s\n' "${rows[@]}"
exit $failed
