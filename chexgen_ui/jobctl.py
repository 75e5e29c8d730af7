"""Cancel, client disconnect and the per-job time limit for the app's long jobs.

The Gradio side of :mod:`evaluators.jobs`: each long callback runs under a :class:`evaluators.jobs.Token`
whose

- ``progress`` is the page's progress bar,
- ``alive()`` asks Gradio's queue whether this event is still wanted: False once the client
  disconnected (Gradio marks the event dead) or the event was cancelled (the page's Cancel button, or
  ``/cancel`` through the API: the event leaves the queue's active jobs),
- ``deadline_s`` is the public mode's wall-clock limit per job (``CHEXGEN_PUBLIC_MAX_JOB_SECONDS``),

and the session's Cancel button cancels every token of that session. The engine's loops check the
token between steps, so a stopped job ends within a step (well under 2 s) and frees its queue slot; the
service saves it as ``partial`` with the reason. Gradio's internals are read only here (``LocalContext``
and the queue's active jobs, Gradio 6); without them (a direct call, tests) only Cancel and the time
limit apply.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable

from evaluators import limits
from evaluators.jobs import Token, current, running

log = logging.getLogger("chexgen_ui")


def event_alive() -> Callable[[], bool] | None:
    """A probe that is False once the Gradio event running in this thread was cancelled or its client left."""
    try:
        from gradio.context import LocalContext
    except ImportError:  # pragma: no cover - gradio is a dependency of the app
        return None
    blocks = LocalContext.blocks.get(None)
    event_id = LocalContext.event_id.get(None)
    queue = getattr(blocks, "_queue", None)
    if queue is None or not event_id:
        return None

    def alive() -> bool | str:
        for job in list(getattr(queue, "active_jobs", None) or []):
            for ev in job or []:
                if getattr(ev, "_id", None) == event_id:
                    return bool(getattr(ev, "alive", True))  # False: Gradio saw the client disconnect
        return "cancelled"  # no longer an active job: cancelled through the page or the API's /cancel

    return alive


class JobControl:
    """The running jobs' tokens per session (for the Cancel button) and the public time limit."""

    def __init__(self, public: bool):
        self.public = public
        self._tokens: dict[str, set[Token]] = {}
        self._lock = threading.Lock()

    def deadline_s(self) -> float | None:
        return float(limits.maximum("job_seconds", True)) if self.public else None

    def new_token(self, session: str | None, progress=None) -> Token:
        token = Token(progress=progress, alive=event_alive(), deadline_s=self.deadline_s())
        token.on_end = []  # callables run when the job ends (e.g. deleting its uploaded set)
        with self._lock:
            self._tokens.setdefault(session or "", set()).add(token)
        return token

    def release(self, session: str | None, token: Token) -> None:
        with self._lock:
            self._tokens.get(session or "", set()).discard(token)
        for fn in getattr(token, "on_end", []):
            try:
                fn()
            except Exception:  # cleanup must never hide the job's own result or error
                log.exception("cleanup after a job failed")

    @staticmethod
    def on_end(fn: Callable[[], object]) -> None:
        """Run ``fn`` when the current job ends (finished, failed or stopped); now if there is no job."""
        token = current()
        if token is not None and hasattr(token, "on_end"):
            token.on_end.append(fn)

    def cancel(self, session: str | None, reason: str = "cancelled") -> int:
        """Cancel every running job of ``session``; returns how many there were."""
        with self._lock:
            tokens = list(self._tokens.get(session or "", ()))
        for t in tokens:
            t.cancel(reason)
        return len(tokens)

    def wrap(self, fn, *, session_of: Callable, progress_of: Callable | None = None):
        """``fn`` (a callback, plain or generator) run under a token of its session.

        ``session_of(args, kwargs)`` gives the session id; ``progress_of(args, kwargs)`` the page's
        progress callback ``(done, total, desc)`` or None. A generator's every step runs under the token
        (Gradio runs each step in a worker thread of its own).
        """
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def gen_wrapper(*args, **kwargs):
                session = session_of(args, kwargs)
                token = self.new_token(session, progress_of(args, kwargs) if progress_of else None)
                it = fn(*args, **kwargs)
                try:
                    while True:
                        with running(token):
                            try:
                                value = next(it)
                            except StopIteration:
                                return
                        yield value
                finally:
                    self.release(session, token)
                    it.close()
            return gen_wrapper

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            session = session_of(args, kwargs)
            token = self.new_token(session, progress_of(args, kwargs) if progress_of else None)
            try:
                with running(token):
                    return fn(*args, **kwargs)
            finally:
                self.release(session, token)
        return wrapper


__all__ = ["JobControl", "event_alive"]
