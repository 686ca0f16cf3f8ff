"""Shared test configuration: paths to the repo, fixtures and the BuildKit corpus."""
from __future__ import annotations

from pathlib import Path

import os

import pytest
from hypothesis import settings

# In CI the property tests run a fixed set of examples (derandomized), so a run's result does not
# depend on luck; locally they keep exploring new examples every run.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

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
