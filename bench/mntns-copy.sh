#!/usr/bin/env bash
# What a new mount namespace costs as the caller's mount table grows. A container's mount namespace starts as a
# copy of the table its builder is in. That used to be reefd's, which held each pod's namespace pins and each
# container's rootfs (about four mounts per pod), so CreateContainer grew with the pods already running; since
# runtime/src/mount_ns.rs it is the node's, which those mounts no longer reach (bench/README.md, "reefd's own
# mount namespace"). Runs in a private mount namespace of its own: the tmpfs mounts it makes vanish with it.
# As root:  bench/mntns-copy.sh
set -euo pipefail
if [[ ${1:-} != --inside ]]; then exec unshare -m "$0" --inside; fi
dir=$(mktemp -d /tmp/reef-mntns-copy.XXXXXX)
mount --make-rprivate /
mount -t tmpfs reef-mntns-copy "$dir"
trap 'umount -R "$dir"; rmdir "$dir"' EXIT
made=0
for n in 0 250 500 1000; do
  while (( made < n )); do mkdir "$dir/$made"; mount -t tmpfs "reef-mntns-copy" "$dir/$made"; made=$((made + 1)); done
  # unshare(CLONE_NEWNS) in a forked child, less a bare fork and exit: the copy, and its teardown at exit.
  perl -MTime::HiRes=time -e '
    my $n = 300; my $t0 = time;
    for (1..$n) { my $p = fork; if (!$p) { syscall(272, 0x20000) == 0 or die "unshare: $!"; exit 0 } waitpid($p, 0) }
    my $t1 = time;
    for (1..$n) { my $p = fork; if (!$p) { exit 0 } waitpid($p, 0) }
    my $t2 = time;
    printf "%5d extra mounts: a new mount namespace costs %.3f ms\n", $ARGV[0], (($t1 - $t0) - ($t2 - $t1)) / $n * 1e3' "$n"
done
