"""The ``chexgenbench`` preprocessing mode against CheXGenBench's chain run literally (the oracle).

The oracle is ``metrics/fid.py`` of CheXGenBench as written: ``Image.open(p).convert("RGB")``, torchvision
``Resize((299, 299))`` + ``ToTensor()``, ``(batch * 255).to(torch.uint8)``, its ``RadDinoFeatureExtractor`` (the
processor on the uint8 batch, ``pooler_output``) inside torchmetrics' ``FrechetInceptionDistance`` /
``KernelInceptionDistance``, ``prdc.compute_prdc`` on the RadDino features, and torchmetrics' Inception metrics
with ``feature=2048``. The models are tiny random ones of each architecture (no real weights here); the processor is
configured as microsoft/rad-dino's (shortest edge 518, crop 518, bicubic, mean/std 0.5307/0.2583). The reference
pins transformers 4.50.3, whose ``AutoImageProcessor`` gives the PIL-based BitImageProcessor; transformers 5 calls
that class ``BitImageProcessorPil`` (its ``BitImageProcessor`` is a torchvision backend with other pixels).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluators.encoders import load_encoder
from evaluators.encoders.chexgenbench import reference_uint8, resolve_mode, source_notes
from evaluators.errors import InputError
from evaluators.features import extract_features

from . import tiny_models as T
from .helpers_images import dicom_file

N = 8  # images per set (equal sizes: KID's subsets of min(n_real, n_synthetic) are then permutations of all)


def _field(rng: np.random.Generator, h: int, w: int, bright: float) -> np.ndarray:
    """A smooth image-like field in [0, 1] (upsampled noise + a gradient)."""
    small = rng.random((6, 6)).astype(np.float32)
    up = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), np.float32)
    grad = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    return np.clip(bright * (0.6 * up + 0.4 * grad) + 0.05 * rng.random((h, w)), 0, 1)


def _write_set(folder: Path, seed: int, bright: float) -> list[Path]:
    """8-bit and 16-bit PNG and JPEG, gray and RGB, of several sizes (smaller and larger than 299)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    specs = [("png8-gray", 64, 80), ("png8-rgb", 400, 360), ("png16-low", 350, 300), ("png16-full", 120, 150),
             ("jpeg-gray", 320, 256), ("jpeg-rgb", 200, 240), ("png8-gray-big", 700, 610), ("jpeg-gray-small", 90, 70)]
    paths = []
    for i, (kind, h, w) in enumerate(specs[:N]):
        f = _field(rng, h, w, bright)
        if kind.endswith("rgb"):
            arr = np.stack([f, np.roll(f, 7, 1), f[::-1]], -1)
            u8 = np.clip(np.rint(arr * 255), 0, 255).astype(np.uint8)
        else:
            u8 = np.clip(np.rint(f * 255), 0, 255).astype(np.uint8)
        path = folder / f"{i:02d}-{kind}.{'jpg' if kind.startswith('jpeg') else 'png'}"
        if kind == "png16-low":  # values 0..600: PIL's convert("RGB") clips the upper part at 255
            Image.fromarray(np.rint(f * 600).astype(np.uint16)).save(path)
        elif kind == "png16-full":  # full range: nearly all white after convert("RGB")
            Image.fromarray(np.rint(f * 65535).astype(np.uint16)).save(path)
        elif kind.startswith("jpeg"):
            Image.fromarray(u8).save(path, quality=90)
        else:
            Image.fromarray(u8).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("cgb-sets")
    return _write_set(root / "real", 0, 1.0), _write_set(root / "synthetic", 1, 0.7)


@pytest.fixture(scope="module")
def raddino_dir(tmp_path_factory):
    """A tiny random Dinov2 with microsoft/rad-dino's processor settings (518 px; Dinov2 interpolates positions)."""
    from transformers import BitImageProcessor

    folder = T.make_tiny_raddino(tmp_path_factory.mktemp("raddino-518"))
    BitImageProcessor(
        do_resize=True, size={"shortest_edge": 518}, resample=3, do_center_crop=True,
        crop_size={"height": 518, "width": 518}, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=[T.RADDINO_MEAN] * 3, image_std=[T.RADDINO_STD] * 3, do_convert_rgb=True,
    ).save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------------------------------
# The reference, as written in CheXGenBench's metrics/fid.py


class _ImageDataset(torch.utils.data.Dataset):
    def __init__(self, img_paths, transform):
        self.img_paths, self.transform = img_paths, transform

    def __len__(self):
        return len(self.img_paths)

    def __getitem__(self, idx):
        return self.transform(Image.open(self.img_paths[idx]).convert("RGB"))


