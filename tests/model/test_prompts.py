"""The prompt set: built from lss.anatomy, ordered like LEVELS and Structure, split by its slices."""

from __future__ import annotations

import pytest
import torch

from lss.anatomy import LEVELS, Structure
from lss.model.prompts import (
    LEVEL_TEMPLATES,
    STRUCTURE_PHRASES,
    PromptSet,
    default_prompts,
    level_prompts,
    structure_prompts,
)

FOREGROUND = [s for s in Structure if s is not Structure.BACKGROUND]


@pytest.mark.parametrize(
    "kind, example",
    [
        ("canal", "central spinal canal at L4/L5"),
        ("disc", "intervertebral disc at L4/L5"),
    ],
)
def test_level_prompts_follow_levels(kind, example):
    prompts = level_prompts(kind)
    assert len(prompts) == len(LEVELS)
    for level, prompt in zip(LEVELS, prompts, strict=True):
        assert level in prompt
        # no other level's name sneaks into a prompt
        assert all(other not in prompt for other in LEVELS if other != level)
    assert prompts[LEVELS.index("L4/L5")] == example


def test_level_prompts_default_kind_is_canal():
    assert level_prompts() == level_prompts("canal")
    assert set(LEVEL_TEMPLATES) == {"canal", "disc"}


@pytest.mark.parametrize("kind", ["foraminal", "", "CANAL"])
def test_level_prompts_unknown_kind(kind):
    with pytest.raises(ValueError, match=f"unknown level prompt kind {kind!r}"):
        level_prompts(kind)


def test_structure_prompts_follow_structure_without_background():
    prompts = structure_prompts()
    assert len(prompts) == len(FOREGROUND) == len(Structure) - 1
    assert prompts == [STRUCTURE_PHRASES[s] for s in FOREGROUND]
    assert prompts[Structure.VERTEBRAL_BODY.index - 1] == "vertebral body"
    assert prompts[Structure.POSTERIOR_ELEMENTS.index - 1].startswith("posterior elements")
    assert prompts[Structure.DISC.index - 1] == "intervertebral disc"
    assert prompts[Structure.CANAL.index - 1] == "spinal canal and dural sac"
    assert "background" not in " ".join(prompts)


def test_every_foreground_structure_has_a_phrase():
    assert set(STRUCTURE_PHRASES) == set(FOREGROUND)


def test_default_prompts_counts_order_and_slices():
    prompts = default_prompts()
    every = prompts.all()
    assert len(prompts) == len(every) == len(LEVELS) + len(FOREGROUND)
    assert every == level_prompts() + structure_prompts()
    assert every[prompts.level_slice] == list(prompts.levels)
    assert every[prompts.structure_slice] == list(prompts.structures)
    # the slices split an embedding matrix row for row
    embedding = torch.arange(len(every), dtype=torch.float32)[:, None].expand(-1, 4)
    assert embedding[prompts.level_slice].shape == (len(LEVELS), 4)
    assert embedding[prompts.structure_slice].shape == (len(FOREGROUND), 4)
    assert embedding[prompts.structure_slice][0, 0].item() == len(LEVELS)
    assert default_prompts("disc").levels == tuple(level_prompts("disc"))


def test_prompt_set_is_frozen_hashable_and_accepts_lists():
    prompts = PromptSet(levels=["a", "b"], structures=["c"])
    assert prompts.levels == ("a", "b") and prompts.structures == ("c",)
    assert hash(prompts) == hash(PromptSet(levels=("a", "b"), structures=("c",)))
    with pytest.raises(AttributeError):
        prompts.levels = ("x",)


def test_prompt_set_with_an_empty_group():
    prompts = PromptSet(levels=(), structures=("c", "d"))
    assert prompts.level_slice == slice(0, 0)
    assert prompts.all()[prompts.structure_slice] == ["c", "d"]


@pytest.mark.parametrize(
    "levels, structures, error, match",
    [
        ((), (), ValueError, "at least one prompt"),
        (("a", "a"), ("b",), ValueError, r"repeated: \['a'\]"),
        (("a",), ("a",), ValueError, r"repeated: \['a'\]"),
        (("a", "  "), ("b",), ValueError, r"levels\[1\] is blank"),
        (("a",), (3,), TypeError, r"structures\[0\] must be a string"),
        ("abc", ("b",), TypeError, "levels must be a tuple of strings, got str"),
        (("a",), None, TypeError, "structures must be a tuple of strings, got NoneType"),
    ],
)
def test_prompt_set_errors(levels, structures, error, match):
    with pytest.raises(error, match=match):
        PromptSet(levels=levels, structures=structures)
