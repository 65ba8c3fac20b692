#!/usr/bin/env bash
# Regenerates reef-monitor.txt and reefd.txt: the functions each runs, found by running release builds through
# bench/cri.sh's pod lifecycles (image pulls, RunPodSandbox, CreateContainer, StartContainer, StopContainer,
# RemoveContainer, StopPodSandbox, RemovePodSandbox) while counting which functions run:
# - reefd with a uprobe on every function (tracefs; cheap, in the kernel);
# - every pod monitor under gdb, one breakpoint per function (uprobes count per binary, and a monitor's
#   short-lived children run the same binary: only the monitor itself must be counted).
# Needs root, gdb, tracefs, and what bench/cri.sh needs; takes a few minutes (gdb is slow to arm).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v gdb >/dev/null || apt-get install -y -qq gdb >/dev/null
tracing=/sys/kernel/tracing
mounted=""
[[ -e $tracing/uprobe_events ]] || { mount -t tracefs nodev "$tracing"; mounted=1; }
host=$(rustc -vV | sed -n 's/^host: //p')
musl="${host%%-*}-unknown-linux-musl"
# Built as scripts/build-release builds them (the same cargo invocations, so the same features and symbol
# names), without a layout.
env -u REEF_LAYOUT cargo build -q --release --workspace --bins
env -u REEF_LAYOUT cargo build -q --release -p reef-runtime --bin reef-monitor --target "$musl"
work=$(mktemp -d /tmp/reef-layout.XXXXXX)
trap 'python3 scripts/layout/uprobes.py remove; rm -rf "$work"; [[ -z $mounted ]] || umount "$tracing"' EXIT
cp target/release/reefd "$work/"
cp "target/$musl/release/reef-monitor" "$work/reef-monitor.real"
cp scripts/layout/reef-monitor scripts/layout/trace-monitor.py "$work/"

# A monitor's start, up to its first poll (the traced daemons below are attached only once they listen), given
# the node's mount namespace as reefd gives it.
mkdir "$work/start"
TRACE_BINARY="$work/reef-monitor.real" TRACE_OUT="$work/monitor-start.hits" \
  gdb -batch -nx -x "$work/trace-monitor.py" --args "$work/reef-monitor.real" "$work/start" --node-mounts 3 \
  >"$work/gdb-start.log" 2>&1 3</proc/self/ns/mnt
[[ -s "$work/monitor-start.hits" ]] || { echo "the monitor's start was not traced; see $work/gdb-start.log" >&2; exit 1; }
python3 scripts/layout/uprobes.py add "$work/reefd" "$work/reefd.probes"
NO_BUILD=1 RUNTIMES=reef MEMORY_AT=5 REEFD="$work/reefd" bench/cri.sh 10 2 6 >"$work/bench.out" 2>&1 ||
  { cat "$work/bench.out" >&2; exit 1; }
python3 scripts/layout/uprobes.py collect "$work/reefd.probes" >"$work/reefd.hits"
# Each monitor's tracer writes its hits when the monitor exits.
for pid in $(cat "$work/gdb.pids" 2>/dev/null); do
  while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
done
[[ -s "$work/attach.hits" ]] || { echo "no monitor was traced; see $work/gdb.log" >&2; exit 1; }

write() { # list name, hits files...
  local out=scripts/layout/$1.txt; shift
  {
    echo "# Functions $(basename "$out" .txt) runs (scripts/layout/profile.sh, $(date -u +%F), $(rustc -V))."
    # A Rust symbol's hash comes from its crate's -C metadata, its path and its signature, not from its body: the
    # names hold across most code changes, and change with dependency versions, features, profile or toolchain.
    cat "$@" | LC_ALL=C sort -u
  } >"$out"
  echo "$(grep -vc '^#' "$out") functions in $out"
}
write reef-monitor "$work/monitor-start.hits" "$work/attach.hits"
write reefd "$work/reefd.hits"
