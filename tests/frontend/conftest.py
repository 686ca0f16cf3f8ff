"""Frontend test helpers: the BuildKit corpus cases as parameter lists."""
from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import CORPUS

PARSER = CORPUS / "parser"
TESTFILES = sorted(p.name for p in (PARSER / "testfiles").iterdir()) if PARSER.is_dir() else []
NEGATIVE = sorted(p.name for p in (PARSER / "testfiles-negative").iterdir()) if PARSER.is_dir() else []


def extracted(name: str) -> dict:
    return json.loads((PARSER / "extracted" / name).read_text(encoding="utf-8"))


def read_case(kind: str, case: str) -> tuple[bytes, Path]:
    folder = PARSER / kind / case
    return (folder / "Dockerfile").read_bytes(), folder
