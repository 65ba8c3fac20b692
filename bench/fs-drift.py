#!/usr/bin/env python3
"""How much a burst of deletions slows file creation on the filesystem holding DIR (default /tmp).

On an ext4 without a journal, the inode allocator skips each inode freed in the last 60 s (360 s while its inode
table block is dirty), at one buffer-cache lookup per skipped inode. A runtime's CreateContainer makes directories
and files on its root dir, so on such a filesystem its latency depends on what was deleted in the last minute, not
on the runtime: the cause of the drift between back-to-back bench/cri.sh runs (bench/README.md). Journaled ext4
and xfs, what nodes use, do not do this.

  bench/fs-drift.py [DIR] [--wait SECONDS]     (as root: it syncs and drops the clean page cache twice)
"""
import argparse
import os
import shutil
import tempfile
import time


def mkdir_us(base, n=2000):
    d = tempfile.mkdtemp(dir=base, prefix="probe.")
    t0 = time.perf_counter()
    for i in range(n):
        os.mkdir(f"{d}/{i}")
    us = (time.perf_counter() - t0) / n * 1e6
    shutil.rmtree(d)
    return us


def drop_clean_cache():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("1")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", nargs="?", default="/tmp")
    ap.add_argument("--wait", type=int, default=70, help="quiet time after the burst")
    a = ap.parse_args()
    base = tempfile.mkdtemp(dir=a.dir, prefix="fs-drift.")
    try:
        drop_clean_cache()
        print(f"mkdir, page cache dropped:                {mkdir_us(base):7.1f} us")
        burst = tempfile.mkdtemp(dir=base, prefix="burst.")
        for i in range(20000):
            open(f"{burst}/{i}", "w").close()
        shutil.rmtree(burst)
        print(f"mkdir, right after 20000 files deleted:   {mkdir_us(base):7.1f} us")
        # Making files dirties the inode table blocks again, and a dirty block stretches the window to 360 s:
        # quiet alone does not bring the first figure back.
        time.sleep(a.wait)
        print(f"mkdir, {a.wait} s later:                      {mkdir_us(base):7.1f} us")
        drop_clean_cache()
        print(f"mkdir, after sync and a page cache drop:  {mkdir_us(base):7.1f} us")
    finally:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
