"""Cancellation and progress for long loops, without the engine knowing who asks.

A caller (the app, a script) runs a job under a :class:`Token`::

    token = Token(progress=report, alive=lambda: client_connected(), deadline_s=600)
    with running(token):
        run_fidelity(...)

and every long loop of the engine (bootstrap resamples, KID subsets, PRDC blocks, feature extraction,
generation steps, training batches, the memorisation search) calls :func:`tick` or :func:`check`. They
raise :class:`Stopped` (with the reason: cancelled, client disconnected, time limit) as soon as the token
says so, and forward ``(done, total, description)`` to the token's progress callback (at most every
0.2 s). Without a token (the CLI, tests) both are a context-variable lookup and nothing else; Ctrl-C
stops the CLI as before.

The token lives in a :mod:`contextvars` variable, so it follows the thread that runs the job and never
leaks into another user's job running in another thread.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Iterator

Progress = Callable[[int, int, str], None]

_current: contextvars.ContextVar[Token | None] = contextvars.ContextVar("chexgen_job", default=None)


class Stopped(Exception):
    """A job stopped before the end; ``reason`` says why ('cancelled', 'client disconnected', ...)."""

    def __init__(self, reason: str = "cancelled"):
        super().__init__(reason)
        self.reason = reason


class Token:
    """What a running job asks between steps: stop now? (and where to report progress).

    ``alive()`` returning False means the client went away (a string: stop, for that reason); ``deadline_s`` is a wall-clock limit from
    the token's creation. :meth:`cancel` may be called from any thread.
    """

    ALIVE_EVERY_S = 0.25  # how often alive() is asked (it may scan a queue)
    PROGRESS_EVERY_S = 0.2
    OWNER_IDLE_S = 1.0

    def __init__(self, *, progress: Progress | None = None, alive: Callable[[], bool] | None = None,
                 deadline_s: float | None = None):
        self.progress = progress
        self.alive = alive
        self.started = time.monotonic()
        self.deadline_s = deadline_s
        self._reason: str | None = None
        self._lock = threading.Lock()
        self._last_alive = 0.0
        self._last_progress = 0.0
        self._owner: str | None = None
        self._owner_seen = -1e9
        self._starts: dict[str, int] = {}

    def cancel(self, reason: str = "cancelled") -> None:
        with self._lock:
            if self._reason is None:
                self._reason = reason

    @property
    def reason(self) -> str | None:
        return self._reason

    def check(self) -> None:
        """Raise :class:`Stopped` if the job was cancelled, its client left, or its time is up."""
        now = time.monotonic()
        if self._reason is None and self.deadline_s is not None and now - self.started > self.deadline_s:
            self.cancel(f"time limit of {self.deadline_s:g} s per job reached")
        if self._reason is None and self.alive is not None and now - self._last_alive >= self.ALIVE_EVERY_S:
            self._last_alive = now
            try:
                ok = self.alive()
            except Exception:  # a liveness probe that fails must not stop the job
                ok = True
            if isinstance(ok, str):  # the probe names the reason itself
                self.cancel(ok)
            elif not ok:
                self.cancel("client disconnected")
        if self._reason is not None:
            raise Stopped(self._reason)

    def tick(self, done: int, total: int, desc: str = "") -> None:
        self.check()
        now = time.monotonic()
        if self.progress is None:
            return
        # nested loops (KID subsets inside each bootstrap resample): an inner loop starts again and again, so a
        # loop that has started more often than the one holding the bar does not take it (unless that one has
        # been silent for OWNER_IDLE_S); a loop that follows another in sequence takes it over
        if done == 0:
            self._starts[desc] = self._starts.get(desc, 0) + 1
        if desc != self._owner and now - self._owner_seen < self.OWNER_IDLE_S \
                and self._starts.get(desc, 0) > self._starts.get(self._owner, 0):
            return
        if desc != self._owner or done >= total or now - self._last_progress >= self.PROGRESS_EVERY_S:
            self._owner, self._owner_seen = desc, now
            self._last_progress = now
            self.progress(int(done), int(total), desc)
        elif desc == self._owner:
            self._owner_seen = now


def current() -> Token | None:
    return _current.get()


def check() -> None:
    """Stop here if the current job (if any) should stop."""
    token = _current.get()
    if token is not None:
        token.check()


def tick(done: int, total: int, desc: str = "") -> None:
    """Progress of a long loop (and the stop check): ``done`` of ``total`` steps of ``desc``."""
    token = _current.get()
    if token is not None:
        token.tick(done, total, desc)


@contextlib.contextmanager
def running(token: Token | None) -> Iterator[Token | None]:
    """Run the body under ``token`` (None: no token, e.g. nested calls that keep the outer one)."""
    if token is None:
        yield _current.get()
        return
    reset = _current.set(token)
    try:
        yield token
    finally:
        _current.reset(reset)


__all__ = ["Stopped", "Token", "check", "current", "running", "tick"]
