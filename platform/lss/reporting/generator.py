"""A learned radiology report generator: a small GPT-2 decoder that cross-attends to the per-level features.

    level_features (B, L, F) ─ LayerNorm ─ Linear(F, hidden) ─ + level embedding (L, hidden) ─┐
                                                                                             │ encoder_hidden_states
    [style:structured] [BOS] "TECHNIQUE: ..." [EOS] ─► GPT-2 (causal self-attn + cross-attn) ─► next token

The decoder is a ``transformers.GPT2LMHeadModel`` built from a ``GPT2Config`` (never downloaded), the vocabulary a
word-level ``tokenizers`` model trained on the reference reports. The pre-tokenizer keeps whitespace runs (spaces,
newlines) as tokens and splits numbers into digits, so any report made of known words decodes back exactly and
measurements ("dural sac area 198 mm2") are written digit by digit from a closed vocabulary. The first token selects
the reference style ("structured", "narrative", "concise", ...) the model imitates.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn
from transformers import (
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    get_cosine_schedule_with_warmup,
)
from transformers.modeling_outputs import CausalLMOutputWithCrossAttentions
from transformers.utils import logging as hf_logging

from lss.config import ReportConfig

__all__ = [
    "GENERATOR_FORMAT_VERSION",
    "SPECIAL_TOKENS",
    "ReportGenerator",
    "build_tokenizer",
    "load_generator",
    "save_generator",
    "train_generator",
]

logger = logging.getLogger(__name__)

GENERATOR_FORMAT_VERSION = 1
PAD, BOS, EOS, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
IGNORE_INDEX = -100  # the label transformers' causal LM loss skips

# Whitespace runs stay tokens so that decoding is a plain concatenation; digits are single tokens so that any
# measurement can be written from a closed vocabulary.
_PRETOKENIZE = r"\s+|\d|[A-Za-z]+|[^\sA-Za-z\d]"
_STYLE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_STYLE_TOKEN = re.compile(r"^\[style:([A-Za-z0-9_.-]+)\]$")
_PROMPT_LENGTH = 2  # [style] [BOS]

_META = "generator.json"
_DECODER = "decoder"
_TOKENIZER = "tokenizer"
_PROJECTION = "projection.safetensors"


def _style_token(style: str) -> str:
    return f"[style:{style}]"


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    # A folder of a few small files: transformers' per-shard progress bars are only noise in logs.
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def build_tokenizer(texts: Sequence[str], styles: Sequence[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer trained on the reference reports, exact on every text made of known words.

    Words, single digits, single punctuation marks and whitespace runs are tokens; decoding concatenates them, so
    ``decode(encode(text)) == text`` whenever no piece of ``text`` is unknown (unknown pieces become ``[UNK]``).

    Args:
        texts: the reference reports (all styles) whose pieces make the vocabulary.
        styles: style names; each gets a special token ``[style:<name>]`` (the decoder's first input token).

    Returns:
        A ``PreTrainedTokenizerFast`` with pad/bos/eos/unk tokens ``[PAD]``, ``[BOS]``, ``[EOS]``, ``[UNK]`` (ids 0-3)
        and the style tokens as extra special tokens. It adds no special tokens when encoding.

    Raises:
        ValueError: no non-empty text, no style, a duplicate style or a style name outside ``[A-Za-z0-9_.-]``.
    """
    texts = list(texts)
    if not all(isinstance(text, str) for text in texts):
        raise ValueError("texts must all be strings.")
    if not any(texts):
        raise ValueError("build_tokenizer needs at least one non-empty text.")
    styles = list(styles)
    if not styles:
        raise ValueError("build_tokenizer needs at least one style.")
    bad = [style for style in styles if not isinstance(style, str) or not _STYLE_NAME.match(style)]
    if bad:
        raise ValueError(f"style names must match {_STYLE_NAME.pattern}, got {bad}.")
    if len(set(styles)) != len(styles):
        raise ValueError(f"duplicate style names in {styles}.")
    style_tokens = [_style_token(style) for style in styles]

    backend = Tokenizer(models.WordLevel(unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(_PRETOKENIZE), behavior="isolated")
    backend.decoder = decoders.Fuse()
    # No size cap and no frequency cut: every piece of the training reports must stay known for an exact round trip.
    trainer = trainers.WordLevelTrainer(vocab_size=1 << 30, min_frequency=0, show_progress=False,
                                        special_tokens=[*SPECIAL_TOKENS, *style_tokens])
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        extra_special_tokens=style_tokens,
        # The default clean-up would remove spaces before punctuation and break the exact round trip.
        clean_up_tokenization_spaces=False,
    )


