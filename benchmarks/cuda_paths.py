"""The GPU paths, checked and timed: encoders and re-ID scoring in fp32/fp16/bf16, the inference graph
against the network as loaded, and feature extraction end to end through the cache.

For each encoder (``demo``, ``inception-random``, ``raddino-random``: see ``_common.load_bench_encoder``)
and precision, on one batch of demo-world images:
- ``graph vs as loaded``: largest difference between the inference graph (batch norm folded,
  channels_last) and the network as loaded, both on the GPU in that precision, relative to the largest
  output; min cosine similarity of the two feature rows.
- ``vs CPU fp32``: the same against the network as loaded on the CPU in float32 (what the tests check);
- images/s of the forward pass alone (preloaded tensors, synchronised), graph and as loaded.
Then ``extract_features`` on a cold cache (decode + preprocess in DataLoader workers + forward + store)
and the re-ID model's ``embed`` (ResNet-50, graph and plain).

A row fails when a feature row's cosine similarity to CPU fp32 drops under 0.999 in fp32 (TF32 convolutions
allowed, PyTorch's default) or under 0.99 in fp16/bf16; the script then exits 1. Without CUDA it runs the
same checks on the CPU in fp32 only (a dry run of the script itself).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import _common as C
import torch

MIN_COS = {"float32": 0.999, "float16": 0.99, "bfloat16": 0.99}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _compare(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(max |a - b| / max |b|, min row cosine similarity)."""
    a, b = a.double(), b.double()
    rel = float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1).min()
    return rel, float(cos)


def _images_per_s(fn, batch: torch.Tensor, device: str, seconds: float = 1.0) -> float:
    fn(batch)  # warm-up (cuDNN autotuning, lazy init)
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn(batch)
        n += len(batch)
    _sync(device)
    return n / (time.perf_counter() - t0)


def encoder_rows(names: list[str], dtypes: list[str], device: str, images, batch_size: int, work: Path) -> list[list]:
    rows = []
    for name in names:
        cpu, note = C.load_bench_encoder(name, work / name, device="cpu")
        batch = torch.stack([cpu.preprocess(im) for im in images[:batch_size]])
        ref = C.as_loaded(cpu).forward(batch)["features"]
        print(f"{name}: {note}", file=sys.stderr, flush=True)
        for dtype in dtypes:
            enc, _ = C.load_bench_encoder(name, work / name, device=device, dtype=dtype)
            plain = C.as_loaded(enc)
            graph_out, plain_out = enc.forward(batch)["features"], plain.forward(batch)["features"]
            rel_g, cos_g = _compare(graph_out, plain_out)
            rel_c, cos_c = _compare(graph_out, ref)
            ok = min(cos_g, cos_c) >= MIN_COS[dtype] and bool(torch.isfinite(graph_out).all())
            gpu_batch = batch.to(device)
            speed_g = _images_per_s(enc.forward, gpu_batch, device)
            speed_p = _images_per_s(plain.forward, gpu_batch, device)
            rows.append([name, f"{device} {dtype}", enc.graph, f"{rel_g:.1e} / {cos_g:.6f}",
                         f"{rel_c:.1e} / {cos_c:.6f}", speed_g, speed_p, "ok" if ok else "FAIL"])
            del enc, plain
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    return rows


def extraction_rows(name: str, dtype: str, device: str, image_set, batch_size: int, work: Path) -> list[list]:
    """Cold-cache extract_features through the DataLoader, and the warm lookup of the same images."""
    from evaluators.features import extract_features, loader_workers

    enc, _ = C.load_bench_encoder(name, work / name, device=device, dtype=dtype)
    paths = list(image_set.paths)
    rows = []
    with C.chexgen_home(work / f"home-{name}-{dtype}"):
        for label in ("cold cache", "warm cache"):
            t0 = time.perf_counter()
            with contextlib.redirect_stderr(io.StringIO()):
                extract_features(paths, enc, batch_size=batch_size)
            sec = time.perf_counter() - t0
            rows.append([f"extract_features, {label}", name, f"{device} {dtype}", len(paths), sec, len(paths) / sec,
                         f"DataLoader workers {loader_workers(len(paths), on_cuda=device.startswith('cuda'))}"])
    return rows


def reid_rows(device: str, images, batch_size: int) -> list[list]:
    """Re-ID embedding (ResNet-50, random weights): graph vs plain forward, and against the CPU."""
    from evaluators.encoders.base import PLAIN_ENV
    from evaluators.privacy.reid import ReIDModel, embed

    torch.manual_seed(0)
    model = ReIDModel("resnet50").eval()
    imgs = list(images[:batch_size])
    os.environ[PLAIN_ENV] = "1"
    try:
        ref = torch.from_numpy(embed(model, imgs, batch_size=batch_size))  # the network as defined, CPU fp32
    finally:
        os.environ.pop(PLAIN_ENV, None)
    model.to(device)
    rows = []
    for label, plain in (("graph", False), ("plain", True)):
        os.environ[PLAIN_ENV] = "1" if plain else ""
        try:
            out = torch.from_numpy(embed(model, imgs, batch_size=batch_size))
            rel, cos = _compare(out, ref)
            t0 = time.perf_counter()
            reps = 3
            for _ in range(reps):
                embed(model, imgs, batch_size=batch_size)
            sec = (time.perf_counter() - t0) / reps
        finally:
            os.environ.pop(PLAIN_ENV, None)
        ok = cos >= MIN_COS["float32"]
        rows.append([f"re-ID embed ({label})", "resnet50-random", f"{device} float32", len(imgs), sec,
                     len(imgs) / sec, f"vs CPU fp32 plain: {rel:.1e} / {cos:.6f} {'ok' if ok else 'FAIL'}"])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoders", type=lambda s: s.split(","), default=["demo", "inception-random", "raddino-random"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--n-extract", type=int, default=2000, help="images for the extract_features rows")
    ap.add_argument("--device", default=None, help="default: cuda when available, else a CPU dry run")
    args = ap.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = ["float32", "float16", "bfloat16"] if device.startswith("cuda") else ["float32"]

    C.print_header("CUDA paths: precision and speed of the encoders' forward passes")
    if device.startswith("cuda"):
        print(f"cuDNN TF32 convolutions: {torch.backends.cudnn.allow_tf32}; "
              f"TF32 matmul: {torch.backends.cuda.matmul.allow_tf32}\n")
    work = Path(tempfile.mkdtemp(prefix="chexgen-cuda-"))
    image_set = C.demo_images(max(args.n_extract, args.batch_size), seed=0)
    images = [image_set.image(i) for i in range(args.batch_size)]

    rows = encoder_rows(args.encoders, dtypes, device, images, args.batch_size, work)
    print(C.markdown_table(["encoder", "device / dtype", "forward", "graph vs as loaded (rel / min cos)",
                            "graph vs CPU fp32 as loaded (rel / min cos)", "graph images/s",
                            "as loaded images/s", "check"], rows))
    print()
    ext = []
    for name in args.encoders:
        for dtype in dtypes[-1:] if device.startswith("cuda") else dtypes:
            ext += extraction_rows(name, dtype, device, image_set.subset(slice(0, args.n_extract)),
                                   args.batch_size, work)
    ext += reid_rows(device, images, args.batch_size)
    print(C.markdown_table(["step", "model", "device / dtype", "images", "wall s", "images/s", "notes"], ext))
    failed = [r for r in rows if r[-1] != "ok"] + [r for r in ext if "FAIL" in str(r[-1])]
    print(f"\nload average at the end: {C.loadavg()}")
    if failed:
        print(f"{len(failed)} check(s) FAILED")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
