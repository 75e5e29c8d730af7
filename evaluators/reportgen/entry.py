"""One report-generation model entry, as :mod:`.registry` reads it and the model code (:mod:`.vlm`, :mod:`.run`)
uses it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ReportModelEntry:
    name: str
    kind: str
    label: str = ""
    notes: str = ""
    how_to_provide: str = ""
    params: dict[str, Any] = field(default_factory=dict)  # every other key, validated
    source: str = ""

    def get(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)
