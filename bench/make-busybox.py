#!/usr/bin/env python3
"""Builds the CRI benchmark's images and pushes them to a registry over plain http:

  bench/busybox:1  Debian's static busybox, a symlink per applet, passwd and group (like tests/src/image.rs)
  bench/pause:1    a static pause binary (bench/pause.c, built by the caller) as containerd's sandbox image
"""
import argparse, gzip, importlib.util, io, json, os, subprocess, tarfile

spec = importlib.util.spec_from_file_location("make_image", os.path.join(os.path.dirname(__file__), "make-image.py"))
make_image = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_image)
sha, put_blob = make_image.sha, make_image.put_blob


def entry(t, name, kind, data=b"", mode=0o644, link=""):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime, ti.linkname, ti.size = kind, mode, 1_700_000_000, link, len(data)
    t.addfile(ti, io.BytesIO(data) if data else None)


def push(reg, name, files, config):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for f in files:
            entry(t, *f)
    raw = buf.getvalue()
    gz = gzip.compress(raw, compresslevel=6, mtime=0)
    put_blob(reg, name, gz)
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": config,
                      "rootfs": {"type": "layers", "diff_ids": [sha(raw)]}}).encode()
    put_blob(reg, name, cfg)
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(cfg),
                                 "size": len(cfg)},
                      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(gz),
                                  "size": len(gz)}]}).encode()
    import urllib.request
    req = urllib.request.Request(f"http://{reg}/v2/{name}/manifests/1", data=man, method="PUT",
                                 headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    urllib.request.urlopen(req)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--registry", required=True)
    p.add_argument("--pause", required=True, help="the static pause binary")
    a = p.parse_args()
    busybox = open("/bin/busybox", "rb").read()
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    files = [("bin/", tarfile.DIRTYPE, b"", 0o755), ("etc/", tarfile.DIRTYPE, b"", 0o755),
             ("tmp/", tarfile.DIRTYPE, b"", 0o1777), ("bin/busybox", tarfile.REGTYPE, busybox, 0o755)]
    files += [(f"bin/{x}", tarfile.SYMTYPE, b"", 0o777, "busybox") for x in applets if x != "busybox"]
    files += [("etc/passwd", tarfile.REGTYPE, b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
              ("etc/group", tarfile.REGTYPE, b"root:x:0:\n", 0o644)]
    push(a.registry, "bench/busybox", files, {"Cmd": ["sh"], "Env": ["PATH=/bin"]})
    pause = open(a.pause, "rb").read()
    push(a.registry, "bench/pause", [("pause", tarfile.REGTYPE, pause, 0o755)], {"Entrypoint": ["/pause"]})


if __name__ == "__main__":
    main()
