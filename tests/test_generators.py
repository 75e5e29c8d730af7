"""The generator registry and loading path, on tiny random pipelines of every registered architecture.

Each tiny pipeline is saved to disk and registered through an entry FILE, exactly as a user would
register fine-tuned weights, then loaded with ``load_generator`` and run for 2 steps on the CPU.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from evaluators.cli.generate import add_cli
from evaluators.errors import InputError, UnavailableError
from evaluators.generators import (
    Generator,
    availability,
    get_entry,
    list_models,
    load_entries,
    load_generator,
    register_builtin,
    unregister_builtin,
)
from evaluators.generators import generate as gen_mod
from evaluators.generators import pipelines as pipelines_mod
from evaluators.pathologies import PATHOLOGIES
from tests import tiny_pipelines as tiny

ARCHS = list(tiny.BUILDERS)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if value is None:
        raise ValueError("TOML has no null")
    return repr(value)


def _entry(name: str, **fields) -> str:
    lines = ["[[model]]", f"name = {_toml_value(name)}"]
    tables = {k: v for k, v in fields.items() if k == "components"}
    for key, value in fields.items():
        if key not in tables and value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    for cname, spec in tables.get("components", {}).items():
        lines.append(f"[model.components.{cname}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in spec.items()]
    return "\n".join(lines) + "\n"


def _tiny_entry_name(arch: str) -> str:
    return "tiny-" + arch.removesuffix("Pipeline").lower()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Every tiny architecture saved once + one entry file registering them (and a RadEdit composition)."""
    root = tmp_path_factory.mktemp("tiny_models")
    text = ""
    for arch in ARCHS:
        folder = tiny.save(arch, root / arch)
        size = tiny.TINY_SIZE[arch]
        text += _entry(_tiny_entry_name(arch), kind="diffusers", pipeline=arch, weights=str(folder), dtype="fp16",
                       resolution=size, steps=2, guidance=4.0, call_kwargs=tiny.TINY_CALL_KWARGS[arch])
    parts = tiny.radedit_parts(root / "radedit_parts")
    text += _entry(
        "tiny-radedit", kind="diffusers", pipeline="StableDiffusionPipeline", compose=True,
        weights=str(parts["unet"]), resolution=16, steps=2, guidance=7.5, allow_remote_code=True,
        scheduler="DDIMScheduler",
        scheduler_config={"beta_schedule": "linear", "clip_sample": False, "timestep_spacing": "trailing",
                          "steps_offset": 1},
        pipeline_kwargs={"requires_safety_checker": False},
        components={
            "unet": {"class": "UNet2DConditionModel", "subfolder": "unet"},
            "vae": {"class": "AutoencoderKL", "weights": str(parts["vae"])},
            "text_encoder": {"class": "AutoModel", "weights": str(parts["text"]), "remote_code": True},
            "tokenizer": {"class": "AutoTokenizer", "weights": str(parts["text"]), "remote_code": True},
            "safety_checker": {"class": "none"},
            "feature_extractor": {"class": "none"},
        },
    )
    entry_file = root / "tiny.toml"
    entry_file.write_text(text)
    return {"root": root, "file": str(entry_file), "dirs": {a: root / a for a in ARCHS}}


@pytest.fixture(scope="module")
def loaded(tiny_models):
    """Generators loaded once per architecture (loading is the slow part)."""
    cache: dict[str, Generator] = {}

    def get(arch: str) -> Generator:
        if arch not in cache:
            cache[arch] = load_generator(_tiny_entry_name(arch), files=[tiny_models["file"]])
        return cache[arch]

    return get


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


# ----------------------------------------------------------------------------------------------
# The built-in registry


