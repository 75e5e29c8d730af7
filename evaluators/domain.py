"""Is an image set the procedural demo world? (decides where demo-trained models may be used)

Models shipped for the demo (the demo encoder, the demo re-ID network) were trained on demo-world phantoms; their
numbers mean nothing on real radiographs. They are used by default only on demo-world sets, known by a marker,
never guessed from pixels:

- the spec ``demo`` (``demo@train``...): the embedded world;
- a folder written by :func:`evaluators.demo_world.generate_demo_world`, which leaves its marker
  (:data:`evaluators.demo_world.MARKER`, written and read by that module) next to its
  ``metadata.csv`` with the world version and the SHA-256 of that ``metadata.csv``. A set is a demo-world set when
  the marker is there, the metadata still has that hash (an edited or re-used CSV is not trusted), and every image
  of the set lies in that folder's ``images/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .demo_world import WORLD_NAME, WORLD_VERSION, read_marker
from .imagesets import DEMO, ImageSet, parse_set_spec

DEMO_ENCODER_NOTE = (
    "computed with the demo encoder (trained on demo-world phantoms) on images that are not the demo world: "
    "not comparable with RadDino numbers (CheXGenBench's feature space); use the raddino encoder for those"
)


def _paths_and_roots(source) -> tuple[list[str], list[Path]] | None:
    """(image paths, candidate world folders) of an ImageSet, a ReferenceIndex or a spec; None when unknown."""
    if isinstance(source, ImageSet):
        root = Path(source.root) if source.root else None
        return source.paths, ([root, root.parent] if root else [])
    meta = getattr(source, "meta", None)
    info = getattr(source, "info", None)
    if meta is not None and isinstance(info, dict):  # a ReferenceIndex
        root = (info.get("reference") or {}).get("root") or ""
        return meta["path"].astype(str).tolist(), ([Path(root), Path(root).parent] if root else [])
    if isinstance(source, str | os.PathLike):
        path, _ = parse_set_spec(source)
        p = Path(path)
        return None, [p if p.is_dir() else p.parent]
    return None


def demo_world_info(source) -> dict | None:
    """The demo-world marker (version, seed, patients, folder) when ``source`` is a demo-world set, else None.

    ``source``: an ImageSet, a ReferenceIndex, or a spec (``demo``, ``DIR``, ``DIR@train``, ``DIR/metadata.csv``).
    """
    if source is None:
        return None
    if isinstance(source, str | os.PathLike):
        path, _ = parse_set_spec(source)
        if path == DEMO:
            return {"world": WORLD_NAME, "version": WORLD_VERSION, "folder": "demo (the embedded world)"}
    found = _paths_and_roots(source)
    if found is None:
        return None
    paths, roots = found
    for folder in roots:
        body = read_marker(folder)
        if body is None:
            continue
        images = os.path.join(os.path.abspath(folder), "images") + os.sep
        if paths is not None and not all(os.path.abspath(p).startswith(images) for p in paths):
            return None  # images from elsewhere mixed in (or a subset copied out): not the world
        return body
    return None


def is_demo_world(source) -> bool:
    return demo_world_info(source) is not None


def encoder_note(encoder_name: str | None, source) -> str | None:
    """The comparability note for results of ``encoder_name`` on ``source`` (None when there is nothing to say)."""
    if encoder_name == "demo" and not is_demo_world(source):
        return DEMO_ENCODER_NOTE
    return None
