# gdb script: records which functions of reef-monitor a monitor runs from its start, following it into its
# daemon, until it first polls, for the layout lists (scripts/layout/README.md). The daemon's life after that is
# counted with uprobes (profile.sh).
# Functions are recorded by mangled name, once each, into TRACE_OUT (appended).
import os
import subprocess

import gdb

binary = os.environ["TRACE_BINARY"]
out = os.environ["TRACE_OUT"]
hits = set()


def functions():
    """(offset, mangled name) of every function symbol of the binary."""
    nm = subprocess.run(["nm", binary], capture_output=True, text=True, check=True).stdout
    for line in nm.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            yield int(parts[0], 16), parts[2]


def load_base(pid):
    for line in open(f"/proc/{pid}/maps"):
        f = line.split()
        if len(f) >= 6 and f[5] == os.path.realpath(binary) and int(f[2], 16) == 0:
            return int(f[0].split("-")[0], 16)
    raise RuntimeError("binary not mapped")


class Hit(gdb.Breakpoint):
    def __init__(self, addr, names):
        super().__init__(f"*{addr:#x}", internal=True)
        self.names = names

    def stop(self):
        hits.update(self.names)
        return False


def save(_event=None):
    with open(out, "a") as f:
        for name in sorted(hits):
            f.write(name + "\n")
    hits.clear()


def arm(pid):
    """Breaks on every function; returns the address of the monitor's poll loop. Symbols that share an address
    (merged identical functions) share a breakpoint, and a hit counts for each of them."""
    base = load_base(pid)
    at = {}
    for off, name in functions():
        at.setdefault(off, []).append(name)
    poll_once = run = None
    for off, names in at.items():
        Hit(base + off, names)
        if any("7Monitor9poll_once" in n for n in names):
            poll_once = base + off
        if any("7Monitor3run" in n for n in names):
            run = base + off
    # Where the compiler inlined the poll into the loop, the loop's entry is as far as the start goes.
    return poll_once or run


gdb.execute("set pagination off")
gdb.execute("set confirm off")
gdb.execute("set detach-on-fork on")
gdb.events.exited.connect(save)
# From the start: arm at the first instruction, follow the daemon (the first fork), stop once it polls.
gdb.execute("set follow-fork-mode child")
gdb.execute("starti")
poll_once = arm(gdb.selected_inferior().pid)
gdb.execute(f"tbreak *{poll_once:#x}")
gdb.execute("continue")
save()
gdb.execute("kill")
