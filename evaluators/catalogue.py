"""The model and encoder catalogue as tables and choices: what the Setup tab and ``models`` / ``encoders`` show.

Rows come from :func:`evaluators.generators.list_models` and :func:`evaluators.encoders.list_encoders`; an
unavailable model stays listed with the reason and how to provide it.
"""

from __future__ import annotations

import pandas as pd

from .errors import InputError

DEFAULT_PREFERENCE = ("demo", "reference-oracle", "copycat")  # the first available one is preselected


def models() -> list[dict]:
    from .generators import list_models

    return list_models()


def model_choices(rows: list[dict] | None = None) -> list[tuple[str, str]]:
    """(label, name) pairs for a picker; unavailable models are labelled as such. Available first."""
    rows = sorted(models() if rows is None else rows,
                  key=lambda r: (not r["available"], r["kind"] != "builtin", r["name"]))
    return [(f"{r['name']}" + ("" if r["available"] else " (unavailable)"), r["name"]) for r in rows]


def default_model(rows: list[dict] | None = None) -> str | None:
    """The preselected model: demo / reference-oracle / copycat when available, else the first available one."""
    rows = models() if rows is None else rows
    for pref in DEFAULT_PREFERENCE:
        if any(r["name"] == pref and r["available"] for r in rows):
            return pref
    ready = [r for r in rows if r["available"] and r["kind"] == "builtin"]
    ready = ready or [r for r in rows if r["available"]]
    return ready[0]["name"] if ready else (rows[0]["name"] if rows else None)


def _row(name: str) -> dict | None:
    return next((r for r in models() if r["name"] == name), None)


def model_presets(name: str) -> dict:
    r = _row(name)
    if r is None:
        raise InputError(f"Unknown model {name!r}; choose one from the list (see the Setup tab).")
    return dict(r["presets"] or {})


def model_status(name: str) -> str:
    """One markdown line: available (and why), or unavailable with the reason and how to provide it."""
    r = _row(name)
    if r is None:
        return f"Unknown model {name!r}."
    if r["available"]:
        return f"**{name}** is available ({r['reason'] or r['kind']})."
    how = f" To provide it: {r['how_to_provide']}" if r.get("how_to_provide") else ""
    return f"**{name}** is unavailable: {r['reason']}.{how}"


def models_table() -> pd.DataFrame:
    rows = [{"model": r["name"], "kind": r["kind"], "available": "yes" if r["available"] else "no",
             "reason": r["reason"], "how to provide": r.get("how_to_provide", ""),
             "weights": r.get("weights") or "", "defined in": r.get("source", "")} for r in models()]
    return pd.DataFrame(rows)


def encoders_table() -> pd.DataFrame:
    from .encoders import list_encoders

    rows = [{"encoder": r["name"], "available": "yes" if r["available"] else "no", "dim": r["dim"],
             "reason": r["reason"], "how to provide": r["how_to_provide"], "description": r["description"]}
            for r in list_encoders()]
    return pd.DataFrame(rows)
