"""Patient re-identification: does a synthetic image show the same patient as a training image?

The network is CheXGenBench's siamese model (after Packhäuser et al., 2022): a torchvision ResNet-50
whose ``fc`` is replaced by ``Linear(2048, 128)``; ``sigmoid`` of that is a 128-d feature per image; the
score of a pair is ``sigmoid(fc_end(|f1 - f2|))`` with ``fc_end = Linear(128, 1)``. A score > 0.5 counts
as re-identified. Inputs are 224 x 224, the gray image replicated to 3 channels, values in [0, 1] and
no normalisation (as in CheXGenBench's ``Resize((224, 224)) + ToTensor()``; here the one project
resize, PIL bicubic, is used instead of torchvision's bilinear).

Module names match the published checkpoint (``ResNet-50_epoch11_data_handling_RPN.pth``, Hugging Face
``raman07/Patient_ReIdentification_MIMIC``), so it loads with ``strict=True``: ``model.conv1.weight``,
``model.bn1.*``, ``model.layer1..4.*``, ``model.fc.weight`` [128, 2048], ``model.fc.bias``,
``fc_end.weight`` [1, 128], ``fc_end.bias``.

Smaller backbones with the same head (``resnet18``; ``tiny``, a 4-layer CNN) serve the CPU demo. A real
image is embedded once (:func:`embed`) and compared with many synthetic images (:func:`score_pairs`,
:func:`score_matrix`), rather than passing every pair through both branches.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import jobs, settings
from ..checkpoints import load_state_dict, save_state_dict
from ..errors import InputError, UnavailableError
from ..imageio import image_array
from .distances import as_gray01, resize_to

Progress = Callable[[int, int, str], None]

BACKBONES = ("resnet50", "resnet18", "tiny")
DEFAULT_IMAGE_SIZE = {"resnet50": 224, "resnet18": 224, "tiny": 64}
DEFAULT_LR = {"resnet50": 1e-4, "resnet18": 1e-4, "tiny": 1e-3}
N_FEATURES = 128
CHEXGENBENCH_CHECKPOINT = "ResNet-50_epoch11_data_handling_RPN.pth"
CHEXGENBENCH_REPO = "raman07/Patient_ReIdentification_MIMIC"
DEMO_CHECKPOINT = "demo_reid.safetensors"


class _TinyBackbone(nn.Module):
    """Four strided conv blocks, a 4 x 4 pooled map (keeps the layout that identifies a patient), ``fc``."""

    def __init__(self, in_channels: int = 3, width: int = 32, n_features: int = N_FEATURES):
        super().__init__()
        chans = [in_channels, width, width * 2, width * 2, width * 4]
        layers: list[nn.Module] = []
        for cin, cout in itertools.pairwise(chans):
            layers += [
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(chans[-1] * 16, n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.body(x)), 1))


class ReIDModel(nn.Module):
    """Siamese re-ID network; ``forward(x1, x2)`` returns the pair's logit (sigmoid it for the score)."""

    def __init__(
        self,
        backbone: str = "resnet50",
        *,
        n_features: int = N_FEATURES,
        in_channels: int = 3,
        image_size: int | None = None,
        width: int = 32,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise InputError(f"Unknown re-ID backbone {backbone!r}; use one of {', '.join(BACKBONES)}.")
        self.backbone_name = backbone
        self.n_features = n_features
        self.in_channels = in_channels
        self.width = width  # tiny backbone only
        self.image_size = int(image_size or DEFAULT_IMAGE_SIZE[backbone])
        if backbone == "tiny":
            self.model: nn.Module = _TinyBackbone(in_channels, width=width, n_features=n_features)
        else:
            from torchvision import models

            net = models.resnet50(weights=None) if backbone == "resnet50" else models.resnet18(weights=None)
            if in_channels != 3:
                net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            net.fc = nn.Linear(net.fc.in_features, n_features)
            self.model = net
        self.fc_end = nn.Linear(n_features, 1)

    def forward_once(self, x: torch.Tensor) -> torch.Tensor:
        """The n_features-d sigmoid feature of one batch of images [B, C, H, W]."""
        return torch.sigmoid(self.model(x))

    @torch.no_grad()
    def infer_once(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward_once` for scoring, on the backbone's inference graph (batch norm folded, channels_last:
        1.9x for ResNet-50 on a CPU). The graph is a copy, kept out of the state dict and rebuilt when a weight
        changes (an optimiser step, ``load_state_dict``, a move to another device)."""
        from ..encoders.base import PLAIN_ENV, inference_graph

        if settings.get(PLAIN_ENV):
            return self.forward_once(x)
        key = tuple((t.data_ptr(), t._version) for t in itertools.chain(self.model.parameters(), self.model.buffers()))
        cached = self.__dict__.get("_inference")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_inference"] = (key, inference_graph(self.model)[0])
        return torch.sigmoid(cached[1](x.contiguous(memory_format=torch.channels_last)))

    def head(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """Pair logits from two feature batches (broadcasting)."""
        return self.fc_end(torch.abs(f1 - f2)).squeeze(-1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_once(x1), self.forward_once(x2))

    def config(self) -> dict:
        return {
            "architecture": f"siamese-{self.backbone_name}",
            "backbone": self.backbone_name,
            "n_features": self.n_features,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            **({"width": self.width} if self.backbone_name == "tiny" else {}),
            "preprocessing": "gray in [0,1], PIL bicubic resize to image_size, replicated to channels, no normalisation",
        }


# --------------------------------------------------------------------------------------------------
# Loading


def _infer_config(sd: dict[str, torch.Tensor], source: str) -> dict:
    if "fc_end.weight" not in sd or "model.fc.weight" not in sd:
        keys = ", ".join(list(sd)[:6])
        raise InputError(
            f"{source} is not a siamese re-ID checkpoint: it lacks 'fc_end.weight' / 'model.fc.weight' "
            f"(first keys: {keys}). Expected CheXGenBench's layout (model.* = ResNet, fc_end = Linear(128, 1))."
        )
    if "model.layer4.0.conv3.weight" in sd:
        backbone = "resnet50"
    elif "model.layer4.0.conv2.weight" in sd:
        backbone = "resnet18"
    elif "model.body.0.weight" in sd:
        backbone = "tiny"
    else:
        raise InputError(
            f"{source}: cannot tell the re-ID backbone from its keys (resnet50, resnet18 or tiny expected)."
        )
    conv1 = sd.get("model.conv1.weight", sd.get("model.body.0.weight"))
    return {
        "backbone": backbone,
        "n_features": int(sd["fc_end.weight"].shape[1]),
        "in_channels": int(conv1.shape[1]),
        "image_size": DEFAULT_IMAGE_SIZE[backbone],
        "width": int(sd["model.body.0.weight"].shape[0]) if backbone == "tiny" else 32,
    }


def sidecar_path(weights: str | os.PathLike) -> Path:
    """The JSON written next to a trained checkpoint (architecture, image size, training set, val AUC)."""
    p = Path(weights)
    return p.with_suffix(".json")


def _find_chexgenbench() -> Path:
    from ..settings import chexgen_home

    candidates = [chexgen_home() / "weights" / CHEXGENBENCH_CHECKPOINT]
    for path in candidates:
        if path.is_file():
            return path
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(CHEXGENBENCH_REPO, CHEXGENBENCH_CHECKPOINT, local_files_only=True))
    except Exception:  # not in the HF cache (or huggingface_hub absent): say how to provide it
        pass
    raise UnavailableError(
        f"The CheXGenBench re-ID checkpoint {CHEXGENBENCH_CHECKPOINT} is not on this machine. Download it from "
        f"https://huggingface.co/{CHEXGENBENCH_REPO} (`huggingface-cli download {CHEXGENBENCH_REPO} "
        f"{CHEXGENBENCH_CHECKPOINT}`) or copy it to {candidates[0]}; or use the demo model ('demo')."
    )


def resolve_reid_path(path_or_name: str | os.PathLike) -> Path:
    """A weights file for a name ('chexgenbench', 'demo') or a path."""
    name = str(path_or_name)
    if name.lower() == "chexgenbench":
        return _find_chexgenbench()
    if name.lower() == "demo":
        from ..settings import assets_dir, chexgen_home

        shipped, trained = assets_dir() / DEMO_CHECKPOINT, chexgen_home() / "weights" / DEMO_CHECKPOINT
        for path in (shipped, trained):
            if path.is_file():
                return path
        raise UnavailableError(
            f"The demo re-ID model is missing (looked for {shipped} and {trained}). Train it with "
            f"`python -m evaluators train-reid --train demo --out {trained}`."
        )
    path = Path(name).expanduser()
    if not path.exists():
        raise InputError(
            f"Re-ID model {name!r} is neither a file nor a known name; give a weights file, 'chexgenbench' or 'demo'."
        )
    return path


def load_reid(path_or_name: str | os.PathLike, *, device: str | None = None) -> ReIDModel:
    """A re-ID model in eval mode from a file or a name ('chexgenbench', 'demo'); weights loaded safely.

    The architecture comes from the JSON sidecar when there is one, else from the checkpoint's keys.
    """
    path = resolve_reid_path(path_or_name)
    sd = load_state_dict(path)
    cfg = _infer_config(sd, str(path))
    side = sidecar_path(path)
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
            cfg["image_size"] = int(meta.get("image_size", cfg["image_size"]))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise InputError(f"{side} is not a valid re-ID sidecar ({exc}); fix or delete it.") from None
    model = ReIDModel(
        cfg["backbone"],
        n_features=cfg["n_features"],
        in_channels=cfg["in_channels"],
        width=cfg["width"],
        image_size=cfg["image_size"],
    )
    try:
        result = model.load_state_dict(sd, strict=False)
    except RuntimeError as exc:  # tensor shapes differ from the architecture
        raise InputError(
            f"{path} does not match the {cfg['backbone']} re-ID architecture: {str(exc).splitlines()[-1].strip()}"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise InputError(
            f"{path} does not match the {cfg['backbone']} re-ID architecture: missing "
            f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}."
        )
    from ..settings import select_device

    return model.to(select_device(device)).eval()


# --------------------------------------------------------------------------------------------------
# Scoring


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def preprocess(imgs: Sequence[object], image_size: int, in_channels: int = 3) -> torch.Tensor:
    """[B, C, S, S] float32: gray in [0, 1], resized, replicated to the model's channels, not normalised."""
    arr = np.stack([resize_to(as_gray01(im, name=f"image {i}"), image_size) for i, im in enumerate(imgs)])
    x = torch.from_numpy(arr).unsqueeze(1)
    return x.expand(-1, in_channels, -1, -1).contiguous()


@torch.no_grad()
def embed(
    model: ReIDModel, imgs: Sequence[object], *, batch_size: int = 32, progress: Progress | None = None
) -> np.ndarray:
    """Sigmoid features [N, n_features] (float32) of images (arrays in [0, 1] or uint8, any size)."""
    model.eval()
    dev = _device(model)
    out = []
    n = len(imgs)
    for start in range(0, n, batch_size):
        x = preprocess(imgs[start : start + batch_size], model.image_size, model.in_channels).to(dev)
        out.append(model.infer_once(x).float().cpu().numpy())
        if progress:
            progress(min(start + batch_size, n), n, "re-ID features")
    if not out:
        return np.zeros((0, model.n_features), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)


def _features(model: ReIDModel, f: object, name: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32))
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[1] != model.n_features:
        raise InputError(f"{name}: expected re-ID features [N, {model.n_features}], got {tuple(t.shape)}.")
    return t.to(_device(model))


