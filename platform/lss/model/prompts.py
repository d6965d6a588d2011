"""The fixed text prompts of the vision-language model, built from ``lss.anatomy``.

Two groups of prompts query the image features:

- one prompt per graded disc level (``anatomy.LEVELS`` order), e.g. "central spinal canal at L4/L5", whose
  attention maps localise the level for grading;
- one prompt per foreground segmentation structure (``anatomy.Structure`` order, background skipped), e.g.
  "intervertebral disc", one per segmentation channel after the background.

``PromptSet`` keeps both groups in one ordered list, so the model embeds them in one call and splits the
embedding matrix with ``level_slice`` and ``structure_slice``::

    prompts = default_prompts()
    text = encoder.embed(prompts.all())            # (P, dim)
    level_text = text[prompts.level_slice]         # (len(LEVELS), dim)
    structure_text = text[prompts.structure_slice]  # (number of foreground structures, dim)
"""

from __future__ import annotations

from dataclasses import dataclass

from lss.anatomy import LEVELS, Structure

__all__ = [
    "LEVEL_TEMPLATES",
    "STRUCTURE_PHRASES",
    "level_prompts",
    "structure_prompts",
    "PromptSet",
    "default_prompts",
]

# kind -> template of a level prompt; "{level}" is replaced by a level name of ``anatomy.LEVELS``.
LEVEL_TEMPLATES: dict[str, str] = {
    "canal": "central spinal canal at {level}",
    "disc": "intervertebral disc at {level}",
}

# Foreground structure -> its prompt. The vertebra is two structures, its body and its posterior elements; the
# canal label holds the dural sac and its contents (see ``anatomy.to_structure_mask``).
STRUCTURE_PHRASES: dict[Structure, str] = {
    Structure.VERTEBRAL_BODY: "vertebral body",
    Structure.POSTERIOR_ELEMENTS: "posterior elements of the vertebra (pedicles, laminae, spinous process)",
    Structure.DISC: "intervertebral disc",
    Structure.CANAL: "spinal canal and dural sac",
}


def level_prompts(kind: str = "canal") -> list[str]:
    """One prompt per graded level, in ``anatomy.LEVELS`` order (cranial to caudal).

    Args:
        kind: which template to use: "canal" ("central spinal canal at L4/L5") or "disc"
            ("intervertebral disc at L4/L5").

    Returns:
        ``len(LEVELS)`` prompts; prompt ``i`` names ``LEVELS[i]``.

    Raises:
        ValueError: when ``kind`` is not a key of ``LEVEL_TEMPLATES``.
    """
    if kind not in LEVEL_TEMPLATES:
        raise ValueError(f"unknown level prompt kind {kind!r}; expected one of {sorted(LEVEL_TEMPLATES)}.")
    template = LEVEL_TEMPLATES[kind]
    return [template.format(level=level) for level in LEVELS]


def structure_prompts() -> list[str]:
    """One prompt per foreground segmentation structure, in ``anatomy.Structure`` order (background skipped).

    Prompt ``i`` belongs to segmentation channel ``i + 1`` (channel 0 is the background).

    Raises:
        KeyError: when ``anatomy.Structure`` has a foreground member without a phrase in ``STRUCTURE_PHRASES``.
    """
    prompts = []
    for structure in Structure:
        if structure is Structure.BACKGROUND:
            continue
        if structure not in STRUCTURE_PHRASES:
            raise KeyError(
                f"no prompt for structure {structure!r}; add one to lss.model.prompts.STRUCTURE_PHRASES."
            )
        prompts.append(STRUCTURE_PHRASES[structure])
    return prompts


def _as_prompt_tuple(value: object, field: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise TypeError(f"PromptSet.{field} must be a tuple of strings, got {type(value).__name__}: {value!r}.")
    for i, prompt in enumerate(value):
        if not isinstance(prompt, str):
            raise TypeError(f"PromptSet.{field}[{i}] must be a string, got {type(prompt).__name__}: {prompt!r}.")
        if not prompt.strip():
            raise ValueError(f"PromptSet.{field}[{i}] is blank: {prompt!r}.")
    return tuple(value)


@dataclass(frozen=True)
class PromptSet:
    """The ordered prompts of the model: the level prompts first, then the structure prompts.

    Attributes:
        levels: one prompt per graded level (``anatomy.LEVELS`` order in ``default_prompts``).
        structures: one prompt per foreground segmentation structure (``anatomy.Structure`` order, no background).

    Raises:
        TypeError: when a group is not a tuple/list of strings.
        ValueError: when a prompt is blank, a prompt appears twice, or both groups are empty.
    """

    levels: tuple[str, ...]
    structures: tuple[str, ...]

    def __post_init__(self) -> None:
        # Lists are accepted and stored as tuples, so a PromptSet stays hashable and immutable.
        object.__setattr__(self, "levels", _as_prompt_tuple(self.levels, "levels"))
        object.__setattr__(self, "structures", _as_prompt_tuple(self.structures, "structures"))
        every = self.levels + self.structures
        if not every:
            raise ValueError("PromptSet needs at least one prompt; levels and structures are both empty.")
        duplicates = sorted({p for p in every if every.count(p) > 1})
        if duplicates:
            raise ValueError(f"PromptSet prompts must be distinct; repeated: {duplicates}.")

    def all(self) -> list[str]:
        """Every prompt, levels first then structures: the rows of the embedding matrix."""
        return [*self.levels, *self.structures]

    @property
    def level_slice(self) -> slice:
        """Rows of the level prompts in ``all()``: ``embedding[level_slice]`` is (len(levels), dim)."""
        return slice(0, len(self.levels))

    @property
    def structure_slice(self) -> slice:
        """Rows of the structure prompts in ``all()``: ``embedding[structure_slice]`` is (len(structures), dim)."""
        return slice(len(self.levels), len(self.levels) + len(self.structures))

    def __len__(self) -> int:
        return len(self.levels) + len(self.structures)


def default_prompts(kind: str = "canal") -> PromptSet:
    """The model's prompt set: ``level_prompts(kind)`` then ``structure_prompts()``.

    Args:
        kind: level prompt template, see ``level_prompts``.

    Raises:
        ValueError: when ``kind`` is unknown.
    """
    return PromptSet(levels=tuple(level_prompts(kind)), structures=tuple(structure_prompts()))
