"""The metric registry: a metric is one function of feature matrices plus one registration.

A registration names the function's inputs (``real``, ``synthetic``, ``train``, ``heldout`` feature matrices,
or ``synthetic_logits``), what it returns (one :class:`Output` per number: key, display name, which direction
is better, CheXGenBench's column name) and where it applies (axis, encoders, per pathology). The suite runner,
the JSON/CSV writers, the summary text, the app's tables and charts and the leaderboard all read this
registry, so a new metric is one decorated function in its own module under :mod:`evaluators.metrics`::

    @register("Toy", direction="lower", column="Toy")
    def toy(real, synthetic):
        return float(abs(real.mean() - synthetic.mean()))

Modules of this package are imported on first use (:func:`discover`): adding a file is enough. A function
asks for settings by naming them as keyword arguments (``k``, ``kid_subsets``, ``seed``, ``real_stats``,
``device``...); it receives those it names and no others.

``encoders=(...)`` with ``claims_encoder=True`` (FRD on ``radiomics``) makes those encoders serve only the metrics
that name them: FID, KID, PRDC... are not computed on raw radiomic features. ``opt_in=True`` leaves a metric out
of a run unless the run names it (``include``): for numbers too costly for every run.

A number that would not be valid for the inputs (FD_inf with fewer than 10 x D images) is returned as None with
``"<output key>_note"`` saying why; the suite keeps the note beside the value in the JSON (overall and per pathology:
:func:`evaluators.fidelity.metric_notes`) and the CSV, summary, app tables, chart and status lines show it.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

INPUTS = ("real", "synthetic", "train", "heldout", "synthetic_logits")
DIRECTIONS = ("lower", "higher", "none")


@dataclass(frozen=True)
class Output:
    """One number a metric returns."""

    key: str  # the key in the result JSON ("FID", "KID_std")
    display: str = ""  # the name people read (default: the key)
    direction: str = "lower"  # which way is better: lower, higher, or none (a spread, a count)
    column: str | None = None  # CheXGenBench's column name (default: the key)
    column_per_encoder: bool = True  # "FID (RadDino)"; False: one column from the PRDC encoder (Precision...)
    shown: bool = True  # in app tables, charts and the summary (KID_std is shown as KID's ±)
    ci: bool = True  # bootstrap intervals apply

    @property
    def label(self) -> str:
        return self.display or self.key

    @property
    def csv_column(self) -> str:
        return self.column or self.key


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[..., Any]
    inputs: tuple[str, ...]
    outputs: tuple[Output, ...]
    axis: str = "fidelity"
    encoders: tuple[str, ...] | None = None  # None: every encoder of the run
    per_pathology: bool = True
    params: tuple[str, ...] = field(default=())  # keyword settings the function takes
    claims_encoder: bool = False  # its encoders serve only metrics that name them (radiomics: FRD)
    opt_in: bool = False  # computed only when a run names it

    def applies_to(self, encoder: str | None) -> bool:
        """Whether this metric runs on ``encoder``'s features: an encoder-specific one (FRD, Inception Score) only
        on its named encoders, any other on every encoder not claimed (None: a computation naming no encoder)."""
        if self.encoders is not None:
            return encoder is not None and encoder in self.encoders
        return encoder is None or encoder not in claimed_encoders()

    @property
    def ci(self) -> bool:
        """Whether any of its outputs takes a bootstrap interval (else bootstrap replicates skip it)."""
        return any(o.ci for o in self.outputs)

    def compute(self, data: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        """{output key: value}; ``data`` holds the inputs by name, ``settings`` any keyword settings."""
        kwargs = {name: data[name] for name in self.inputs}
        kwargs.update({p: settings[p] for p in self.params if p in settings})
        value = self.fn(**kwargs)
        if isinstance(value, dict):  # its outputs, plus any details it adds (Inception Score: splits, n)
            return {**value, **{o.key: value.get(o.key) for o in self.outputs}}
        if len(self.outputs) != 1:
            raise TypeError(f"metric {self.name!r} returned one value but registers {len(self.outputs)} outputs")
        return {self.outputs[0].key: value}


_REGISTRY: dict[str, Metric] = {}
_LOCK = threading.Lock()
_DISCOVERED = False


def register(
    name: str,
    *,
    inputs: Iterable[str] = ("real", "synthetic"),
    direction: str = "lower",
    display: str = "",
    column: str | None = None,
    outputs: Iterable[Output] | None = None,
    axis: str = "fidelity",
    encoders: Iterable[str] | None = None,
    per_pathology: bool = True,
    claims_encoder: bool = False,
    opt_in: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn`` as metric ``name`` (one output named ``name`` unless ``outputs`` are given)."""
    inputs = tuple(inputs)
    bad = [i for i in inputs if i not in INPUTS]
    if bad:
        raise ValueError(f"metric {name!r}: unknown input(s) {bad}; inputs are {INPUTS}")
    outs = tuple(outputs) if outputs is not None else (Output(name, display, direction, column),)
    if claims_encoder and not encoders:
        raise ValueError(f"metric {name!r}: claims_encoder needs the encoders it claims")
    for o in outs:
        if o.direction not in DIRECTIONS:
            raise ValueError(f"metric {name!r}: direction {o.direction!r} is not one of {DIRECTIONS}")

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn).parameters
        missing = [i for i in inputs if i not in sig]
        if missing:
            raise TypeError(f"metric {name!r}: {fn.__qualname__} does not take its input(s) {missing}")
        params = tuple(p for p in sig if p not in inputs)
        metric = Metric(name, fn, inputs, outs, axis, tuple(encoders) if encoders else None, per_pathology, params,
                        claims_encoder, opt_in)
        with _LOCK:
            _REGISTRY[name] = metric
        return fn

    return wrap


