"""Spatial Patch Cross-Attention: text prompts attend over spatial patch tokens, not a pooled vector.

The encoder's feature map ``(B, C, H, W)`` is cut into ``p x p`` patches, each projected to a token of width ``E``
with a fixed 2D sine-cosine position code added, so that ``N = H' x W'`` tokens keep where they came from
(``H' = H / p``). Prompt embeddings ``(P, T)`` from the text encoder are projected to ``E`` and attend over the
tokens with multi-head attention. Per prompt the module returns:

* ``attended`` ``(B, P, E)``: the prompt's query plus what it gathered from the image (the per-level feature);
* ``attention`` ``(B, P, H', W')``: the attention weights over the patches (averaged over heads) -- the
  explanation, a map of where the prompt looked.

The same interaction runs the other way to make segmentation text-directed: every patch token attends to the
prompts, and the result, projected back to ``C`` channels and up-sampled, is added to the feature map (scaled by a
learnable gate that starts at 0, so an untrained model starts as its plain backbone).

``GlobalPoolAttention`` is the baseline the method argues against, behind the same interface: the feature map is
averaged into one token, every prompt attends to that one token, and the attention map is uniform.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AttentionOutput",
    "PromptAttention",
    "SpatialPatchCrossAttention",
    "GlobalPoolAttention",
    "ATTENTIONS",
    "build_attention",
    "positional_encoding_2d",
]


def positional_encoding_2d(height: int, width: int, dim: int) -> torch.Tensor:
    """Fixed 2D sine-cosine position codes: half of ``dim`` encodes the row, half the column.

    Returns:
        (height * width, dim), rows in raster order.

    Raises:
        ValueError: when ``dim`` is not a multiple of 4.
    """
    if dim % 4:
        raise ValueError(f"positional encoding width must be a multiple of 4, got {dim}.")
    quarter = dim // 4
    frequencies = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    rows = torch.arange(height, dtype=torch.float32)[:, None] * frequencies[None]
    cols = torch.arange(width, dtype=torch.float32)[:, None] * frequencies[None]
    row_code = torch.cat([rows.sin(), rows.cos()], dim=1)  # (H, dim/2)
    col_code = torch.cat([cols.sin(), cols.cos()], dim=1)  # (W, dim/2)
    grid = torch.cat(
        [row_code[:, None, :].expand(height, width, -1), col_code[None, :, :].expand(height, width, -1)], dim=-1
    )
    return grid.reshape(height * width, dim)


@dataclass
class AttentionOutput:
    """What prompt attention returns.

    Attributes:
        attended: (B, P, E) per-prompt features.
        attention: (B, P, H', W') attention of each prompt over the patch grid (sums to 1 over H' x W').
        features: (B, C, H, W) the feature map after text conditioning (same shape as the input).
    """

    attended: torch.Tensor
    attention: torch.Tensor
    features: torch.Tensor


class PromptAttention(nn.Module):
    """Common interface and validation of prompt-attention variants.

    Args:
        visual_channels: C, channels of the feature map.
        text_dim: T, width of the prompt embeddings.
        embed_dim: E, width of tokens and of the attended features (a multiple of ``num_heads`` and of 4).
        num_heads: attention heads.
        patch_size: p, patch side in feature-map pixels.
        dropout: attention dropout.
        condition: add the prompts' influence to the feature map (text-directed segmentation).
    """

    def __init__(
        self,
        visual_channels: int,
        text_dim: int,
        embed_dim: int = 64,
        num_heads: int = 8,
        patch_size: int = 1,
        dropout: float = 0.0,
        condition: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("visual_channels", visual_channels), ("text_dim", text_dim), ("embed_dim", embed_dim),
                            ("num_heads", num_heads), ("patch_size", patch_size)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be a multiple of num_heads ({num_heads}).")
        if embed_dim % 4:
            raise ValueError(f"embed_dim must be a multiple of 4 (2D position codes), got {embed_dim}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.visual_channels = int(visual_channels)
        self.embed_dim = int(embed_dim)
        self.num_heads = int(num_heads)
        self.patch_size = int(patch_size)
        self.condition = bool(condition)
        self.dropout = float(dropout)
        self.text_proj = nn.Sequential(nn.Linear(text_dim, embed_dim), nn.LayerNorm(embed_dim))
        self.text_dim = int(text_dim)

    def _check(self, features: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        if features.ndim != 4 or features.shape[1] != self.visual_channels:
            raise ValueError(f"features must be (B, {self.visual_channels}, H, W), got {tuple(features.shape)}.")
        if features.shape[2] % self.patch_size or features.shape[3] % self.patch_size:
            raise ValueError(
                f"feature map {tuple(features.shape[2:])} is not divisible into {self.patch_size}x{self.patch_size} "
                "patches."
            )
        if prompts.ndim == 2:
            prompts = prompts[None].expand(features.shape[0], -1, -1)
        if prompts.ndim != 3 or prompts.shape[0] != features.shape[0] or prompts.shape[2] != self.text_dim:
            raise ValueError(
                f"prompts must be (P, {self.text_dim}) or (B, P, {self.text_dim}) with B = {features.shape[0]}, "
                f"got {tuple(prompts.shape)}."
            )
        return prompts

    def forward(self, features: torch.Tensor, prompts: torch.Tensor,
                allowed: torch.Tensor | None = None) -> AttentionOutput:  # pragma: no cover
        raise NotImplementedError

    def _check_allowed(self, allowed: torch.Tensor | None, b: int, p: int, hp: int, wp: int) -> torch.Tensor | None:
        """(B, P, H', W') bool -> (B, P, N) bool with rows of nothing allowed opened up (no prompt is left blind)."""
        if allowed is None:
            return None
        if allowed.shape != (b, p, hp, wp):
            raise ValueError(f"allowed must be (B={b}, P={p}, {hp}, {wp}), got {tuple(allowed.shape)}.")
        flat = allowed.reshape(b, p, hp * wp).bool()
        return flat | ~flat.any(dim=2, keepdim=True)


class SpatialPatchCrossAttention(PromptAttention):
    """Prompts attend over position-coded patch tokens; patches attend back to condition the features.

    Shapes: ``features`` (B, C, H, W), ``prompts`` (P, T) or (B, P, T) -> ``AttentionOutput`` with
    ``attended`` (B, P, E), ``attention`` (B, P, H/p, W/p), ``features`` (B, C, H, W).

    ``allowed`` (B, P, H/p, W/p) bool, optional, restricts where each prompt may look: inference uses it to make a
    level prompt read the disc that anatomy named as its level (``lss.reporting.levels``), not whichever disc its
    attention drifted to. A prompt with nothing allowed attends everywhere.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        e, p = self.embed_dim, self.patch_size
        self.patchify = nn.Conv2d(self.visual_channels, e, kernel_size=p, stride=p)
        self.token_norm = nn.LayerNorm(e)
        self.prompt_to_patch = nn.MultiheadAttention(e, self.num_heads, dropout=self.dropout, batch_first=True)
        if self.condition:
            self.patch_to_prompt = nn.MultiheadAttention(e, self.num_heads, batch_first=True)
            self.back = nn.Conv2d(e, self.visual_channels, kernel_size=1)
            self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, features: torch.Tensor, prompts: torch.Tensor,
                allowed: torch.Tensor | None = None) -> AttentionOutput:
        prompts = self._check(features, prompts)
        b, _, h, w = features.shape
        grid = self.patchify(features)  # (B, E, H', W')
        hp, wp = grid.shape[2:]
        position = positional_encoding_2d(hp, wp, self.embed_dim).to(grid)
        tokens = self.token_norm(grid.flatten(2).transpose(1, 2) + position)  # (B, N, E)
        queries = self.text_proj(prompts)  # (B, P, E)
        allowed = self._check_allowed(allowed, b, prompts.shape[1], hp, wp)
        # nn.MultiheadAttention masks with True = "may not attend", one (P, N) mask per batch item and head.
        blocked = None if allowed is None else (~allowed).repeat_interleave(self.num_heads, dim=0)
        gathered, weights = self.prompt_to_patch(queries, tokens, tokens, need_weights=True, attn_mask=blocked,
                                                 average_attn_weights=True)  # (B, P, E), (B, P, N)
        attended = queries + gathered
        attention = weights.reshape(b, -1, hp, wp)
        if self.condition:
            steer, _ = self.patch_to_prompt(tokens, attended, attended, need_weights=False)  # (B, N, E)
            steer = self.back(steer.transpose(1, 2).reshape(b, self.embed_dim, hp, wp))
            if self.patch_size > 1:
                steer = F.interpolate(steer, size=(h, w), mode="nearest")
            features = features + self.gate * steer
        return AttentionOutput(attended=attended, attention=attention, features=features)


