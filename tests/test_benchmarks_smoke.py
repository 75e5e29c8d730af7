"""Smoke runs of the benchmark scripts at tiny N: each exits 0 and prints its markdown table.

The numbers themselves are not asserted (they depend on the machine); what is asserted is that the
reference pattern and the suite computed the same metrics, that the tables have a row per step, and
that the scaling script's memory check passed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench_env(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("bench")
    return {**os.environ, "CHEXGEN_BENCH_CACHE": str(home / "cache"), "CHEXGEN_HOME": str(home / "home"),
            "NUMBA_CACHE_DIR": str(home / "numba"), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def _run(script: str, *args: str, env: dict, timeout: float = 900) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "command: `python benchmarks/" in proc.stdout
    assert "load average" in proc.stdout
    return proc.stdout


@pytest.mark.parametrize("encoder", ["pixels", "demo"])
def test_suite_vs_reference_tiny(bench_env, encoder):
    out = _run("suite_vs_reference.py", "--n", "24", "--repeat", "1", "--encoder", encoder, env=bench_env)
    assert "metrics agree between the reference pattern and the suite" in out
    ratios = re.search(r"reference / cold = ([\d.]+)x .*reference / warm = ([\d.]+)x", out)
    assert ratios and float(ratios.group(1)) > 0 and float(ratios.group(2)) > 0
    assert "suite cold / one plain pass" in out
    # the demo CNN runs folded on the suite side, so the reference also runs once on that graph; pixels has no net
    assert ("reference pattern on the engine's inference graph" in out) == (encoder == "demo")
    assert ("pipeline alone (both sides on the inference graph)" in out) == (encoder == "demo")
    header = "| side | FID | KID | Precision | Recall | Density | Coverage"
    assert header + (" | IS |" if encoder == "demo" else " |") in out  # IS only where logits exist


def test_scaling_tiny(bench_env):
    out = _run("scaling.py", "--sizes", "100,300", "--steps", "features,FID,KID,PRDC,search,prdc-package",
               env=bench_env)
    for step in ("features", "FID", "KID", "PRDC", "search", "prdc-package"):
        assert re.search(rf"^\| {step} \| 100 \| [\d.]+ \|", out, re.M), step
        assert re.search(rf"^\| {step} \| 300 \| [\d.]+ \|", out, re.M), step
    assert "no project step's memory grows quadratically" in out


def test_scaling_rejects_unknown_step(bench_env):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scaling.py"), "--steps", "nope"],
                          cwd=REPO, env=bench_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "unknown step" in proc.stderr


def test_generation_tiny(bench_env):
    out = _run("generation.py", "--steps", "1", "--images", "2", "--batch-sizes", "1,2", env=bench_env)
    for model in ("demo", "reference-oracle", "copycat"):
        rows = re.findall(rf"^\| {re.escape(model)} \| cpu fp32 \| (\d+) \| ([\d.]+) \|", out, re.M)
        assert [r[0] for r in rows] == ["1", "2"], (model, out)
        assert all(float(r[1]) > 0 for r in rows)


def test_scaling_growth_check_flags_quadratic_memory_only(monkeypatch):
    """The check the 50k runs rely on, on made-up points (the smoke run never reaches N >= 10k)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from scaling import memory_growth_flags

    mib = 2**20
    flags = memory_growth_flags({
        "linear": [(20_000, 100 * mib), (50_000, 250 * mib)],
        "flat": [(20_000, 1024 * mib), (50_000, 1030 * mib)],  # UMAP's fixed numba state
        "quadratic": [(20_000, 800 * mib), (50_000, 5000 * mib)],
        "one big point": [(20_000, 3 * 20_000**2)],
        "one small point": [(20_000, 300 * mib)],
    })
    assert len(flags) == 2
    assert flags[0].startswith("quadratic: peak memory grows like N^2.00")
    assert flags[1].startswith("one big point at N=20,000")


def test_cuda_paths_dry_run_on_cpu(bench_env):
    """Without CUDA the script runs its checks on the CPU in fp32: the graph must match the network as loaded."""
    out = _run("cuda_paths.py", "--device", "cpu", "--encoders", "demo,pixels", "--batch-size", "8",
               "--n-extract", "24", env=bench_env)
    for enc in ("demo", "pixels"):
        assert re.search(rf"^\| {enc} \| cpu float32 \| .* \| ok \|$", out, re.M), out
        assert re.search(rf"^\| extract_features, warm cache \| {enc} \| cpu float32 \| 24 \|", out, re.M)
    assert "re-ID embed (graph)" in out and "all checks passed" in out


def test_random_sd15_builder_registers_through_the_entry_file(tmp_path, monkeypatch):
    """The GPU benchmark's SD V1-5 stand-in: an entry file the registry reads, with sd-v1-5's settings.

    The folder is faked (only model_index.json) so that no 1B-parameter model is built on a CPU test run.
    """
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from generation import random_sd15

    from evaluators.generators import get_entry
    from evaluators.generators.registry import load_entries

    folder = tmp_path / "sd15"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    entry_file = random_sd15(folder)
    entry = load_entries([entry_file])["sd-v1-5-random"]
    ref = get_entry("sd-v1-5")
    assert entry.pipeline == ref.pipeline == "StableDiffusionPipeline"
    assert (entry.steps, entry.guidance, entry.dtype, entry.presets["height"]) == \
        (ref.steps, ref.guidance, ref.dtype, ref.presets["height"])
    assert entry.weights == str(folder)


def test_labeler_speed_tiny(bench_env):
    out = _run("labeler_speed.py", "--n", "300", "--repeats", "1", env=bench_env)
    assert re.search(r"\| 300 \| \d+ \| [\d.]+ s \| [\d.]+ s \| [\d.]+ ms \| (met|NOT met)", out), out


def test_privacy_matcher_tiny(bench_env):
    out = _run("privacy_matcher.py", "--skip-nih", "--demo-patients", "120", "--copies-per-kind", "2",
               "--percentile", "95", "--encoder", "pixels", env=bench_env)
    assert re.search(r"\| demo world \(128 px\) \| 0 \| ids \|", out) and "| no-ids |" in out  # the mode names of --modes
    assert re.search(r"\| 256 \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", out)  # cost per pair at 256 px
