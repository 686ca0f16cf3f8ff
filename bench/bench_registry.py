#!/usr/bin/env python3
"""Registry push/pull throughput: pybuild beside ``skopeo copy``, measured in the same run.

Starts fresh loopback ``docker-registry`` processes, assembles an image of
4 × 64 MiB layers plus 2,000 small layers, then times
  push: pybuild push  vs  skopeo copy oci:LAYOUT docker://REGISTRY/...
  pull: pybuild pull  vs  skopeo copy docker://REGISTRY/... oci:DIR
and a re-push of an unchanged 10-layer image (only HEAD requests are needed).

    python3 bench/bench_registry.py [--big 4] [--big-mib 64] [--small 2000]
"""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "registry"))  # the registry launcher and image helpers

from images import DirBlobStore, make_image  # noqa: E402
from servers import RegistryServer  # noqa: E402

from builder.registry.api import pull_to_store, push_from_store  # noqa: E402
from builder.registry.push import push_image  # noqa: E402
from builder.store.store import open_store  # noqa: E402


def big_layer(mib: int) -> bytes:
    # Stored (level 0) gzip of random bytes: a valid gzip layer whose size is what we ask for.
    return gzip.compress(os.urandom(mib << 20), compresslevel=0, mtime=0)


def oci_layout(layout: Path, store: DirBlobStore, manifest) -> None:
    import json

    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    for digest in store.blobs():
        os.link(store.path(digest), layout / "blobs" / "sha256" / digest.split(":")[1])
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": manifest.media_type, "digest": manifest.digest, "size": len(manifest.content),
        "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}))


def report(name: str, mb: float, ours: float, theirs: float) -> None:
    print(f"{name:6}{mb / ours:>9.1f} MB/s ({ours:6.2f} s){mb / theirs:>9.1f} MB/s ({theirs:6.2f} s)"
          f"{theirs / ours:>12.2f}x", flush=True)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def skopeo(*args: str) -> None:
    subprocess.run(["skopeo", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def compare(work: Path, registry, label: str, raw: list[bytes], small: list[dict]) -> None:
    """Push then pull one image with pybuild and with skopeo, each into a fresh registry."""
    store = DirBlobStore(work / "store")
    image = make_image(store, small, raw_layers=raw)
    mb = sum(store.path(d).stat().st_size for d in store.blobs()) / 1e6
    layout = work / "layout"
    oci_layout(layout, store, image.manifest)
    print(f"image: {label}, {len(store.blobs())} blobs, {mb:.1f} MB", flush=True)

    # pybuild works from its content store, as `pybuild push/pull` do.
    source = open_store(work / "root-push")
    for digest in store.blobs():
        with open(store.path(digest), "rb") as fh:
            source.put_blob(fh, digest)
    source.add_image(image.manifest.digest, image.manifest.media_type, name="bench/app:1")
    reg_a, reg_b = registry(work.name + "-pybuild"), registry(work.name + "-skopeo")
    t_push = timed(lambda: push_from_store("bench/app:1", source, f"{reg_a.host}/bench/app:1"))
    t_push_sk = timed(lambda: skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:bench",
                                     f"docker://{reg_b.host}/bench/app:1"))
    report("push", mb, t_push, t_push_sk)
    # Pull: both from the registry pybuild pushed to, into empty destinations.
    dest = open_store(work / "root-pull")
    t_pull = timed(lambda: pull_to_store(f"{reg_a.host}/bench/app:1", dest))
    assert all(dest.has_blob(d) for d in store.blobs())
    t_pull_sk = timed(lambda: skopeo("copy", "--src-tls-verify=false",
                                     f"docker://{reg_a.host}/bench/app:1", f"oci:{work / 'skopeo-pulled'}:x"))
    report("pull", mb, t_pull, t_pull_sk)
    source.close()
    dest.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", type=int, default=4)
    ap.add_argument("--big-mib", type=int, default=64)
    ap.add_argument("--small", type=int, default=2000)
    args = ap.parse_args()
    if not shutil.which("skopeo") or not Path("/usr/bin/docker-registry").exists():
        print("needs skopeo and docker-registry (bash .ci/install)", file=sys.stderr)
        return 1

    work = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    servers: list[RegistryServer] = []
    try:
        def registry(name: str) -> RegistryServer:
            server = RegistryServer(work / name).start()
            servers.append(server)
            return server

        raw = [big_layer(args.big_mib) for _ in range(args.big)]
        small = [{f"f{i}": os.urandom(256) + f"{i}".encode()} for i in range(args.small)]
        print(f"{'':6}{'pybuild':>24}{'skopeo copy':>24}{'speed ratio':>14}", flush=True)
        compare(work / "mixed", registry, f"{args.big} x {args.big_mib} MiB + {args.small} small layers",
                raw, small)
        if args.small:
            # The same big layers alone: raw throughput without the per-blob costs.
            compare(work / "big", registry, f"{args.big} x {args.big_mib} MiB layers only", raw, [])

        # Re-push of an unchanged 10-layer image.
        reg_c = registry("repush")
        store10 = DirBlobStore(work / "store10")
        ten = make_image(store10, [{f"l{i}": os.urandom(1 << 20)} for i in range(10)])
        ref = f"{reg_c.host}/bench/ten:1"
        push_image(ref, store10, ten.manifest)
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            result = push_image(ref, store10, ten.manifest)
            runs.append(time.perf_counter() - t)
            assert not result.uploaded and not result.mounted
        t_sk = timed(lambda: skopeo("copy", "--dest-tls-verify=false", f"oci:{_layout10(work, store10, ten)}:bench",
                                    f"docker://{ref}"))
        print(f"re-push unchanged 10-layer image: pybuild best {min(runs) * 1000:.0f} ms, "
              f"median {sorted(runs)[2] * 1000:.0f} ms (goal < 500 ms); skopeo copy {t_sk * 1000:.0f} ms")
        return 0
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def _layout10(work: Path, store: DirBlobStore, image) -> Path:
    layout = work / "layout10"
    oci_layout(layout, store, image.manifest)
    return layout


if __name__ == "__main__":
    raise SystemExit(main())