def unregister(name: str) -> None:
    with _LOCK:
        _REGISTRY.pop(name, None)


def discover() -> None:
    """Import every module of :mod:`evaluators.metrics` once, so their registrations run."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__package__}.{info.name}")
    _DISCOVERED = True


def metrics(axis: str | None = "fidelity", *, inputs: Iterable[str] | None = None) -> list[Metric]:
    """Registered metrics of ``axis`` in registration order; with ``inputs``, only those computable from them."""
    discover()
    have = set(inputs) if inputs is not None else None
    with _LOCK:
        found = list(_REGISTRY.values())
    return [m for m in found if (axis is None or m.axis == axis) and (have is None or set(m.inputs) <= have)]


def claimed_encoders() -> set[str]:
    """Encoders whose features serve only the metrics naming them (e.g. ``radiomics``: FRD)."""
    discover()
    with _LOCK:
        return {e for m in _REGISTRY.values() if m.claims_encoder for e in (m.encoders or ())}


def opt_in(axis: str | None = "fidelity") -> list[str]:
    """Names of the metrics of ``axis`` a run computes only when it names them."""
    return [m.name for m in metrics(axis) if m.opt_in]


def get(name: str) -> Metric:
    discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no metric {name!r}; registered: {', '.join(_REGISTRY)}") from None


def feature_metrics(axis: str = "fidelity") -> list[Metric]:
    """The metrics of ``axis`` computed from real and synthetic feature matrices (one row of the fidelity table)."""
    return metrics(axis, inputs=("real", "synthetic"))


def outputs(axis: str = "fidelity", *, shown_only: bool = False, feature_only: bool = True) -> list[Output]:
    """Every output of ``axis``'s metrics in order (feature-matrix metrics only unless ``feature_only`` is False)."""
    ms = feature_metrics(axis) if feature_only else metrics(axis)
    return [o for m in ms for o in m.outputs if o.shown or not shown_only]


def output(key: str) -> Output | None:
    """The registered output with this key (any axis), or None."""
    for m in metrics(None):
        for o in m.outputs:
            if o.key == key:
                return o
    return None


def direction_of(column: str) -> str | None:
    """Which way is better for a leaderboard column ('FID (raddino)', 'Inception Score'): lower, higher, none, or
    None when no registered output names it."""
    base = column.split(" (")[0]
    for m in metrics(None):
        for o in m.outputs:
            if base in (o.key, o.label) or column in (o.key, o.label):
                return o.direction
    return None


def selected(axis: str = "fidelity", *, encoder: str | None = None, only: Iterable[str] | None = None,
             include: Iterable[str] = (), pathology: bool = False, ci_only: bool = False) -> list[Metric]:
    """The feature-matrix metrics of ``axis`` one computation runs: those applying to ``encoder``, opt-in ones
    only when named in ``include`` (or ``only``), per-pathology ones for a pathology row, those with a bootstrap
    interval for a bootstrap replicate; ``only`` restricts to the named ones."""
    wanted = set(only) if only is not None else None
    extra = set(include) | (wanted or set())
    return [m for m in feature_metrics(axis)
            if (wanted is None or m.name in wanted) and m.applies_to(encoder) and (not m.opt_in or m.name in extra)
            and (m.per_pathology or not pathology) and (m.ci or not ci_only)]


def compute(real: Any, synthetic: Any, *, axis: str = "fidelity", only: Iterable[str] | None = None,
            encoder: str | None = None, include: Iterable[str] = (), pathology: bool = False,
            ci_only: bool = False, **settings: Any) -> dict[str, Any]:
    """Every feature-matrix metric of ``axis`` (see :func:`selected`) on one real/synthetic pair."""
    data = {"real": real, "synthetic": synthetic}
    out: dict[str, Any] = {}
    for m in selected(axis, encoder=encoder, only=only, include=include, pathology=pathology, ci_only=ci_only):
        out.update(m.compute(data, settings))
    return out
