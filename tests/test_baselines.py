"""Calibration baselines: the reference oracle (fresh demo-world patients) and the copycat (perturbed training images)."""

from __future__ import annotations

import numpy as np
import pytest

from evaluators.demo_world import generate_demo_world
from evaluators.generators import baselines, list_models, load_generator
from evaluators.generators.base import stable_seed
from evaluators.generators.baselines import CopycatGenerator, OracleGenerator, best_matches, prompt_labels
from evaluators.imagesets import load_image_set
from evaluators.pathologies import INDEX

EFFUSION = "Large bilateral pleural effusions."
NORMAL = "No acute cardiopulmonary process."


@pytest.fixture(scope="module")
def train_set(tmp_path_factory):
    world = tmp_path_factory.mktemp("world")
    generate_demo_world(world, patients=24, seed=5, size=64)
    return load_image_set(f"{world}@train")


def test_builtins_listed_as_available():
    rows = {r["name"]: r for r in list_models()}
    for name in (baselines.ORACLE, baselines.COPYCAT):
        assert rows[name]["kind"] == "builtin"
        assert rows[name]["available"], rows[name]["reason"]


def test_oracle_loads_and_is_deterministic_and_batch_invariant():
    gen = load_generator(baselines.ORACLE)
    imgs = gen.generate([EFFUSION, NORMAL, EFFUSION], [3, 3, 4], batch_size=3, height=64, width=64)
    assert all(im.shape == (64, 64) and im.dtype == np.float32 for im in imgs)
    assert all(im.min() >= 0.0 and im.max() <= 1.0 for im in imgs)
    alone = gen.generate([EFFUSION], [3], batch_size=1, height=64, width=64)[0]
    np.testing.assert_array_equal(alone, imgs[0])
    assert not np.array_equal(imgs[0], imgs[2])  # another seed, another patient
    assert not np.array_equal(imgs[0], imgs[1])  # another prompt, another patient
    rect = gen.generate([NORMAL], [1], height=48, width=64)[0]
    assert rect.shape == (48, 64)


def test_oracle_draws_the_prompts_findings():
    """Effusions whiten the lung bases; averaged over patients, the lower third is brighter than normal."""
    gen = OracleGenerator()
    seeds = list(range(8))
    eff = np.stack(gen.generate([EFFUSION], seeds, height=64, width=64))
    nor = np.stack(gen.generate([NORMAL], seeds, height=64, width=64))
    lower = slice(40, 58)
    assert eff[:, lower, 8:56].mean() > nor[:, lower, 8:56].mean() + 0.02
    assert prompt_labels(EFFUSION)[INDEX["Pleural Effusion"]] == 1


def test_oracle_view_from_prompt():
    assert baselines.prompt_view("Portable AP chest radiograph.") == "AP"
    assert baselines.prompt_view("PA and lateral views of the chest.") == "PA"
    assert baselines.prompt_view("Small effusion.") == "PA"


def test_stable_seed_depends_on_prompt_and_seed():
    s = stable_seed("a", 1)
    assert s == stable_seed("a", 1) and 0 <= s < 2**63
    assert len({s, stable_seed("a", 2), stable_seed("b", 1)}) == 3


def test_best_matches_counts_disagreements_blank_as_absent():
    nan = np.nan
    train = np.array([[1, 0, nan], [1, 1, 0], [nan, 0, 0], [1, nan, nan]], dtype=np.float32)
    assert best_matches(np.array([1, nan, nan], np.float32), train).tolist() == [0, 3]
    assert best_matches(np.array([1, 1, nan], np.float32), train).tolist() == [1]


def test_copycat_copies_the_training_image_of_a_training_prompt(train_set):
    """A memoriser: given a training prompt it returns (a light perturbation of) that prompt's own image."""
    gen = CopycatGenerator(source=train_set)
    size = train_set.image(0).shape
    prompts = train_set.prompts[:6]
    outs = gen.generate(prompts, [0] * len(prompts), batch_size=4, height=size[0], width=size[1])
    for prompt, out in zip(prompts, outs, strict=True):
        idx = gen.choose(prompt, 0)
        same_text = [i for i, p in enumerate(train_set.prompts) if p == prompt]
        assert idx in same_text
        src = train_set.image(idx)
        assert np.corrcoef(out.ravel(), src.ravel())[0, 1] > 0.95
        assert not np.array_equal(out, src)  # perturbed, not a bit copy
    # deterministic and batch invariant
    again = gen.generate([prompts[2]], [0], height=size[0], width=size[1])[0]
    np.testing.assert_array_equal(again, outs[2])


def test_copycat_new_prompt_copies_a_best_label_match(train_set):
    gen = CopycatGenerator(source=train_set)
    prompt = "Moderate cardiomegaly with a small right pleural effusion, new since the prior film of 2031."
    assert prompt not in train_set.prompts
    idx = gen.choose(prompt, 0)
    assert idx in best_matches(prompt_labels(prompt), train_set.labels).tolist()


def test_copycat_seed_picks_among_ties(train_set):
    gen = CopycatGenerator(source=train_set)
    picks = {gen.choose(NORMAL, s) for s in range(30)}
    ties = best_matches(prompt_labels(NORMAL), train_set.labels)
    assert picks <= set(ties.tolist())
    if len(ties) > 1:
        assert len(picks) > 1


def test_copycat_default_source_via_registry(monkeypatch, train_set):
    monkeypatch.setenv(baselines.COPYCAT_SOURCE_ENV, f"{train_set.root}@train")
    gen = load_generator(baselines.COPYCAT)
    imgs = gen.generate([EFFUSION, NORMAL], [0, 1])
    assert len(imgs) == 2 and imgs[0].shape == train_set.image(0).shape
