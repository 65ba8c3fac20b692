#!/usr/bin/env python3
"""Writes the committed seed corpus, fuzz/corpus/<target>/<name>: a few readable, handcrafted inputs per target.

Deterministic (fixed tar mtimes, no randomness), so running it again changes nothing unless this file changed.
The cri_spec seeds are SpecCase protobufs (fuzz/src/lib.rs), encoded here by hand: field numbers from the CRI's
api.proto (k8s-cri's proto/v1.proto).
"""

import io
import json
import os
import struct
import sys
import tarfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
SPDY_DICT = os.path.join(HERE, "..", "node-agent", "src", "streaming", "spdy3.dict")
# Must match ABSOLUTE_SENTINEL in fuzz_targets/unpack.rs.
ABSOLUTE_SENTINEL = "/tmp/reef-fuzz-unpack-sentinel"


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


# ---- protobuf, by hand ----

def varint(n):
    n &= (1 << 64) - 1  # int64: two's complement
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_varint(tag, n):
    return varint(tag << 3) + varint(n)


def f_bytes(tag, b):
    b = b.encode() if isinstance(b, str) else b
    return varint(tag << 3 | 2) + varint(len(b)) + b


def f_msg(tag, *parts):
    return f_bytes(tag, b"".join(parts))


def f_map(tag, d):
    return b"".join(f_msg(tag, f_bytes(1, k), f_bytes(2, v)) for k, v in d.items())


def mount(container, host, readonly=False, propagation=0, rro=False):
    parts = [f_bytes(1, container), f_bytes(2, host)]
    if readonly:
        parts.append(f_varint(3, 1))
    if propagation:
        parts.append(f_varint(5, propagation))
    if rro:
        parts.append(f_varint(8, 1))
    return f_msg(7, *parts)


def security(run_as_user=None, run_as_group=None, username=None, privileged=False, groups=(), seccomp=None,
             add_caps=(), drop_caps=(), masked=(), readonly=(), readonly_rootfs=False, no_new_privs=False):
    parts = []
    if add_caps or drop_caps:
        parts.append(f_msg(1, *[f_bytes(1, c) for c in add_caps], *[f_bytes(2, c) for c in drop_caps]))
    if privileged:
        parts.append(f_varint(2, 1))
    if run_as_user is not None:
        parts.append(f_msg(5, f_varint(1, run_as_user)))
    if username:
        parts.append(f_bytes(6, username))
    if readonly_rootfs:
        parts.append(f_varint(7, 1))
    for g in groups:
        parts.append(f_varint(8, g))
    if no_new_privs:
        parts.append(f_varint(11, 1))
    if run_as_group is not None:
        parts.append(f_msg(12, f_varint(1, run_as_group)))
    parts += [f_bytes(13, p) for p in masked] + [f_bytes(14, p) for p in readonly]
    if seccomp is not None:
        kind, ref = seccomp
        parts.append(f_msg(15, f_varint(1, kind), f_bytes(2, ref)))
    return f_msg(2, *parts)


def resources(period=0, quota=0, shares=0, memory=0, oom=0, cpus=""):
    parts = []
    for tag, v in [(1, period), (2, quota), (3, shares), (4, memory), (5, oom)]:
        if v:
            parts.append(f_varint(tag, v))
    if cpus:
        parts.append(f_bytes(6, cpus))
    return f_msg(1, *parts)


def container(name="app", image="busybox", command=(), args=(), workdir="", envs=None, mounts=(), linux=(),
              annotations=None, tty=False):
    parts = [f_msg(1, f_bytes(1, name), f_varint(2, 0)), f_msg(2, f_bytes(1, image))]
    parts += [f_bytes(3, c) for c in command] + [f_bytes(4, a) for a in args]
    if workdir:
        parts.append(f_bytes(5, workdir))
    for k, v in (envs or {}).items():
        parts.append(f_msg(6, f_bytes(1, k), f_bytes(2, v)))
    parts += list(mounts)
    parts.append(f_map(10, annotations or {}))
    if tty:
        parts.append(f_varint(14, 1))
    if linux:
        parts.append(f_msg(15, *linux))
    return f_msg(2, *parts)


