"""Shared test configuration: paths to the repo, fixtures and the BuildKit corpus."""
from __future__ import annotations

from pathlib import Path

import os
import subprocess

import pytest
from hypothesis import settings

# In CI the property tests run a fixed set of examples (derandomized), so a run's result does not
# depend on luck; locally they keep exploring new examples every run.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
CORPUS_ENV = "PYBUILD_BUILDKIT_CORPUS"


def locate_corpus(repo: Path = REPO) -> Path:
    """BuildKit's conformance data: ``$PYBUILD_BUILDKIT_CORPUS``, else ``../shared/corpus/buildkit``
    beside this checkout, else beside the checkout it was cloned from (a local clone, e.g. in /tmp)."""
    if os.environ.get(CORPUS_ENV):
        return Path(os.environ[CORPUS_ENV])
    candidates = [repo.parent / "shared" / "corpus" / "buildkit"]
    try:
        origin = subprocess.run(["git", "-C", str(repo), "config", "--get", "remote.origin.url"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        origin = ""
    if origin.startswith("/") or origin.startswith("file://"):
        candidates.append(Path(origin.removeprefix("file://")).parent / "shared" / "corpus" / "buildkit")
    return next((c for c in candidates if c.is_dir()), candidates[0])


CORPUS = locate_corpus()


def pytest_configure(config) -> None:
    if not CORPUS.is_dir():
        raise pytest.UsageError(f"BuildKit corpus not found at {CORPUS}: keep the checkout beside ../shared "
                                f"(corpus/buildkit), or set {CORPUS_ENV}")


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.fail(f"BuildKit corpus not found at {CORPUS}")
    return CORPUS


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES
