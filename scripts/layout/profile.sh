#!/usr/bin/env bash
# Regenerates reef-monitor.txt and reefd.txt: the functions each runs, found by running release builds through
# bench/cri.sh's pod lifecycles (image pulls, RunPodSandbox, CreateContainer, StartContainer, StopContainer,
# RemoveContainer, StopPodSandbox, RemovePodSandbox) while counting which functions run:
# - reefd with a uprobe on every function (tracefs; cheap, in the kernel);
# - every pod monitor with a uprobe on every function too: a probe counts hits per binary, and a monitor's
#   short-lived children (which build containers) run the same binary, so the monitors' hits are picked out of the
#   trace buffer by pid. (gdb did this before: it slowed the monitors so much that paths taken only when a read
#   would block never ran, and a function on such a path pulled 64 KiB of cold text into every monitor.)
# - a monitor's start (before it forks its daemon) under gdb, as it runs once and the daemon's pid is not known.
# Needs root, gdb, tracefs, and what bench/cri.sh needs; takes a few minutes.
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
buffer_kb=$(cat "$tracing/buffer_size_kb")
drain=""
trap '[[ -z $drain ]] || kill "$drain" 2>/dev/null; python3 scripts/layout/uprobes.py remove; echo "$buffer_kb" >"$tracing/buffer_size_kb"; rm -rf "$work"; [[ -z $mounted ]] || umount "$tracing"' EXIT
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
python3 scripts/layout/uprobes.py add "$work/reefd" "$work/reefd.probes" f
python3 scripts/layout/uprobes.py add "$work/reef-monitor.real" "$work/monitor.probes" m
# Every hit of an enabled probe goes to the trace buffer, reefd's too: the monitor's are kept as they come.
echo 65536 >"$tracing/buffer_size_kb"
echo >"$tracing/trace"
grep --line-buffered -E ' m[0-9]+: ' "$tracing/trace_pipe" >"$work/monitor.trace" &
drain=$!
NO_BUILD=1 RUNTIMES=reef MEMORY_AT=5 REEFD="$work/reefd" bench/cri.sh 10 2 6 >"$work/bench.out" 2>&1 ||
  { cat "$work/bench.out" >&2; exit 1; }
sleep 1
kill "$drain" && drain=""
python3 scripts/layout/uprobes.py collect "$work/reefd.probes" f >"$work/reefd.hits"
[[ -s "$work/monitor.pids" ]] || { echo "no monitor was started through the wrapper" >&2; exit 1; }
python3 scripts/layout/uprobes.py collect-pids "$work/monitor.probes" m "$work/monitor.trace" "$work/monitor.pids" \
  >"$work/attach.hits"
[[ -s "$work/attach.hits" ]] || { echo "no monitor hit was traced" >&2; exit 1; }

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
