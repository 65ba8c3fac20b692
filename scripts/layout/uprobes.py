#!/usr/bin/env python3
"""Counts which functions of a binary run, with one uprobe per function (scripts/layout/profile.sh).

  uprobes.py add BINARY NAMES [PREFIX]   probe every function symbol of BINARY (events PREFIX<n>, default f);
                                         NAMES gets the probes' symbol names
  uprobes.py collect NAMES [PREFIX]      print the names of the functions whose probe was hit, by any process
  uprobes.py collect-pids NAMES PREFIX TRACE PIDS
                                         the same from TRACE (the trace buffer's lines, saved), hits of the
                                         processes listed in the file PIDS only
  uprobes.py remove                      remove the probes
"""
import os
import re
import subprocess
import sys

TRACING = "/sys/kernel/tracing"
GROUP = "reefhot"


def functions(binary):
    """(file offset, symbol) of each function: uprobes take offsets in the file, not addresses."""
    segments = []
    for line in subprocess.run(["readelf", "-lW", binary], capture_output=True, text=True, check=True).stdout.splitlines():
        f = line.split()
        if f and f[0] == "LOAD" and "E" in f[6:]:
            segments.append((int(f[2], 16), int(f[1], 16), int(f[5], 16)))  # address, offset, size
    for line in subprocess.run(["nm", binary], capture_output=True, text=True, check=True).stdout.splitlines():
        p = line.split()
        if len(p) == 3 and p[1] in "tTwW":
            addr = int(p[0], 16)
            for start, offset, size in segments:
                if start <= addr < start + size:
                    yield addr - start + offset, p[2]


def add(binary, names_file, prefix="f"):
    binary = os.path.realpath(binary)
    # Symbols that share an address (merged identical functions) share a probe; a hit counts for each of them,
    # because a build with another layout may not merge them again.
    at = {}
    for offset, name in functions(binary):
        at.setdefault(offset, []).append(name)
    names = []
    # tracefs refuses the seek of Python's append mode: plain writes, one probe each.
    events = os.open(f"{TRACING}/uprobe_events", os.O_WRONLY | os.O_APPEND)
    for offset, aliases in at.items():
        try:
            os.write(events, f"p:{GROUP}/{prefix}{len(names)} {binary}:{offset:#x}\n".encode())
        except OSError:
            continue  # not a place a probe can go
        names.append(" ".join(aliases))
    os.close(events)
    with open(names_file, "w") as f:
        f.write("\n".join(names))
    with open(f"{TRACING}/events/{GROUP}/enable", "w") as f:
        f.write("1")


def collect(names_file, prefix="f"):
    names = open(names_file).read().split("\n")
    hit = set()
    for line in open(f"{TRACING}/uprobe_profile"):
        f = line.split()
        if len(f) >= 3 and re.fullmatch(prefix + r"[0-9]+", f[1]) and int(f[2]) > 0:
            hit.update(names[int(f[1][len(prefix):])].split())
    for name in sorted(hit):
        print(name)


def collect_pids(names_file, prefix, trace, pids_file):
    """A probe's hit count does not say which process hit it: the trace buffer's lines do
    (`reef-monitor-2746 [000] ..... 9761.687706: m37: (0x7f6be4edf9e0)`)."""
    names = open(names_file).read().split("\n")
    pids = set(open(pids_file).read().split())
    event = re.compile(r"-(\d+)\s+\[\d+\].*?\s" + prefix + r"(\d+):")
    hit = set()
    for line in open(trace, errors="replace"):
        m = event.search(line)
        if m and m.group(1) in pids:
            hit.update(names[int(m.group(2))].split())
    for name in sorted(hit):
        print(name)


def remove():
    if os.path.exists(f"{TRACING}/events/{GROUP}/enable"):
        with open(f"{TRACING}/events/{GROUP}/enable", "w") as f:
            f.write("0")
    lines = open(f"{TRACING}/uprobe_events").read().splitlines()
    ours = [line for line in lines if line.startswith(f"p:{GROUP}/")]
    if len(ours) == len(lines):
        # All of them are ours: truncating removes them at once (one by one takes minutes).
        os.close(os.open(f"{TRACING}/uprobe_events", os.O_WRONLY | os.O_TRUNC))
        return
    # Only this group's probes: others' stay.
    events = os.open(f"{TRACING}/uprobe_events", os.O_WRONLY | os.O_APPEND)
    for line in ours:
        os.write(events, f"-:{line.split()[0][2:]}\n".encode())
    os.close(events)


if __name__ == "__main__":
    {
        "add": lambda: add(*sys.argv[2:5]),
        "collect": lambda: collect(*sys.argv[2:4]),
        "collect-pids": lambda: collect_pids(*sys.argv[2:6]),
        "remove": remove,
    }[sys.argv[1]]()