def _tokenizer_styles(tokenizer: PreTrainedTokenizerFast) -> tuple[str, ...]:
    matches = {index: _STYLE_TOKEN.match(token) for token, index in tokenizer.get_vocab().items()}
    return tuple(matches[index].group(1) for index in sorted(matches) if matches[index] is not None)


def _as_features(features: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """(N, L, F) float32 CPU-or-device tensor, checked for rank, emptiness and finiteness."""
    tensor = torch.as_tensor(features)
    if tensor.ndim != 3:
        raise ValueError(f"{name} must have shape (N, L, F), got {tuple(tensor.shape)}.")
    if tensor.shape[0] == 0 or tensor.shape[1] == 0 or tensor.shape[2] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(tensor.shape)}.")
    if not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must be a real-valued array, got dtype {tensor.dtype}.")
    tensor = tensor.float()
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return tensor


class _LevelProjection(nn.Module):
    """Per-level features (B, L, F) -> decoder memory (B, L, hidden), with a learned embedding of each level slot."""

    def __init__(self, feature_dim: int, hidden: int, num_levels: int, init_std: float) -> None:
        super().__init__()
        # The features mix unnormalised parts (e.g. a canal area in mm2 next to attention features): normalise first.
        self.norm = nn.LayerNorm(feature_dim)
        self.linear = nn.Linear(feature_dim, hidden)
        self.level_embedding = nn.Embedding(num_levels, hidden)
        nn.init.normal_(self.level_embedding.weight, std=init_std)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        levels = torch.arange(features.shape[1], device=features.device)
        return self.linear(self.norm(features)) + self.level_embedding(levels)


