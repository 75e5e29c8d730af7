"""Where a Hugging Face encoder's weights come from: ``--weights DIR``, its environment setting, or the HF cache.

One :class:`HubWeights` per encoder (RadDino, DINOv2) says which files a snapshot needs; it finds them without
touching the network, says why when it cannot, and fetches them only when the network is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import settings
from ..settings import is_offline
from .base import hf_cache_dir
from .spec import Availability

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class HubWeights:
    hf_id: str  # "microsoft/rad-dino"
    env: str  # the setting naming a local folder, e.g. CHEXGEN_RADDINO
    needed: tuple[str, ...]  # files a snapshot must hold besides the weights
    how: str  # how to provide them (shown when unavailable)

    def missing(self, folder: Path) -> list[str]:
        missing = [n for n in self.needed if not (folder / n).is_file()]
        if not any((folder / n).is_file() for n in WEIGHT_FILES):
            missing.append(" or ".join(WEIGHT_FILES))
        return missing

    def files(self, folder: Path) -> list[Path]:
        """The snapshot's files that identify it (hashed into the cache key): the needed ones and the weights file
        transformers loads (safetensors wins)."""
        weight = [folder / n for n in WEIGHT_FILES if (folder / n).is_file()][:1]
        return [folder / n for n in self.needed if (folder / n).is_file()] + weight

    def cached_snapshot(self) -> Path | None:
        """The snapshot in the Hugging Face cache, without touching the network."""
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(self.hf_id, cache_dir=hf_cache_dir(), local_files_only=True))
        except Exception:
            return None

    def locate(self, weights: str | Path | None = None) -> tuple[Path | None, str]:
        """(folder, where it came from) or (None, why not)."""
        given = weights or settings.get(self.env)
        if given:
            folder = Path(given).expanduser()
            source = "--weights" if weights else f"${self.env}"
            if not folder.is_dir():
                return None, f"{source} {folder} is not a folder"
            missing = self.missing(folder)
            if missing:
                return None, f"{source} {folder} lacks {', '.join(missing)}"
            return folder, f"{source} {folder}"
        snap = self.cached_snapshot()
        if snap is not None:
            missing = self.missing(snap)
            if not missing:
                return snap, f"Hugging Face cache {snap}"
            return None, f"the cached {self.hf_id} snapshot {snap} lacks {', '.join(missing)}"
        return None, f"{self.hf_id} is not in the Hugging Face cache and no folder was given"

    def check(self, weights: str | Path | None = None) -> Availability:
        """Cheap: looks for the files, builds no model, never touches the network."""
        try:
            import transformers  # noqa: F401
        except ImportError:
            return Availability(False, "transformers is not installed", "pip install transformers")
        folder, why = self.locate(weights)
        if folder is not None:
            return Availability(True, f"weights from {why}")
        if not weights and not settings.get(self.env) and not is_offline():
            return Availability(True, f"{why}; it will be downloaded from the Hub on first use (network allowed)",
                                download=True)
        return Availability(False, why, self.how)

    def folder(self, weights: str | Path | None = None) -> tuple[Path, str]:
        """(snapshot folder, weights id for the cache key); downloads only when :meth:`check` allowed it."""
        folder, _why = self.locate(weights)
        if folder is None:  # only reached online (check() refused otherwise)
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(self.hf_id, cache_dir=hf_cache_dir(),
                                            allow_patterns=[*self.needed, "model.safetensors"]))
        in_cache = "snapshots" in folder.parts and any(p.startswith("models--") for p in folder.parts)
        return folder, f"{self.hf_id}@{folder.name}" if in_cache else f"local folder {folder.name}"
