"""Per-label accuracy of the rule labeler on the hand-labelled sentences and on the report-writer round trip.

    python scripts/labeler_accuracy.py [--csv tests/labeler_sentences.csv] [--n 5000] [--seed 0]

Accuracy is exact agreement of the 4-valued label (1, 0, -1, blank). "stated" counts the entries whose
expected value is not blank; "acc (stated)" is the accuracy on those, "acc (all)" also counts blanks
(a label the text never mentions must come back blank). Prints Markdown tables for the README.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from evaluators.labeler import label_report  # noqa: E402
from evaluators.pathologies import N_LABELS, PATHOLOGIES, parse_label_value  # noqa: E402
from evaluators.reports import compose_report  # noqa: E402


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b) | (np.isnan(a) & np.isnan(b))


def table(expected: np.ndarray, got: np.ndarray) -> str:
    """Markdown table: per label counts of expected 1 / 0 / -1 and accuracy."""
    lines = [
        "| label | pos | neg | unc | stated | acc (stated) | acc (all) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    same = _same(expected, got)
    for j, name in enumerate([*PATHOLOGIES, "all labels"]):
        cols = slice(None) if j == N_LABELS else slice(j, j + 1)
        e, s = expected[:, cols], same[:, cols]
        stated = ~np.isnan(e)
        n_stated = int(stated.sum())
        acc_stated = f"{s[stated].mean():.3f}" if n_stated else "-"
        lines.append(
            f"| {name} | {int((e == 1).sum())} | {int((e == 0).sum())} | {int((e == -1).sum())} | {n_stated} "
            f"| {acc_stated} | {s.mean():.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=REPO / "tests" / "labeler_sentences.csv")
    parser.add_argument("--n", type=int, default=5000, help="random label vectors for the round trip")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    with args.csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    expected = np.array([[parse_label_value(r[p]) for p in PATHOLOGIES] for r in rows], dtype=np.float32)
    t0 = time.perf_counter()
    got = np.stack([label_report(r["text"]) for r in rows])
    ms = (time.perf_counter() - t0) / len(rows) * 1000
    exact = _same(expected, got).all(axis=1).mean()
    print(
        f"## Hand-labelled sentences ({args.csv.name}): {len(rows)} texts, all 14 labels exact on {exact:.1%}"
    )
    print(f"({ms:.2f} ms per text)\n")
    print(table(expected, got))

    rng = np.random.default_rng(args.seed)
    vectors = rng.choice([np.nan, 1.0, 0.0, -1.0], size=(args.n, N_LABELS), p=[0.7, 0.1, 0.13, 0.07])
    stated, back = [], []
    for v in vectors.astype(np.float32):
        text, s = compose_report(v, rng)
        stated.append(s)
        back.append(label_report(text))
    stated_arr, back_arr = np.stack(stated), np.stack(back)
    exact = _same(stated_arr, back_arr).all(axis=1).mean()
    print(
        f"\n## Round trip label_report(write_report(labels)): {args.n} random label vectors (seed {args.seed}), "
        f"all 14 labels exact on {exact:.1%}\n"
    )
    print(table(stated_arr, back_arr))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
