"""The embedding map coloured by Meehan et al.'s C_T cells (the privacy job's data-copying test).

The cells are the ones the privacy job scored: its JSON keeps, under ``data_copying.C_T``, each cell's Z and sizes,
the synthetic images' cells and the k-means centres (float32). Every reference image goes to its nearest stored
centre (:func:`evaluators.metrics.copying.assign_cells`, the rule the job itself used), so the map's cells are the
job's cells, recomputed from the same cached index features rather than clustered again; the per-cell training
counts are checked against the stored ones. A fresh computation (:func:`fresh`) runs the same C_T metric through
:func:`evaluators.privacy.data_copying.data_copying`.

Colour: a cell's Z (Mann-Whitney of synthetic vs held-out distances to the cell's training images); Z < 0: the
synthetic images of that cell sit closer to the training images than held-out real ones do (copying). Cells C_T
did not count (too few synthetic images, no held-out image) have no colour and say why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from .context import RunContext

COLOURS = ("pathology", "ct-cell")
RERUN = ("run the privacy job on this reference (the Batch suite tab's Privacy axis, or `python -m evaluators "
         "privacy --train REFERENCE --synthetic SET`)")


@dataclass
class CtCells:
    """A C_T computation's cells on one reference index."""

    source: str  # "privacy run #12" / "a fresh C_T computation"
    synthetic_name: str
    section: dict  # data_copying's C_T result
    cells: pd.DataFrame  # per cell: cell, Z_U, scored, cell_status, n_train, n_heldout, n_synthetic
    train_cell: np.ndarray  # per reference-index row
    synthetic: pd.DataFrame  # per synthetic image: path, cell, x, y (NaN: no map, or the file is gone)
    notes: list[str] = field(default_factory=list)

    @property
    def per_cell(self) -> pd.DataFrame:
        """Z, scored flag and status by cell (the columns a point takes from its cell)."""
        return self.cells.set_index("cell")[["Z_U", "scored", "cell_status"]]


def _status(row: dict, min_syn: int) -> str:
    if row.get("included"):
        return "scored"
    if not row.get("n_synthetic"):
        return "not scored: no synthetic image in this cell"
    if not row.get("n_test"):
        return "not scored: no held-out real image in this cell"
    return f"not scored: {row['n_synthetic']} synthetic image(s), C_T needs more than {min_syn}"


def cell_table(section: dict) -> pd.DataFrame:
    """One row per cell: its Z (None when not computed), whether C_T counted it, why not, and its sizes."""
    min_syn = int(section.get("min_synthetic_per_cell", 20))
    return pd.DataFrame([{"cell": int(r["cell"]), "Z_U": r.get("Z_U"), "scored": bool(r.get("included")),
                          "cell_status": _status(r, min_syn), "n_train": int(r["n_train"]),
                          "n_heldout": int(r["n_test"]), "n_synthetic": int(r["n_synthetic"])}
                         for r in section["cells"]])


def ct_section(result: dict, source: str) -> dict:
    """The C_T section of a privacy result, or a clear error saying what to run."""
    section = (result.get("data_copying") or {}).get("C_T")
    if not section:
        raise InputError(f"{source} has no data-copying test (saved before C_T existed); {RERUN}.")
    if not section.get("available"):
        raise InputError(f"{source}: C_T is unavailable ({section.get('reason', 'no reason given')}).")
    if "centres" not in section or "cells" not in section:
        raise InputError(f"{source} was saved before the C_T cell centres were kept in the JSON; {RERUN}.")
    return section


def from_result(ctx: RunContext, result: dict, source: str, progress=None) -> CtCells:
    """The cells of a privacy result (its JSON as a dict) on ``ctx``'s reference index."""
    from ..metrics.copying import assign_cells, decode_centres
    from ..privacy.data_copying import train_features

    section = ct_section(result, source)
    index = ctx.index(progress)
    run_encoder = (result.get("encoder") or {}).get("name")
    if run_encoder and run_encoder != index.encoder:
        raise InputError(f"{source} used the {run_encoder!r} encoder, this reference index {index.encoder!r}; "
                         f"open the map of the reference it ran against, or {RERUN}.")
    if int(section["n_train"]) != len(index):
        raise InputError(f"{source} ran against {section['n_train']} training images, this reference index holds "
                         f"{len(index)}; {RERUN}.")
    centres = decode_centres(section["centres"])
    train_cell = assign_cells(train_features(index), centres)
    table = cell_table(section)
    counts = np.bincount(train_cell, minlength=len(table))
    if not np.array_equal(counts, table["n_train"].to_numpy()):
        raise InputError(f"{source}: this reference index's features do not fall into the stored cells as they did "
                         f"in the run (the index was rebuilt since?); {RERUN}.")
    paths = [str(s.get("synthetic")) for s in result.get("samples") or []]
    synthetic, notes = _synthetic_points(ctx, paths, section.get("synthetic_cell") or [], centres, progress)
    name = str((result.get("settings") or {}).get("synthetic") or "the synthetic set")
    return CtCells(source, name, section, table, train_cell, synthetic, notes)


