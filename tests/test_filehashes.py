"""Remembered file hashes: the same sha256 as reading the file, files read only when they change."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from evaluators import filehashes as FH
from evaluators.errors import InputError
from evaluators.features import source_hashes


def _old_file(path, data: bytes):
    path.write_bytes(data)
    old = path.stat().st_mtime - 60
    os.utime(path, (old, old))
    return path


def _count_reads(monkeypatch) -> list:
    import evaluators.imageio as io

    calls, real = [], io.image_hash
    monkeypatch.setattr(io, "image_hash", lambda p: calls.append(str(p)) or real(p))
    return calls


def test_hashes_match_the_bytes_and_unchanged_files_are_not_read_again(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXGEN_HOME", str(tmp_path / "home"))
    a, b = _old_file(tmp_path / "a.png", b"aaa"), _old_file(tmp_path / "b.png", b"bbb")
    want = [hashlib.sha256(b"aaa").hexdigest(), hashlib.sha256(b"bbb").hexdigest()]
    reads = _count_reads(monkeypatch)
    assert FH.file_hashes([a, b]) == want and len(reads) == 2
    assert FH.file_hashes([str(b), a]) == want[::-1] and len(reads) == 2  # remembered: no read
    _old_file(a, b"AAAA")  # changed (size and mtime): read again, and the new hash is returned
    assert FH.file_hashes([a, b])[0] == hashlib.sha256(b"AAAA").hexdigest() and len(reads) == 3


def test_fresh_files_are_not_remembered(tmp_path, monkeypatch):
    """A file written in the last RACY_SECONDS could change again within the same mtime tick."""
    monkeypatch.setenv("CHEXGEN_HOME", str(tmp_path / "home"))
    fresh = tmp_path / "new.png"
    fresh.write_bytes(b"x")
    reads = _count_reads(monkeypatch)
    FH.file_hashes([fresh])
    FH.file_hashes([fresh])
    assert len(reads) == 2


def test_a_corrupt_memo_is_ignored_and_rewritten(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXGEN_HOME", str(tmp_path / "home"))
    a = _old_file(tmp_path / "a.png", b"aaa")
    FH.file_hashes([a])
    memo = FH._memo_path(str(tmp_path))
    wrong_entry = json.dumps({"version": 1, "folder": str(tmp_path), "files": {"a.png": 7}})
    for bad in ("{not json", "[1, 2]", wrong_entry):
        memo.write_text(bad)
        assert FH.file_hashes([a]) == [hashlib.sha256(b"aaa").hexdigest()]
        assert '"a.png":[' in memo.read_text()


def test_missing_file_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXGEN_HOME", str(tmp_path / "home"))
    with pytest.raises(InputError, match=r"gone\.png"):
        FH.file_hashes([tmp_path / "gone.png"])


def test_source_hashes_keep_the_order_of_mixed_items(tmp_path, monkeypatch):
    from evaluators.features import array_hash

    monkeypatch.setenv("CHEXGEN_HOME", str(tmp_path / "home"))
    a = _old_file(tmp_path / "a.png", b"aaa")
    arr = np.zeros((4, 4), np.float32)
    assert source_hashes([arr, a, arr]) == [array_hash(arr), hashlib.sha256(b"aaa").hexdigest(), array_hash(arr)]
