#!/usr/bin/env bash
# Image pull throughput, reefd against Debian's containerd 1.6, in one run on one machine.
#
# Builds an image of 8 layers x 64 MiB of random data, serves it from a local docker-registry on 127.0.0.1, and
# pulls it into a fresh store with each runtime: "cold" after dropping the page cache, "warm" with the registry's
# blobs cached. Each pull includes unpacking (ctr pull unpacks into its overlayfs snapshotter). Run as root.
#   bench/image-pull.sh [LAYERS] [MIB_PER_LAYER] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
LAYERS=${1:-8}; MIB=${2:-64}; ROUNDS=${3:-3}
./scripts/install-deps --bench >/dev/null
cargo build --release --workspace --bins -q

work=$(mktemp -d /tmp/reef-bench-pull.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  grep -F "$work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 100); do [[ -e "$1" ]] && return 0; sleep 0.1; done; echo "timed out waiting for $1" >&2; return 1; }
now() { date +%s.%N; }

port=$(free_port)
mkdir -p "$work/registry"
cat > "$work/registry.yml" <<YML
version: 0.1
storage: { filesystem: { rootdirectory: $work/registry } }
http: { addr: 127.0.0.1:$port }
log: { level: error }
YML
/usr/bin/docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
echo "building and pushing ${LAYERS} x ${MIB} MiB..."
bytes=$(python3 bench/make-image.py --registry "127.0.0.1:$port" --layers "$LAYERS" --size-mib "$MIB")
image="127.0.0.1:$port/bench/big:1"

pull_reef() { # $1 = cold|warm
  local d="$work/reef-$RANDOM"; mkdir -p "$d"
  printf 'root_dir = "%s/root"\nstate_dir = "%s/state"\nsocket = "%s/state/reef.sock"\nlog_level = "warn"\n[registry]\ninsecure = ["127.0.0.1:%s"]\n' \
    "$d" "$d" "$d" "$port" > "$d/config.toml"
  target/release/reefd --config "$d/config.toml" 2>"$d/reefd.log" &
  local pid=$!; pids+=($pid)
  wait_for "$d/state/reef.sock"
  [[ $1 == cold ]] && { sync; echo 3 > /proc/sys/vm/drop_caches; }
  local t0; t0=$(now)
  target/release/rctl --endpoint "$d/state/reef.sock" pull "$image" >/dev/null
  local t1; t1=$(now)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$d"
  echo "$t1 - $t0" | bc -l
}

pull_containerd() {
  local d="$work/ctrd-$RANDOM"; mkdir -p "$d"
  cat > "$d/config.toml" <<TOML
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
TOML
  containerd --config "$d/config.toml" >"$d/containerd.log" 2>&1 &
  local pid=$!; pids+=($pid)
  wait_for "$d/containerd.sock"
  [[ $1 == cold ]] && { sync; echo 3 > /proc/sys/vm/drop_caches; }
  local t0; t0=$(now)
  ctr --address "$d/containerd.sock" images pull --plain-http "$image" >/dev/null
  local t1; t1=$(now)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  grep -F "$d" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$d"
  echo "$t1 - $t0" | bc -l
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mbps() { echo "$bytes / $1 / 1000000" | bc -l | xargs printf '%.0f'; }

echo "image: $LAYERS layers, $((bytes / 1000000)) MB compressed; median of $ROUNDS rounds each"
printf '%-12s %-6s %10s %10s\n' runtime cache seconds MB/s
declare -A result
for mode in cold warm; do
  for rt in reef containerd; do
    times=()
    for _ in $(seq "$ROUNDS"); do times+=("$(pull_$( [[ $rt == reef ]] && echo reef || echo containerd ) "$mode")"); done
    m=$(printf '%s\n' "${times[@]}" | median)
    result[$rt-$mode]=$m
    printf '%-12s %-6s %10.2f %10s\n' "$rt" "$mode" "$m" "$(mbps "$m")"
  done
done
for mode in cold warm; do
  printf 'reef / containerd (%s): %.2fx\n' "$mode" "$(echo "${result[containerd-$mode]} / ${result[reef-$mode]}" | bc -l)"
done