class _RadDinoFeatureExtractor(torch.nn.Module):
    def __init__(self, model, processor):
        super().__init__()
        self.model, self.processor = model, processor
        self.num_features = model.config.hidden_size  # torchmetrics asks for it (FACTS.md)

    def forward(self, images):
        inputs = self.processor(images=images, return_tensors="pt")
        with torch.inference_mode():
            outputs = self.model(**inputs)
        return outputs.pooler_output


class _Memo(torch.nn.Module):
    """The same module, run once per distinct batch: the reference calls its extractor three times per batch (FID,
    KID, PRDC); the outputs are the same, the CPU time is not."""

    def __init__(self, module):
        super().__init__()
        self.module, self.num_features, self.memo = module, module.num_features, {}

    def forward(self, x):
        key = (x.shape, x.numpy().tobytes())
        if key not in self.memo:
            self.memo[key] = self.module(x)
        return self.memo[key]


def _reference_batches(paths, batch_size=3):
    from torchvision import transforms

    transform = transforms.Compose([transforms.Resize((299, 299)), transforms.ToTensor()])
    loader = torch.utils.data.DataLoader(_ImageDataset([str(p) for p in paths], transform), batch_size=batch_size,
                                         num_workers=0, shuffle=False)
    return [(batch * 255).to(torch.uint8) for batch in loader]


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


# --------------------------------------------------------------------------------------------------
# RadDino: features, FID, KID, PRDC


def test_raddino_chexgenbench_mode_agrees_with_the_reference_chain(sets, raddino_dir, tmp_path):
    from prdc import compute_prdc
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance
    from transformers import Dinov2Model
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

    from evaluators.fidelity import run_fidelity
    from evaluators.imagesets import load_image_set

    real, synth = sets
    model = Dinov2Model.from_pretrained(raddino_dir).eval()
    fe = _Memo(_RadDinoFeatureExtractor(model, BitImageProcessorPil.from_pretrained(raddino_dir)))
    fid = FrechetInceptionDistance(feature=fe)
    kid = KernelInceptionDistance(subset_size=N, feature=fe)
    feats = {}
    for side, paths in (("real", real), ("synthetic", synth)):
        out = []
        for batch in _reference_batches(paths):
            fid.update(batch, real=side == "real")
            kid.update(batch, real=side == "real")
            with torch.inference_mode():
                out.append(fe(batch).cpu())
        feats[side] = torch.cat(out).numpy()
    ref_fid = float(fid.compute())
    ref_kid = float(kid.compute()[0])
    ref_prdc = compute_prdc(real_features=feats["real"], fake_features=feats["synthetic"], nearest_k=5)

    enc = load_encoder("raddino", weights=raddino_dir, preprocess="chexgenbench")
    assert enc.metadata()["preprocess"] == "chexgenbench" and enc.input_size == 518
    for side, paths in (("real", real), ("synthetic", synth)):
        ours = extract_features(paths, enc, batch_size=3, store_root=tmp_path, show_progress=False).features
        assert np.abs(ours - feats[side]).max() <= 1e-5, side

    res = run_fidelity(load_image_set(str(real[0].parent)), load_image_set(str(synth[0].parent)), encoders=["raddino"],
                       alignment=False, load_encoder=lambda name: enc, preprocess="chexgenbench")
    m = res["overall"]["raddino"]
    assert res["preprocess"] == {"raddino": "chexgenbench"} and res["encoders"]["raddino"]["preprocess"] == "chexgenbench"
    assert ref_fid > 1e-3 and ref_kid > 1e-5  # the two sets differ, so relative agreement means something
    assert _rel(m["FID"], ref_fid) <= 1e-4, (m["FID"], ref_fid)
    assert _rel(m["KID"], ref_kid) <= 1e-4, (m["KID"], ref_kid)
    for key in ("precision", "recall", "density", "coverage"):
        assert m[key.capitalize()] == pytest.approx(float(ref_prdc[key]), abs=1e-9), key
    # the run says which chain made its numbers, in the JSON, the CSV and the summary
    from evaluators.fidelity import csv_rows, format_summary

    assert csv_rows(res)[0]["Preprocessing"] == "chexgenbench"
    assert "[raddino, chexgenbench preprocessing]" in format_summary(res)
    assert any("16-bit" in n for n in res["preprocess_notes"])

    # the clean mode is a different chain: its features differ on the same files
    clean = extract_features(real[:2], enc.with_preprocess("clean"), store_root=tmp_path, show_progress=False).features
    assert np.abs(clean - feats["real"][:2]).max() > 1e-3


