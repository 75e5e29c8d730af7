"""``radiomics``: the radiomic features of FRD v1 (Konz, Osuala et al., "Fréchet Radiomic Distance"), per image.

No model weights: PyRadiomics (``pyradiomics-bhklab==3.1.4`` here, the maintained fork that builds on
Python >= 3.10) computes first-order, GLCM, GLRLM, GLSZM and NGTDM features on the original image,
four Laplacian-of-Gaussian images (sigma 2-5) and the eight wavelet images, with the settings of
``frd_score/configs/extraction_2d.yaml`` (``frd-score==1.0.1``): intensities normalised (scale 100,
shift 300), B-spline resampling to 2 px spacing, bin width 5, the whole image as the region of interest
(one corner pixel left out, frd-score's workaround of a PyRadiomics bug). As frd-score, the numeric
PyRadiomics diagnostics are kept in the vector (paper-exact FRD v1). The vector is the *raw* features;
the FRD normalisation (z-score w.r.t. the reference set) belongs to the metric
(:func:`evaluators.metrics.frd.frd`), so the cached features serve any reference set.

Input: the canonical image (float32 in [0, 1]) times 255, i.e. the 0..255 values frd-score reads
from an 8-bit PNG, at the image's own size (frd-score's default: no resize). The images of one batch
must share a size. Cost: ~0.2 s per image on one CPU core (see ``benchmarks/frd_cost.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging

import numpy as np
import torch

from ..errors import InputError
from .base import Encoder, as_gray, library_versions
from .registry import Availability, EncoderSpec, register_encoder

NAME = "radiomics"
GLCM_FEATURES = ["Autocorrelation", "JointAverage", "ClusterProminence", "ClusterShade", "ClusterTendency",
                 "Contrast", "Correlation", "DifferenceAverage", "DifferenceEntropy", "DifferenceVariance",
                 "JointEnergy", "JointEntropy", "Imc1", "Imc2", "Idm", "Idmn", "Id", "Idn", "InverseVariance",
                 "MaximumProbability", "SumEntropy", "SumSquares"]
PARAMS = {  # frd-score 1.0.1 configs/extraction_2d.yaml (FRD v1, 2-D)
    "imageType": {"Original": {}, "LoG": {"sigma": [2.0, 3.0, 4.0, 5.0]}, "Wavelet": {}},
    "featureClass": {"firstorder": None, "glcm": GLCM_FEATURES, "glrlm": None, "glszm": None, "ngtdm": None},
    "setting": {"normalize": True, "normalizeScale": 100, "interpolator": "sitkBSpline",
                "resampledPixelSpacing": [2, 2, 0], "padDistance": 10, "preCrop": True, "force2D": True,
                "force2Ddimension": 0, "binWidth": 5, "voxelArrayShift": 300, "label": 1},
}
HOW = "pip install pyradiomics-bhklab==3.1.4 (sdist, builds in ~25 s; the index's pyradiomics <= 3.1.0 does not " \
      "build on Python >= 3.10)"


def check(weights=None) -> Availability:
    if importlib.util.find_spec("radiomics") is None:
        return Availability(False, "PyRadiomics is not installed", HOW)
    return Availability(True, "PyRadiomics installed (no weights needed)")


def extractor():
    """A PyRadiomics extractor with FRD v1's 2-D settings (PyRadiomics' logging silenced)."""
    try:
        import radiomics
        from radiomics import featureextractor
    except ImportError as exc:
        from ..errors import UnavailableError

        raise UnavailableError(f"radiomics encoder: PyRadiomics is not importable ({exc}); {HOW}.") from exc
    radiomics.setVerbosity(60)
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    return featureextractor.RadiomicsFeatureExtractor(json.loads(json.dumps(PARAMS)))


def extract(ext, img255: np.ndarray) -> dict[str, float]:
    """frd-score's per-image v1 extraction: name -> value (features, then numeric diagnostics, in order)."""
    import SimpleITK as sitk

    arr = np.ascontiguousarray(img255, dtype=np.float32)[None]  # (1, H, W): frd-score's 2-D -> 3-D step
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((1.0, 1.0, 1.0))
    mask = np.ones(arr.shape, dtype=np.uint8)
    mask[0, 0, 0] = 0
    sitk_mask = sitk.GetImageFromArray(mask)
    sitk_mask.SetSpacing((1.0, 1.0, 1.0))
    out = ext.execute(image, sitk_mask)
    values: dict[str, float] = {}
    for key, val in out.items():
        if "diagnostics" not in key:
            values[key.replace("original_", "")] = float(val)
        else:
            with contextlib.suppress(TypeError, ValueError):  # string diagnostics are skipped
                values[key] = float(val)
    return values


class RadiomicsPreprocess:
    """float32 [H, W] in [0, 1] -> [1, H, W] in 0..255 (no resize)."""

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(as_gray(img) * np.float32(255.0)).unsqueeze(0)


class RadiomicsEncoder(Encoder):
    name = NAME
    input_size = 0  # native size
    outputs = ("features",)
    normalisation = "none (raw PyRadiomics values; FRD z-scores them against the reference set)"
    weights_id = "none"

    def __init__(self, device: str = "cpu", dtype: str = "float32"):
        if not str(device).startswith("cpu"):
            device = "cpu"  # PyRadiomics runs on the CPU only
        super().__init__(None, RadiomicsPreprocess(), device=device, dtype="float32")
        self.ext = extractor()
        probe = extract(self.ext, (np.indices((32, 32)).sum(0) % 7 * 30).astype(np.float32))
        self.feature_names = list(probe)
        self.dim = len(self.feature_names)
        self.feature_key = f"FRD v1 radiomic features ({self.dim}: features + numeric diagnostics)"

    def _forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = []
        for img in batch[:, 0].numpy():
            vals = extract(self.ext, img)
            if list(vals) != self.feature_names:
                raise InputError(f"radiomics encoder: PyRadiomics returned {len(vals)} features, expected "
                                 f"{self.dim}; the image ({img.shape}) may be too small for the filters.")
            rows.append([vals[k] for k in self.feature_names])
        return {"features": torch.tensor(np.asarray(rows, dtype=np.float64), dtype=torch.float32)}

    def libraries(self) -> dict[str, str]:
        return library_versions("pyradiomics-bhklab", "pyradiomics", "SimpleITK")

    def extra_metadata(self) -> dict:
        settings = json.dumps(PARAMS, sort_keys=True)
        return {"radiomics_settings_sha256": hashlib.sha256(settings.encode()).hexdigest()[:16],
                "feature_names": self.feature_names, "input": "image * 255 at native size"}


def load(weights=None, device: str = "cpu", dtype: str = "float32") -> RadiomicsEncoder:
    return RadiomicsEncoder(device=device, dtype=dtype)


SPEC = EncoderSpec(
    name=NAME,
    description="FRD v1 radiomic features (PyRadiomics: first order + texture on original, LoG and wavelet "
                "images; no weights; ~0.2 s per image on one core)",
    loader=load,
    dim=398,  # with pyradiomics-bhklab 3.1.4 (features + numeric diagnostics); the loaded encoder counts its own
    check=check,
)

register_encoder(SPEC)