@torch.no_grad()
def score_pairs(model: ReIDModel, fa: object, fb: object) -> np.ndarray:
    """Re-ID score of row i of ``fa`` with row i of ``fb`` (a single row broadcasts): shape [N]."""
    a, b = _features(model, fa, "first features"), _features(model, fb, "second features")
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise InputError(f"Feature counts differ: {a.shape[0]} vs {b.shape[0]} (pairs are row by row).")
    return torch.sigmoid(model.head(a, b)).float().cpu().numpy().astype(np.float64)


@torch.no_grad()
def score_matrix(model: ReIDModel, fa: object, fb: object, *, chunk: int = 256) -> np.ndarray:
    """Re-ID scores of every row of ``fa`` with every row of ``fb``: shape [Na, Nb]."""
    a, b = _features(model, fa, "first features"), _features(model, fb, "second features")
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.float64)
    for s in range(0, a.shape[0], chunk):
        block = model.head(a[s : s + chunk, None, :], b[None, :, :])
        out[s : s + chunk] = torch.sigmoid(block).float().cpu().numpy()
    return out


def reid_scores(
    model: ReIDModel, imgs_a: Sequence[object], imgs_b: Sequence[object], *, batch_size: int = 32
) -> np.ndarray:
    """Re-ID score of each pair (imgs_a[i], imgs_b[i]): shape [N], in (0, 1)."""
    if len(imgs_a) != len(imgs_b):
        raise InputError(f"Re-ID pairs need equal lists: {len(imgs_a)} vs {len(imgs_b)} images.")
    fa = embed(model, imgs_a, batch_size=batch_size)
    fb = embed(model, imgs_b, batch_size=batch_size)
    return score_pairs(model, fa, fb)


