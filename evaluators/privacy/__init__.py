"""Privacy of synthetic chest X-rays: patient re-identification, distances to training images, memorisation.

- :mod:`.reid`: the CheXGenBench siamese re-identification network (load, score, train).
- :mod:`.distances`: pixel and latent distances between a generated image and training images.
- :mod:`.memorisation`: nearest-training-image search, a threshold calibrated on held-out patients,
  and the privacy summary (re-ID scores and flags, overall and per pathology).
- :mod:`.perturb`: the light changes (shift, crop, brightness, noise, JPEG) a copy detector must survive.
- :mod:`.reid_choice`: which re-ID model scores a training set (the demo model only on the demo world), its AUC on
  that set's held-out patients, and the re-ID threshold of a "same patient" verdict.
- :mod:`.verdict`: one verdict per image (memorised / same patient / new), a pure function.
- :mod:`.evidence`: a synthetic image beside its matched training image, aligned, and their difference.

Modules are imported on use so that ``import evaluators.privacy`` stays light (no torch).
"""

from __future__ import annotations

REID_THRESHOLD = 0.5
"""A re-ID score above this counts as re-identified (CheXGenBench's rule)."""

__all__ = ["REID_THRESHOLD"]
