"""Helpers for end-to-end builds: a private store root and a context directory per test."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

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
        opts = BuildOptions(context=str(self.context), dockerfile=self.context / "Dockerfile",
                            progress="quiet", root=self.root, report_file=str(report_file), jobs=2, **kw)
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