def _synthetic_points(ctx: RunContext, paths: list[str], stored: list[int], centres: np.ndarray,
                      progress=None) -> tuple[pd.DataFrame, list[str]]:
    """The run's synthetic images with their stored cells, placed on the map from their (cached) features."""
    from ..features import extract_features
    from ..metrics.copying import assign_cells
    from ..privacy.data_copying import _unit

    notes: list[str] = []
    if len(paths) != len(stored):
        notes.append(f"the run lists {len(paths)} synthetic images but {len(stored)} cells: synthetic images not shown")
        paths, stored = [], []
    df = pd.DataFrame({"path": paths, "cell": np.asarray(stored, dtype=np.int64), "x": np.nan, "y": np.nan})
    here = [i for i, p in enumerate(paths) if Path(p).is_file()]
    if len(here) < len(paths):
        notes.append(f"{len(paths) - len(here)} synthetic image(s) are no longer on disk: not placed on the map")
    if not here:
        return df, notes
    feats = extract_features([paths[i] for i in here], ctx.encoder(), show_progress=False, progress=progress).features
    moved = int((assign_cells(_unit(feats), centres) != df["cell"].to_numpy()[here]).sum())
    if moved:
        notes.append(f"{moved} synthetic image(s) changed on disk since the run (they now fall in another cell); "
                     "their cell is the run's")
    index = ctx.index()
    if index.has_umap:
        xy = index.umap_transform(feats)
        df.loc[here, "x"], df.loc[here, "y"] = xy[:, 0], xy[:, 1]
    return df, notes


def fresh(ctx: RunContext, synthetic, *, heldout=None, seed: int = 0, progress=None) -> CtCells:
    """C_T computed now (the privacy job's C_T metric alone, same cached features) for a synthetic set."""
    from ..features import extract_features
    from ..privacy.data_copying import data_copying
    from ..privacy.search import load_set

    syn = load_set(synthetic, "synthetic")
    if len(syn) == 0:
        raise InputError(f"The synthetic set {syn.name!r} has no images.")
    feats = extract_features(list(syn.paths), ctx.encoder(), show_progress=False, progress=progress)
    search = ctx.search(heldout=heldout, progress=progress)
    copying = data_copying(search, feats.features, seed=seed, progress=progress, only=("C_T",))
    result = {"data_copying": copying, "encoder": {"name": ctx.encoder().name},
              "samples": [{"synthetic": syn.paths[j]} for j in feats.index], "settings": {"synthetic": syn.name}}
    return from_result(ctx, result, f"C_T of {syn.name}", progress)


def from_store(ctx: RunContext, store, reference: str, *, session: str | None = None, run_id: int | None = None,
               progress=None) -> CtCells:
    """The cells of privacy run ``run_id`` of the results store, else of the newest complete privacy run on
    ``reference`` (that ``session`` sees) whose JSON keeps them."""
    runs = [r for r in store.runs(kind="privacy", session=session)
            if r["status"] == "complete" and (run_id is not None or r["reference"] == reference)]
    if run_id is not None:
        runs = [r for r in runs if int(r["id"]) == int(run_id)]
        if not runs:
            raise InputError(f"No complete privacy run #{run_id} in the results store; the Leaderboard tab (or "
                             "`python -m evaluators leaderboard`) lists them.")
    if not runs:
        raise InputError(f"No privacy run on this reference yet: {RERUN}, then colour by C_T cell again.")
    first_error = None
    for r in runs[:10]:
        try:
            return from_result(ctx, store.get(r["id"])["result"], f"privacy run #{r['id']}", progress)
        except InputError as exc:
            first_error = first_error or exc
            if run_id is not None:
                raise
    raise first_error


