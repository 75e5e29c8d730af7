"""Content hashes of image files, remembered per folder so that a cached set is not read again.

The feature cache is keyed by the sha256 of each file's bytes. Hashing means reading every file: for a
real reference set of tens of thousands of full-size radiographs that is gigabytes per run, although the
features themselves come from the cache. So the hashes are kept under ``CHEXGEN_HOME/hashes/`` (one JSON
file per folder of images) with each file's size, mtime and inode, and a file whose ``stat`` is unchanged
is not read again (git's index does the same).

An entry is only stored for a file that was at least :data:`RACY_SECONDS` old when it was hashed: a file
rewritten within the same clock tick could keep its size and mtime (git's "racy" case), so fresh files are
hashed again next time. A missing, unreadable or corrupt memo is ignored and rewritten; two processes
writing the same folder's memo lose at most each other's new entries (the files are hashed again).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from . import jobs

RACY_SECONDS = 2.0
VERSION = 1


def _memo_path(folder: str) -> Path:
    from .settings import subdir

    return subdir("hashes") / f"{hashlib.sha1(folder.encode()).hexdigest()[:24]}.json"


def _load(path: Path, folder: str) -> dict[str, list]:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
        files = data.get("files") if isinstance(data, dict) else None
        if isinstance(files, dict) and data.get("version") == VERSION and data.get("folder") == folder:
            return {k: v for k, v in files.items() if isinstance(v, list) and len(v) == 4 and isinstance(v[3], str)}
    return {}


def _save(path: Path, folder: str, files: dict[str, list]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps({"version": VERSION, "folder": folder, "files": files}, separators=(",", ":")))
        os.replace(tmp, path)
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


def _by_folder(paths: Sequence[str | os.PathLike]) -> dict[str, list[tuple[int, str]]]:
    """{folder: [(position in ``paths``, file name)]}: each folder's memo is read once."""
    out: dict[str, list[tuple[int, str]]] = {}
    for i, p in enumerate(paths):
        folder, name = os.path.split(os.path.abspath(p))
        out.setdefault(folder, []).append((i, name))
    return out


def _stat(folder: str, name: str) -> os.stat_result | None:
    try:
        return os.stat(os.path.join(folder, name))
    except OSError:
        return None


def _stamp(st: os.stat_result) -> list[int]:
    """What a remembered hash is valid for: the file's size, modification time and inode."""
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def file_hashes(paths: Sequence[str | os.PathLike]) -> list[str]:
    """sha256 of each file's bytes (as :func:`evaluators.imageio.image_hash`), read only where not remembered.

    Errors are image_hash's: a missing file or a folder raises :class:`~evaluators.errors.InputError` naming it.
    """
    from .imageio import image_hash

    out: list[str | None] = [None] * len(paths)
    now = time.time()
    for folder, members in _by_folder(paths).items():
        memo_path = _memo_path(folder)
        memo = _load(memo_path, folder)
        changed = False
        for i, name in members:
            st = _stat(folder, name)
            entry = memo.get(name)
            if st is not None and entry is not None and entry[:3] == _stamp(st):
                out[i] = entry[3]
                continue
            jobs.check()
            out[i] = image_hash(paths[i])  # raises InputError for missing files and folders
            if st is not None and now - st.st_mtime >= RACY_SECONDS:
                memo[name] = [*_stamp(st), out[i]]
                changed = True
        if changed:
            _save(memo_path, folder, memo)
    return out  # type: ignore[return-value]


def remembered_hashes(paths: Sequence[str | os.PathLike]) -> list[str | None]:
    """The remembered sha256 of each file whose size, mtime and inode are unchanged, else None: reads no image
    (a stat per remembered file and one memo per folder), for questions such as "how many are cached?"."""
    out: list[str | None] = [None] * len(paths)
    for folder, members in _by_folder(paths).items():
        memo = _load(_memo_path(folder), folder)
        for i, name in members:
            entry = memo.get(name)
            st = _stat(folder, name) if entry is not None else None  # stat only what is remembered
            if st is not None and entry[:3] == _stamp(st):
                out[i] = entry[3]
    return out


def hash_files(h, paths: Sequence[str]) -> None:
    """Feed each file's path, size and modification time (or 'missing') into the hash ``h``: the one way cache
    keys (reference index, calibration, re-ID calibration) follow a set's files without reading them."""
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())


def files_key(paths: Sequence[str]) -> str:
    """:func:`hash_files` of ``paths`` alone, as a hex digest."""
    h = hashlib.sha256()
    hash_files(h, paths)
    return h.hexdigest()
