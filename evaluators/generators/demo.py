"""The embedded demo generator: a small label-conditioned pixel diffusion model trained on the demo world.

Design (documented choices):

- **Text encoder = rule labeler + learned label-token embeddings.** A prompt goes through
  :func:`evaluators.labeler.label_report` to the 14 CheXpert values; each label becomes one token
  (label id x state, state in {positive, negative, uncertain, blank}), embedded by a table trained with
  the UNet from scratch. A fifth state, "null", replaces every token for the unconditional branch of
  classifier-free guidance (conditioning dropped for 10% of training samples). Wording the labeler
  does not turn into labels (view, side, size) does not reach the model.
- **UNet**: diffusers ``UNet2DConditionModel`` in pixel space on 64 x 64 x 1 images seen through a
  2 x 2 space-to-depth patching (``pixel_unshuffle``: 32 x 32 x 4 in and out), channels (32, 64, 128),
  cross-attention only at the 8 x 8 level. The patching was forced by the shared CPU: the un-patched
  64 px UNet of FACTS.md ran at ~17 s per batch-16 step under the machine's load, too slow to train.
- **Noise**: DDPM training (1000 steps, cosine betas, v-prediction); sampling with
  DPMSolverMultistep (20 steps by default), deterministic given the seed.
- **Output**: 64 x 64 float32 in [0, 1]. Another requested height/width is a bicubic resize of the
  64 px sample (the metrics resize anyway); the demo world can be built at 64 px to match.
- **Seeds**: the initial noise of (prompt, seed) is drawn alone from a ``torch.Generator`` seeded with
  a stable hash of both (:func:`evaluators.generators.base.stable_seed`), so an image is the same alone
  or in a batch (up to float rounding of batched convolutions, ~1e-6). The prompt is in the hash because
  the text encoder keeps only the 14 labels: with the seed alone, differently worded prompts with the
  same labels gave identical images (a prompt file run with seed 0 duplicated about a quarter of its
  images), where a model that reads the wording gives different ones.

Weights live in ``assets/demo_generator/`` (``model.safetensors`` fp16 + ``config.json``), written by
``scripts/train_demo_generator.py``; ``CHEXGEN_DEMO_GENERATOR`` points at another folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .. import jobs, settings
from ..errors import InputError, UnavailableError
from ..pathologies import N_LABELS
from .base import Generator, stable_seed

NAME = "demo"
WEIGHTS_ENV = "CHEXGEN_DEMO_GENERATOR"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATES = ("positive", "negative", "uncertain", "blank", "null")
NULL_STATE = STATES.index("null")
RESOLUTION = 64

PATCH = 2  # space-to-depth: the UNet sees 64 x 64 x 1 as 32 x 32 x 4 (4x less compute, same pixels)
UNET_CONFIG: dict[str, Any] = {
    "sample_size": RESOLUTION // PATCH,
    "in_channels": PATCH * PATCH,
    "out_channels": PATCH * PATCH,
    "layers_per_block": 1,
    "block_out_channels": [32, 64, 128],
    "down_block_types": ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "cross_attention_dim": 128,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
}
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "v_prediction",
    "clip_sample": False,
}


def weights_dir() -> Path:
    """Where the demo generator's weights are read from (env override, else the shipped assets)."""
    env = settings.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    from ..settings import assets_dir

    return assets_dir() / "demo_generator"


def label_states(labels: np.ndarray) -> np.ndarray:
    """[..., 14] CheXpert values (1, 0, -1, NaN) -> int64 state ids (0 pos, 1 neg, 2 unc, 3 blank)."""
    arr = np.asarray(labels, dtype=np.float32)
    out = np.full(arr.shape, STATES.index("blank"), dtype=np.int64)
    out[arr == 1] = STATES.index("positive")
    out[arr == 0] = STATES.index("negative")
    out[arr == -1] = STATES.index("uncertain")
    return out


def prompt_states(prompts: list[str]) -> np.ndarray:
    """Prompts -> [B, 14] state ids through the rule labeler (the 'tokenizer' of this model)."""
    from ..labeler import label_report

    return np.stack([label_states(label_report(p)) for p in prompts]) if prompts else np.zeros((0, N_LABELS), np.int64)


def build_modules(config: dict[str, Any] | None = None):
    """(label encoder, UNet) from a config dict (defaults: this module's sizes); torch imported here."""
    import torch
    from diffusers import UNet2DConditionModel

    cfg = dict(config or {})
    unet_cfg = {**UNET_CONFIG, **cfg.get("unet", {})}
    dim = int(unet_cfg["cross_attention_dim"])

    class LabelTokenEncoder(torch.nn.Module):
        """14 label tokens: embedding of (label id, state) plus a per-label position embedding."""

        def __init__(self) -> None:
            super().__init__()
            self.state = torch.nn.Embedding(N_LABELS * len(STATES), dim)
            self.position = torch.nn.Parameter(torch.zeros(N_LABELS, dim))
            self.norm = torch.nn.LayerNorm(dim)
            torch.nn.init.normal_(self.state.weight, std=0.5)
            torch.nn.init.normal_(self.position, std=0.1)

        def forward(self, states: torch.Tensor) -> torch.Tensor:
            ids = torch.arange(N_LABELS, device=states.device) * len(STATES) + states
            return self.norm(self.state(ids) + self.position)

    return LabelTokenEncoder(), UNet2DConditionModel(**unet_cfg)


