"""Disk in public mode: quotas per session and in total, deletion of finished uploads, expiry of run folders.

What a visitor's jobs write lives in four areas under ``CHEXGEN_HOME``, each with a folder per session:
``uploads/`` (extracted uploads), ``synthetic/`` (sets generated for a job), ``runs/`` (result files of
each job) and ``exports/`` (Generate's zips). In public mode (local mode: nothing is limited or deleted)

- an upload, or a job, that would take its session past ``CHEXGEN_PUBLIC_SESSION_QUOTA_MB`` (default 500)
  or all sessions together past ``CHEXGEN_PUBLIC_TOTAL_QUOTA_MB`` (default 10,000) is refused before
  anything is written, with a sentence saying so;
- an upload or a generated set is deleted when the job that used it ends (finished, failed or
  cancelled): its features stay in the feature cache, so nothing is lost for a rerun but the pixels;
- a utility job keeps its ``utility.json`` and deletes its checkpoints when it ends;
- run folders and exports older than ``CHEXGEN_PUBLIC_RETENTION_HOURS`` (default 24) are deleted by a
  sweep that runs at startup (which also removes every upload and generated set left by a previous
  process: orphans, since no job is running yet) and at most once a minute before a quota check.

The feature cache, reference indexes, the utility baselines and the results store are shared and are
not counted. Nothing here imports Gradio.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from pathlib import Path

from evaluators.errors import InputError
from evaluators.settings import int_setting, subdir

log = logging.getLogger("chexgen_ui")

AREAS = ("uploads", "synthetic", "runs", "exports")
INPUT_AREAS = ("uploads", "synthetic")  # deleted when their job ends, and at startup
PUBLIC_SESSION_MB = 500  # CHEXGEN_PUBLIC_SESSION_QUOTA_MB
PUBLIC_TOTAL_MB = 10_000  # CHEXGEN_PUBLIC_TOTAL_QUOTA_MB
PUBLIC_RETENTION_HOURS = 24  # CHEXGEN_PUBLIC_RETENTION_HOURS
SWEEP_EVERY_S = 60.0


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class DiskQuota:
    """The public app's disk rules (``enabled`` False in local mode: every method is then a no-op)."""

    def __init__(self, public: bool):
        self.enabled = bool(public)
        self.session_bytes = int_setting("CHEXGEN_PUBLIC_SESSION_QUOTA_MB", PUBLIC_SESSION_MB) * 1024**2
        self.total_bytes = int_setting("CHEXGEN_PUBLIC_TOTAL_QUOTA_MB", PUBLIC_TOTAL_MB) * 1024**2
        self.retention_s = int_setting("CHEXGEN_PUBLIC_RETENTION_HOURS", PUBLIC_RETENTION_HOURS) * 3600.0
        self._last_sweep = 0.0
        self._lock = threading.Lock()

    # ---- measuring
    @staticmethod
    def _folder(area: str, session: str | None) -> Path:
        from evaluators.runs.save import session_folder

        return subdir(area) / session_folder(session)

    def usage(self, session: str | None = None) -> int:
        """Bytes held by ``session`` (None: by every session) in the four areas."""
        if session is not None:
            return sum(_size(self._folder(a, session)) for a in AREAS if self._folder(a, session).exists())
        return sum(_size(subdir(a)) for a in AREAS)

    # ---- refusing
    def check(self, session: str | None, adding: int = 0, what: str = "This job") -> None:
        """Refuse (InputError) when ``adding`` more bytes would pass the session's or the total quota."""
        if not self.enabled:
            return
        self.sweep_if_due()
        mb = 1024**2
        used = self.usage(session)
        hours = self.retention_s / 3600
        if used + adding > self.session_bytes:
            raise InputError(
                f"{what} needs {adding / mb:.0f} MB but this session already holds {used / mb:.0f} MB of its "
                f"{self.session_bytes / mb:.0f} MB disk quota; results older than {hours:g} h are deleted "
                "automatically, so try again later or upload fewer or smaller images."
            )
        total = self.usage()
        if total + adding > self.total_bytes:
            raise InputError(
                f"The server's disk space for visitors ({self.total_bytes / mb:.0f} MB) is full; results older "
                f"than {hours:g} h are deleted automatically, so try again later."
            )

    # ---- deleting
    def discard(self, image_set) -> None:
        """Delete the folder of an uploaded or generated set once its job ended (public mode only)."""
        if not self.enabled or image_set is None:
            return
        paths = list(getattr(image_set, "paths", []) or [])[:1]
        root = getattr(image_set, "root", None)
        candidates = [Path(str(root))] if root else []
        candidates += [Path(str(p)) for p in paths]
        for area in INPUT_AREAS:
            base = subdir(area).resolve()
            for c in candidates:
                try:
                    rel = c.resolve().relative_to(base)
                except ValueError:
                    continue
                if len(rel.parts) >= 2:  # <session>/<job folder>
                    _remove(base / rel.parts[0] / rel.parts[1])
                    return

    def sweep(self, *, now: float | None = None, orphans: bool = False) -> list[Path]:
        """Delete job folders older than the retention time (``orphans``: every upload and generated set
        too, as at startup). Returns what was removed."""
        now = time.time() if now is None else now
        removed: list[Path] = []
        with self._lock:
            for area in AREAS:
                root = subdir(area)
                for session_dir in [p for p in root.iterdir() if p.is_dir()]:
                    for entry in list(session_dir.iterdir()):
                        try:
                            age = now - entry.stat().st_mtime
                        except OSError:
                            continue
                        if age > self.retention_s or (orphans and area in INPUT_AREAS):
                            _remove(entry)
                            removed.append(entry)
                    if not any(session_dir.iterdir()):
                        session_dir.rmdir()
            self._last_sweep = time.monotonic()
        if removed:
            log.info("disk sweep removed %d folder(s)/file(s)", len(removed))
        return removed

    def sweep_if_due(self) -> None:
        if self.enabled and time.monotonic() - self._last_sweep > SWEEP_EVERY_S:
            self.sweep()

    def startup(self) -> None:
        """The public app's first sweep: expired folders, and inputs orphaned by a previous process."""
        if self.enabled:
            self.sweep(orphans=True)


def upload_bytes(files) -> int:
    """Bytes an upload will take once extracted: a zip's declared sizes, else the files' sizes."""
    import zipfile

    total = 0
    for f in files:
        p = Path(f)
        try:
            if p.suffix.lower() == ".zip" and zipfile.is_zipfile(p):
                with zipfile.ZipFile(p) as zf:
                    total += sum(m.file_size for m in zf.infolist() if not m.is_dir())
            else:
                total += p.stat().st_size
        except (OSError, zipfile.BadZipFile):
            continue  # the upload's own checks report an unreadable file
    return total


__all__ = ["AREAS", "DiskQuota", "upload_bytes"]
