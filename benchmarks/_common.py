"""Shared pieces of the benchmark scripts: the machine line, demo-world images, benchmark encoders, tables.

Every script prints the machine it ran on (CPU model, cores, torch threads, load average, GPU) because
timings on a shared or loaded machine are not comparable with a quiet one; re-run final figures on a
quiet machine. Demo worlds used as benchmark images are cached under ``CHEXGEN_BENCH_CACHE``
(default ``/tmp/chexgen-bench``) so that repeated runs do not spend minutes rendering them again.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(REPO))

ENCODER_CHOICES = ("demo", "inception-random", "raddino-random", "pixels")


# --------------------------------------------------------------------------------------------------
# The machine


def loadavg() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # not on every platform
        return "n/a"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "none"


def machine_line() -> str:
    """One line naming what the numbers were measured on (printed by every script)."""
    import torch

    return (f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, load average (1/5/15 min) {loadavg()}, GPU: {gpu_name()}")


def quiet_warning() -> str | None:
    """A warning when the machine is busy (load average above the core count)."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cores = os.cpu_count() or 1
    if load > 0.75 * cores:
        return (f"WARNING: load average {load:.1f} on {cores} cores - the machine is busy; these timings are "
                "indicative only, re-run on a quiet machine for final figures.")
    return None


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])


def print_header(title: str) -> None:
    print(f"## {title}")
    print(f"command: `{command_line()}`")
    print(machine_line())
    warn = quiet_warning()
    if warn:
        print(warn)
    print()


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


@contextmanager
def timed(store: dict, key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        store[key] = time.perf_counter() - t0


@contextmanager
def chexgen_home(path: str | Path) -> Iterator[Path]:
    """Point CHEXGEN_HOME (feature cache, indexes) at ``path`` for the duration (a fresh home = a cold cache)."""
    old = os.environ.get("CHEXGEN_HOME")
    os.environ["CHEXGEN_HOME"] = str(path)
    try:
        yield Path(path)
    finally:
        if old is None:
            os.environ.pop("CHEXGEN_HOME", None)
        else:
            os.environ["CHEXGEN_HOME"] = old


def bench_cache() -> Path:
    from evaluators import settings

    path = settings.get("CHEXGEN_BENCH_CACHE") or Path(tempfile.gettempdir()) / "chexgen-bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------------------------------
# Images: the demo world


def demo_images(n: int, *, seed: int, size: int = 128, workers: int | None = None):
    """The first ``n`` images of a seed-``seed`` demo world (rendered once, cached in :func:`bench_cache`)."""
    from evaluators.demo_world import WORLD_VERSION, generate_demo_world
    from evaluators.imagesets import load_image_set

    patients = max(8, n // 2 + 16)  # ~2.3 studies per patient on average
    while True:
        folder = bench_cache() / f"world-v{WORLD_VERSION}-s{seed}-{size}px-p{patients}"
        meta = folder / "metadata.csv"
        if not meta.is_file():
            t0 = time.perf_counter()
            print(f"(rendering demo world seed {seed}, {patients} patients at {size} px into {folder} ...)",
                  file=sys.stderr, flush=True)
            tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
            generate_demo_world(tmp, patients=patients, seed=seed, size=size,
                                workers=workers or min(8, os.cpu_count() or 1))  # same files for any count
            os.replace(tmp, folder)
            print(f"(rendered in {time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        image_set = load_image_set(folder / "metadata.csv")
        if len(image_set) >= n:
            return image_set.subset(slice(0, n), name=f"demo-s{seed}-{size}px-n{n}")
        patients = int(patients * 1.5) + 8


# --------------------------------------------------------------------------------------------------
# Encoders for benchmarks


def as_loaded(encoder):
    """The same encoder running its network as loaded (no inference graph): what torchmetrics would run."""
    import copy

    plain = copy.copy(encoder)
    plain.net = encoder.model
    return plain


def load_bench_encoder(name: str, workdir: Path, *, device: str = "cpu", dtype: str = "float32"):
    """(encoder, note) for a benchmark encoder name, on ``device`` in ``dtype`` (half precision: CUDA only).

    - ``pixels``: the registry's pixel encoder (no weights).
    - ``demo``: the registry's demo encoder with its shipped weights; when they are absent, the same
      architecture with random weights written to ``workdir`` (the forward cost does not depend on them).
    - ``inception-random``: the registry's InceptionV3 encoder (torch-fidelity network, 299 px uint8,
      2048-d + 1008 logits) loaded from a RANDOMLY INITIALISED state dict written to ``workdir``, because
      the FID weights cannot be downloaded here; timing is the same as with the real weights.
    - ``raddino-random``: the registry's RadDino encoder (CheXGenBench's FID space) loaded from a folder
      holding microsoft/rad-dino's architecture (ViT-B/14, 518 px) with random weights.
    The random models are the tests' builders (``tests/tiny_models.py``), sized as the real ones.
    """
    from evaluators.encoders import availability, load_encoder

    workdir.mkdir(parents=True, exist_ok=True)

    if name == "pixels":
        return load_encoder("pixels", device=device, dtype=dtype), "pixels (32x32, no weights)"
    if name == "demo":
        if availability("demo").local:
            return load_encoder("demo", device=device, dtype=dtype), "demo encoder (shipped weights)"
        import torch
        from safetensors.torch import save_file

        from evaluators.demo_encoder import build_model

        torch.manual_seed(0)
        path = workdir / "demo_encoder_random.safetensors"
        save_file({k: v.contiguous() for k, v in build_model().state_dict().items()}, str(path))
        return (load_encoder("demo", weights=path, device=device, dtype=dtype),
                "demo architecture with RANDOM weights (shipped weights absent)")
    if name == "inception-random":
        from tests.tiny_models import make_tiny_inception

        path = workdir / "inception_random.pth"
        if not path.is_file():
            make_tiny_inception(path)
        return (load_encoder("inception", weights=path, device=device, dtype=dtype),
                "torch-fidelity InceptionV3 with RANDOM weights (FID weights not downloadable here)")
    if name == "raddino-random":
        from tests.tiny_models import RADDINO_FULL_SIZE, make_tiny_raddino

        folder = workdir / "raddino_random"
        if not (folder / "model.safetensors").is_file():
            make_tiny_raddino(folder, **RADDINO_FULL_SIZE)
        return (load_encoder("raddino", weights=folder, device=device, dtype=dtype),
                "RadDino architecture (ViT-B/14, 518 px) with RANDOM weights (microsoft/rad-dino not downloadable here)")
    raise SystemExit(f"unknown encoder {name!r}; choose one of {', '.join(ENCODER_CHOICES)}")