class ReportGenerator(nn.Module):
    """A GPT-2 decoder that writes a report in a chosen style, cross-attending to the per-level features.

    Decoder input per report: ``[style:<style>] [BOS] text [EOS]``; the style and BOS tokens are the prompt and are
    never scored. The per-level features become ``encoder_hidden_states`` of the cross-attention layers.

    Args:
        feature_dim: F, the size of each level's feature vector (``LSSModel`` ``level_features.shape[-1]``).
        tokenizer: from ``build_tokenizer`` (word-level, with ``[style:<name>]`` tokens).
        config: decoder size (``layers``, ``hidden``, ``heads``) and ``max_new_tokens``; the rest is kept for saving.
        num_levels: L, the number of level slots (5: L1/L2 .. L5/S1).
        max_positions: the decoder's position table size; at least the longest training sequence (report tokens + 3).
            Defaults to ``config.max_new_tokens + 2`` (a full generation after the two prompt tokens).

    Attributes:
        styles: the style names the tokenizer has tokens for (``generate`` accepts these).
        tokenizer, config, feature_dim, num_levels: as given.
        projection: the feature projection and level embedding (B, L, F) -> (B, L, hidden).
        decoder: the ``GPT2LMHeadModel``.

    Raises:
        ValueError: non-positive sizes, or a tokenizer without the special or style tokens.
    """

    def __init__(
        self,
        feature_dim: int,
        tokenizer: PreTrainedTokenizerFast,
        config: ReportConfig,
        num_levels: int = 5,
        *,
        max_positions: int | None = None,
    ) -> None:
        super().__init__()
        if int(feature_dim) < 1 or int(num_levels) < 1:
            raise ValueError(f"feature_dim and num_levels must be >= 1, got {feature_dim} and {num_levels}.")
        ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
        unk_id = ids[UNK]
        missing = [token for token, index in ids.items() if index is None or (token != UNK and index == unk_id)]
        if missing:
            raise ValueError(f"tokenizer lacks the special tokens {missing}; build it with build_tokenizer.")
        styles = _tokenizer_styles(tokenizer)
        if not styles:
            raise ValueError("tokenizer has no [style:<name>] tokens; build it with build_tokenizer.")
        max_positions = config.max_new_tokens + _PROMPT_LENGTH if max_positions is None else int(max_positions)
        if max_positions < _PROMPT_LENGTH + 1:
            raise ValueError(f"max_positions must be >= {_PROMPT_LENGTH + 1}, got {max_positions}.")

        self.config = config
        self.tokenizer = tokenizer
        self.feature_dim = int(feature_dim)
        self.num_levels = int(num_levels)
        self.styles = styles
        self._style_ids = {style: tokenizer.convert_tokens_to_ids(_style_token(style)) for style in styles}
        self.pad_token_id, self.bos_token_id, self.eos_token_id = ids[PAD], ids[BOS], ids[EOS]

        decoder_config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=max_positions,
            n_embd=config.hidden,
            n_layer=config.layers,
            n_head=config.heads,
            add_cross_attention=True,
            pad_token_id=self.pad_token_id,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
        )
        self.projection = _LevelProjection(self.feature_dim, config.hidden, self.num_levels,
                                           decoder_config.initializer_range)
        self.decoder = GPT2LMHeadModel(decoder_config)
        # transformers cannot infer the loss from the class name "GPT2LMHeadModel" (it warns, then uses this one).
        self.decoder.loss_type = "ForCausalLM"
        # Greedy and stored with the decoder, so that save_pretrained/from_pretrained keep the decoding rule.
        self.decoder.generation_config = GenerationConfig(
            do_sample=False, num_beams=1, max_new_tokens=config.max_new_tokens,
            pad_token_id=self.pad_token_id, bos_token_id=self.bos_token_id, eos_token_id=self.eos_token_id,
        )

    @property
    def max_positions(self) -> int:
        """The decoder's position table size (prompt + text + EOS must fit)."""
        return int(self.decoder.config.n_positions)

    def _check_features(self, features: torch.Tensor | np.ndarray) -> torch.Tensor:
        features = _as_features(features, "features")
        if tuple(features.shape[1:]) != (self.num_levels, self.feature_dim):
            raise ValueError(f"features must have shape (B, {self.num_levels}, {self.feature_dim}), "
                             f"got {tuple(features.shape)}.")
        return features.to(self.decoder.device)

    def _style_id(self, style: str) -> int:
        if style not in self._style_ids:
            raise ValueError(f"unknown report style {style!r}; this generator knows {list(self.styles)}.")
        return self._style_ids[style]

    def encode_features(self, features: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The decoder memory: (B, L, F) level features -> (B, L, hidden) ``encoder_hidden_states``."""
        return self.projection(self._check_features(features))

    def encode(self, texts: Sequence[str], styles: Sequence[str]) -> dict[str, torch.Tensor]:
        """Decoder inputs for reports: ``[style] [BOS] text [EOS]``, right-padded.

        Args:
            texts: B reports.
            styles: B style names, one per report.

        Returns:
            ``input_ids`` (B, T) long, ``attention_mask`` (B, T) long (0 on padding) and ``labels`` (B, T) long:
            the input ids with padding and the two prompt tokens set to -100 (not scored).

        Raises:
            ValueError: mismatched lengths, an unknown style or a report longer than ``max_positions`` allows.
        """
        texts, styles = list(texts), list(styles)
        if len(texts) != len(styles) or not texts:
            raise ValueError(f"need as many styles as texts (at least one), got {len(texts)} and {len(styles)}.")
        style_ids = [self._style_id(style) for style in styles]
        body = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        sequences = [torch.tensor([s, self.bos_token_id, *ids, self.eos_token_id])
                     for s, ids in zip(style_ids, body, strict=True)]
        longest = max(len(seq) for seq in sequences)
        if longest > self.max_positions:
            raise ValueError(f"a report of {longest - 3} tokens does not fit the decoder's {self.max_positions} "
                             "positions (prompt and EOS included).")
        input_ids = nn.utils.rnn.pad_sequence(sequences, batch_first=True, padding_value=self.pad_token_id)
        attention_mask = nn.utils.rnn.pad_sequence([torch.ones_like(seq) for seq in sequences], batch_first=True)
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        labels[:, :_PROMPT_LENGTH] = IGNORE_INDEX
        device = self.decoder.device
        return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device),
                "labels": labels.to(device)}

    def forward(
        self,
        features: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> CausalLMOutputWithCrossAttentions:
        """Teacher-forced decoding.

        Args:
            features: (B, L, F) per-level features.
            input_ids: (B, T) ``[style] [BOS] text [EOS] [PAD]...`` (see ``encode``).
            attention_mask: (B, T), 0 on padding.
            labels: (B, T) targets with -100 where not scored (transformers shifts them by one), or None.

        Returns:
            The transformers output: ``logits`` (B, T, V) and ``loss`` (mean over scored tokens) when labels are given.
        """
        memory = self.encode_features(features)
        if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape or input_ids.shape[0] != memory.shape[0]:
            raise ValueError(f"input_ids and attention_mask must both be (B, T) with B = {memory.shape[0]}, got "
                             f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}.")
        if labels is not None and labels.shape != input_ids.shape:
            raise ValueError(f"labels must match input_ids {tuple(input_ids.shape)}, got {tuple(labels.shape)}.")
        return self.decoder(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=memory,
                            labels=labels, use_cache=False)

    @torch.no_grad()
    def generate(self, features: torch.Tensor | np.ndarray, style: str | None = None) -> list[str]:
        """Greedy reports, one per study; deterministic (runs in eval mode, then restores the previous mode).

        Args:
            features: (B, L, F) per-level features.
            style: the reference style to imitate; defaults to ``config.style``.

        Returns:
            B decoded reports (up to the first EOS, at most ``config.max_new_tokens`` tokens).

        Raises:
            ValueError: an unknown style or features of the wrong shape.
        """
        style = self.config.style if style is None else style
        style_id = self._style_id(style)
        was_training = self.training
        self.eval()
        try:
            memory = self.encode_features(features)
            batch = memory.shape[0]
            prompt = torch.tensor([[style_id, self.bos_token_id]], device=memory.device).expand(batch, -1)
            # Generated positions must stay inside the position table.
            max_new_tokens = min(self.config.max_new_tokens, self.max_positions - _PROMPT_LENGTH)
            # transformers forwards the extra model kwarg encoder_hidden_states to every GPT-2 step and caches the
            # cross-attention keys/values after the first one.
            output = self.decoder.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                encoder_hidden_states=memory,
                do_sample=False,
                num_beams=1,
                max_new_tokens=max_new_tokens,
                # Finished rows are filled with EOS (cut below) rather than [PAD], which transformers would
                # take for unmasked padding and warn about.
                pad_token_id=self.eos_token_id,
                eos_token_id=self.eos_token_id,
            )
        finally:
            self.train(was_training)
        reports = []
        for row in output[:, _PROMPT_LENGTH:].tolist():
            if self.eos_token_id in row:
                row = row[: row.index(self.eos_token_id)]
            reports.append(self.tokenizer.decode(row, skip_special_tokens=True))
        return reports


def _report_pairs(reports: Sequence[Mapping[str, str]], count: int, name: str) -> list[tuple[int, str, str]]:
    """(study index, style, text) for every report, validated against the number of feature rows."""
    if len(reports) != count:
        raise ValueError(f"{name} has {len(reports)} entries but the features have {count} studies.")
    pairs = []
    for index, report in enumerate(reports):
        if not isinstance(report, Mapping) or not report:
            raise ValueError(f"{name}[{index}] must be a non-empty mapping style -> text, got {report!r}.")
        for style, text in report.items():
            if not isinstance(style, str) or not isinstance(text, str) or not text:
                raise ValueError(f"{name}[{index}][{style!r}] must be a non-empty string, got {text!r}.")
            pairs.append((index, style, text))
    return pairs


def _batches(count: int, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    order = np.arange(count) if rng is None else rng.permutation(count)
    return [order[start:start + batch_size] for start in range(0, count, batch_size)]


def _scored(labels: torch.Tensor) -> int:
    # transformers shifts labels left by one: the first position is never a target.
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


@torch.no_grad()
def _mean_loss(model: ReportGenerator, features: torch.Tensor, pairs: list[tuple[int, str, str]],
               batch_size: int) -> float:
    model.eval()
    total, tokens = 0.0, 0
    for batch in _batches(len(pairs), batch_size, None):
        chosen = [pairs[i] for i in batch]
        inputs = model.encode([text for _, _, text in chosen], [style for _, style, _ in chosen])
        loss = model(features[[study for study, _, _ in chosen]], **inputs).loss
        count = _scored(inputs["labels"])
        total, tokens = total + float(loss.detach()) * count, tokens + count
    return total / max(tokens, 1)


def train_generator(
    features: np.ndarray | torch.Tensor,
    reports: Sequence[Mapping[str, str]],
    config: ReportConfig,
    val_features: np.ndarray | torch.Tensor | None = None,
    val_reports: Sequence[Mapping[str, str]] | None = None,
    log_every: int = 0,
) -> tuple[ReportGenerator, dict[str, list[float]]]:
    """Trains a report generator on (study, style) pairs of the reference reports (CPU, deterministic).

    The tokenizer is built on all training reports; the decoder's position table fits the longest one (and a full
    generation of ``config.max_new_tokens``). AdamW with a linear warm-up (5 %) and cosine decay, gradients clipped
    to norm 1, batches of ``config.batch_size`` pairs reshuffled every epoch. ``config.seed`` drives the
    initialisation, dropout and shuffling; the caller's global torch random state is left untouched.

    Args:
        features: (N, L, F) per-level features of the training studies.
        reports: N mappings style -> reference report (every study at least one style).
        config: decoder size and training settings.
        val_features: (M, L, F) validation features, or None.
        val_reports: M mappings style -> report (styles must be known from training), or None.
        log_every: log the losses every this many epochs (0: never).

    Returns:
        The generator in eval mode and its history: ``train_loss`` (mean per scored token, per epoch, measured
        during the epoch) and ``val_loss`` (after each epoch; empty without validation data).

    Raises:
        ValueError: mismatched or empty inputs, only one of ``val_features``/``val_reports``, or a validation style
            missing from the training reports.
    """
    x = _as_features(features, "features").cpu()
    pairs = _report_pairs(reports, x.shape[0], "reports")
    if (val_features is None) != (val_reports is None):
        raise ValueError("give both val_features and val_reports, or neither.")
    styles = sorted({style for _, style, _ in pairs})
    val_x, val_pairs = None, []
    if val_features is not None:
        val_x = _as_features(val_features, "val_features").cpu()
        if val_x.shape[1:] != x.shape[1:]:
            raise ValueError(f"val_features must have shape (M, {x.shape[1]}, {x.shape[2]}), "
                             f"got {tuple(val_x.shape)}.")
        val_pairs = _report_pairs(val_reports, val_x.shape[0], "val_reports")
        unknown = sorted({style for _, style, _ in val_pairs} - set(styles))
        if unknown:
            raise ValueError(f"val_reports use styles {unknown} that no training report has (known: {styles}).")
    if log_every < 0:
        raise ValueError(f"log_every must be >= 0, got {log_every}.")

    tokenizer = build_tokenizer([text for _, _, text in pairs], styles)
    longest = max(len(ids) for ids in tokenizer([text for _, _, text in pairs], add_special_tokens=False)["input_ids"])
    # Validation reports may be longer; they must fit too (their unknown words are single [UNK] tokens).
    if val_pairs:
        longest = max(longest, *(len(ids) for ids in tokenizer([t for _, _, t in val_pairs],
                                                                 add_special_tokens=False)["input_ids"]))
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        model = ReportGenerator(x.shape[2], tokenizer, config, num_levels=x.shape[1],
                                max_positions=max(longest + _PROMPT_LENGTH + 1, config.max_new_tokens + _PROMPT_LENGTH))
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
        steps = config.epochs * math.ceil(len(pairs) / config.batch_size)
        scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=steps // 20, num_training_steps=steps)
        for epoch in range(config.epochs):
            model.train()
            total, tokens = 0.0, 0
            for batch in _batches(len(pairs), config.batch_size, rng):
                chosen = [pairs[i] for i in batch]
                inputs = model.encode([text for _, _, text in chosen], [style for _, style, _ in chosen])
                loss = model(x[[study for study, _, _ in chosen]], **inputs).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                count = _scored(inputs["labels"])
                total, tokens = total + float(loss.detach()) * count, tokens + count
            history["train_loss"].append(total / max(tokens, 1))
            if val_x is not None:
                history["val_loss"].append(_mean_loss(model, val_x, val_pairs, config.batch_size))
            if log_every and (epoch + 1) % log_every == 0:
                val = f", val loss {history['val_loss'][-1]:.4f}" if history["val_loss"] else ""
                logger.info("report generator epoch %d/%d: train loss %.4f%s", epoch + 1, config.epochs,
                            history["train_loss"][-1], val)
    return model.eval(), history


def save_generator(generator: ReportGenerator, path: str | Path) -> Path:
    """Writes a folder ``load_generator`` reads without the network.

    Layout: ``decoder/`` (transformers ``save_pretrained``), ``tokenizer/`` (``save_pretrained``),
    ``projection.safetensors`` (feature projection and level embedding) and ``generator.json`` (format version,
    feature_dim, num_levels, styles, the ``ReportConfig``).

    Raises:
        NotADirectoryError: ``path`` exists and is not a folder.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a folder; save_generator writes a folder.")
    path.mkdir(parents=True, exist_ok=True)
    with _no_progress_bars():
        generator.decoder.save_pretrained(path / _DECODER)
    generator.tokenizer.save_pretrained(path / _TOKENIZER)
    save_file({name: tensor.detach().cpu().contiguous() for name, tensor in generator.projection.state_dict().items()},
              str(path / _PROJECTION))
    meta = {
        "format_version": GENERATOR_FORMAT_VERSION,
        "feature_dim": generator.feature_dim,
        "num_levels": generator.num_levels,
        "styles": list(generator.styles),
        "config": generator.config.model_dump(mode="json"),
    }
    # Written last: its presence marks a complete folder.
    (path / _META).write_text(json.dumps(meta, indent=2) + "\n")
    return path