def make_scheduler(kind: str = "dpm", config: dict[str, Any] | None = None):
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    cfg = {**SCHEDULER_CONFIG, **(config or {})}
    if kind == "ddpm":
        return DDPMScheduler(**cfg)
    if kind == "ddim":
        return DDIMScheduler(**cfg)
    cfg.pop("clip_sample", None)
    return DPMSolverMultistepScheduler(**cfg)


def sample(encoder, unet, states: np.ndarray, seeds: list[int], *, steps: int, guidance: float,
           scheduler_config: dict[str, Any] | None = None, device: str = "cpu", dtype=None) -> np.ndarray:
    """Denoise one 64 px image per row of ``states`` (with seed noise); returns [B, 64, 64] in [0, 1]."""
    import torch

    dtype = dtype or torch.float32
    patch = round(unet.config.in_channels**0.5)
    size = int(unet.config.sample_size) * patch
    noise = torch.cat([torch.randn((1, 1, size, size), generator=torch.Generator().manual_seed(int(s)))
                       for s in seeds]).to(device=device, dtype=dtype)
    noise = torch.nn.functional.pixel_unshuffle(noise, patch)
    sched = make_scheduler("dpm", scheduler_config)
    sched.set_timesteps(int(steps), device=device)
    cond_states = torch.as_tensor(states, dtype=torch.long, device=device)
    with torch.inference_mode():
        cond = encoder(cond_states).to(dtype)
        if guidance != 1.0:
            null = encoder(torch.full_like(cond_states, NULL_STATE)).to(dtype)
            context = torch.cat([null, cond])
        else:
            context = cond
        x = noise * sched.init_noise_sigma
        for t in sched.timesteps:
            jobs.check()  # a cancelled job stops between denoising steps
            inp = sched.scale_model_input(torch.cat([x, x]) if guidance != 1.0 else x, t)
            out = unet(inp, t, encoder_hidden_states=context).sample
            if guidance != 1.0:
                uncond, cnd = out.chunk(2)
                out = uncond + guidance * (cnd - uncond)
            x = sched.step(out, t, x).prev_sample
    x = torch.nn.functional.pixel_shuffle(x, patch)
    img = (x.float().clamp(-1, 1) + 1) / 2
    return img[:, 0].cpu().numpy().astype(np.float32)


def _resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """The project's one resize (PIL bicubic on float images) when another size is asked for."""
    if images.shape[1:] == (height, width):
        return images
    from ..imageio import resize

    return np.stack([resize(im, (width, height)) for im in images])


class DemoGenerator(Generator):
    """The trained demo model (see the module docstring)."""

    def __init__(self, folder: Path, *, device: str = "cpu", dtype=None) -> None:
        import torch
        from safetensors.torch import load_file

        super().__init__(NAME, {"steps": 20, "guidance": 2.0, "height": RESOLUTION, "width": RESOLUTION},
                         device)
        cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        try:
            self.config = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UnavailableError(f"demo generator: cannot read {cfg_path} ({exc}); retrain with "
                                   "python scripts/train_demo_generator.py.") from exc
        self.encoder, self.unet = build_modules(self.config)
        state = load_file(str(w_path))
        enc = {k.removeprefix("encoder."): v.float() for k, v in state.items() if k.startswith("encoder.")}
        unet = {k.removeprefix("unet."): v.float() for k, v in state.items() if k.startswith("unet.")}
        try:
            self.encoder.load_state_dict(enc)
            self.unet.load_state_dict(unet)
        except RuntimeError as exc:
            raise UnavailableError(f"demo generator: {w_path} does not match {cfg_path} ({exc}).") from exc
        self.dtype = dtype if dtype is not None else torch.float32
        self.encoder.to(device).eval()
        self.unet.to(device).eval()
        if self.dtype != torch.float32:
            self.unet.to(dtype=self.dtype)
        self.presets.update(self.config.get("presets", {}))

    def _run_batch(self, prompts, seeds, *, steps, guidance, height, width, negative_prompt):
        noise_seeds = [stable_seed(p, s, NAME) for p, s in zip(prompts, seeds, strict=True)]
        images = sample(self.encoder, self.unet, prompt_states(list(prompts)), noise_seeds, steps=steps,
                        guidance=guidance, scheduler_config=self.config.get("scheduler"), device=self.device,
                        dtype=self.dtype)
        return _resize(images, int(height), int(width))


def availability() -> tuple[bool, str]:
    folder = weights_dir()
    missing = [f for f in (WEIGHTS_FILE, CONFIG_FILE) if not (folder / f).is_file()]
    if missing:
        return False, f"demo generator weights not found in {folder} (missing {', '.join(missing)})"
    return True, f"trained demo model in {folder}"


def load_demo(device: str = "cpu", dtype=None, **_: Any) -> DemoGenerator:
    ok, reason = availability()
    if not ok:
        raise UnavailableError(f"{reason}; train it with python scripts/train_demo_generator.py.")
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise InputError("device cuda requested but no GPU is visible; use --device cpu.")
    return DemoGenerator(weights_dir(), device=device, dtype=dtype)


def register() -> None:
    from .registry import register_builtin

    register_builtin(
        NAME, load_demo, {"steps": 20, "guidance": 2.0, "resolution": RESOLUTION},
        label="Demo (64 px, trained on the demo world)",
        notes="Small label-conditioned pixel diffusion model (~4.3M params) trained on the demo world's train "
              "split. Text encoder = rule labeler + learned label-token embeddings: only the 14 CheXpert labels "
              "the labeler reads from the prompt condition the image. Output 64 px.",
        availability=availability,
        how_to_provide="python scripts/train_demo_generator.py (writes assets/demo_generator/)",
    )


register()