# --------------------------------------------------------------------------------------------------
# Inception: torchmetrics' FID / KID / IS with feature=2048 (a full-size random InceptionV3)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    pytest.importorskip("torch_fidelity")
    path = T.make_tiny_inception(tmp_path_factory.mktemp("inception-cgb") / "weights-inception-2015-12-05-6726825d.pth")
    yield path
    path.unlink(missing_ok=True)


@pytest.mark.slow
def test_inception_chexgenbench_mode_agrees_with_torchmetrics(sets, inception_file, tmp_path, monkeypatch):
    import torchmetrics.image.fid as tm_fid
    import torchmetrics.image.inception as tm_is
    import torchmetrics.image.kid as tm_kid

    from evaluators.fidelity import run_fidelity
    from evaluators.imagesets import load_image_set
    from evaluators.metrics import inception_score

    # torchmetrics' own network with the local random weights (its constructors would download them). The metric
    # objects share one forward pass per batch (memoised), so the CPU runs the network once, not three times.
    memo: dict = {}

    class Shared(tm_fid.NoTrainInceptionV3):
        def forward(self, x):
            key = (tuple(self.features_list), x.shape, x.numpy().tobytes())
            if key not in memo:
                memo[key] = super().forward(x)
            return memo[key]

    net = functools.partial(Shared, feature_extractor_weights_path=str(inception_file))
    for module in (tm_fid, tm_kid, tm_is):
        monkeypatch.setattr(module, "NoTrainInceptionV3", net)
    fid = tm_fid.FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(inception_file))
    assert isinstance(fid.inception, Shared)
    kid = tm_kid.KernelInceptionDistance(subset_size=N, feature=2048)
    score = tm_is.InceptionScore(splits=1)
    pool = tm_fid.NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])
    assert isinstance(kid.inception, Shared) and isinstance(score.inception, Shared)
    real, synth = sets
    feats = {}
    for side, paths in (("real", real), ("synthetic", synth)):
        out = []
        for batch in _reference_batches(paths, batch_size=4):
            fid.update(batch, real=side == "real")
            kid.update(batch, real=side == "real")
            if side == "synthetic":
                score.update(batch)
            with torch.inference_mode():
                out.append(pool(batch))
        feats[side] = torch.cat(out).numpy()
    ref_fid, ref_kid = float(fid.compute()), float(kid.compute()[0])
    ref_is = float(score.compute()[0])

    enc = load_encoder("inception", weights=inception_file, preprocess="chexgenbench")
    for side, paths in (("real", real), ("synthetic", synth)):
        ours = extract_features(paths, enc, batch_size=4, store_root=tmp_path, show_progress=False)
        scale = np.abs(feats[side]).max()
        assert np.abs(ours.features - feats[side]).max() <= 1e-5 * scale, side
        if side == "synthetic":
            assert _rel(inception_score(ours.outputs["logits"], splits=1)[0], ref_is) <= 1e-4
    res = run_fidelity(load_image_set(str(real[0].parent)), load_image_set(str(synth[0].parent)),
                       encoders=["inception"], alignment=False, load_encoder=lambda name: enc)  # auto -> chexgenbench
    m = res["overall"]["inception"]
    assert res["preprocess"] == {"inception": "chexgenbench"}
    assert ref_fid > 1e-3 * scale**2 and abs(ref_kid) > 1e-6  # KID is unbiased: it may be below 0 for small sets
    assert _rel(m["FID"], ref_fid) <= 1e-4, (m["FID"], ref_fid)
    assert _rel(m["KID"], ref_kid) <= 1e-4, (m["KID"], ref_kid)


# --------------------------------------------------------------------------------------------------
# The chain's pixels, file kinds and the cache


def test_uint8_tensor_is_the_reference_one_for_every_file_kind(sets, tmp_path):
    real, synth = sets
    batches = torch.cat(_reference_batches(real + synth, batch_size=16))
    ours = torch.stack([reference_uint8(p) for p in real + synth])
    assert ours.dtype == torch.uint8 and torch.equal(ours, batches)
    # ToTensor -> * 255 -> truncation is the identity on uint8 values in float32 (what to_uint8_299 relies on)
    from torchvision import transforms

    every = np.repeat(np.arange(256, dtype=np.uint8), 3).reshape(16, 16, 3)  # all 256 values in each channel
    back = (transforms.ToTensor()(Image.fromarray(every)) * 255).to(torch.uint8)
    assert torch.equal(back, torch.from_numpy(every).permute(2, 0, 1))
    # a 16-bit PNG: PIL clips at 255, so the full-range one is nearly white (what the reference sees)
    assert (ours[3] == 255).float().mean() > 0.9
    notes = source_notes(real)
    assert len(notes) == 1 and notes[0].startswith("2 image(s) are 16-bit")


