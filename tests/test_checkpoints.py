"""Safe weight loading: state dicts load, wrappers unwrap, and pickles that carry code are refused unrun."""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict

import pytest
import torch

from evaluators.checkpoints import load_state_dict, save_state_dict, unwrap_state_dict
from evaluators.errors import InputError


def _sd() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"conv.weight": torch.randn(4, 3, 3, 3, generator=g), "conv.bias": torch.randn(4, generator=g),
            "bn.num_batches_tracked": torch.tensor(7)}  # fmt: skip


def _assert_same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype
        assert torch.equal(a[k], b[k]), k


class _Payload:
    """Unpickling this runs ``touch MARKER`` (what a malicious checkpoint does)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_safetensors_round_trip(tmp_path):
    sd = _sd()
    path = save_state_dict(sd, tmp_path / "w.safetensors", metadata={"architecture": "x", "size": 3})
    _assert_same(load_state_dict(path), sd)
    # The header really is safetensors (readable by the reference library), metadata stored as strings.
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata() == {"architecture": "x", "size": "3"}
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temp file


def test_save_handles_shared_and_noncontiguous_tensors(tmp_path):
    base = torch.arange(12.0).reshape(3, 4)
    sd = {"a": base, "b": base, "t": base.t()}
    path = save_state_dict(sd, tmp_path / "shared.safetensors")
    _assert_same(load_state_dict(path), {"a": base, "b": base, "t": base.t().contiguous()})


@pytest.mark.parametrize("zipfile_format", [True, False])
def test_torch_save_state_dict_loads(tmp_path, zipfile_format):
    sd = OrderedDict(_sd())
    path = tmp_path / "w.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=zipfile_format)
    _assert_same(load_state_dict(path), dict(sd))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": sd, "epoch": 3, "best_auc": 0.9},
        lambda sd: {"model": sd, "optimizer": {"state": {}, "param_groups": []}},
        lambda sd: {"model_state_dict": sd},
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
        lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},
    ],
)
def test_wrappers_are_unwrapped(tmp_path, wrap):
    sd = _sd()
    path = tmp_path / "w.ckpt"
    torch.save(wrap(sd), path)
    _assert_same(load_state_dict(path), sd)


def test_model_prefix_is_kept():
    # CheXGenBench's re-ID keys start with "model."; that prefix belongs to the architecture.
    sd = {"model.fc.weight": torch.zeros(2, 2), "fc_end.bias": torch.zeros(1)}
    assert set(unwrap_state_dict(sd)) == {"model.fc.weight", "fc_end.bias"}
    only_model = {"model.fc.weight": torch.zeros(2, 2), "model.fc.bias": torch.zeros(2)}
    assert set(unwrap_state_dict(only_model)) == set(only_model)


@pytest.mark.parametrize("how", ["torch_zip", "torch_legacy", "pickle_p2", "pickle_p4", "nested"])
def test_pickle_with_code_is_refused_without_running_it(tmp_path, how):
    marker = tmp_path / "PWNED"
    payload = _Payload(marker)
    path = tmp_path / f"evil_{how}.pth"
    if how == "torch_zip":
        torch.save({"w": torch.zeros(1), "x": payload}, path)
    elif how == "torch_legacy":
        torch.save({"w": torch.zeros(1), "x": payload}, path, _use_new_zipfile_serialization=False)
    elif how == "nested":
        torch.save({"state_dict": {"w": torch.zeros(1)}, "args": payload}, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2 if how == "pickle_p2" else 4))
    with pytest.raises(InputError) as err:
        load_state_dict(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "safetensors" in msg and "state_dict" in msg
    assert "system" in msg  # names what it asked for
    assert not marker.exists()


def test_payload_is_real(tmp_path):
    """Control for the test above: an unrestricted unpickler does run the payload."""
    marker = tmp_path / "PWNED"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "empty"),
        (os.urandom(2000), "not a weights file"),
        (b"<html>404 Not Found</html>", "not a weights file"),
        (b"PK\x03\x04broken zip", "not a weights file"),
    ],
)
def test_bad_files_are_input_errors(tmp_path, content, needle):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(InputError, match=needle) as err:
        load_state_dict(path)
    assert str(path) in str(err.value)


def test_truncated_safetensors(tmp_path):
    good = save_state_dict(_sd(), tmp_path / "w.safetensors")
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(good.read_bytes()[:60])
    with pytest.raises(InputError, match="safetensors") as err:
        load_state_dict(bad)
    assert str(bad) in str(err.value)


def test_missing_file_folder_and_non_state_dict(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_state_dict(tmp_path / "nope.pth")
    with pytest.raises(InputError, match="folder"):
        load_state_dict(tmp_path)
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(InputError, match="no state dict"):
        load_state_dict(path)
    path2 = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path2)
    with pytest.raises(InputError, match="no tensors"):
        load_state_dict(path2)