def load_generator(path: str | Path) -> ReportGenerator:
    """Loads a folder written by ``save_generator`` (in eval mode, on CPU); local files only.

    Raises:
        FileNotFoundError: ``path`` is not a folder or lacks one of the saved parts.
        ValueError: another format version, or parts that do not fit together.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder; expected a report generator saved by save_generator.")
    missing = [name for name in (_META, _DECODER, _TOKENIZER, _PROJECTION) if not (path / name).exists()]
    if missing:
        raise FileNotFoundError(f"{path} is not a report generator folder (save_generator): missing {missing}.")
    meta = json.loads((path / _META).read_text())
    if meta.get("format_version") != GENERATOR_FORMAT_VERSION:
        raise ValueError(f"{path}: report generator format {meta.get('format_version')!r}, "
                         f"expected {GENERATOR_FORMAT_VERSION}.")
    config = ReportConfig.model_validate(meta["config"])
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path / _TOKENIZER, local_files_only=True)
    with _no_progress_bars():
        decoder = GPT2LMHeadModel.from_pretrained(path / _DECODER, local_files_only=True)
    generator = ReportGenerator(meta["feature_dim"], tokenizer, config, meta["num_levels"],
                                max_positions=decoder.config.n_positions)
    if list(generator.styles) != list(meta["styles"]):
        raise ValueError(f"{path}: tokenizer styles {list(generator.styles)} differ from {meta['styles']}.")
    try:
        generator.decoder.load_state_dict(decoder.state_dict())
        generator.projection.load_state_dict(load_file(str(path / _PROJECTION)))
    except RuntimeError as error:
        raise ValueError(f"{path}: saved weights do not fit the saved configuration: {error}") from error
    return generator.eval()