def test_dicom_and_arrays_enter_the_chain_as_8_bit_gray(tmp_path):
    from evaluators.imageio import read_image, to_uint8

    px = (np.linspace(0, 4000, 90 * 70).reshape(90, 70)).astype(np.uint16)
    dcm = dicom_file(tmp_path / "a.dcm", px, window=(2000, 4000))
    png = tmp_path / "a.png"
    Image.fromarray(to_uint8(read_image(dcm))).save(png)
    assert torch.equal(reference_uint8(dcm), reference_uint8(png))
    assert "DICOM" in source_notes([dcm])[0]
    # float arrays: rounded to 8 bits as the generator writes its PNGs; uint8 arrays as PIL reads them
    f = read_image(png)
    assert torch.equal(reference_uint8(f), reference_uint8(png))
    assert torch.equal(reference_uint8(to_uint8(f)), reference_uint8(png))


def test_modes_never_share_cached_features(sets, raddino_dir, tmp_path):
    real = sets[0][:3]
    clean = load_encoder("raddino", weights=raddino_dir)
    cgb = clean.with_preprocess("chexgenbench")
    assert clean.preprocess_mode == "clean" and cgb.preprocess_mode == "chexgenbench"
    assert clean.cache_key() != cgb.cache_key() and clean.model is cgb.model  # same network, other key
    assert clean.with_preprocess("auto") is not clean and clean.with_preprocess("clean") is clean
    a = extract_features(real, clean, store_root=tmp_path, show_progress=False)
    b = extract_features(real, cgb, store_root=tmp_path, show_progress=False)
    assert a.forward_images == b.forward_images == len(real)  # the second mode encoded everything again
    assert np.abs(a.features - b.features).max() > 1e-3
    again = extract_features(real, load_encoder("raddino", weights=raddino_dir, preprocess="chexgenbench"),
                             store_root=tmp_path, show_progress=False)
    assert again.forward_images == 0 and np.array_equal(again.features, b.features)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([clean.cache_key(), cgb.cache_key()])


def test_mode_resolution():
    assert resolve_mode("auto", "raddino") == resolve_mode("auto", "inception") == "chexgenbench"
    assert resolve_mode("auto", "demo") == "clean" and resolve_mode("clean", "raddino") == "clean"
    with pytest.raises(InputError, match="raddino and inception only"):
        resolve_mode("chexgenbench", "demo")
    with pytest.raises(InputError, match="Unknown preprocessing mode"):
        resolve_mode("fast", "raddino")
    with pytest.raises(InputError, match="raddino and inception only"):
        load_encoder("pixels", preprocess="chexgenbench")
    from evaluators.encoders.chexgenbench import run_modes

    modes, notes = run_modes("chexgenbench", ["demo", "raddino"])
    assert modes == {"demo": "clean", "raddino": "chexgenbench"} and "demo: clean" in notes[0]
    with pytest.raises(InputError):
        run_modes("chexgenbench", ["demo"])


def test_store_keeps_modes_apart(tmp_path):
    from evaluators.store import ResultsStore, flatten_metrics

    vals = {"FID": 1.0, "KID": 0.1, "n_real": 3}
    res = {"overall": {"raddino": vals}, "preprocess": {"raddino": "chexgenbench"}, "settings": {}}
    old = {"overall": {"raddino": vals}, "settings": {}}
    assert set(flatten_metrics(res)) == {"FID (raddino, chexgenbench)", "KID (raddino, chexgenbench)"}
    assert set(flatten_metrics(old)) == {"FID (raddino)", "KID (raddino)"}
    store = ResultsStore(tmp_path / "r.sqlite")
    store.save("fidelity", res)
    store.save("fidelity", old)
    rows = store.runs()
    assert [r["preprocess"] for r in rows] == [None, "chexgenbench"]
    assert store.get(rows[1]["id"])["preprocess"] == "chexgenbench"