def points(ctx: RunContext, cells: CtCells, *, need_map: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reference points of the map with their cell, Z, scored flag and status; the synthetic images likewise).
    ``need_map=False``: x, y NaN when the index has no UMAP map (else that is an error)."""
    from .embedding_map import map_points

    ref = map_points(ctx, need_map=need_map)
    ref["cell"] = cells.train_cell
    return ref.join(cells.per_cell, on="cell"), cells.synthetic.join(cells.per_cell, on="cell")


def table(ctx: RunContext, cells: CtCells | None) -> pd.DataFrame:
    """The map as one table (the CLI's CSV): a row per reference image, then per synthetic image with ``cells``;
    x, y empty when the index has no UMAP map."""
    from .embedding_map import map_points

    ref, syn = points(ctx, cells, need_map=False) if cells is not None else (map_points(ctx, need_map=False), None)
    parts = [("reference", ref)] + ([("synthetic", syn)] if syn is not None else [])
    for kind, df in parts:
        df.insert(0, "row", df.index)
        df.insert(0, "kind", kind)
    return pd.concat([df for _, df in parts], ignore_index=True) if syn is not None else ref


def summary_line(cells: CtCells) -> str:
    """'C_T -8.15 from privacy run #12 (copies, 130 images): 3 of 4 cells scored; ...' with any notes."""
    sec, t = cells.section, cells.cells
    value = sec.get("C_T")
    ct = f"C_T {value:.2f}" if value is not None else "C_T n/a"
    line = (f"{ct} from {cells.source} ({cells.synthetic_name}, {sec.get('n_synthetic')} synthetic images, "
            f"{sec.get('n_heldout')} held-out): {int(t['scored'].sum())} of {len(t)} cells scored. Colour: the "
            f"cell's Z; < 0 (red): its synthetic images sit closer to the training images than held-out real "
            f"images do (copying); > 0 (blue): farther; grey: cell not scored (too few images, hover says why).")
    return " ".join([line, *(f"Note: {n}." for n in cells.notes)])


@dataclass
class SetImages:
    """The C_T run's synthetic images behind the map's stars (customdata ``set:I``: row I of ``table``). The app
    keeps this in a session's state, on the server: the paths never reach the page (a click sends only ``set:I``)."""

    source: str  # the run the cells came from ("privacy run #12"): keys name it, so a redraw cannot swap images
    name: str  # the synthetic set's name
    table: pd.DataFrame  # per image: path, cell, Z_U, scored, cell_status

    def key(self, i: int) -> str:
        """The key that names image ``i`` of this set in a search trail: ``set:I@SOURCE``."""
        return f"set:{int(i)}@{self.source}"

    def named(self, key: str) -> str:
        """A clicked star's ``set:I`` as :meth:`key` names it (``set:I@SOURCE``); any other key unchanged."""
        num = str(key)[4:] if str(key).startswith("set:") else ""
        return self.key(int(num)) if num.isdigit() else key


def set_images(cells: CtCells) -> SetImages:
    """What the map's synthetic stars of ``cells`` stand for (their files, cells and Z)."""
    table = cells.synthetic[["path", "cell"]].join(cells.per_cell, on="cell").reset_index(drop=True)
    return SetImages(cells.source, cells.synthetic_name, table)


def set_path(images: SetImages | None, key: str) -> tuple[int, str]:
    """(row, file) of the set image a key names: ``set:I`` (a star of the map drawn with ``images``) or
    ``set:I@SOURCE`` (a trail's key: refused when the map now shows another run's set)."""
    num, _, source = str(key).partition(":")[2].partition("@")
    if images is None:
        raise InputError("That star is an image of a C_T run's synthetic set, which this page no longer holds (the "
                         "map was redrawn without C_T colouring, or the page reloaded): colour the map by C_T cell "
                         "again and click the star.")
    if source and source != images.source:
        raise InputError(f"That image belongs to the synthetic set of {source}, and the map now shows the cells of "
                         f"{images.source}: colour the map by {source} again to search from it.")
    try:
        i = int(num)
    except ValueError:
        raise InputError(f"Unrecognised image {key!r}: expected set:N.") from None
    if not 0 <= i < len(images.table):
        raise InputError(f"Synthetic image #{i} does not exist ({images.source} has {len(images.table)}).")
    path = str(images.table["path"].iloc[i])
    if not Path(path).is_file():
        raise InputError(f"Synthetic image #{i} of {images.source} ({Path(path).name}) is no longer on disk; "
                         f"{RERUN} with the set to see it again.")
    return i, path


def set_image(images: SetImages | None, key: str) -> tuple[np.ndarray, str]:
    """The set image a key names (float [0, 1]) and its caption: the run, the file's name, its cell and Z (or why
    C_T did not score the cell)."""
    from ..imageio import read_image

    i, path = set_path(images, key)
    row = images.table.iloc[i]
    z = row["Z_U"]
    cell = (f"cell {int(row['cell'])} · Z {float(z):.2f}" + (" (< 0: closer to the training images than held-out "
            "real images: copying)" if float(z) < 0 else "")) if row["scored"] else \
        f"cell {int(row['cell'])} {row['cell_status']}"
    caption = (f"synthetic image #{i} of {images.source} ({images.name}) · {Path(path).name}\n\n{cell}\n\n"
               "*Search from this point* lists its nearest training images and its copy score.")
    return read_image(path), caption
