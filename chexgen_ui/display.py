"""Images for viewing in the app: float [0, 1] -> uint8, and a PACS-style window/level with zoom."""

from __future__ import annotations

import numpy as np


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def window_level(img: np.ndarray, level: float = 0.5, width: float = 1.0, zoom: float = 1.0,
                 min_size: int = 512) -> np.ndarray:
    """Display an image in [0,1] with a window (centre ``level``, ``width``) and a centred zoom (crop factor).

    As on a PACS viewer: values below level - width/2 are black, above level + width/2 white. ``zoom`` 2
    shows the central half of the image, enlarged back to the original size. Images smaller than
    ``min_size`` are enlarged for display (bicubic), so a 64-pixel image is not a thumbnail.
    """
    from PIL import Image

    x = np.asarray(img, dtype=np.float32)
    width = max(float(width), 1e-3)
    lo = float(level) - width / 2
    out = np.clip((x - lo) / width, 0.0, 1.0)
    zoom = max(1.0, float(zoom))
    h, w = out.shape[:2]
    ch, cw = max(1, round(h / zoom)), max(1, round(w / zoom))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = to_uint8(out[top : top + ch, left : left + cw])
    scale = max(1.0, min_size / max(h, w))
    size = (round(w * scale), round(h * scale))
    if crop.shape[:2] == (size[1], size[0]):
        return crop
    return np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BICUBIC))