def test_builtin_entries_cover_the_eleven_chexgenbench_models():
    import diffusers

    entries = load_entries(defaults=False)
    expected = {
        "sd-v1-4": "StableDiffusionPipeline", "sd-v1-5": "StableDiffusionPipeline",
        "sd-v2": "StableDiffusionPipeline", "sd-v2-1": "StableDiffusionPipeline",
        "sd-v3-5-medium": "StableDiffusion3Pipeline", "pixart-sigma": "PixArtSigmaPipeline",
        "sana-0.6b": "SanaPipeline", "lumina-2": "Lumina2Pipeline", "flux-1-dev": "FluxPipeline",
        "radedit": "StableDiffusionPipeline", "llm-cxr": None,
    }
    assert set(expected) <= set(entries)
    for name, pipeline in expected.items():
        assert entries[name].pipeline == pipeline
        if pipeline:
            assert hasattr(diffusers, pipeline)
            assert entries[name].kind == "diffusers"
            assert entries[name].paper_source
    assert entries["llm-cxr"].kind == "external" and "import" in entries["llm-cxr"].notes
    # CheXGenBench's settings carried over.
    assert (entries["sana-0.6b"].steps, entries["sana-0.6b"].guidance, entries["sana-0.6b"].dtype) == (20, 4.5, "fp16")
    assert entries["radedit"].steps == 100 and entries["radedit"].components["vae"].weights == "stabilityai/sdxl-vae"
    assert entries["lumina-2"].call_kwargs == {"cfg_trunc_ratio": 0.25, "cfg_normalization": True}
    assert entries["sd-v3-5-medium"].call_kwargs["max_sequence_length"] == 512
    # Labels as on the leaderboard resolve too.
    assert get_entry("Flux.1-Dev").name == "flux-1-dev"


def test_builtin_tiny_architectures_cover_every_registered_pipeline_class():
    classes = {e.pipeline for e in load_entries(defaults=False).values() if e.kind == "diffusers"}
    assert classes <= set(ARCHS)


def test_models_list_reports_missing_weights_offline(empty_hub_cache):
    rows = {r["name"]: r for r in list_models()}
    sd = rows["sd-v1-4"]
    assert sd["available"] is False
    assert "offline" in sd["reason"] and str(empty_hub_cache) in sd["reason"]
    assert "huggingface-cli download CompVis/stable-diffusion-v1-4" in sd["how_to_provide"]
    assert rows["radedit"]["available"] is False and "remote code" in rows["radedit"]["reason"]
    assert rows["llm-cxr"]["available"] is False and "import" in rows["llm-cxr"]["reason"]
    assert rows["sana-0.6b"]["presets"]["steps"] == 20


def test_a_cached_hub_model_counts_as_available(empty_hub_cache):
    snap = empty_hub_cache / "models--CompVis--stable-diffusion-v1-4"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("0123abcd")
    (snap / "snapshots" / "0123abcd").mkdir(parents=True)
    (snap / "snapshots" / "0123abcd" / "model_index.json").write_text("{}")
    av = availability("sd-v1-4")
    assert av.available, av.reason
    assert "Hugging Face cache" in av.reason
    assert not availability("sd-v1-5").available


def test_user_entry_overrides_weights_only(tiny_models, tmp_path, empty_hub_cache):
    # A relative path is resolved against the entry file's folder.
    link = tmp_path / "finetuned"
    link.symlink_to(tiny_models["dirs"]["StableDiffusionPipeline"])
    user = tmp_path / "mine.yaml"
    user.write_text("models:\n  - name: sd-v1-4\n    weights: ./finetuned\n")
    entry = get_entry("sd-v1-4", [user])
    assert entry.weights == str(link.resolve())
    assert entry.pipeline == "StableDiffusionPipeline" and entry.steps == 50  # the rest stays built-in
    assert availability("sd-v1-4", [user]).available
    assert not availability("sd-v1-4").available


