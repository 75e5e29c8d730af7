"""The code stays clean under the project's ruff configuration, and the engine never imports Gradio."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_ruff_clean():
    if shutil.which("ruff") is None:
        pytest.skip("ruff is not installed (pip install -r requirements-dev.txt)")
    res = subprocess.run(["ruff", "check", "."], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-4000:]


def test_engine_has_no_gradio_import():
    offenders = [
        str(p.relative_to(REPO))
        for p in (REPO / "evaluators").rglob("*.py")
        if "import gradio" in p.read_text() or "from gradio" in p.read_text()
    ]
    assert offenders == []


def test_engine_imports_without_the_app():
    code = "import sys, evaluators.cli; evaluators.cli.build_parser(); assert 'gradio' not in sys.modules"
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