def sandbox(hostname="pod", cgroup_parent="kubepods/besteffort/pod1", sysctls=None):
    linux = [f_bytes(1, cgroup_parent), f_map(3, sysctls or {})]
    return f_msg(3, f_msg(1, f_bytes(1, "pod"), f_bytes(2, "uid-1"), f_bytes(3, "default")), f_bytes(2, hostname),
                 f_bytes(3, "/var/log/pods/default_pod_uid-1"), f_msg(8, *linux))


PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
GROUP = "root:x:0:\napp:x:1000:app\nstaff:x:50:app\nnogroup:x:65534:\n"


def image_config(**config):
    return json.dumps({"architecture": "amd64", "os": "linux", "config": config}).encode()


def spec_case(request, image=b"", passwd=PASSWD, group=GROUP, profile=b"", systemd=False, userns=False):
    out = f_msg(1, *request) + f_bytes(2, image) + f_bytes(3, passwd) + f_bytes(4, group) + f_bytes(5, profile)
    if systemd:
        out += f_varint(6, 1)
    if userns:
        out += f_varint(7, 1)
    return out


def cri_spec():
    busybox = image_config(Entrypoint=["/bin/sh"], Cmd=["-c", "sleep 1"], Env=["PATH=/usr/bin:/bin"],
                           WorkingDir="/srv", User="app")
    write("cri_spec", "plain", spec_case(
        [f_bytes(1, "pod1"), container(envs={"FOO": "bar"}, linux=[security()]), sandbox()], image=busybox))
    write("cri_spec", "run-as-user-and-mounts", spec_case([
        f_bytes(1, "pod1"),
        container(command=["/app"], args=["--serve"], workdir="/data",
                  mounts=[mount("/data", "/var/lib/kubelet/pods/uid-1/volumes/data"),
                          mount("/data/cfg", "/etc/app", readonly=True, propagation=1),
                          mount("/shared", "/mnt/shared", propagation=2),
                          mount("/ro", "/mnt/ro", readonly=True, rro=True)],
                  linux=[resources(period=100000, quota=50000, shares=512, memory=64 << 20, oom=500, cpus="0-1"),
                         security(run_as_user=1000, run_as_group=1000, groups=[50, 2000], readonly_rootfs=True,
                                  no_new_privs=True, drop_caps=["ALL"], add_caps=["NET_BIND_SERVICE"],
                                  masked=["/proc/kcore"], readonly=["/proc/sys"])]),
        sandbox(sysctls={"net.ipv4.ip_unprivileged_port_start": "0"})], image=busybox))
    write("cri_spec", "privileged-systemd", spec_case([
        f_bytes(1, "pod1"),
        container(name="priv", tty=True, mounts=[mount("/dev/shm", "/run/reef/pods/p/shm")],
                  linux=[security(privileged=True, username="app")]),
        sandbox(cgroup_parent="kubepods-burstable-pod1.slice")], image=busybox, systemd=True))
    profile = json.dumps({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                          "syscalls": [{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}]})
    write("cri_spec", "localhost-seccomp-userns", spec_case([
        f_bytes(1, "pod1"),
        container(name="confined", annotations={"io.kubernetes.container.name": "confined"},
                  linux=[security(run_as_user=2147483647, seccomp=(2, "/var/lib/kubelet/seccomp/p.json"))]),
        sandbox()], image=image_config(User="1000:staff"), profile=profile.encode(), userns=True))
    write("cri_spec", "image-user-by-name", spec_case([
        f_bytes(1, "pod1"), container(name="byname", linux=[security(seccomp=(0, ""))]), sandbox()],
        image=image_config(Entrypoint=["/entry"], User="nobody:nogroup")))


# ---- tar layers ----

def tar(entries, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for e in entries:
            kind, name = e[0], e[1]
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            info.uid = info.gid = 0
            data = None
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "file":
                data = e[2].encode() if isinstance(e[2], str) else e[2]
                info.size, info.mode = len(data), (e[3] if len(e) > 3 else 0o644)
            elif kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, e[2], 0o777
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, e[2]
            elif kind == "fifo":
                info.type, info.mode = tarfile.FIFOTYPE, 0o644
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            if len(e) > 4:
                info.pax_headers = e[4]
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    # Without tarfile's padding to a 10 KiB record: the blocks, then the two zero blocks that end an archive.
    body = buf.getvalue().rstrip(b"\0")
    return body + b"\0" * (-len(body) % 512 + 1024)


def unpack():
    write("unpack", "plain-layer", tar([
        ("dir", "etc"), ("file", "etc/passwd", "root:x:0:0::/root:/bin/sh\n"), ("dir", "bin"),
        ("file", "bin/sh", b"\x7fELF", 0o755), ("symlink", "bin/ls", "sh"), ("hardlink", "bin/ash", "bin/sh"),
        ("fifo", "run-fifo"), ("chr", "dev-null"),
        ("file", "etc/setuid", "x", 0o4755), ("file", "xattr", "x", 0o644, {"SCHILY.xattr.user.k": "v"})]))
    write("unpack", "whiteouts", tar([
        ("dir", "a"), ("file", "a/.wh..wh..opq", ""), ("file", "a/.wh.gone", ""), ("file", ".wh.top", ""),
        ("dir", "a/b"), ("file", "a/b/c", "c")]))
    write("unpack", "dotdot-names", tar([
        ("file", "../outside/file", "overwritten"), ("file", "a/../../outside/new", "x")], fmt=tarfile.GNU_FORMAT))
    write("unpack", "relative-symlink-escape", tar([
        ("symlink", "up", "../outside"), ("file", "up/file", "overwritten"), ("file", "up/new", "x"),
        ("dir", "up/dir"), ("symlink", "up2", "../../outside/file"), ("hardlink", "hl", "up/file")]))
    write("unpack", "absolute-symlink-escape", tar([
        ("symlink", "abs", ABSOLUTE_SENTINEL), ("file", "abs/file", "overwritten"),
        ("symlink", "abs/link2", "/etc"), ("hardlink", "hl", "abs/file"), ("dir", "abs/sub"),
        ("symlink", "chain", "abs"), ("file", "chain/new", "x")]))
    write("unpack", "replace-dir-with-symlink", tar([
        ("dir", "d"), ("file", "d/f", "1"), ("symlink", "d", "/tmp"), ("file", "d/f", "2"),
        ("symlink", "loop", "loop"), ("file", "loop/x", "y")]))
    write("unpack", "long-names", tar([
        ("dir", "x" * 120), ("file", "x" * 120 + "/" + "y" * 150, "long"),
        ("symlink", "s" * 200, "t" * 200)]))


# ---- SPDY/3.1 ----

def spdy_headers(compressor, headers):
    raw = struct.pack(">I", len(headers))
    for k, v in headers:
        raw += struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode()
    return compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH)


def control(kind, flags, payload):
    return struct.pack(">HHB", 0x8003, kind, flags) + struct.pack(">I", len(payload))[1:] + payload


def data_frame(stream, flags, payload):
    return struct.pack(">IB", stream, flags) + struct.pack(">I", len(payload))[1:] + payload


