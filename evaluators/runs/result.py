"""What every job returns: a typed result that names its headline numbers and writes itself one way."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..store import finite, flatten_metrics


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def to_json(data: dict) -> str:
    """The one JSON form of a result (NaN/inf as null, numpy as Python numbers), used by the CLI and the app."""
    return json.dumps(finite(data), indent=2, default=_json_default)


@dataclass
class RunResult:
    """One axis's result: ``data`` is the result JSON, ``config`` the typed settings it was computed with."""

    kind: str  # fidelity, privacy, utility, report-utility, reader-study...
    data: dict
    config: Any = None

    def headline(self) -> dict[str, float | None]:
        """The numbers the leaderboard shows for this run ({column: value})."""
        return flatten_metrics(self.data)

    def to_json(self) -> str:
        return to_json(self.data)

    def __getitem__(self, key: str) -> Any:  # result["overall"] reads like the dict it wraps
        return self.data[key]
