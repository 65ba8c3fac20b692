#!/usr/bin/env python3
"""Builds an image of N layers of random data and pushes it to a registry over plain http.

Random data does not compress, so the figures measure transfer, hashing and unpacking rather than gzip ratios.
"""
import argparse, gzip, hashlib, io, json, os, tarfile, urllib.request


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def put_blob(reg, name, data):
    req = urllib.request.Request(f"http://{reg}/v2/{name}/blobs/uploads/", method="POST")
    loc = urllib.request.urlopen(req).headers["Location"]
    if loc.startswith("/"):
        loc = f"http://{reg}{loc}"
    sep = "&" if "?" in loc else "?"
    req = urllib.request.Request(f"{loc}{sep}digest={sha(data)}", data=data, method="PUT",
                                 headers={"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(req)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--registry", required=True)
    p.add_argument("--name", default="bench/big")
    p.add_argument("--tag", default="1")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--size-mib", type=int, default=64)
    a = p.parse_args()
    layers, diff_ids, total = [], [], 0
    for i in range(a.layers):
        data = os.urandom(a.size_mib << 20)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            ti = tarfile.TarInfo(f"data/layer-{i}.bin")
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        raw = buf.getvalue()
        gz = gzip.compress(raw, compresslevel=1)
        put_blob(a.registry, a.name, gz)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(gz), "size": len(gz)})
        diff_ids.append(sha(raw))
        total += len(gz)
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    put_blob(a.registry, a.name, cfg)
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(cfg),
                                 "size": len(cfg)}, "layers": layers}).encode()
    req = urllib.request.Request(f"http://{a.registry}/v2/{a.name}/manifests/{a.tag}", data=man, method="PUT",
                                 headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    urllib.request.urlopen(req)
    print(total)


if __name__ == "__main__":
    main()
