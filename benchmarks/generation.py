"""Images per second of the generators: the demo model and the calibration baselines on CPU at batch sizes
1/4/16, and (only where CUDA is available) the registry's diffusers pipelines in fp16 and bf16.

- ``demo``: the shipped demo diffusion model (``assets/demo_generator/``) at its presets (20 DPM-Solver
  steps, guidance 2.0, 64 px). When its weights are absent, the same architecture with random weights
  runs through the same sampling function (:func:`evaluators.generators.demo.sample`): the cost of a
  denoising step does not depend on the weights; the table says which was timed.
- ``reference-oracle``: renders fresh demo-world patients for the prompt's labels (128 px).
- ``copycat``: a perturbed best-matching training image (source: a 200-image demo world).
- CUDA: every registry pipeline whose weights are on this machine, at its presets (steps, size), in
  fp16 and bf16; pipelines that would need a download are listed as skipped with the reason.
- ``--random-sd15`` (CUDA): SD V1-5's full-size architecture (860M-parameter UNet, KL VAE, CLIP ViT-L
  text encoder, from the published configs) with RANDOM weights, saved with ``save_pretrained`` and
  loaded through the registry (an entry file with the ``sd-v1-5`` entry's settings: 50 PNDM steps,
  guidance 7.5, 512 px), so the registry's loading path and the real model's cost per image are both
  measured where the weights cannot be downloaded. Its images are noise; the table says so.

Each measurement generates ``--images`` images (at least one batch) after one untimed warm-up batch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import _common as C

PROMPTS = (
    "Small left pleural effusion.",
    "No acute cardiopulmonary process.",
    "Cardiomegaly with mild pulmonary edema.",
    "Right lower lobe consolidation concerning for pneumonia.",
)


def _random_demo(device: str = "cpu", dtype=None):
    """The demo generator's architecture with random weights, sampled by the demo module's own function."""
    import torch

    from evaluators.generators import Generator
    from evaluators.generators import demo as demo_mod

    class RandomDemo(Generator):
        def __init__(self) -> None:
            super().__init__("demo (random weights)", {"steps": 20, "guidance": 2.0, "height": demo_mod.RESOLUTION,
                                                       "width": demo_mod.RESOLUTION}, device)
            torch.manual_seed(0)
            self.encoder, self.unet = demo_mod.build_modules()
            self.dtype = dtype or torch.float32
            self.encoder.to(device).eval()
            self.unet.to(device=device, dtype=self.dtype).eval()

        def _run_batch(self, prompts, seeds, *, steps, guidance, height, width, negative_prompt):
            return demo_mod.sample(self.encoder, self.unet, demo_mod.prompt_states(list(prompts)), list(seeds),
                                   steps=steps, guidance=guidance, device=device, dtype=self.dtype)

    return RandomDemo()


def random_sd15(folder: Path, device: str = "cpu") -> Path:
    """An entry file registering ``sd-v1-5-random``: SD V1-5's architecture with random weights in ``folder``.

    Configs are those of stable-diffusion-v1-5 (UNet: diffusers' defaults with 768-d cross-attention and
    64-px latents; VAE: 4 blocks of 128-512 channels; CLIP ViT-L/14 text encoder, 77 tokens). The
    tokenizer is the tests' character-level CLIP tokenizer: tokenizing costs nothing next to 50 UNet steps.
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from evaluators.generators.registry import get_entry
    from tests.tiny_pipelines import clip_tokenizer

    if not (folder / "model_index.json").is_file():
        torch.manual_seed(0)
        tok = clip_tokenizer(max_length=77)
        with torch.device(device):  # random init on the GPU takes seconds, on a CPU about a minute
            unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)
            vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                                up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                                sample_size=512)
            text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                                num_hidden_layers=12, num_attention_heads=12,
                                                max_position_embeddings=77, hidden_act="quick_gelu",
                                                projection_dim=768, bos_token_id=0, eos_token_id=1, pad_token_id=1))
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
            scheduler=PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                    skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.to(torch.float16).save_pretrained(folder)
        del pipe
    ref = get_entry("sd-v1-5")
    entry = folder.parent / "sd15_random.toml"
    entry.write_text(
        "[[model]]\n"
        'name = "sd-v1-5-random"\n'
        'label = "SD V1-5 architecture, RANDOM weights"\n'
        'kind = "diffusers"\n'
        'pipeline = "StableDiffusionPipeline"\n'
        f'weights = "{folder}"\n'
        f'dtype = "{ref.dtype}"\n'
        f"resolution = {ref.presets['height']}\n"
        f"steps = {ref.steps}\n"
        f"guidance = {ref.guidance}\n"
        'components = { safety_checker = "none", feature_extractor = "none" }\n'
        "pipeline_kwargs = { requires_safety_checker = false }\n", encoding="utf-8")
    return entry


