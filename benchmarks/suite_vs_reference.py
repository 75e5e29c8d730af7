"""The fidelity suite against the reference pipeline's pattern, on the same images and the same encoder.

(a) REFERENCE PATTERN (CheXGenBench ``metrics/fid.py``): torchmetrics ``FrechetInceptionDistance``,
    ``KernelInceptionDistance`` and ``InceptionScore`` objects, each fed every batch and each running
    the encoder itself (the encoder wrapped as a torchmetrics custom ``feature`` module with a
    ``num_features`` attribute), then a second pass over the images for the ``prdc`` package's
    Precision/Recall/Density/Coverage. Encoder passes: 3 per real image (FID, KID, PRDC), 4 per
    synthetic image (FID, KID, IS, PRDC).
    The encoder runs as loaded (``encoder.model``), as torchmetrics runs its feature extractor. A second
    run of the same pattern on the engine's inference graph (batch norm folded into the convolutions,
    channels_last: :func:`evaluators.encoders.base.inference_graph`) separates what the pipeline saves
    (passes) from what the graph saves (cost of each pass).
(b) ``run_fidelity`` with a COLD feature cache (fresh ``CHEXGEN_HOME``): one pass per image.
(c) ``run_fidelity`` with the real set's features already cached (WARM real side, new synthetic images).

Same settings on both sides: FID; KID with 100 subsets of size min(n_real, n_synthetic), degree 3;
PRDC k=5; Inception Score with 10 splits on the encoder's logits, synthetic images only, seed 0
(for ``demo`` its 14-label head, for ``inception-random`` the 1008 ``logits_unbiased``; ``pixels`` and ``raddino-random`` have
no logits, so no IS on either side). The suite side's IS for non-Inception encoders is computed from
the cached logits (:func:`evaluators.metrics.inception_score`), inside the timed region. Both sides use
the encoder's own preprocessing, batch size 64 and the same DataLoader workers. The script prints
both sides' metric values so that "the same metrics" can be checked, and exits 1 when they disagree.

Overhead: the suite's cold wall time divided by (i) one plain pass over the same images (read,
preprocess, forward in a DataLoader - the least any pipeline pays) and (ii) the encoder forward alone
on preloaded tensors, both with the suite's own forward (the inference graph).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import _common as C
import torch

METRICS = ("FID", "KID", "Precision", "Recall", "Density", "Coverage", "IS")


class _Images(torch.utils.data.Dataset):
    """Paths -> preprocessed tensors (the reference pattern's loader; same preprocess as the suite)."""

    def __init__(self, paths: list[str], preprocess):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from evaluators.imageio import read_image

        return self.preprocess(read_image(self.paths[i]))


def _loader(paths: list[str], encoder, batch_size: int) -> torch.utils.data.DataLoader:
    from evaluators.features import loader_workers  # the suite's rule, so both sides decode alike

    on_cuda = encoder.device.startswith("cuda")
    return torch.utils.data.DataLoader(_Images(paths, encoder.preprocess), batch_size=batch_size,
                                       num_workers=loader_workers(len(paths), on_cuda=on_cuda), pin_memory=on_cuda)


class FeatureModule(torch.nn.Module):
    """An encoder output as a torchmetrics custom ``feature`` extractor (needs ``num_features``)."""

    def __init__(self, encoder, key: str):
        super().__init__()
        self.encoder, self.key = encoder, key
        self.num_features = encoder.dim if key == "features" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.forward(x)[self.key]


def reference_pattern(real: list[str], synth: list[str], encoder, *, batch_size: int) -> tuple[dict, dict]:
    """(metric values, timings) of the torchmetrics + prdc pattern."""
    from prdc import compute_prdc
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore
    from torchmetrics.image.kid import KernelInceptionDistance

    t: dict[str, float] = {}
    t0 = time.perf_counter()
    feat = FeatureModule(encoder, "features")
    fid = FrechetInceptionDistance(feature=feat, reset_real_features=False)
    kid = KernelInceptionDistance(feature=feat, subsets=100, subset_size=min(len(real), len(synth)),
                                  reset_real_features=False)
    has_logits = "logits" in encoder.outputs
    iscore = InceptionScore(feature=FeatureModule(encoder, "logits"), splits=10) if has_logits else None
    for batch in _loader(real, encoder, batch_size):
        fid.update(batch, real=True)
        kid.update(batch, real=True)
    for batch in _loader(synth, encoder, batch_size):
        fid.update(batch, real=False)
        kid.update(batch, real=False)
        if iscore is not None:
            iscore.update(batch)
    t["metric objects: updates"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    out = {"FID": float(fid.compute())}
    torch.manual_seed(0)
    out["KID"] = float(kid.compute()[0])
    if iscore is not None:
        torch.manual_seed(0)
        out["IS"] = float(iscore.compute()[0])
    t["metric objects: compute"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    fr = torch.cat([encoder.forward(b)["features"] for b in _loader(real, encoder, batch_size)]).numpy()
    fs = torch.cat([encoder.forward(b)["features"] for b in _loader(synth, encoder, batch_size)]).numpy()
    t["prdc: encoder pass"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the set sizes
        p = compute_prdc(real_features=fr, fake_features=fs, nearest_k=5)
    out.update(Precision=p["precision"], Recall=p["recall"], Density=p["density"], Coverage=p["coverage"])
    t["prdc: compute"] = time.perf_counter() - t3
    t["total"] = time.perf_counter() - t0
    return out, t


def suite(real_set, synth_set, encoder, enc_name: str, *, batch_size: int) -> tuple[dict, dict]:
    """(metric values, timings) of the project's suite (run_fidelity + IS from the cached logits)."""
    from evaluators.features import extract_features
    from evaluators.fidelity import run_fidelity
    from evaluators.metrics import inception_score

    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # the cache's progress bars (tables go to stdout)
        res = run_fidelity(real_set, synth_set, encoders=[enc_name], alignment=False, load_encoder=lambda _: encoder,
                           kid_subsets=100, k=5, seed=0, batch_size=batch_size,
                           preprocess=encoder.preprocess_mode)  # the reference pattern reads the same pixels
    m = res["overall"][enc_name]
    out = {k: float(m[k]) for k in ("FID", "KID", "Precision", "Recall", "Density", "Coverage")}
    if "Inception Score" in res:
        out["IS"] = float(res["Inception Score"]["mean"])
    elif "logits" in encoder.outputs:  # cache hit: no forward pass
        logits = extract_features(list(synth_set.paths), encoder, batch_size=batch_size,
                                  show_progress=False).outputs["logits"]
        out["IS"] = inception_score(logits, splits=10, seed=0)[0]
    return out, {"total": time.perf_counter() - t0}


def one_pass(paths: list[str], encoder, *, batch_size: int) -> tuple[float, float]:
    """(seconds for read + preprocess + forward streamed through a DataLoader, seconds for the forward alone).

    Streamed, as the suite runs: where the loader has workers (a GPU machine) they decode the next batches
    while the encoder runs, so the baseline is not handicapped by running the two one after the other."""
    batches = []
    t0 = time.perf_counter()
    for b in _loader(paths, encoder, batch_size):
        encoder.forward(b)
        batches.append(b)
    t_stream = time.perf_counter() - t0
    t1 = time.perf_counter()
    for b in batches:
        encoder.forward(b)
    return t_stream, time.perf_counter() - t1


def _agree(ref: dict, ours: dict) -> list[str]:
    bad = []
    for k in METRICS:
        if k not in ref and k not in ours:
            continue
        a, b = ref.get(k, math.nan), ours.get(k, math.nan)
        tol = 1e-3 * max(1.0, abs(a)) if k in ("FID", "IS") else 1e-4 + 1e-3 * abs(a)
        if not (abs(a - b) <= tol):
            bad.append(f"{k}: reference {a:.6g} vs suite {b:.6g}")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="real images and synthetic images, each (default 1000)")
    ap.add_argument("--encoder", choices=C.ENCODER_CHOICES, default="demo")
    ap.add_argument("--image-size", type=int, default=128, help="demo world image side in px (default 128)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default=None, help="cuda or cpu (default: the best available)")
    ap.add_argument("--dtype", default="float32", help="encoder precision: float32, or float16/bfloat16 on CUDA")
    ap.add_argument("--no-overhead", action="store_true", help="skip the plain-encoder-pass baseline")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each pipeline; the fastest counts (default 3)")
    args = ap.parse_args(argv)
    if args.n < 20:
        raise SystemExit("--n must be at least 20 (IS uses 10 splits, PRDC k=5)")

    C.print_header(f"Fidelity suite vs the reference pattern (n={args.n} real + {args.n} synthetic)")
    real_set = C.demo_images(args.n, seed=0, size=args.image_size)
    synth_set = C.demo_images(args.n, seed=1, size=args.image_size)
    real, synth = list(real_set.paths), list(synth_set.paths)
    work = Path(tempfile.mkdtemp(prefix="chexgen-bench-suite-"))
    enc_name = args.encoder.removesuffix("-random")
    with C.chexgen_home(work / "home-setup"):
        from evaluators.settings import select_device

        encoder, note = C.load_bench_encoder(args.encoder, work, device=select_device(args.device), dtype=args.dtype)
        encoder.weights_sha256()  # hashed once here, not inside a timed region
    from evaluators.features import loader_workers

    print(f"encoder: {note}, forward: {encoder.graph}; images: demo world seed 0 (real) and seed 1 (synthetic), {args.image_size} px PNG; "
          f"{encoder.device} {args.dtype}, batch {args.batch_size}; DataLoader workers "
          f"{loader_workers(args.n, on_cuda=encoder.device.startswith('cuda'))}; fastest of {args.repeat} runs each")
    # warm-up: one small batch through the model so that no side pays first-call costs
    encoder.forward(torch.stack([encoder.preprocess(real_set.image(i)) for i in range(2)]))

    # Each pipeline runs --repeat times (interleaved) and its fastest run counts: on a shared VM the same work
    # varies by up to 2x between runs, and the minimum is the least disturbed measurement (as timeit does).
    times: dict[str, float] = {}
    ref_t: dict[str, float] = {}
    graph_vals: dict[str, float] | None = None

    def keep(key: str, seconds: float) -> bool:
        better = key not in times or seconds < times[key]
        if better:
            times[key] = seconds
        return better

    as_loaded = C.as_loaded(encoder)
    for rep in range(args.repeat):
        gc.collect()
        ref_vals, t = reference_pattern(real, synth, as_loaded, batch_size=args.batch_size)
        if keep("reference", t["total"]):
            ref_t = t
        if encoder.net is not encoder.model:
            gc.collect()
            graph_vals, t = reference_pattern(real, synth, encoder, batch_size=args.batch_size)
            keep("reference, graph", t["total"])
        gc.collect()
        with C.chexgen_home(work / f"home-cold-{rep}"):
            cold_vals, t = suite(real_set, synth_set, encoder, enc_name, batch_size=args.batch_size)
        keep("cold", t["total"])
        gc.collect()
        with C.chexgen_home(work / f"home-warm-{rep}"):
            from evaluators.features import extract_features

            extract_features(real, encoder, batch_size=args.batch_size, show_progress=False)  # untimed: real cached
            warm_vals, t = suite(real_set, synth_set, encoder, enc_name, batch_size=args.batch_size)
        keep("warm", t["total"])
        if not args.no_overhead:
            gc.collect()
            one, fwd = one_pass(real + synth, encoder, batch_size=args.batch_size)
            keep("one pass", one)
            keep("forward only", fwd)
        print(f"repeat {rep + 1}/{args.repeat} done", file=sys.stderr, flush=True)

    n_img = 2 * args.n
    rows = [["reference pattern (torchmetrics FID+KID+IS objects, prdc pass)", times["reference"],
             1000 * times["reference"] / n_img, "1.0x"],
            *([["reference pattern on the engine's inference graph", times["reference, graph"],
                1000 * times["reference, graph"] / n_img, f"{times['reference'] / times['reference, graph']:.2f}x"]]
              if "reference, graph" in times else []),
            ["suite, cold cache", times["cold"], 1000 * times["cold"] / n_img,
             f"{times['reference'] / times['cold']:.2f}x"],
            ["suite, real features cached", times["warm"], 1000 * times["warm"] / n_img,
             f"{times['reference'] / times['warm']:.2f}x"]]
    if "one pass" in times:
        rows += [["one plain encoder pass (read + preprocess + forward)", times["one pass"],
                  1000 * times["one pass"] / n_img, f"{times['reference'] / times['one pass']:.2f}x"],
                 ["encoder forward alone (preloaded tensors)", times["forward only"],
                  1000 * times["forward only"] / n_img, f"{times['reference'] / times['forward only']:.2f}x"]]
    print(C.markdown_table(["pipeline", "wall s", "ms / image (of 2n)", "speed vs reference"], rows))
    print()
    print("reference breakdown: " + ", ".join(f"{k} {v:.2f} s" for k, v in ref_t.items()))
    print(f"ratios: reference / cold = {times['reference'] / times['cold']:.2f}x (target >= 2.5x); "
          f"reference / warm = {times['reference'] / times['warm']:.2f}x (target >= 10x)")
    if "reference, graph" in times:
        g = times["reference, graph"]
        print(f"pipeline alone (both sides on the inference graph): cold {g / times['cold']:.2f}x, "
              f"warm {g / times['warm']:.2f}x; the graph alone: {times['reference'] / g:.2f}x")
    if "one pass" in times:
        print(f"overhead: suite cold / one plain pass = {times['cold'] / times['one pass']:.2f} (target <= 1.3); "
              f"suite cold / forward alone = {times['cold'] / times['forward only']:.2f}")
    print()
    keys = [k for k in METRICS if k in ref_vals or k in cold_vals]
    print(C.markdown_table(["side", *keys], [
        ["reference", *(ref_vals.get(k, math.nan) for k in keys)],
        *([["reference on the graph", *(graph_vals.get(k, math.nan) for k in keys)]] if graph_vals else []),
        ["suite (cold)", *(cold_vals.get(k, math.nan) for k in keys)],
        ["suite (warm)", *(warm_vals.get(k, math.nan) for k in keys)]]))
    print(f"\nload average at the end: {C.loadavg()}")
    # The suite is checked against the reference pattern fed the same features (the same forward). The network
    # as loaded differs from the graph by float rounding only (~1e-6 relative on a CPU; ~1e-3 with the GPU's TF32
    # convolutions, enough to move a borderline PRDC neighbour): that gap is reported, not failed.
    same = graph_vals or ref_vals
    bad = _agree(same, cold_vals) + _agree(same, warm_vals)
    if graph_vals:
        gap = _agree(ref_vals, graph_vals)
        print("network as loaded vs inference graph, same pattern: "
              + ("; ".join(gap) if gap else "agree within the same tolerances"))
    if bad:
        print("METRICS DISAGREE: " + "; ".join(bad), file=sys.stderr)
        return 1
    print("metrics agree between the reference pattern and the suite on the same forward "
          "(FID/IS rel 1e-3, others 1e-4 + rel 1e-3)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")  # run_fidelity's progress bars would interleave with the tables
    warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
    sys.exit(main())