class GlobalPoolAttention(PromptAttention):
    """Baseline: the feature map is average-pooled to one token that every prompt attends to.

    Same shapes as ``SpatialPatchCrossAttention``; ``attention`` is uniform over (H/p, W/p), and conditioning is
    FiLM-like: one per-channel shift from the pooled, prompt-mixed feature, the same at every pixel.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        e = self.embed_dim
        self.pool_proj = nn.Sequential(nn.Linear(self.visual_channels, e), nn.LayerNorm(e))
        self.prompt_to_pool = nn.MultiheadAttention(e, self.num_heads, batch_first=True)
        if self.condition:
            self.back = nn.Linear(e, self.visual_channels)
            self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, features: torch.Tensor, prompts: torch.Tensor,
                allowed: torch.Tensor | None = None) -> AttentionOutput:
        prompts = self._check(features, prompts)  # ``allowed`` is ignored: one pooled token has no place to restrict
        b, _, h, w = features.shape
        pooled = self.pool_proj(features.mean(dim=(2, 3)))[:, None]  # (B, 1, E)
        queries = self.text_proj(prompts)
        gathered, _ = self.prompt_to_pool(queries, pooled, pooled, need_weights=False)
        attended = queries + gathered
        hp, wp = h // self.patch_size, w // self.patch_size
        attention = torch.full((b, prompts.shape[1], hp, wp), 1.0 / (hp * wp), dtype=features.dtype,
                               device=features.device)
        if self.condition:
            shift = self.back(attended.mean(dim=1))[:, :, None, None]  # (B, C, 1, 1)
            features = features + self.gate * shift
        return AttentionOutput(attended=attended, attention=attention, features=features)


ATTENTIONS: dict[str, type[PromptAttention]] = {
    "spatial_patch": SpatialPatchCrossAttention,
    "global_pool": GlobalPoolAttention,
}


def build_attention(name: str, **kwargs) -> PromptAttention:
    """A prompt-attention variant by name ("spatial_patch" or "global_pool").

    Raises:
        ValueError: for an unknown name.
    """
    if name not in ATTENTIONS:
        raise ValueError(f"unknown attention {name!r}; expected one of {sorted(ATTENTIONS)}.")
    return ATTENTIONS[name](**kwargs)

