"""Per-label precision, recall and F1 of the rule labeler on hand-labelled report sentences and on round trips
of the demo report writer.

    python scripts/labeler_accuracy.py [--csv tests/labeler_report_sentences.csv] [--n 5000] [--seed 0]
                                       [--errors] [--engine rules|negspacy]

For each label and each status (1 positive, 0 negative, -1 uncertain) a prediction is a true positive when it
equals the hand label; precision, recall and F1 are computed per status as in the CheXpert paper (mention,
negation and uncertainty F1). "pos" columns are the positive class (value 1): what a classifier trained on
U-Zeros labels sees. The round-trip section labels `evaluators.reports.compose_report(v)` text and compares
with what the text states (every label must come back exactly). ``--engine negspacy`` scores the negspacy
comparison engine (scripts/labeler_negspacy.py; needs spaCy + negspacy, not in requirements).
Prints Markdown tables for the README.
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


def prf(expected: np.ndarray, got: np.ndarray, value: float) -> tuple[int, float, float, float]:
    """Support, precision, recall and F1 of ``value`` (NaN when undefined)."""
    e, g = expected == value, got == value
    tp, n_e, n_g = int((e & g).sum()), int(e.sum()), int(g.sum())
    p = tp / n_g if n_g else float("nan")
    r = tp / n_e if n_e else float("nan")
    f = 2 * tp / (n_e + n_g) if n_e + n_g else float("nan")
    return n_e, p, r, f


def _fmt(x: float) -> str:
    return "-" if np.isnan(x) else f"{x:.3f}"


def table(expected: np.ndarray, got: np.ndarray) -> str:
    """Markdown table: per label, positive-class support/precision/recall/F1, then negation and uncertainty F1."""
    lines = [
        "| label | pos | P (pos) | R (pos) | F1 (pos) | neg | F1 (neg) | unc | F1 (unc) | exact |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    same = _same(expected, got)
    for j, name in enumerate(PATHOLOGIES):
        e, g = expected[:, j], got[:, j]
        n1, p1, r1, f1 = prf(e, g, 1.0)
        n0, _, _, f0 = prf(e, g, 0.0)
        nu, _, _, fu = prf(e, g, -1.0)
        lines.append(
            f"| {name} | {n1} | {_fmt(p1)} | {_fmt(r1)} | {_fmt(f1)} | {n0} | {_fmt(f0)} | {nu} | {_fmt(fu)} "
            f"| {same[:, j].mean():.3f} |"
        )
    n1, p1, r1, f1 = prf(expected, got, 1.0)
    n0, _, _, f0 = prf(expected, got, 0.0)
    nu, _, _, fu = prf(expected, got, -1.0)
    lines.append(
        f"| all labels (micro) | {n1} | {_fmt(p1)} | {_fmt(r1)} | {_fmt(f1)} | {n0} | {_fmt(f0)} | {nu} "
        f"| {_fmt(fu)} | {same.mean():.3f} |"
    )
    return "\n".join(lines)


def load_csv(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    expected = np.array([[parse_label_value(r[p]) for p in PATHOLOGIES] for r in rows], dtype=np.float32)
    return [r["text"] for r in rows], expected


def _engine(name: str):
    if name == "rules":
        return label_report
    sys.path.insert(0, str(REPO / "scripts"))
    from labeler_negspacy import NegspacyLabeler

    return NegspacyLabeler().label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, action="append", help="hand-labelled CSV(s) (text + 14 labels)")
    parser.add_argument("--n", type=int, default=5000, help="random label vectors for the round trip (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--errors", action="store_true", help="print every sentence with a wrong label")
    parser.add_argument("--engine", choices=("rules", "negspacy"), default="rules")
    args = parser.parse_args(argv)
    label = _engine(args.engine)

    for path in args.csv or [REPO / "tests" / "labeler_report_sentences.csv"]:
        texts, expected = load_csv(path)
        t0 = time.perf_counter()
        got = np.stack([label(t) for t in texts])
        ms = (time.perf_counter() - t0) / len(texts) * 1000
        exact = _same(expected, got).all(axis=1).mean()
        print(f"## {path.name} ({args.engine}): {len(texts)} texts, all 14 labels exact on {exact:.1%} "
              f"({ms:.2f} ms per text)\n")
        print(table(expected, got))
        if args.errors:
            print()
            for t, e, g in zip(texts, expected, got, strict=True):
                bad = [f"{p}: want {e[j]:g} got {g[j]:g}" for j, p in enumerate(PATHOLOGIES) if not _same(e[j], g[j])]
                if bad:
                    print(f"- {t}\n    " + "; ".join(bad))
        print()

    if args.n > 0:
        rng = np.random.default_rng(args.seed)
        vectors = rng.choice([np.nan, 1.0, 0.0, -1.0], size=(args.n, N_LABELS), p=[0.7, 0.1, 0.13, 0.07])
        stated, back = [], []
        for v in vectors.astype(np.float32):
            text, s = compose_report(v, rng)
            stated.append(s)
            back.append(label(text))
        stated_arr, back_arr = np.stack(stated), np.stack(back)
        exact = _same(stated_arr, back_arr).all(axis=1).mean()
        print(
            f"## Round trip label(compose_report(labels)) ({args.engine}): {args.n} random label vectors "
            f"(seed {args.seed}), all 14 labels exact on {exact:.1%}\n"
        )
        print(table(stated_arr, back_arr))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
