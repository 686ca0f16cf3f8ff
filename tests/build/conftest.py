"""Helpers for end-to-end builds: a private store root and a context directory per test."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.store.conftest import busybox_archive  # noqa: F401  (session fixture)

from builder.build import BuildOptions, run
from builder.solver.report import BuildReport


@dataclass
class Builder:
    root: Path
    context: Path

    def write(self, name: str, text: str, mode: int | None = None) -> Path:
        path = self.context / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if mode is not None:
            path.chmod(mode)
        return path

    def build(self, dockerfile: str | None = None, **kw) -> tuple[str, BuildReport]:
        if dockerfile is not None:
            self.write("Dockerfile", dockerfile)
        report_file = self.root.parent / "report.json"
        kw.setdefault("jobs", 2)
        opts = BuildOptions(context=str(self.context), dockerfile=self.context / "Dockerfile",
                            progress="quiet", root=self.root, report_file=str(report_file), **kw)
        image_id = run(opts)
        return image_id, BuildReport.load(report_file)

    def store(self):
        from builder.store.store import ContentStore

        return ContentStore(self.root)

    def config(self, image_id: str) -> dict:
        store = self.store()
        try:
            return json.loads(store.read_blob(image_id))
        finally:
            store.close()


@pytest.fixture
def builder(tmp_path) -> Builder:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    return Builder(root=tmp_path / "root", context=ctx)


@pytest.fixture
def bbuilder(builder, busybox_archive) -> Builder:
    """A builder whose store already holds busybox:latest."""
    from builder.exporter import load_archive

    store = builder.store()
    try:
        load_archive(store, busybox_archive)
    finally:
        store.close()
    return builder


def image_tree(builder: Builder, image_id: str, target: Path) -> Path:
    """The image's final file tree, unpacked by the store into ``target``."""
    store = builder.store()
    try:
        digest = next(i.digest for i in store.list_images() if i.id == image_id)
        target.mkdir(parents=True, exist_ok=True)
        store.unpack_image(store.get_image(digest), target)
    finally:
        store.close()
    return target