def spdy():
    with open(SPDY_DICT, "rb") as f:
        dictionary = f.read()
    z = zlib.compressobj(zdict=dictionary)
    syn = lambda sid, hs, fin=0: control(1, fin, struct.pack(">IIBB", sid, 0, 0, 0) + spdy_headers(z, hs))
    exec_session = (
        syn(1, [("streamtype", "error")]) + syn(3, [("streamtype", "stdin")]) +
        syn(5, [("streamtype", "stdout")]) + data_frame(3, 0, b"echo hi\n") + data_frame(3, 1, b"") +
        control(6, 0, struct.pack(">I", 1)) + control(3, 0, struct.pack(">II", 5, 5)) +
        control(7, 0, struct.pack(">II", 5, 0)))
    write("spdy_frame", "exec-session", exec_session)
    z = zlib.compressobj(zdict=dictionary)
    port_forward = (
        control(4, 0, struct.pack(">I", 1) + struct.pack(">BBBBI", 0, 0, 0, 7, 65536)) +
        syn(1, [("port", "80"), ("requestid", "0"), ("streamtype", "error")]) +
        syn(3, [("port", "80"), ("requestid", "0"), ("streamtype", "data")]) +
        control(9, 0, struct.pack(">II", 3, 1024)) + data_frame(3, 0, b"GET / HTTP/1.0\r\n\r\n") +
        control(8, 0, struct.pack(">I", 3) + spdy_headers(z, [("x", "a\0b")])) + control(2, 0, struct.pack(">I", 1) +
        spdy_headers(z, [])) + control(42, 0, b"unknown"))
    write("spdy_frame", "port-forward", port_forward)
    write("spdy_frame", "truncated-header-block", control(1, 0, struct.pack(">IIBB", 1, 0, 0, 0) + b"\x78\xbb\x00"))
    write("spdy_frame", "bad-version", struct.pack(">HHB", 0x8002, 1, 0) + b"\x00\x00\x00")


# ---- WebSocket channel messages: a framing byte (1: base64, 2: v5 close signal; >> 2: a channel), then one ----

def websocket():
    write("websocket_frame", "binary-stdin", b"\x00" + b"\x00echo hi\n")
    write("websocket_frame", "base64-stdin", b"\x05" + b"0ZWNobyBoaQo=")
    write("websocket_frame", "v5-close-stdin", b"\x02" + b"\xff\x00")
    write("websocket_frame", "v5-base64-resize", b"\x0f" + b"4eyJXaWR0aCI6ODAsIkhlaWdodCI6MjR9")
    write("websocket_frame", "bad-base64", b"\x01" + b"0!!!")


def image_reference():
    refs = {
        "short": "busybox",
        "tagged": "docker.io/library/busybox:1.36",
        "registry-port-digest": "localhost:5000/team/app:v1@sha256:"
                                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "ipv6": "[::1]:5000/x/y:latest",
        "k8s": "registry.k8s.io/pause:3.10",
        "legacy-hub": "index.docker.io/user/app",
    }
    for name, ref in refs.items():
        write("image_reference", name, ref)


def config():
    with open(os.path.join(HERE, "..", "deploy", "config.toml")) as f:
        write("config", "deploy", f.read())
    write("config", "empty", "")
    write("config", "everything", """root_dir = "/var/lib/reef"
state_dir = "/run/reef"
socket = "/run/reef/reef.sock"
log_level = "info,reef_images=debug"
cgroup_driver = "cgroupfs"
cgroup_parent = "reef"

[images]
max_concurrent_downloads = 3
allow_device_nodes = false

[streaming]
address = "[::1]:10010"
token_ttl_seconds = 60
idle_timeout_seconds = 14400
stream_creation_timeout_seconds = 30

[registry]
insecure = ["127.0.0.1:5000"]

[registry.mirrors."registry.k8s.io"]
endpoints = ["http://127.0.0.1:5000", "https://mirror.internal"]

[registry.auths."127.0.0.1:5000"]
username = "user"
password = "secret"

[network]
mode = "builtin"
bridge = "reef0"
subnet = "10.88.0.0/16"
subnet6 = "fd00:10:88::/64"
mtu = 1500
nft_table = "reef"
""")
    write("config", "cni", """[network]
mode = "cni"
cni_conf_dir = "/etc/cni/net.d"
cni_bin_dirs = ["/opt/cni/bin"]
cni_timeout_seconds = 60
""")


if __name__ == "__main__":
    only = set(sys.argv[1:])
    for fn in [cri_spec, unpack, spdy, websocket, image_reference, config]:
        if not only or fn.__name__ in only:
            fn()