def test_entry_files_from_env_and_home(tiny_models, tmp_path, monkeypatch, empty_hub_cache):
    folder = str(tiny_models["dirs"]["StableDiffusionPipeline"])
    env_file = tmp_path / "env.toml"
    env_file.write_text(_entry("from-env", kind="diffusers", pipeline="StableDiffusionPipeline", weights=folder))
    monkeypatch.setenv("CHEXGEN_MODELS", str(env_file))
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "a.toml").write_text(_entry("from-home", kind="diffusers", pipeline="StableDiffusionPipeline",
                                                   weights=folder))
    monkeypatch.setenv("CHEXGEN_HOME", str(home))
    rows = {r["name"]: r for r in list_models()}
    assert rows["from-env"]["available"] and rows["from-home"]["available"]
    assert rows["from-env"]["source"] == str(env_file)


def test_missing_local_weights_are_unavailable_with_reason(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(_entry("ghost", kind="diffusers", pipeline="StableDiffusionPipeline", weights=str(tmp_path / "nope"))
                   + _entry("not-a-pipeline", kind="diffusers", pipeline="StableDiffusionPipeline",
                            weights=str(tmp_path)))
    rows = {r["name"]: r for r in list_models([bad])}
    assert not rows["ghost"]["available"] and "does not exist" in rows["ghost"]["reason"]
    assert not rows["not-a-pipeline"]["available"] and "model_index.json" in rows["not-a-pipeline"]["reason"]
    with pytest.raises(UnavailableError, match="ghost is unavailable"):
        load_generator("ghost", files=[bad])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[[model]]\nname = 'x'\nkind = 'diffusers'\npipeline = 'StableDiffusionPipeline'\nweights = '/a'\nstepz = 3\n",
         "unknown key.*stepz"),
        ("[[model]]\nname = 'x'\nkind = 'diffusers'\npipeline = 'P'\nweights = '/a'\ndtype = 'int8'\n", "'dtype'"),
        ("[[model]]\nname = 'x'\nkind = 'diffusers'\nweights = '/a'\n", "'pipeline'"),
        ("[[model]]\nname = 'x'\nkind = 'magic'\n", "'kind'"),
        ("[[model]]\nname = 'x'\nkind = 'diffusers'\npipeline = 'P'\nweights = '/a'\nsteps = -1\n", "'steps'"),
        ("[[model]\nname = 'x'\n", "not valid TOML"),
        ("[[model]]\nkind = 'diffusers'\n", "no 'name'"),
        ("[[model]]\nname = 'x'\nkind = 'diffusers'\npipeline = 'P'\nweights = '/a'\n[model.lora]\nscale = 1\n",
         "lora.weights"),
    ],
)
def test_bad_entry_file_raises_input_error_naming_file_and_key(tmp_path, text, match):
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as info:
        load_entries([path])
    assert str(path) in str(info.value)