def test_cli_records_the_mode_everywhere(sets, tmp_path, monkeypatch, capsys):
    import csv
    import json

    from evaluators.cli import main
    from evaluators.store import ResultsStore

    real, synth = (s[:6] for s in sets)
    folders = []
    for name, paths in (("r", real), ("s", synth)):
        (tmp_path / name).mkdir()
        for p in paths:
            (tmp_path / name / p.name).write_bytes(p.read_bytes())
        folders.append(str(tmp_path / name))
    monkeypatch.setenv("CHEXGEN_RADDINO", str(T.make_tiny_raddino(tmp_path / "rd")))  # 56 px: fast
    monkeypatch.setenv("CHEXGEN_HOME", str(tmp_path / "home"))
    common = ["fidelity", "--real", folders[0], "--synthetic", folders[1], "--encoder", "raddino", "--no-alignment",
              "--kid-subsets", "5"]
    assert main([*common, "--out", str(tmp_path / "a.json"), "--csv", str(tmp_path / "a.csv")]) == 0  # auto
    out = capsys.readouterr().out
    assert "[raddino, chexgenbench preprocessing]" in out and "note: real: 2 image(s) are 16-bit" in out
    res = json.loads((tmp_path / "a.json").read_text())
    assert res["preprocess"] == {"raddino": "chexgenbench"} and res["settings"]["preprocess_requested"] == "auto"
    with open(tmp_path / "a.csv") as fh:
        assert next(csv.DictReader(fh))["Preprocessing"] == "chexgenbench"
    assert main([*common, "--preprocess", "clean", "--out", str(tmp_path / "b.json"), "--csv", str(tmp_path / "b.csv")]) == 0
    assert "[raddino, clean preprocessing]" in capsys.readouterr().out
    with open(tmp_path / "b.csv") as fh:
        assert "not comparable with its published table" in next(csv.DictReader(fh))["Preprocessing"]
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["overall"]["raddino"]["FID"] != res["overall"]["raddino"]["FID"]
    runs = ResultsStore().runs()
    assert [r["preprocess"] for r in runs] == ["clean", "chexgenbench"]
    assert "FID (raddino)" in runs[0]["metrics"] and "FID (raddino, chexgenbench)" in runs[1]["metrics"]
    assert main(["fidelity", "--real", folders[0], "--synthetic", folders[1], "--encoder", "pixels", "--no-alignment",
                 "--preprocess", "chexgenbench", "--out", str(tmp_path / "c.json")]) == 2
    assert "raddino and inception only" in capsys.readouterr().err


def test_app_service_runs_the_chosen_mode_and_lists_it(tmp_path, monkeypatch):
    from chexgen_ui.services import Studio
    from evaluators.imagesets import load_image_set
    from tests.ui_world import make_world

    world = make_world(tmp_path / "world", patients=30, size=64)
    monkeypatch.setenv("CHEXGEN_RADDINO", str(T.make_tiny_raddino(tmp_path / "rd")))
    monkeypatch.setenv("CHEXGEN_HOME", str(tmp_path / "home"))
    # about raddino's modes only: FRD (the radiomics encoder, default off the demo world) is tested in test_runs.py
    monkeypatch.setattr("evaluators.fidelity._default_frd", lambda real_side: False)
    studio = Studio(f"{world}@train", encoder="raddino", device="cpu", umap=False, store_path=tmp_path / "r.sqlite")
    assert studio.encoder().preprocess_mode == "chexgenbench"  # the index is built as fidelity's default reads it
    syn = load_image_set(f"{world}@test")
    auto = studio.run_fidelity(syn, model="m", per_pathology=False, kid_subsets=5)
    clean = studio.run_fidelity(syn, model="m", per_pathology=False, kid_subsets=5, preprocess="clean")
    assert auto.result["preprocess"] == {"raddino": "chexgenbench"} and clean.result["preprocess"] == {"raddino": "clean"}
    assert auto.overall["preprocess"].tolist() == ["chexgenbench"] and clean.overall["preprocess"].tolist() == ["clean"]
    board = studio.leaderboard().set_index("id")
    assert board.loc[auto.run_id, "preprocess"] == "chexgenbench" and board.loc[clean.run_id, "preprocess"] == "clean"
    assert np.isnan(board.loc[auto.run_id, "FID (raddino)"]) and np.isnan(board.loc[clean.run_id, "FID (raddino, chexgenbench)"])
    pixels = Studio(f"{world}@train", encoder="pixels", device="cpu", umap=False, store_path=tmp_path / "r.sqlite")
    with pytest.raises(InputError, match="raddino and inception only"):
        pixels.run_fidelity(syn, per_pathology=False, kid_subsets=5, preprocess="chexgenbench")
