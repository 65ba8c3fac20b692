#!/usr/bin/env bash
# The CRI benchmark: reefd against Debian's containerd 1.6 (CRI plugin, runc, CNI), in one run on one machine.
#
# Builds the release binaries, a busybox image from Debian's busybox-static and a pause image (containerd needs a
# sandbox image; no outside registry is reachable), serves both from a local docker-registry on 127.0.0.1, and
# runs target/release/reef-bench against:
#   reef                reefd with its built-in pod networking (own bridge, /24 and nft table for the run)
#   containerd          containerd + runc, CNI bridge plugin (own bridge and subnet, ipMasq off, no gateway)
#   containerd-hostnet  the same containerd setup, pods on the host network: no CNI and no network namespace, so
#                       less network work than reef does (containerd 1.6 refuses a pod network without eth0)
# Each runtime gets its own dirs, socket, config and cgroup parent; reef-bench starts each daemon as a child
# subreaper, measures it and its per-pod processes, and kills all of them by PID at the end. Run as root.
#   bench/cri.sh [PODS] [PARALLEL] [PARALLEL_PODS]    (env: RUNTIMES, MEMORY_AT, BENCH_JSON, REEFD, REEFD_WRAP, NO_BUILD, REEF_ROOT_TMPFS, SETTLE)
set -euo pipefail
cd "$(dirname "$0")/.."
PODS=${1:-100}; PARALLEL=${2:-10}; PARALLEL_PODS=${3:-100}
RUNTIMES=${RUNTIMES:-reef containerd containerd-hostnet}
MEMORY_AT=${MEMORY_AT:-20,100} # running pod counts at which memory is measured (at most PODS)
./scripts/install-deps --bench >/dev/null
[[ -n ${NO_BUILD:-} ]] || ./scripts/build-release -q

work=$(mktemp -d /tmp/reef-bench-cri.XXXXXX)
tag=$$
bridge="rbench$((tag % 100000))"
reef_bridge="rbreef$((tag % 100000))"
reef_table="reefbench$tag"
pids=()
nft_before=$(nft list ruleset 2>/dev/null | sha256sum)
ipt_before=$(iptables-save 2>/dev/null | grep -v '^#' | sha256sum || true)
forward_before=$(cat /proc/sys/net/ipv4/ip_forward)
cni_cache_existed=$([[ -d /var/lib/cni ]] && echo yes || echo no)
cleanup() {
  set +e
  # reef-bench tears down its pods and daemon on SIGTERM; what survives a harder death is found below by the
  # run's own directory on the command line and by the run's own cgroup parents.
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  for p in /proc/[0-9]*; do
    grep -qaF "$work" "$p/cmdline" 2>/dev/null && kill -9 "${p#/proc/}" 2>/dev/null
  done
  for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    for d in "$h"reef-bench-"$tag"-*; do
      [[ -d $d ]] || continue
      find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null
      sleep 0.2
      find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
  done
  grep -F "$work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  ip link show "$bridge" >/dev/null 2>&1 && ip link del "$bridge"
  ip link show "$reef_bridge" >/dev/null 2>&1 && ip link del "$reef_bridge"
  nft delete table inet "$reef_table" 2>/dev/null
  # libcni's result cache, when this run made it and left it empty.
  [[ $cni_cache_existed == no ]] && find /var/lib/cni -depth -type d -empty -delete 2>/dev/null
  # reefd's built-in networking turns forwarding on, as a node needs; the bench machine gets its setting back.
  echo "$forward_before" > /proc/sys/net/ipv4/ip_forward
  [[ $(nft list ruleset 2>/dev/null | sha256sum) == "$nft_before" ]] || echo "note: the nft ruleset changed during the run (another run on this machine?)" >&2
  [[ $(iptables-save 2>/dev/null | grep -v '^#' | sha256sum || true) == "$ipt_before" ]] || echo "note: iptables changed during the run" >&2
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# A /24 in 10.200.0.0/13 that no route on this host covers yet.
free_subnet() {
  local routes; routes=$(ip -4 route show table all)
  for _ in $(seq 50); do
    local net="10.$((200 + RANDOM % 8)).$((RANDOM % 256))"
    grep -qF "$net." <<<"$routes" || { echo "$net.0/24"; return; }
  done
  echo "no free subnet" >&2; return 1
}

# As on a real node, each runtime's volatile state (/run/reef, /run/containerd) is on a tmpfs and its root
# (/var/lib/...) on disk.
mkdir -p "$work/run"
mount -t tmpfs -o size=2g,mode=0700 "reef-bench-run-$tag" "$work/run"

port=$(free_port)
registry="127.0.0.1:$port"
mkdir -p "$work/registry"
cat > "$work/registry.yml" <<YML
version: 0.1
storage: { filesystem: { rootdirectory: $work/registry } }
http: { addr: $registry }
log: { level: error }
YML
/usr/bin/docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://$registry/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
gcc -static -Os -s -o "$work/pause" bench/pause.c
python3 bench/make-busybox.py --registry "$registry" --pause "$work/pause"
image="$registry/bench/busybox:1"
pause="$registry/bench/pause:1"

bench() { # name, endpoint, extra reef-bench args..., -- daemon command
  local name=$1 endpoint=$2; shift 2
  target/release/reef-bench run --name "$name" --endpoint "$endpoint" --image "$image" \
    --pods "$PODS" --parallel "$PARALLEL" --parallel-pods "$PARALLEL_PODS" --memory-at "$MEMORY_AT" \
    --cgroup-parent "/reef-bench-$tag-$name" --log-dir "$work/logs-$name" \
    --json "$work/$name.json" --daemon-log "$work/$name.log" "$@" >"$work/$name.out" &
  local p=$!; pids+=($p)
  if ! wait "$p"; then
    echo "reef-bench $name failed; its output and the daemon's log:" >&2
    cat "$work/$name.out" >&2; grep -iE "error|fatal|runc" "$work/$name.log" | tail -n 30 >&2
    return 1
  fi
  grep -v '^{' "$work/$name.out"
  echo
}

run_reef() {
  local d="$work/reef" run="$work/run/reef"; mkdir -p "$d"
  # REEF_ROOT_TMPFS=1 puts reefd's root dir on the tmpfs too: an experiment that shows what disk syncs cost.
  local root="$d/root"; [[ -n ${REEF_ROOT_TMPFS:-} ]] && root="$run-root"
  cat > "$d/config.toml" <<TOML
root_dir = "$root"
state_dir = "$run"
socket = "$run/reef.sock"
log_level = "warn"
cgroup_parent = "reef-bench-$tag-reef"
[registry]
insecure = ["$registry"]
[network]
bridge = "$reef_bridge"
subnet = "$reef_subnet"
nft_table = "$reef_table"
TOML
  # REEFD_WRAP: a command prefix for profiling (e.g. "perf record -g -o /tmp/reefd.data"); memory figures then
  # count the wrapper too.
  # shellcheck disable=SC2086
  # REEFD: another reefd build to measure (reef-monitor is taken from its directory), e.g. the commit before a change.
  bench reef "$run/reef.sock" -- ${REEFD_WRAP:-} "${REEFD:-target/reef/reefd}" --config "$d/config.toml"
}

run_containerd() { # name, extra reef-bench args...
  local name=$1; shift
  local d="$work/$name" run="$work/run/$name"; mkdir -p "$d/cni" "$d/opt" "$run"
  cat > "$d/cni/10-bench.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "reef-bench-$tag",
  "plugins": [{
    "type": "bridge", "bridge": "$bridge", "isGateway": false, "ipMasq": false, "hairpinMode": false,
    "ipam": { "type": "host-local", "ranges": [[{ "subnet": "$subnet" }]], "dataDir": "$d/ipam" }
  }]
}
JSON
  cat > "$d/config.toml" <<TOML
version = 2
root = "$d/root"
state = "$run/state"
[grpc]
  address = "$run/containerd.sock"
[ttrpc]
  address = "$run/containerd.sock.ttrpc"
[debug]
  level = "${CONTAINERD_LOG_LEVEL:-info}"
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # This host refuses to lower oom_score_adj (no CAP_SYS_RESOURCE), and runc fails on the pause's -998.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$d/cni"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."$registry"]
    endpoint = ["http://$registry"]
TOML
  bench "$name" "$run/containerd.sock" --pull "$pause" "$@" -- containerd --config "$d/config.toml"
}

