"""The run layer: one job per axis, called the same way by the CLI and the app.

- :class:`RunContext` (:mod:`.context`): the reference set, its encoder and index (one cache key), the
  memorisation search and the re-ID choice, each built once.
- ``fidelity.run``, ``privacy.run``, ``utility.run``: a typed config in, a :class:`RunResult` out.
- :func:`save` and :func:`partial_on_failure` (:mod:`.save`): JSON, CSV, the results-store row, and a ``partial``
  row with its reason on failure or cancel.
"""

from __future__ import annotations

from .context import RunContext
from .fidelity import FidelityConfig
from .privacy import PrivacyConfig
from .result import RunResult
from .save import Saved, partial_on_failure, run_folder, save, session_folder, write_json

__all__ = ["FidelityConfig", "PrivacyConfig", "RunContext", "RunResult", "Saved", "partial_on_failure",
           "run_folder", "save", "session_folder", "write_json"]