def test_missing_models_file_and_bad_yaml(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_entries([tmp_path / "missing.toml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed\n")
    with pytest.raises(InputError, match=r"bad\.yaml"):
        load_entries([bad])


def test_unknown_pipeline_class_is_an_input_error(tiny_models, tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text(_entry("typo", kind="diffusers", pipeline="StableDifusionPipeline",
                           weights=str(tiny_models["dirs"]["StableDiffusionPipeline"])))
    with pytest.raises(InputError, match="StableDifusionPipeline"):
        load_generator("typo", files=[path])


# ----------------------------------------------------------------------------------------------
# Every architecture through the one loading path


@pytest.mark.parametrize("arch", ARCHS)
def test_each_architecture_loads_and_generates_reproducibly(loaded, arch):
    gen = loaded(arch)
    assert type(gen.pipe).__name__ == arch
    size = tiny.TINY_SIZE[arch]
    batch = gen.generate(["left pleural effusion", "left pleural effusion"], [3, 7], batch_size=2)
    assert len(batch) == 2
    for image in batch:
        assert image.shape == (size, size) and image.dtype == np.float32
        assert image.min() >= 0.0 and image.max() <= 1.0
    alone = gen.generate(["left pleural effusion"], [7], batch_size=1)[0]
    again = gen.generate(["left pleural effusion"], [7], batch_size=1)[0]
    np.testing.assert_array_equal(alone, again)  # same seed -> same image
    np.testing.assert_allclose(batch[1], alone, atol=1e-5)  # batch invariance
    assert np.abs(batch[0] - batch[1]).max() > 1e-4  # another seed -> another image


def test_fp16_entry_runs_in_fp32_on_cpu_unless_asked(loaded):
    gen = loaded("StableDiffusionPipeline")
    assert gen.presets["dtype"] == "fp16"
    assert gen.pipe.unet.dtype == torch.float32


def test_radedit_composition_needs_the_remote_code_switch(tiny_models, monkeypatch):
    files = [tiny_models["file"]]
    monkeypatch.delenv("CHEXGEN_ALLOW_REMOTE_CODE", raising=False)
    av = availability("tiny-radedit", files)
    assert not av.available and "remote code" in av.reason and "CHEXGEN_ALLOW_REMOTE_CODE" in av.how_to_provide
    with pytest.raises(UnavailableError, match="remote code"):
        load_generator("tiny-radedit", files=files)
    monkeypatch.setenv("CHEXGEN_ALLOW_REMOTE_CODE", "1")
    gen = load_generator("tiny-radedit", files=files)
    assert type(gen.pipe.text_encoder).__name__ == "BertModel"
    assert type(gen.pipe.scheduler).__name__ == "DDIMScheduler"
    assert gen.pipe.scheduler.config.timestep_spacing == "trailing"
    a, b = gen.generate(["small effusion"], [0, 1], batch_size=2)
    np.testing.assert_allclose(gen.generate(["small effusion"], [1], batch_size=1)[0], b, atol=1e-5)
    assert a.shape == (16, 16)


def test_scheduler_override_and_call_kwargs_validation(tiny_models, tmp_path):
    folder = str(tiny_models["dirs"]["StableDiffusionPipeline"])
    path = tmp_path / "sched.toml"
    path.write_text(
        _entry("sd-ddim", kind="diffusers", pipeline="StableDiffusionPipeline", weights=folder, steps=2,
               resolution=16, scheduler="DDIMScheduler", scheduler_config={"timestep_spacing": "trailing"})
        + _entry("flux-badkw", kind="diffusers", pipeline="FluxPipeline",
                 weights=str(tiny_models["dirs"]["FluxPipeline"]), call_kwargs={"use_resolution_binning": False})
    )
    gen = load_generator("sd-ddim", files=[path])
    assert type(gen.pipe.scheduler).__name__ == "DDIMScheduler"
    assert gen.pipe.scheduler.config.timestep_spacing == "trailing"
    with pytest.raises(InputError, match="use_resolution_binning"):
        load_generator("flux-badkw", files=[path])


def test_memory_options_apply(tiny_models):
    gen = load_generator("tiny-stablediffusion", files=[tiny_models["file"]], attention_slicing=True, vae_tiling=True)
    assert gen.pipe.vae.use_tiling
    assert len(gen.generate(["x"], [0])) == 1
    with pytest.raises(InputError, match="GPU"):
        load_generator("tiny-stablediffusion", files=[tiny_models["file"]], offload="model", device="cpu")


# ----------------------------------------------------------------------------------------------
# LoRA


@pytest.mark.slow  # importing peft and building the LoRA take ~10 s here
def test_lora_loads_and_changes_the_images(tiny_models, tmp_path, loaded):
    pytest.importorskip("peft")
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = StableDiffusionPipeline.from_pretrained(tiny_models["dirs"]["StableDiffusionPipeline"])
    torch.manual_seed(1)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    lora_dir = tmp_path / "lora"
    StableDiffusionPipeline.save_lora_weights(lora_dir, unet_lora_layers=get_peft_model_state_dict(pipe.unet))
    lora_file = next(lora_dir.glob("*.safetensors"))
    path = tmp_path / "lora.toml"
    base = dict(kind="diffusers", pipeline="StableDiffusionPipeline", steps=2, resolution=16,
                weights=str(tiny_models["dirs"]["StableDiffusionPipeline"]))
    path.write_text(_entry("sd-lora", **base) + f"[model.lora]\nweights = '{lora_file}'\nscale = 1.0\n"
                    + _entry("sd-lora-missing", **base) + f"[model.lora]\nweights = '{tmp_path / 'no.safetensors'}'\n")
    plain = loaded("StableDiffusionPipeline").generate(["effusion"], [0], guidance=7.5)[0]
    with_lora = load_generator("sd-lora", files=[path])
    assert with_lora.generate(["effusion"], [0], guidance=7.5)[0].tolist() != plain.tolist()
    zero = load_generator("sd-lora", files=[path], lora_scale=0.0)
    np.testing.assert_allclose(zero.generate(["effusion"], [0], guidance=7.5)[0], plain, atol=1e-5)
    av = availability("sd-lora-missing", [path])
    assert not av.available and "LoRA" in av.reason


# ----------------------------------------------------------------------------------------------
# Out-of-memory fallback


class _OOMAbove1:
    """Wraps a pipeline; raises CUDA's OOM for batches larger than ``limit``."""

    def __init__(self, pipe, limit: int = 1):
        self.pipe, self.limit, self.sizes = pipe, limit, []

    def __call__(self, **kwargs):
        self.sizes.append(len(kwargs["prompt"]))
        if len(kwargs["prompt"]) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.pipe(**kwargs)


def test_out_of_memory_halves_the_batch_and_says_so(tiny_models):
    gen = load_generator("tiny-stablediffusion", files=[tiny_models["file"]])
    prompts, seeds = ["effusion"] * 5, [0, 1, 2, 3, 4]
    reference = gen.generate(prompts, seeds, batch_size=1)
    real = gen.pipe
    gen.pipe = _OOMAbove1(real, limit=1)
    told: list[str] = []
    images = gen.generate(prompts, seeds, batch_size=4, on_message=told.append)
    assert told[:2] == ["out of memory at batch 4; retrying with 2", "out of memory at batch 2; retrying with 1"]
    assert gen.pipe.sizes[:3] == [4, 2, 1]
    assert max(gen.pipe.sizes[2:]) == 1  # the smaller batch sticks
    for a, b in zip(images, reference):
        np.testing.assert_allclose(a, b, atol=1e-5)
    gen.pipe = _OOMAbove1(real, limit=0)
    with pytest.raises(UnavailableError, match="out of memory with a single"):
        gen.generate(["x"], [0], batch_size=1)


def test_non_oom_errors_are_not_swallowed(tiny_models):
    gen = load_generator("tiny-stablediffusion", files=[tiny_models["file"]])

    def boom(**kwargs):
        raise RuntimeError("shape mismatch")

    gen.pipe = boom
    with pytest.raises(RuntimeError, match="shape mismatch"):
        gen.generate(["x", "y"], [0, 1], batch_size=2)


# ----------------------------------------------------------------------------------------------
# Built-in python models


class _Constant(Generator):
    def _run_batch(self, prompts, seeds, *, steps, guidance, height, width, negative_prompt):
        return np.stack([np.full((height, width), (s % 10) / 10, np.float32) for s in seeds])


def test_register_builtin_model():
    state = {"ready": False}
    register_builtin("const-demo", lambda device, dtype: _Constant("const-demo", device=device),
                     {"steps": 3, "height": 8, "width": 8}, notes="demo",
                     availability=lambda: (state["ready"], "ready" if state["ready"] else "not trained yet"),
                     how_to_provide="python -m evaluators demo train")
    try:
        row = {r["name"]: r for r in list_models()}["const-demo"]
        assert row["kind"] == "builtin" and not row["available"] and row["reason"] == "not trained yet"
        with pytest.raises(UnavailableError, match="not trained yet"):
            load_generator("const-demo")
        state["ready"] = True
        gen = load_generator("const-demo")
        images = gen.generate(["a", "b"], [3, 5])
        assert images[0].shape == (8, 8) and float(images[1][0, 0]) == pytest.approx(0.5)
    finally:
        unregister_builtin("const-demo")
    assert "const-demo" not in load_entries()


# ----------------------------------------------------------------------------------------------
# generate CLI


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_generate_cli_writes_pngs_and_csv_and_resumes(tiny_models, tmp_path, monkeypatch, capsys):
    from PIL import Image

    prompts = tmp_path / "prompts.csv"
    pd.DataFrame({"annotated_prompt": ["Small left pleural effusion.", "Cardiomegaly. No pneumothorax."]}).to_csv(
        prompts, index=False)
    out = tmp_path / "out"
    argv = ["generate", "--model", "tiny-stablediffusion", "--prompts", str(prompts), "--seeds", "0,1",
            "--batch-size", "3", "--out", str(out), "--models-file", tiny_models["file"], "--device", "cpu"]
    assert _run_cli(argv) == 0
    frame = pd.read_csv(out / "generations.csv")
    assert list(frame.columns[:6]) == ["prompt", "img_savename", "seed", "model", "steps", "guidance"]
    assert len(frame) == 4 and set(frame["seed"]) == {0, 1} and set(frame["steps"]) == {2}
    for name in frame["img_savename"]:
        image = Image.open(out / name)
        assert image.size == (16, 16) and image.mode == "L"
    try:
        import evaluators.labeler  # noqa: F401
    except ImportError:
        pass
    else:
        assert frame.loc[0, "Pleural Effusion"] == 1 and frame.loc[2, "Cardiomegaly"] == 1
        # The output folder is an image set with those labels (README: --synthetic OUT_DIR), not a bare folder.
        from evaluators.imagesets import load_image_set

        loaded = load_image_set(out)
        assert loaded.has_labels and len(loaded) == 4
        assert loaded.labels[0][PATHOLOGIES.index("Pleural Effusion")] == 1

    # Resume: nothing left to do -> the model is not even loaded.
    def no_load(*a, **k):
        raise AssertionError("model loaded although every image exists")

    monkeypatch.setattr(pipelines_mod, "load_generator", no_load)
    first = (out / frame["img_savename"][3]).read_bytes()
    assert _run_cli(argv) == 0
    monkeypatch.undo()
    # One image lost -> only that one is regenerated, identical to before.
    (out / frame["img_savename"][3]).unlink()
    calls = []
    real = pipelines_mod.load_generator

    def counting(*a, **k):
        gen = real(*a, **k)
        orig = gen.generate
        gen.generate = lambda p, s, **kw: calls.append(len(p)) or orig(p, s, **kw)
        return gen

    monkeypatch.setattr(pipelines_mod, "load_generator", counting)
    assert _run_cli(argv) == 0
    assert calls == [1]
    assert (out / frame["img_savename"][3]).read_bytes() == first
    # Other settings into the same folder are refused.
    with pytest.raises(InputError, match="other settings"):
        _run_cli([*argv, "--steps", "3"])


def test_generate_cli_for_a_pathology(tiny_models, tmp_path):
    out = tmp_path / "path_out"
    assert _run_cli(["generate", "--model", "tiny-pixartsigma", "--pathology", "effusion", "--n", "2",
                     "--out", str(out), "--models-file", tiny_models["file"], "--device", "cpu"]) == 0
    frame = pd.read_csv(out / "generations.csv")
    assert len(frame) == 2 and frame["prompt"].str.len().min() > 0
    assert (frame["Pleural Effusion"] == 1).all()
    with pytest.raises(InputError, match="prompt column"):
        bad = tmp_path / "bad.csv"
        pd.DataFrame({"x": ["a"]}).to_csv(bad, index=False)
        _run_cli(["generate", "--model", "tiny-pixartsigma", "--prompts", str(bad), "--out", str(out)])


def test_models_cli_lists_availability(tiny_models, capsys, empty_hub_cache):
    assert _run_cli(["models", "--models-file", tiny_models["file"]]) == 0
    text = capsys.readouterr().out
    assert "tiny-stablediffusion" in text and "sd-v1-4" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("sd-v1-4 "))
    assert "unavailable" in line
    line = next(ln for ln in text.splitlines() if ln.startswith("tiny-sana "))
    assert " available" in line


@pytest.mark.slow  # two fresh python processes import torch + diffusers
def test_generate_is_identical_with_two_processes(tiny_models, tmp_path):
    """torchrun with 2 CPU processes splits the prompts; the files equal a single-process run."""
    import subprocess

    prompts = tmp_path / "p.csv"
    pd.DataFrame({"prompt": ["effusion", "edema", "cardiomegaly"]}).to_csv(prompts, index=False)
    common = ["--model", "tiny-stablediffusion", "--prompts", str(prompts), "--seeds", "0,1", "--batch-size", "2",
              "--models-file", tiny_models["file"], "--device", "cpu"]
    one = tmp_path / "one"
    assert _run_cli(["generate", *common, "--out", str(one)]) == 0
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        import argparse
        from evaluators.cli.generate import add_cli
        parser = argparse.ArgumentParser(); add_cli(parser.add_subparsers())
        args = parser.parse_args(sys.argv[1:])
        raise SystemExit(args.func(args))
    """))
    two = tmp_path / "two"
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), "generate", *common, "--out", str(two)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = pd.read_csv(one / "generations.csv"), pd.read_csv(two / "generations.csv")
    pd.testing.assert_frame_equal(a, b)
    for name in a["img_savename"]:
        assert (one / name).read_bytes() == (two / name).read_bytes()


def test_prompt_helpers(tmp_path):
    assert gen_mod.image_name(3, 42) == "img_000003_s42.png"
    prompts = gen_mod.pathology_prompts("Cardiomegaly", 3)
    assert len(prompts) == 3 and all(isinstance(p, str) and p for p in prompts)
    with pytest.raises(InputError):
        gen_mod.pathology_prompts("Not A Disease", 1)
    csv = tmp_path / "e.csv"
    pd.DataFrame({"prompt": ["ok", ""]}).to_csv(csv, index=False)
    with pytest.raises(InputError, match="empty on row"):
        gen_mod.read_prompts(csv)


def test_read_prompts_keeps_one_split_with_its_labels(tmp_path):
    """``metadata.csv@train``: a reference set's training prompts, with that set's own label columns."""
    csv = tmp_path / "metadata.csv"
    pd.DataFrame({"prompt": ["a", "b", "c"], "split": ["train", "test", "Train"],
                  "Cardiomegaly": [1, 0, 0]}).to_csv(csv, index=False)
    prompts, frame = gen_mod.read_prompts(f"{csv}@train")
    assert prompts == ["a", "c"] and list(frame["Cardiomegaly"]) == [1, 0]
    labels = gen_mod._labels_for(prompts, frame, None)
    assert [v[PATHOLOGIES.index("Cardiomegaly")] for v in labels] == [1.0, 0.0]
    assert gen_mod.read_prompts(csv)[0] == ["a", "b", "c"]
    with pytest.raises(InputError, match=r"no split 'valid'.*available splits"):
        gen_mod.read_prompts(f"{csv}@valid")
    bare = tmp_path / "bare.csv"
    pd.DataFrame({"prompt": ["a"]}).to_csv(bare, index=False)
    with pytest.raises(InputError, match="no 'split' column"):
        gen_mod.read_prompts(f"{bare}@train")