# On an ext4 without a journal, the inode allocator skips every inode freed in the last 60 s (360 s while its
# inode table block is dirty, and each file made in that block dirties it again), at one buffer-cache lookup each.
# So each file a runtime creates costs more after a burst of deletions, and a previous run's teardown can double
# reef's CreateContainer (bench/README.md, "The filesystem drift"). The allocator only checks inode table blocks
# still in the buffer cache: writing them back and dropping the clean cache before each runtime gives each one
# the same filesystem. Journaled ext4 and xfs, what nodes run, have no such check. SETTLE=0 skips it.
settle_default() {
  local src fstype; read -r fstype src < <(findmnt -no FSTYPE,SOURCE -T "$work")
  [[ $fstype == ext4 ]] || { echo 0; return; }
  compgen -G "/proc/fs/jbd2/$(basename "$src")-*" >/dev/null && echo 0 || echo 1
}
SETTLE=${SETTLE:-$(settle_default)}
settle() {
  [[ $SETTLE == 1 ]] || return 0
  echo "$work is on an ext4 without a journal: syncing and dropping the page cache first (SETTLE=0 to skip)"
  sync
  echo 1 > /proc/sys/vm/drop_caches
}

subnet=$(free_subnet)
reef_subnet=$(free_subnet)
[[ $reef_subnet != "$subnet" ]] || reef_subnet=$(free_subnet)
echo "pods: $PODS one after another, then $PARALLEL_PODS with $PARALLEL in flight; work dir $work"
echo "containerd CNI: bridge $bridge, subnet $subnet; reef: bridge $reef_bridge, subnet $reef_subnet, nft table $reef_table"
echo
runs=()
for rt in $RUNTIMES; do
  settle
  case $rt in
    reef) run_reef ;;
    containerd) run_containerd containerd ;;
    containerd-hostnet) run_containerd containerd-hostnet --host-network ;;
    *) echo "unknown runtime $rt" >&2; exit 2 ;;
  esac
  runs+=("$work/$rt.json")
done
target/release/reef-bench compare "${runs[@]}"
for r in "${runs[@]}"; do cat "$r"; done > "${BENCH_JSON:-/dev/null}"
