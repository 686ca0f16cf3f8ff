"""Shared test configuration: paths to the repo, fixtures and the BuildKit corpus."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
# BuildKit's conformance data lives beside the repo (../shared/corpus/buildkit).
CORPUS = REPO.parent / "shared" / "corpus" / "buildkit"


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.fail(f"BuildKit corpus not found at {CORPUS}")
    return CORPUS


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES
