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
exec target/release/reef-net-bench --pods "$pods" --cni-bin "$cni_bin" "$@"