# --------------------------------------------------------------------------------------------------
# Training


class _Images:
    """Images of an image set resized once and kept in memory (within a budget; beyond it, re-read)."""

    def __init__(self, image_set, size: int, budget_bytes: int = 4 << 30):
        self.set, self.size = image_set, size
        self.cache: dict[int, np.ndarray] = {}
        self.max_items = max(1, budget_bytes // (size * size * 4))

    def __call__(self, i: int) -> np.ndarray:
        img = self.cache.get(i)
        if img is None:
            img = resize_to(as_gray01(self.set.image(i), name=f"image {i}"), self.size)
            if len(self.cache) < self.max_items:
                self.cache[i] = img
        return img


def _groups(
    patient_ids: np.ndarray, study_ids: np.ndarray | None, rows: np.ndarray
) -> list[list[np.ndarray]]:
    """For the given rows: per patient, the row indices of each of its studies (patients with >= 2 studies)."""
    out = []
    pats = patient_ids[rows]
    for pid in np.unique(pats):
        mine = rows[pats == pid]
        if study_ids is None:
            studies = [np.array([r]) for r in mine]
        else:
            sids = study_ids[mine]
            studies = [mine[sids == s] for s in np.unique(sids)]
        if len(studies) >= 2:
            out.append(studies)
    return out


def sample_pairs(
    patient_ids: np.ndarray, study_ids: np.ndarray | None, rows: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` balanced pairs among ``rows``: half two studies of one patient (label 1), half two patients (0)."""
    groups = _groups(patient_ids, study_ids, rows)
    if not groups:
        raise InputError("No patient has two studies, so no positive re-ID pairs can be made.")
    n_pos = n // 2
    ia, ib = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    for k in range(n_pos):
        studies = groups[int(rng.integers(len(groups)))]
        s1, s2 = rng.choice(len(studies), size=2, replace=False)
        ia[k] = rng.choice(studies[s1])
        ib[k] = rng.choice(studies[s2])
    n_neg = n - n_pos
    a = rng.choice(rows, size=n_neg)
    b = rng.choice(rows, size=n_neg)
    for _ in range(100):
        same = patient_ids[a] == patient_ids[b]
        if not same.any():
            break
        b[same] = rng.choice(rows, size=int(same.sum()))
    else:
        raise InputError("All images belong to one patient: no negative re-ID pairs can be made.")
    ia[n_pos:], ib[n_pos:] = a, b
    y = np.concatenate([np.ones(n_pos), np.zeros(n_neg)]).astype(np.float32)
    return ia, ib, y


def split_patients(
    patient_ids: np.ndarray, val_fraction: float, seed: int, study_ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a patient-disjoint (train, val) split, val patients drawn at random with ``seed``.

    Patients with several studies (the only source of positive pairs) and single-study patients are
    split separately, so both sides get some of each.
    """
    pats = np.unique(patient_ids)
    if len(pats) < 4:
        raise InputError(f"Re-ID training needs at least 4 patients (found {len(pats)}).")
    multi = {
        str(patient_ids[studies[0][0]])
        for studies in _groups(patient_ids, study_ids, np.arange(len(patient_ids)))
    }
    if len(multi) < 2:
        raise InputError(
            f"Re-ID training needs at least 2 patients with two or more studies (found {len(multi)}); "
            "positive pairs are two studies of one patient."
        )
    rng = np.random.default_rng([seed, 7])
    multi_order = rng.permutation(sorted(multi)).tolist()
    single_order = rng.permutation(sorted(set(map(str, pats)) - multi)).tolist()
    # At least one multi-study patient on each side; at least two val patients (for negative pairs).
    n_multi = min(len(multi_order) - 1, max(1, round(val_fraction * len(multi_order))))
    n_single = round(val_fraction * len(single_order))
    if n_multi + n_single < 2:
        if single_order:
            n_single = 1
        elif len(multi_order) >= 3:
            n_multi = 2
        else:
            raise InputError("Re-ID training needs at least 3 patients with two or more studies here.")
    val = set(multi_order[:n_multi] + single_order[:n_single])
    is_val = np.array([str(p) in val for p in patient_ids.tolist()])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _batch(
    images: _Images, idx: np.ndarray, in_channels: int, rng: np.random.Generator | None
) -> torch.Tensor:
    imgs = [images(int(i)) for i in idx]
    if rng is not None:  # light augmentation so that scores survive small shifts and contrast changes
        from .perturb import brightness, shift

        imgs = [shift(im, rng) if rng.random() < 0.5 else im for im in imgs]
        imgs = [brightness(im, rng) if rng.random() < 0.5 else im for im in imgs]
    x = torch.from_numpy(np.stack(imgs)).unsqueeze(1)
    return x.expand(-1, in_channels, -1, -1).contiguous()


@torch.no_grad()
def _evaluate(model: ReIDModel, images: _Images, pairs, batch_size: int, dev) -> dict:
    from sklearn.metrics import roc_auc_score

    model.eval()
    ia, ib, y = pairs
    uniq = np.unique(np.concatenate([ia, ib]))
    feats = {}
    for s in range(0, len(uniq), batch_size):
        chunk = uniq[s : s + batch_size]
        f = model.forward_once(_batch(images, chunk, model.in_channels, None).to(dev))
        feats.update(zip(chunk.tolist(), f))
    fa = torch.stack([feats[int(i)] for i in ia])
    fb = torch.stack([feats[int(i)] for i in ib])
    scores = torch.sigmoid(model.head(fa, fb)).float().cpu().numpy()
    return {"auc": float(roc_auc_score(y, scores)), "accuracy": float(np.mean((scores > 0.5) == (y > 0.5)))}


def _table_column(image_set, name: str) -> np.ndarray | None:
    table = getattr(image_set, "table", None)
    if table is not None and name in table.columns:
        col = table[name]
        if col.notna().all():
            return col.astype(str).to_numpy()
    return None


def set_key(image_set) -> str:
    """A short key of a set's images (its resolved paths, sorted): the same set gives the same key, whatever the
    spec that loaded it; a ReferenceIndex of the set gives the key of the set."""
    import hashlib

    meta = getattr(image_set, "meta", None)
    paths = meta["path"].astype(str).tolist() if meta is not None else getattr(image_set, "paths", None)
    if paths is None:  # an in-memory set without files: its name is all there is
        paths = [f"{type(image_set).__name__}:{getattr(image_set, 'name', '')}:{len(image_set)}"]
    h = hashlib.sha256("\n".join(sorted(os.path.abspath(str(p)) for p in paths)).encode())
    return h.hexdigest()[:16]


def trained_path_for(image_set, spec: str | None = None) -> Path:
    """Where ``train-reid`` writes by default, and where the privacy suite looks for a model trained on this set:
    ``CHEXGEN_HOME/reid/trained-<set key>.safetensors`` (the key of the set's images, however it was named)."""
    from ..settings import subdir

    return subdir("reid") / f"trained-{set_key(image_set)}.safetensors"


def verification_auc(model: ReIDModel, image_set, *, n_pairs: int = 512, seed: int = 0,
                     batch_size: int = 32) -> dict:
    """Same-patient verification AUC of ``model`` on an image set with patient ids.

    ``n_pairs`` balanced pairs (two studies of one patient / two patients) drawn with ``seed`` among the set's
    images that have a patient id; returns ``{"auc", "accuracy", "n_pairs", "n_patients", "n_images"}``. Raises
    :class:`InputError` (saying why) when the set has no patient ids or no patient with two studies.
    """
    pids = getattr(image_set, "patient_ids", None)
    if pids is None or len(pids) != len(image_set):
        raise InputError("the set has no patient ids")
    have = np.array([p is not None and str(p).strip() != "" for p in pids])
    if not have.any():
        raise InputError("the set has no patient ids")
    patient_ids = np.asarray(["" if p is None else str(p) for p in pids])
    study_ids = _table_column(image_set, "study_id")
    rows = np.flatnonzero(have)
    if len(np.unique(patient_ids[rows])) < 2:
        raise InputError("the set has fewer than 2 patients")
    try:
        pairs = sample_pairs(patient_ids, study_ids, rows, int(n_pairs), np.random.default_rng([seed, 31337]))
    except InputError as exc:
        raise InputError(f"no verification pairs can be made ({exc})") from None
    model.eval()
    metrics = _evaluate(model, _Images(image_set, model.image_size), pairs, batch_size, _device(model))
    used = np.unique(np.concatenate(pairs[:2]))
    return {**metrics, "n_pairs": int(n_pairs), "n_patients": len(np.unique(patient_ids[rows])),
            "n_images": int(used.size)}


def train_reid(
    image_set,
    *,
    out: str | os.PathLike | None = None,
    backbone: str = "tiny",
    epochs: int = 5,
    image_size: int | None = None,
    pairs_per_epoch: int = 2048,
    batch_size: int = 32,
    lr: float | None = None,
    val_fraction: float = 0.2,
    val_pairs: int = 512,
    augment: bool = True,
    width: int = 32,
    seed: int = 0,
    device: str | None = None,
    progress: Progress | None = None,
) -> dict:
    """Train a siamese re-ID model on an image set with patient ids; returns metrics and writes ``out``.

    Pairs are two studies of one patient (positive) or images of two patients (negative), balanced;
    BCE on the pair logit, Adam. Validation patients are disjoint from training patients, so the val
    AUC measures re-identification of unseen patients. After every epoch the state is saved to
    ``<out>.resume.pt`` and a rerun with the same arguments continues from there; at the end ``out``
    (safetensors) and its JSON sidecar are written and the resume file removed. Without ``out`` the model goes
    to :func:`trained_path_for` the set, where the privacy suite's default re-ID choice finds it.
    """
    from ..settings import select_device

    if isinstance(image_set, str | os.PathLike):
        from ..imagesets import load_image_set

        spec = str(image_set)
        image_set = load_image_set(spec)
    else:
        spec = str(getattr(image_set, "spec", getattr(image_set, "name", type(image_set).__name__)))
    if backbone not in BACKBONES:
        raise InputError(f"Unknown re-ID backbone {backbone!r}; use one of {', '.join(BACKBONES)}.")
    if epochs < 1 or pairs_per_epoch < 2 or batch_size < 2:
        raise InputError("epochs must be >= 1, pairs_per_epoch and batch_size >= 2.")
    patient_ids = _table_column(image_set, "patient_id")
    if patient_ids is None:
        pids = getattr(image_set, "patient_ids", None)
        if pids is None or len(pids) != len(image_set) or any(p is None or p != p for p in pids):
            raise InputError(
                f"Image set {spec} has no complete 'patient_id' column; re-ID training needs patient ids."
            )
        patient_ids = np.asarray([str(p) for p in pids])
    study_ids = _table_column(image_set, "study_id")
    size = int(image_size or DEFAULT_IMAGE_SIZE[backbone])
    lr = float(lr or DEFAULT_LR[backbone])
    out = Path(out).expanduser() if out is not None else trained_path_for(image_set, spec)
    resume = out.with_name(out.name + ".resume.pt")
    config = {
        "backbone": backbone, "image_size": size, "pairs_per_epoch": pairs_per_epoch, "batch_size": batch_size,
        "lr": lr, "val_fraction": val_fraction, "val_pairs": val_pairs, "augment": augment, "seed": seed, "width": width,
        "n_images": len(image_set), "train_set": spec,
    }  # fmt: skip
    train_rows, val_rows = split_patients(patient_ids, val_fraction, seed, study_ids)
    dev = select_device(device)
    torch.manual_seed(seed)
    model = ReIDModel(backbone, image_size=size, width=width).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    images = _Images(image_set, size)
    val = sample_pairs(patient_ids, study_ids, val_rows, val_pairs, np.random.default_rng([seed, 1_000_003]))
    history: list[dict] = []
    start_epoch = 0
    state = None
    if resume.is_file():
        try:
            state = torch.load(resume, map_location="cpu", weights_only=True)
        except Exception:  # a damaged resume file: start again rather than fail
            state = None
    if isinstance(state, dict) and json.loads(state.get("config", "null")) == config:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history = json.loads(state["history"])
        start_epoch = int(state["epoch"])
    t0 = time.perf_counter()
    steps_per_epoch = math.ceil(pairs_per_epoch / batch_size)
    total = epochs * steps_per_epoch
    for epoch in range(start_epoch, epochs):
        rng = np.random.default_rng([seed, epoch])
        ia, ib, y = sample_pairs(patient_ids, study_ids, train_rows, pairs_per_epoch, rng)
        order = rng.permutation(len(y))
        model.train()
        losses = []
        for step in range(steps_per_epoch):
            sel = order[step * batch_size : (step + 1) * batch_size]
            if len(sel) < 2:
                continue
            aug = rng if augment else None
            x = torch.cat(
                [
                    _batch(images, ia[sel], model.in_channels, aug),
                    _batch(images, ib[sel], model.in_channels, aug),
                ]
            )
            x = x.to(dev)
            f = model.forward_once(x)
            logits = model.head(f[: len(sel)], f[len(sel) :])
            loss = loss_fn(logits, torch.from_numpy(y[sel]).to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if progress:
                progress(epoch * steps_per_epoch + step + 1, total, f"re-ID epoch {epoch + 1}/{epochs}")
        metrics = _evaluate(model, images, val, batch_size, dev)
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_auc": metrics["auc"],
                        "val_accuracy": metrics["accuracy"]})  # fmt: skip
        resume.parent.mkdir(parents=True, exist_ok=True)
        tmp = resume.with_name(resume.name + ".tmp")
        torch.save({"epoch": epoch + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "config": json.dumps(config), "history": json.dumps(history)}, tmp)  # fmt: skip
        os.replace(tmp, resume)
    final = history[-1]
    result = {
        **model.config(),
        "out": str(out),
        "train_set": spec,
        "train_key": set_key(image_set),
        "epochs": epochs,
        "seed": seed,
        "lr": lr,
        "train_images": len(train_rows),
        "train_patients": len(np.unique(patient_ids[train_rows])),
        "val_images": len(val_rows),
        "val_patients": len(np.unique(patient_ids[val_rows])),
        "val_pairs": val_pairs,
        "val_auc": final["val_auc"],
        "val_accuracy": final["val_accuracy"],
        "history": history,
        "resumed_from_epoch": start_epoch,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    save_state_dict(
        model.state_dict(), out, metadata={"architecture": result["architecture"], "image_size": size}
    )
    sidecar_path(out).write_text(json.dumps(result, indent=2))
    result["sidecar"] = str(sidecar_path(out))
    resume.unlink(missing_ok=True)
    model.eval()
    return result


# --------------------------------------------------------------------------------------------------
# Scoring synthetic images against their matched training images

CHUNK = 256  # images read and embedded at a time by the re-ID model


def reid_vs_rows(model, train_paths: Sequence[str], items: Sequence, rows: np.ndarray) -> np.ndarray:
    """Re-ID score of each item against training image ``train_paths[rows[i]]`` (its copy-check match).

    Each training image is embedded once however many items match it; a row of -1 (no candidate) gets NaN.
    """
    rows = np.asarray(rows, dtype=np.int64)
    ok = rows >= 0
    out = np.full(len(items), np.nan, dtype=np.float64)
    if not ok.any():
        return out
    uniq = np.unique(rows[ok])
    f_train = _embed_items(model, [str(train_paths[int(r)]) for r in uniq], image_array)
    sel = [items[i] for i in np.flatnonzero(ok)]
    f_syn = _embed_items(model, sel, image_array)
    pos = {int(r): i for i, r in enumerate(uniq)}
    out[ok] = score_pairs(model, f_syn, f_train[[pos[int(r)] for r in rows[ok]]])
    return out


def _embed_items(model, items: Sequence, reader: Callable[[object], np.ndarray]) -> np.ndarray:
    out = []
    for s in range(0, len(items), CHUNK):
        jobs.tick(s, len(items), "re-identification")
        out.append(embed(model, [reader(it) for it in items[s : s + CHUNK]]))
    return np.concatenate(out) if out else np.zeros((0, model.n_features), np.float32)
