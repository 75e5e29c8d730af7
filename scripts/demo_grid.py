"""Render the demo world's README grid: one row per pathology (No Finding first), a few random patients each.

    python scripts/demo_grid.py                       # -> assets/demo_grid.png
    python scripts/demo_grid.py --compare-nih /tmp/x  # also /tmp/x/compare_nih.png: the same rows beside
                                                      # real NIH ChestX-ray14 images (never written into the repo)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from evaluators.demo_world import render_for_labels  # noqa: E402
from evaluators.pathologies import INDEX, N_LABELS, PATHOLOGIES, labels_from_nih  # noqa: E402

ROWS = ("No Finding", *(p for p in PATHOLOGIES if p != "No Finding"))
LABEL_W = 190


def _labels(name: str) -> np.ndarray:
    lab = np.zeros(N_LABELS, np.float32)
    lab[INDEX[name]] = 1
    return lab


def _row_label(canvas: Image.Image, y: int, tile: int, text: str) -> None:
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    draw.text((8, y + tile // 2 - 6), text, fill=255, font=font)


def demo_rows(cols: int, size: int, seed: int) -> list[list[np.ndarray]]:
    rows = []
    for r, name in enumerate(ROWS):
        rows.append([render_for_labels(_labels(name), seed=seed + 1000 * r + c, size=size,
                                       view="AP" if c % 3 == 2 else "PA") for c in range(cols)])
    return rows


def nih_rows(nih_dir: Path, cols: int, size: int) -> list[list[np.ndarray | None]]:
    """Real images whose mapped CheXpert labels make the row's pathology positive (blank tiles when none)."""
    import pandas as pd

    table = pd.read_csv(nih_dir / "labels.csv")
    vecs = np.stack([labels_from_nih(s) for s in table["finding_labels"]])
    out: list[list[np.ndarray | None]] = []
    for name in ROWS:
        hits = np.flatnonzero(vecs[:, INDEX[name]] == 1)[:cols]
        row: list[np.ndarray | None] = []
        for i in hits:
            with Image.open(nih_dir / "images" / table["filename"].iloc[i]) as im:
                row.append(np.asarray(im.convert("L").resize((size, size), Image.BILINEAR)))
        out.append(row + [None] * (cols - len(row)))
    return out


def compose(blocks: list[list[list[np.ndarray | None]]], size: int, titles: list[str]) -> Image.Image:
    cols = [len(b[0]) for b in blocks]
    gap = 12
    width = LABEL_W + sum(c * size for c in cols) + gap * (len(blocks) - 1)
    canvas = Image.new("L", (width, 20 + len(ROWS) * size), 0)
    draw = ImageDraw.Draw(canvas)
    x0 = LABEL_W
    for block, title, c in zip(blocks, titles, cols):
        draw.text((x0 + 4, 4), title, fill=255, font=ImageFont.load_default())
        for r, row in enumerate(block):
            for j, tile in enumerate(row):
                if tile is not None:
                    canvas.paste(Image.fromarray(tile), (x0 + j * size, 20 + r * size))
        x0 += c * size + gap
    for r, name in enumerate(ROWS):
        _row_label(canvas, 20 + r * size, size, name)
    return canvas


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "assets" / "demo_grid.png"), help="grid PNG to write")
    ap.add_argument("--cols", type=int, default=5, help="patients per row (default 5)")
    ap.add_argument("--size", type=int, default=96, help="tile size in pixels (default 96)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the patients shown (default 0)")
    ap.add_argument("--compare-nih", metavar="OUT_DIR", default=None,
                    help="also write OUT_DIR/compare_nih.png: demo rows beside real NIH images "
                         "from ../shared/data/nih-cxr14-sample (a temporary folder, never the repo)")
    ap.add_argument("--nih-dir", default=str(REPO.parent / "shared" / "data" / "nih-cxr14-sample"))
    args = ap.parse_args(argv)

    demo = demo_rows(args.cols, args.size, args.seed)
    grid = compose([demo], args.size, [f"demo world (seed {args.seed}; every 3rd column AP)"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")

    if args.compare_nih:
        nih_dir = Path(args.nih_dir)
        if not (nih_dir / "labels.csv").is_file():
            print(f"error: {nih_dir}/labels.csv not found; pass --nih-dir", file=sys.stderr)
            return 2
        target = Path(args.compare_nih).resolve()
        if REPO in (target, *target.parents):
            print("error: --compare-nih must be outside the repository (real images are never committed)",
                  file=sys.stderr)
            return 2
        target.mkdir(parents=True, exist_ok=True)
        real = nih_rows(nih_dir, args.cols, args.size)
        both = compose([demo, real], args.size, ["demo world", "NIH ChestX-ray14 (mapped labels; blank: none)"])
        both.save(target / "compare_nih.png")
        print(f"wrote {target / 'compare_nih.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
