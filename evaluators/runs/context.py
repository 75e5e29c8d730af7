"""The reference side that every run shares: the set, its encoder, its index, the memorisation search, re-ID.

A :class:`RunContext` is what the CLI builds for one command and what the app keeps for its whole life: each
piece is built on first use, under a lock, and cached (the index on disk under one key,
:func:`evaluators.index.index_key`, so the app and every command share one index folder per set and encoder).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError

log = logging.getLogger("evaluators.runs")
Progress = Callable[[int, int, str], None]


def is_index_dir(spec: Any) -> bool:
    """True for a reference index folder (has index.json), given as a path or set spec."""
    from ..imagesets import parse_set_spec

    if not isinstance(spec, str | os.PathLike):
        return False
    path, _ = parse_set_spec(str(spec))
    return Path(path).is_dir() and (Path(path) / "index.json").is_file()


class RunContext:
    """The reference set (a spec, an ImageSet or an index folder), its encoder and the things built from them.

    ``encoder``: a name, an Encoder object or None (the index's encoder, else the best available). With
    ``fallback`` (the app) a default encoder that cannot load falls back to ``pixels``, and :attr:`notes` says so.
    ``umap``: the index carries a map (the app's Embedding map tab).
    """

    def __init__(self, reference: Any, *, encoder: Any = None, device: str | None = None, dtype: str = "float32",
                 preprocess: str | None = None, umap: bool = False, fallback: bool = False):
        self.reference = reference
        self.spec = str(reference) if isinstance(reference, str | os.PathLike) else None
        self.umap = umap
        self.dtype = dtype
        self.preprocess = preprocess
        self.fallback = fallback
        self.notes: list[str] = []
        self._encoder_req = encoder
        self._device = device
        self._lock = threading.RLock()
        self._set = None
        self._index = None
        self._encoder = None
        self._searches: dict[tuple, Any] = {}
        self._reid: dict[Any, Any] = {}
        self._reid_cal: dict[tuple, dict] = {}

    # ---- basics
    @property
    def device(self) -> str:
        if self._device is None:
            from ..settings import select_device

            self._device = select_device()
        return self._device

    @property
    def name(self) -> str:
        """How results name the reference: its spec, else the set's name."""
        if self.spec is not None:
            return self.spec
        return getattr(self.reference, "name", None) or str(getattr(self.reference, "dir", "reference"))

    def _given_index(self):
        from ..index import ReferenceIndex

        if isinstance(self.reference, ReferenceIndex):
            return self.reference
        if is_index_dir(self.reference):
            return ReferenceIndex(str(self.reference))
        return None

    def reference_set(self):
        """The reference ImageSet (None when the reference is an index folder: its table stands in for it)."""
        with self._lock:
            if self._set is None and self._given_index() is None:
                from ..imagesets import ImageSet, load_image_set

                ref = self.reference
                self._set = ref if isinstance(ref, ImageSet) else load_image_set(str(ref))
                if len(self._set) == 0:
                    raise InputError(f"The reference set {self._set.name!r} has no images.")
            return self._set

    def encoder(self):
        """The encoder of the reference index (loaded once)."""
        with self._lock:
            if self._encoder is None:
                self._encoder = self._load_encoder()
            return self._encoder

    def _load_encoder(self):
        from .. import encoders

        req = self._encoder_req
        if req is not None and not isinstance(req, str):
            return req  # an Encoder object
        given = self._given_index()
        name = req or (given.encoder if given is not None else encoders.default_encoder())
        mode = self.preprocess or "auto"
        if self.preprocess is None and given is not None and name == given.encoder:
            mode = (given.info.get("encoder") or {}).get("preprocess", "clean")  # the index's mode: features match
        try:
            enc = encoders.load_encoder(name, device=self.device, dtype=self.dtype, preprocess=mode)
        except Exception as exc:
            if req or not self.fallback:
                raise
            note = f"encoder {name!r} could not be loaded ({exc}); using 'pixels' instead"
            log.warning(note)
            self.notes.append(note)
            enc = encoders.load_encoder("pixels", device=self.device)
        if given is not None and enc.cache_key() != given.encoder_key:
            raise InputError(
                f"The reference index at {given.dir} was built with encoder {given.encoder!r} "
                f"({(given.info.get('encoder') or {}).get('preprocess', 'clean')} preprocessing), not {enc.name!r} "
                f"({getattr(enc, 'preprocess_mode', 'clean')}); leave out the encoder and --preprocess, or rebuild "
                f"the index with {enc.name!r}."
            )
        return enc

    def load_encoder(self, name: str):
        """An encoder by name for a run on this reference: the index's own object for its name."""
        if name == self.encoder().name:
            return self.encoder()
        from ..encoders import load_encoder

        return load_encoder(name, device=self.device, dtype=self.dtype)

    def index_dir(self) -> Path:
        given = self._given_index()
        if given is not None:
            return given.dir
        from ..index import index_key
        from ..settings import subdir

        return subdir("indexes") / index_key(self.reference_set(), self.encoder())

    def index(self, progress: Progress | None = None):
        """The reference index: the given folder, else cached under :func:`evaluators.index.index_key`."""
        with self._lock:
            if self._index is None:
                given = self._given_index()
                if given is not None:
                    self.encoder()  # checks that the requested encoder matches the index
                    self._index = given
                else:
                    from ..index import cached_index

                    self._index = cached_index(self.reference_set(), self.encoder(), umap=self.umap,
                                               progress=progress)
            return self._index

    @property
    def index_built(self) -> bool:
        return self._index is not None

    # ---- privacy
    def search(self, *, percentile: float | None = None, heldout: Any = None, match: str | None = None,
               candidates: int | None = None, k: int = 5, calibration_queries: Any = "default",
               progress: Progress | None = None):
        """The memorisation search with these settings (calibrated once per setting, cached next to the index)."""
        from ..privacy.memorisation import DEFAULT_PERCENTILE
        from ..privacy.search import (
            DEFAULT_CALIBRATION_QUERIES,
            DEFAULT_CANDIDATES,
            DEFAULT_MATCH,
            MemorisationSearch,
        )

        queries = DEFAULT_CALIBRATION_QUERIES if calibration_queries == "default" else calibration_queries
        settings = dict(percentile=DEFAULT_PERCENTILE if percentile is None else float(percentile),
                        match=match or DEFAULT_MATCH, candidates=candidates or DEFAULT_CANDIDATES, k=int(k),
                        max_queries=queries)
        key = (*sorted(settings.items()), str(heldout) if heldout is not None else None)
        with self._lock:
            if key not in self._searches:
                index = self.index(progress)
                self._searches[key] = MemorisationSearch(index, self.encoder(), train_set=self.reference_set(),
                                                         spec=self.spec, heldout=heldout, **settings)
            return self._searches[key]

    def reid_choice(self, requested: Any = "auto"):
        """The re-ID model for this reference (:func:`evaluators.privacy.reid_choice.choose_reid`), cached per
        request; a broken weights file becomes an unavailable choice with the reason, never another model."""
        from ..privacy.reid_choice import ReidChoice, choose_reid

        key = requested if isinstance(requested, str | None) else id(requested)
        with self._lock:
            if key not in self._reid:
                if isinstance(requested, ReidChoice):
                    self._reid[key] = requested
                else:
                    train = self.reference_set() if self.reference_set() is not None else self.index()
                    try:
                        self._reid[key] = choose_reid(requested, train, spec=self.spec, device=self.device)
                    except InputError:
                        raise
                    except Exception as exc:
                        self._reid[key] = ReidChoice(None, None, reason=str(exc))
            return self._reid[key]

    def forget_reid(self) -> None:
        """Choose again on next use (a model was just trained for this reference)."""
        with self._lock:
            self._reid.clear()
            self._reid_cal.clear()

    def reid_calibration(self, search=None, choice=None) -> dict:
        """The "same patient" re-ID threshold for this search and re-ID choice, cached."""
        from ..privacy.suite import reid_verdict_calibration

        search = search or self.search()
        choice = choice or self.reid_choice()
        key = (id(search), id(choice))
        with self._lock:
            if key not in self._reid_cal:
                self._reid_cal[key] = reid_verdict_calibration(search, choice)
            return self._reid_cal[key]

    def domain_notes(self) -> list[str]:
        """What makes numbers on this reference incomparable elsewhere (the demo encoder off the demo world)."""
        from ..domain import encoder_note

        note = encoder_note(self.encoder().name, self.reference_set() or self.index())
        return [f"Encoder note: results {note}."] if note else []