def cpu_generators() -> list[tuple[str, object, str]]:
    """(name, generator, note) for the CPU table; unavailable ones come back with generator None."""
    from evaluators.generators import demo as demo_mod
    from evaluators.generators import load_generator
    from evaluators.generators.baselines import CopycatGenerator

    out: list[tuple[str, object, str]] = []
    ok, reason = demo_mod.availability()
    if ok:
        out.append(("demo", load_generator("demo"), "shipped weights"))
    else:
        out.append(("demo", _random_demo(), f"RANDOM weights, same architecture ({reason})"))
    try:
        out.append(("reference-oracle", load_generator("reference-oracle"), "renders demo-world patients"))
    except Exception as exc:  # reported, not fatal: the table says why
        out.append(("reference-oracle", None, f"unavailable: {exc}"))
    try:
        out.append(("copycat", CopycatGenerator(source=C.demo_images(200, seed=0)), "source: 200-image demo world"))
    except Exception as exc:
        out.append(("copycat", None, f"unavailable: {exc}"))
    return out


def time_generator(gen, batch_size: int, n_images: int, steps: int | None = None) -> tuple[float, int]:
    """(seconds, images) for ``n_images`` images (rounded up to whole batches) after a warm-up batch."""
    n = max(n_images, batch_size)
    n = -(-n // batch_size) * batch_size
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
    gen.generate(prompts[:batch_size], list(range(batch_size)), batch_size=batch_size, steps=steps)
    t0 = time.perf_counter()
    gen.generate(prompts, list(range(1000, 1000 + n)), batch_size=batch_size, steps=steps)
    return time.perf_counter() - t0, n


def cuda_rows(batch_sizes: list[int], n_images: int, steps: int | None, files=()) -> list[list[object]]:
    """The registry's pipelines (and those of entry ``files``) on CUDA in fp16/bf16, where the weights are here."""
    import torch

    from evaluators.generators import list_models, load_generator

    rows: list[list[object]] = []
    names = ["demo"] + [m["name"] for m in list_models(files) if m.get("kind") == "diffusers"]
    for name in names:
        for dtype in ("fp16", "bf16"):
            try:
                gen = load_generator(name, device="cuda", dtype=dtype, files=files)
            except Exception as exc:  # unavailable weights, a download that is not allowed, ...
                rows.append([name, f"cuda {dtype}", "-", "-", "-", f"skipped: {str(exc)[:120]}"])
                break
            print(f"{name} cuda {dtype}: loaded", file=sys.stderr, flush=True)
            torch.cuda.reset_peak_memory_stats()  # the peak of this model alone (not of what was built before)
            for b in batch_sizes:
                try:
                    torch.cuda.synchronize()
                    sec, n = time_generator(gen, b, n_images, steps)
                    torch.cuda.synchronize()
                    rows.append([name, f"cuda {dtype}", b, n / sec, 1000 * sec / n,
                                 f"{gen.presets.get('steps')} steps, {gen.presets.get('height')} px; "
                                 f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"])
                except Exception as exc:
                    rows.append([name, f"cuda {dtype}", b, "-", "-", f"failed: {str(exc)[:120]}"])
                print("| " + " | ".join(str(c) for c in rows[-1]) + " |", file=sys.stderr, flush=True)  # partial runs
            del gen
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16])
    ap.add_argument("--images", type=int, default=16, help="images per measurement (default 16)")
    ap.add_argument("--steps", type=int, default=None, help="override the models' preset step counts")
    ap.add_argument("--models", type=lambda s: s.split(","), default=None,
                    help="subset of demo,reference-oracle,copycat (default all)")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU table (on a GPU machine)")
    ap.add_argument("--random-sd15", action="store_true",
                    help="on CUDA, also time SD V1-5's full-size architecture with random weights")
    args = ap.parse_args(argv)
    import torch

    C.print_header("Generation speed")
    rows: list[list[object]] = []
    for name, gen, note in [] if args.no_cpu else cpu_generators():
        if args.models and name not in args.models:
            continue
        if gen is None:
            rows.append([name, "cpu fp32", "-", "-", "-", note])
            continue
        for b in args.batch_sizes:
            sec, n = time_generator(gen, b, args.images, args.steps)
            steps = args.steps or gen.presets.get("steps")
            rows.append([name, "cpu fp32", b, n / sec, 1000 * sec / n,
                         f"{note}; {steps} steps, {gen.presets.get('height')} px (load {C.loadavg()})"])
            print(f"{name} batch {b}: {n / sec:.2f} images/s", file=sys.stderr, flush=True)
    if torch.cuda.is_available():
        files = [random_sd15(Path(tempfile.mkdtemp(prefix="chexgen-sd15-")) / "sd15", "cuda")] if args.random_sd15 else []
        rows += cuda_rows(args.batch_sizes, args.images, args.steps, files)
    else:
        print("CUDA not available: the registry's fp16/bf16 pipelines were not timed (code path: cuda_rows).\n")
    print(C.markdown_table(["model", "device / dtype", "batch", "images / s", "ms / image", "notes"], rows))
    print(f"\nload average at the end: {C.loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
