#!/usr/bin/env bash
# Pod network setup + teardown time per pod: netplug's built-in mode against CNI plugins (bridge + host-local +
# portmap from Debian's containernetworking-plugins), in one run. As root on Debian 12.
#   bench/net.sh              # 200 pods per mode
#   bench/net.sh 500 --json   # more pods, figures as JSON too
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps
pods="${1:-200}"; shift || true
cargo build --release -q -p reef-net-bench
cni_bin=/usr/lib/cni
[[ -x /opt/cni/bin/bridge ]] && cni_bin=/opt/cni/bin
# portmap (through iptables-nft) creates iptables' nat tables and keeps its top-level chains there; when this run
# is what created them, they go at the end.
had_nat=0; nft list table ip nat >/dev/null 2>&1 && had_nat=1
had_nat6=0; nft list table ip6 nat >/dev/null 2>&1 && had_nat6=1
cleanup() {
  ((had_nat)) || nft delete table ip nat 2>/dev/null || true
  ((had_nat6)) || nft delete table ip6 nat 2>/dev/null || true
}
trap cleanup EXIT
target/release/reef-net-bench --pods "$pods" --cni-bin "$cni_bin" "$@"
