"""Smoke runs of benchmarks/copying_memory.py and benchmarks/frd_cost.py at tiny N (numbers not asserted)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from evaluators.encoders.registry import availability

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(script: str, *args: str, tmp: Path) -> str:
    env = {**os.environ, "CHEXGEN_HOME": str(tmp / "home"), "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "command: `python benchmarks/" in proc.stdout and "load average" in proc.stdout
    return proc.stdout


def test_copying_memory_tiny(tmp_path):
    out = _run("copying_memory.py", "--n", "400", "--dim", "16", "--cells", "3", tmp=tmp_path)
    for step in ("authpct", "c_t"):
        assert re.search(rf"^\| {step} \| [\d.]+ \| [\d,]+ \| [\d,]+ \| -?[\d.]+ \|", out, re.M), out
    assert "all steps under 4 GB peak RSS" in out


@pytest.mark.skipif(not availability("radiomics").local, reason="PyRadiomics not installed")
def test_frd_cost_tiny(tmp_path):
    out = _run("frd_cost.py", "--n", "3", tmp=tmp_path)
    assert re.search(r"^\| radiomic features, first extraction \(1 core\) \| [\d.]+ \| [\d.]+ \| [\d.]+ s \|", out, re.M)
    assert "FRD of two disjoint halves" in out
