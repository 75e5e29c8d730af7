"""Public mode shows no server path: every text the app sends is scrubbed here.

:func:`scrub` rewrites a path under ``CHEXGEN_HOME`` as ``CHEXGEN_HOME/<relative>``, one under the app's
install folder as ``APP_DIR/<relative>`` (not ``<app>``: Markdown takes that for an HTML tag and hides the rest of
the line), the user's home as ``~``, and any other absolute path as its last
component (``.../name``). Advice meant for the command line ("pass --skip-bad") becomes advice a visitor
can follow. :func:`scrub_app` wraps every callback of a public app so that its outputs (text, tables,
updates) and its errors are scrubbed; a string that is an existing file is left alone, because Gradio
serves it as a download from its own cache (the page receives the cache URL, not the path). Any error
that is not a user error (:class:`gradio.Error`) is replaced by one generic sentence and logged.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import re
from pathlib import Path

import pandas as pd

from evaluators.settings import chexgen_home, repo_root

log = logging.getLogger("chexgen_ui")

_PATH = re.compile(r"(?<![\w.:/~<>-])(/[^\s'\"`,;()\[\]{}<>|*]+)")
_SKIP_BAD = re.compile(r"[^.;]*(?:--skip-bad|skip_bad)[^.;]*[.;]?")
_ERRNO = re.compile(r"\[Errno \d+\][^.]*\.?")
GENERIC = "Something went wrong on the server while doing this; the error was logged. Try again with other input."


def _roots() -> list[tuple[str, str]]:
    home = chexgen_home()
    pairs = [(str(home.resolve()), "CHEXGEN_HOME"), (str(home), "CHEXGEN_HOME"),
             (str(repo_root()), "APP_DIR"), (str(Path.home()), "~")]
    with_real = []
    for raw, name in pairs:
        for form in {raw, os.path.realpath(raw)}:
            if form and form != "/":
                with_real.append((form.rstrip("/"), name))
    return sorted(set(with_real), key=lambda p: -len(p[0]))


def scrub(text: str) -> str:
    """``text`` with every server path replaced (see the module docstring)."""
    if not text or ("/" not in text and "skip" not in text and "Errno" not in text):
        return text
    roots = _roots()
    for root, name in roots:
        text = text.replace(root + "/", name + "/").replace(root, name)

    def short(m: re.Match) -> str:
        path = m.group(1)
        if path.startswith(("CHEXGEN_HOME", "APP_DIR", "~")):
            return path
        tail = path.rstrip("/").rsplit("/", 1)[-1]
        return f".../{tail}" if tail else "..."

    text = _PATH.sub(short, text)
    text = _ERRNO.sub("the file could not be written or read.", text)
    if "skip" in text:
        text = _SKIP_BAD.sub(" Remove or replace that file and upload again.", text).replace("  ", " ").strip()
    return text


def scrub_value(value, _depth: int = 0):
    """Scrub strings inside an output value (str, DataFrame, dict, list, tuple); other values unchanged."""
    if _depth > 6:
        return value
    if isinstance(value, str):
        if value.startswith("/") and "\n" not in value and os.path.isfile(value):
            return value  # a file Gradio will serve from its cache (a download)
        return scrub(value)
    if isinstance(value, pd.DataFrame):
        out = value.copy()
        out.columns = [scrub(str(c)) if isinstance(c, str) else c for c in out.columns]
        for c in out.columns:
            values = list(out[c])
            if any(isinstance(v, str) for v in values):
                out[c] = pd.Series([scrub(v) if isinstance(v, str) else v for v in values], index=out.index,
                                   dtype=object)
        return out
    if isinstance(value, dict):
        return {k: scrub_value(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(scrub_value(v, _depth + 1) for v in value)
    if isinstance(value, list):
        return [scrub_value(v, _depth + 1) for v in value]
    return value


def _public_error(exc: BaseException):
    import gradio as gr

    if isinstance(exc, gr.Error):
        return gr.Error(scrub(str(exc.message if hasattr(exc, "message") else exc)))
    log.exception("unexpected error in a public callback", exc_info=exc)
    return gr.Error(GENERIC)


def scrubbed(fn):
    """``fn`` (plain or generator callback) with scrubbed outputs and errors."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                for value in fn(*args, **kwargs):
                    yield scrub_value(value)
            except Exception as exc:
                raise _public_error(exc) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return scrub_value(fn(*args, **kwargs))
        except Exception as exc:
            raise _public_error(exc) from None
    return wrapper


def scrub_app(demo) -> None:
    """Wrap every Python callback of ``demo`` (a built gr.Blocks) with :func:`scrubbed`, and scrub the
    text values the page starts with (they are part of ``/config``)."""
    for block in getattr(demo, "blocks", {}).values():
        value = getattr(block, "value", None)
        if isinstance(value, str) and not callable(value) and type(block).__name__ in ("Markdown", "Textbox", "HTML"):
            block.value = scrub(value)
    for block_fn in getattr(demo, "fns", {}).values():
        fn = getattr(block_fn, "fn", None)
        if fn is None or inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            continue
        block_fn.fn = scrubbed(fn)


__all__ = ["GENERIC", "scrub", "scrub_app", "scrub_value", "scrubbed"]
