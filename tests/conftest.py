"""Shared fixtures: an isolated CHEXGEN_HOME per test session, offline by default, and ../shared paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
NIH_SAMPLE = SHARED / "data" / "nih-cxr14-sample"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory):
    """Every test session writes caches under its own CHEXGEN_HOME unless one is given."""
    if "CHEXGEN_HOME" not in os.environ or os.environ.get("CHEXGEN_TEST_KEEP_HOME") != "1":
        os.environ["CHEXGEN_HOME"] = str(tmp_path_factory.mktemp("chexgen_home"))
    yield


@pytest.fixture
def nih_sample() -> Path:
    """The shared NIH ChestX-ray14 sample; the test skips cleanly when it is absent."""
    if not (NIH_SAMPLE / "labels.csv").is_file():
        pytest.skip(f"{NIH_SAMPLE} is absent (only present inside the CheXGen workplace)")
    return NIH_SAMPLE
