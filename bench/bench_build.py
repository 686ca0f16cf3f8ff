#!/usr/bin/env python3
"""`pybuild build` beside `buildah bud --layers`, in one run, on the same inputs.

Scenarios (the figures issue 5 asks for):
  1. fully cached rebuild of a 30-instruction Dockerfile;
  2. fully cached rebuild with a 20,000-file context;
  3. one file changed in that context, then rebuild;
  4. cold build of the 20,000-file + 256 MiB context (empty stores);
and the peak RSS of the pybuild process in each.

Both builders start from the same busybox image (made by fixtures/busybox, loaded into
pybuild's store and into buildah's containers-storage with skopeo). Buildah runs with
runc (crun refuses this host's hybrid cgroups) and the overlay driver, in temp roots.

Usage: python3 bench/bench_build.py [--files 20000] [--big-mib 256] [--repeat 3] [--no-buildah]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE = "localhost/busybox:latest"

DOCKERFILE_30 = f"""\
FROM {BASE} AS base
ENV APP=/app LANG=C.UTF-8
ARG VERSION=1.0
LABEL org.example.version=$VERSION org.example.name=bench
WORKDIR /app
COPY a.txt ./
RUN echo "version $VERSION" > /app/version.txt
ENV PATH=/app/bin:$PATH
RUN mkdir -p /app/bin /app/data && cp a.txt /app/data/
COPY b.txt /app/data/
USER 0:0
EXPOSE 8080
RUN echo one > /app/one
ENV MODE=prod
RUN echo two > /app/two
COPY c.txt /app/
LABEL stage=base
FROM base AS extra
RUN echo extra > /extra.txt
ENV EXTRA=1
FROM base
COPY --from=extra /extra.txt /app/extra.txt
RUN cat /app/extra.txt > /app/final.txt
VOLUME /app/data
ENV FINAL=yes
HEALTHCHECK --interval=30s CMD ["true"]
STOPSIGNAL SIGTERM
WORKDIR /app
ENTRYPOINT ["/bin/sh"]
CMD ["-c", "cat /app/final.txt"]
"""

DOCKERFILE_CTX = f"FROM {BASE}\nCOPY . /ctx\nRUN find /ctx -type f | wc -l > /count\n"


def run(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{proc.stderr.decode()[-2000:]}")
    return time.perf_counter() - t


def run_rss(cmd: list[str], cwd: Path | None = None) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of the command's process tree, via GNU time if present."""
    if shutil.which("time") or Path("/usr/bin/time").exists():
        out = tempfile.NamedTemporaryFile(delete=False)
        out.close()
        t = run(["/usr/bin/time", "-f", "%M", "-o", out.name, *cmd], cwd=cwd)
        rss = int(Path(out.name).read_text().split()[-1])
        os.unlink(out.name)
        return t, rss
    return run(cmd, cwd=cwd), 0


class Pybuild:
    def __init__(self, work: Path, busybox_tar: Path) -> None:
        self.root = work / "pybuild-root"
        self.busybox_tar = busybox_tar
        self.reset()

    def reset(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        py = sys.executable
        run([py, "-m", "builder", "--root", str(self.root), "load", "-i", str(self.busybox_tar)])
        run([py, "-m", "builder", "--root", str(self.root), "tag", "busybox:latest", BASE])

    def build(self, ctx: Path) -> tuple[float, int]:
        # The console script next to this interpreter (a pyenv shim in PATH adds ~0.3 s of bash).
        exe = Path(sys.executable).with_name("pybuild")
        return run_rss([str(exe) if exe.exists() else "pybuild", "--root", str(self.root), "build",
                        "--progress", "quiet", "-t", "bench:latest", str(ctx)])


class Buildah:
    def __init__(self, work: Path, busybox_tar: Path) -> None:
        self.root = work / "buildah-root"
        self.runroot = work / "buildah-run"
        self.busybox_tar = busybox_tar
        self.reset()

    def opts(self) -> list[str]:
        return ["--root", str(self.root), "--runroot", str(self.runroot), "--storage-driver", "overlay"]

    def reset(self) -> None:
        if self.root.exists():
            subprocess.run(["buildah", *self.opts(), "rmi", "--all", "--force"], capture_output=True)
            subprocess.run(["umount", "-R", str(self.root)], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.runroot, ignore_errors=True)
        run(["skopeo", "copy", "-q", f"oci-archive:{self.busybox_tar}",
             f"containers-storage:[overlay@{self.root}+{self.runroot}]{BASE}"])

    def build(self, ctx: Path) -> tuple[float, int]:
        return run_rss(["buildah", *self.opts(), "bud", "--layers", "--runtime", "/usr/sbin/runc",
                        "-q", "-t", "bench:latest", str(ctx)])


def make_small_context(path: Path) -> None:
    path.mkdir(parents=True)
    for name in ("a.txt", "b.txt", "c.txt"):
        (path / name).write_text(name * 10)
    (path / "Dockerfile").write_text(DOCKERFILE_30)


def make_big_context(path: Path, files: int, big_mib: int) -> None:
    rng = random.Random(42)
    path.mkdir(parents=True)
    per_dir = 500
    for i in range(files):
        d = path / "src" / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        (d / f"f{i:05d}.txt").write_bytes(rng.randbytes(rng.randint(1024, 4096)))
    if big_mib:
        (path / "big").mkdir()
        for i in range(4):
            (path / "big" / f"blob{i}.bin").write_bytes(os.urandom(big_mib * 1024 * 1024 // 4))
    (path / "Dockerfile").write_text(DOCKERFILE_CTX)


def median_build(builder, ctx: Path, repeat: int) -> tuple[float, int]:
    results = [builder.build(ctx) for _ in range(repeat)]
    return statistics.median(r[0] for r in results), max(r[1] for r in results)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--big-mib", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-buildah", action="store_true")
    opts = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-build-"))
    try:
        busybox_tar = work / "busybox.tar"
        run([sys.executable, str(REPO / "fixtures" / "busybox" / "make_busybox.py"), "-o", str(busybox_tar)])
        builders = {"pybuild": Pybuild(work, busybox_tar)}
        if not opts.no_buildah and shutil.which("buildah"):
            builders["buildah"] = Buildah(work, busybox_tar)
        small = work / "small"
        make_small_context(small)
        big = work / "big"
        make_big_context(big, opts.files, opts.big_mib)
        rows: list[tuple[str, dict[str, tuple[float, int]]]] = []

        # 4. cold build of the big context (empty stores apart from the base image)
        cold = {}
        for name, b in builders.items():
            b.reset()
            cold[name] = b.build(big)
        rows.append((f"cold build, {opts.files} files + {opts.big_mib} MiB", cold))
        # 2. fully cached rebuild of the big context
        rows.append((f"cached rebuild, {opts.files}-file context",
                     {n: median_build(b, big, opts.repeat) for n, b in builders.items()}))
        # 3. one file changed, then rebuild
        changed = {}
        target = big / "src" / "d000" / "f00000.txt"
        for name, b in builders.items():
            target.write_bytes(os.urandom(2048))
            changed[name] = b.build(big)
        rows.append(("one file changed, rebuild", changed))
        # 1. fully cached rebuild of a 30-instruction Dockerfile
        for b in builders.values():
            b.build(small)
        rows.append(("cached rebuild, 30 instructions",
                     {n: median_build(b, small, opts.repeat) for n, b in builders.items()}))

        print(f"{'scenario':44} {'pybuild':>10} {'peak RSS':>10} {'buildah':>10} {'ratio':>7}")
        for label, res in rows:
            p_t, p_rss = res["pybuild"]
            line = f"{label:44} {p_t:9.2f}s {p_rss / 1024:8.0f}MiB"
            if "buildah" in res:
                b_t = res["buildah"][0]
                line += f" {b_t:9.2f}s {p_t / b_t:6.2f}x"
            print(line)
    finally:
        for sub in ("buildah-root",):
            subprocess.run(["umount", "-R", str(work / sub)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
