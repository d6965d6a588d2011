"""The explainable vision-language model for one lumbar MRI study.

    prompts (text encoder, frozen: embedded once)             sagittal 2.5D (B, S, Y, Z)     axial 2.5D (B, L, S, H, W)
        "central spinal canal at L1/L2" ... "spinal canal"            │                           │ (levels as batch)
                         │                                   backbone (MONAI) ──┐        backbone (MONAI) ──┐
                         └──────────────────────────► prompt attention at 1/8 ◄─┘  prompt attention at 1/8 ◄─┘
                                                      │ attended (B, P, E)  │ attention maps (B, P, Y', Z')
                                                      │ features conditioned by the prompts -> decoder -> masks
    per level: [sagittal feature of the level prompt | axial feature of the level prompt | canal area] -> severity

Outputs: segmentation logits for both views, severity logits per level, per-level area/AP regression, the attention
maps of every prompt (the explanation) and the canal area measured on the predicted axial masks.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

from lss.anatomy import LEVELS, Structure
from lss.config import ModelConfig
from lss.losses.localisation import level_regions as regions_on_grid
from lss.model.attention import build_attention
from lss.model.backbones import build_backbone
from lss.model.calibration import SeverityCalibration
from lss.model.canal_offset import CanalOffset
from lss.model.heads import SeverityHead
from lss.model.input_range import InputRange
from lss.model.measured_grade import MeasuredGrade
from lss.model.prompts import PromptSet, default_prompts

__all__ = ["ModelOutput", "LSSModel", "build_model", "save_model", "load_model", "MODEL_FORMAT_VERSION"]

MODEL_FORMAT_VERSION = 1
NUM_STRUCTURES = len(Structure)
CANAL = Structure.CANAL.index


@dataclass
class ModelOutput:
    """Everything the model predicts for a batch of B studies with L levels and P prompts.

    Attributes:
        sagittal_logits: (B, K, Y, Z) structure logits of the mid-sagittal slice (K = ``len(Structure)``).
        axial_logits: (B, L, K, H, W) structure logits of each level's centre axial slice, or None.
        severity_logits: (B, L, 3): the model's grade (``head_logits``, or where a level's sac is measured on its
            axial mask and the model has a fitted ``measured_grade``, that grade's logits).
        head_logits: (B, L, 3) the severity head's own logits.
        regression: (B, L, 2) predicted (area_mm2 / 100, ap_mm / 10), or None.
        sagittal_attention: (B, P, Y', Z') attention of every prompt over the sagittal patch grid.
        axial_attention: (B, L, H', W') attention of each level's prompt over its own axial slice, or None.
        canal_area_mm2: (B, L) canal area on the predicted axial masks (soft), 0 where a level has no axial data.
        level_features: (B, L, F) the features the severity head read.
    """

    sagittal_logits: torch.Tensor
    axial_logits: torch.Tensor | None
    severity_logits: torch.Tensor
    head_logits: torch.Tensor
    regression: torch.Tensor | None
    sagittal_attention: torch.Tensor
    axial_attention: torch.Tensor | None
    canal_area_mm2: torch.Tensor
    level_features: torch.Tensor

    def level_attention(self, prompts: PromptSet) -> torch.Tensor:
        """(B, L, Y', Z') sagittal attention of the level prompts."""
        return self.sagittal_attention[:, prompts.level_slice]

    def as_dict(self) -> dict[str, torch.Tensor | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class LSSModel(nn.Module):
    """Backbones for the sagittal and axial views, prompt attention, and per-level heads.

    Args:
        config: model settings.
        axial_slices: 2.5D channels of the axial input (``PreprocessConfig.axial_slices``).
        axial_pixel_area_mm2: area of one axial pixel after preprocessing, to measure the canal in mm2.
        text_encoder: a ``lss.model.text.TextEncoder``; with a frozen one, the prompt embeddings are computed here
            once and stored as a buffer (the encoder is not kept).
        prompt_embeddings: (P, T) stored embeddings, instead of ``text_encoder`` (used when loading a saved model).
        prompts: the prompt set (default: ``default_prompts()``).
    """

    def __init__(
        self,
        config: ModelConfig,
        axial_slices: int = 3,
        axial_pixel_area_mm2: float = 0.81,
        text_encoder: nn.Module | None = None,
        prompt_embeddings: torch.Tensor | None = None,
        prompts: PromptSet | None = None,
    ) -> None:
        super().__init__()
        if (text_encoder is None) == (prompt_embeddings is None):
            raise ValueError("give exactly one of text_encoder or prompt_embeddings.")
        if axial_pixel_area_mm2 <= 0:
            raise ValueError(f"axial_pixel_area_mm2 must be positive, got {axial_pixel_area_mm2}.")
        self.config = config
        self.prompts = prompts or default_prompts()
        self.axial_slices = int(axial_slices)
        self.axial_pixel_area_mm2 = float(axial_pixel_area_mm2)
        texts = self.prompts.all()
        self.text_encoder = None
        if prompt_embeddings is None:
            if getattr(text_encoder, "frozen", config.freeze_text_encoder):
                with torch.no_grad():
                    prompt_embeddings = text_encoder.embed(texts).detach().float().cpu()
            else:
                self.text_encoder = text_encoder
        if prompt_embeddings is not None:
            if prompt_embeddings.ndim != 2 or prompt_embeddings.shape[0] != len(texts):
                raise ValueError(f"prompt_embeddings must be ({len(texts)}, T), got {tuple(prompt_embeddings.shape)}.")
            self.register_buffer("prompt_embeddings", prompt_embeddings.clone())
            text_dim = prompt_embeddings.shape[1]
        else:
            self.prompt_embeddings = None
            text_dim = int(text_encoder.dim)

        attention = dict(text_dim=text_dim, embed_dim=config.attention_dim, num_heads=config.attention_heads,
                         patch_size=config.patch_size)
        self.sagittal_backbone = build_backbone(config.vision_encoder, config.sagittal_slices, NUM_STRUCTURES,
                                                config.base_channels)
        self.axial_backbone = build_backbone(config.vision_encoder, self.axial_slices, NUM_STRUCTURES,
                                             config.base_channels)
        self.sagittal_attention = build_attention(
            config.attention, visual_channels=self.sagittal_backbone.attention_channels, **attention)
        self.axial_attention = build_attention(
            config.attention, visual_channels=self.axial_backbone.attention_channels, **attention)
        level_features = 2 * config.attention_dim + (2 if config.use_canal_area else 1)
        self.head = SeverityHead(level_features, hidden=config.attention_dim, regression=config.regression)
        self.calibration = SeverityCalibration()  # identity until fitted on validation (lss.model.calibration)
        self.input_range = InputRange()  # nothing checked until fitted on the training images (lss.model.input_range)
        self.canal_offset = CanalOffset()  # argmax masks until fitted on validation (lss.model.canal_offset)
        self.measured_grade = MeasuredGrade()  # the head grades until fitted after training

    # ------------------------------------------------------------------------------------------------ prompts
    def embed_prompts(self) -> torch.Tensor:
        """(P, T) prompt embeddings: the stored buffer, or the trainable text encoder's output."""
        if self.prompt_embeddings is not None:
            return self.prompt_embeddings
        return self.text_encoder.embed(self.prompts.all())

    # ------------------------------------------------------------------------------------------------ forward
    def forward(
        self,
        sagittal: torch.Tensor,
        axial: torch.Tensor | None = None,
        axial_present: torch.Tensor | None = None,
        level_regions: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Predicts a batch of studies.

        Args:
            sagittal: (B, S, Y, Z) 2.5D mid-sagittal input (``config.sagittal_slices`` channels).
            axial: (B, L, S_ax, H, W) per-level axial stacks, or None for sagittal-only studies.
            axial_present: (B, L) bool, which levels have axial data (default: all, when ``axial`` is given).
            level_regions: (B, L, Y, Z) bool, optional: each level's disc as named by anatomy
                (``lss.reporting.levels``). The level prompts' sagittal attention is then restricted to the patches
                around their own disc (one patch of margin); a level with an empty region attends freely.

        Raises:
            ValueError: on inputs of the wrong shape.
        """
        if sagittal.ndim != 4:
            raise ValueError(f"sagittal must be (B, S, Y, Z), got {tuple(sagittal.shape)}.")
        b = sagittal.shape[0]
        n_levels = len(LEVELS)
        prompts = self.embed_prompts().to(sagittal)
        level_index = torch.arange(n_levels, device=sagittal.device) + self.prompts.level_slice.start

        captured = {}

        if level_regions is not None and level_regions.shape != (b, n_levels, *sagittal.shape[2:]):
            raise ValueError(f"level_regions must be (B={b}, L={n_levels}, {sagittal.shape[2]}, {sagittal.shape[3]}), "
                             f"got {tuple(level_regions.shape)}.")

        def condition_sagittal(features: torch.Tensor) -> torch.Tensor:
            allowed = None
            if level_regions is not None:
                grid = (features.shape[2] // self.config.patch_size, features.shape[3] // self.config.patch_size)
                allowed = torch.zeros(b, len(self.prompts), *grid, dtype=torch.bool, device=features.device)
                allowed[:, level_index] = regions_on_grid(level_regions.to(features.device), grid, grow=1)
            captured["sagittal"] = self.sagittal_attention(features, prompts, allowed)
            return captured["sagittal"].features

        sagittal_logits = self.sagittal_backbone(sagittal, condition_sagittal)
        sagittal_out = captured["sagittal"]
        sagittal_level = sagittal_out.attended[:, level_index]  # (B, L, E)

        axial_logits = axial_attention = None
        axial_level = sagittal_level.new_zeros(b, n_levels, self.config.attention_dim)
        area = sagittal_level.new_zeros(b, n_levels)
        present = sagittal_level.new_zeros(b, n_levels)
        if axial is not None:
            if (axial.ndim != 5 or axial.shape[0] != b or axial.shape[1] != n_levels
                    or axial.shape[2] != self.axial_slices):
                raise ValueError(
                    f"axial must be (B={b}, L={n_levels}, S={self.axial_slices}, H, W), got {tuple(axial.shape)}."
                )
            if axial_present is None:
                axial_present = torch.ones(b, n_levels, dtype=torch.bool, device=axial.device)
            if axial_present.shape != (b, n_levels):
                raise ValueError(f"axial_present must be (B={b}, L={n_levels}), got {tuple(axial_present.shape)}.")
            flat = axial.reshape(b * n_levels, *axial.shape[2:])

            def condition_axial(features: torch.Tensor) -> torch.Tensor:
                captured["axial"] = self.axial_attention(features, prompts)
                return captured["axial"].features

            logits = self.axial_backbone(flat, condition_axial)
            axial_out = captured["axial"]
            own = level_index.repeat(b)  # each axial image's own level prompt
            rows = torch.arange(b * n_levels, device=axial.device)
            present = axial_present.to(sagittal.dtype)
            axial_level = axial_out.attended[rows, own].reshape(b, n_levels, -1) * present[..., None]
            axial_attention = axial_out.attention[rows, own].reshape(b, n_levels, *axial_out.attention.shape[2:])
            axial_logits = logits.reshape(b, n_levels, *logits.shape[1:])
            canal = axial_logits.softmax(dim=2)[:, :, CANAL]
            area = canal.sum(dim=(-2, -1)) * self.axial_pixel_area_mm2 * present

        parts = [sagittal_level, axial_level, present[..., None]]
        if self.config.use_canal_area:
            parts.append(area[..., None] / 100.0)
        level_features = torch.cat(parts, dim=-1)
        head_logits, regression = self.head(level_features)
        severity_logits = head_logits
        if self.measured_grade.fitted and axial_logits is not None:
            severity_logits = self.measured_grade.apply(head_logits, axial_logits, present, self.canal_offset.offset)
        return ModelOutput(
            sagittal_logits=sagittal_logits,
            axial_logits=axial_logits,
            severity_logits=severity_logits,
            head_logits=head_logits,
            regression=regression,
            sagittal_attention=sagittal_out.attention,
            axial_attention=axial_attention,
            canal_area_mm2=area,
            level_features=level_features,
        )


def build_model(config: ModelConfig, axial_slices: int = 3, axial_spacing_mm: tuple[float, float] = (0.9, 0.9),
                text_encoder: nn.Module | None = None) -> LSSModel:
    """The model of a configuration; builds the text encoder named in ``config`` unless one is given."""
    if text_encoder is None:
        from lss.model.text import build_text_encoder

        text_encoder = build_text_encoder(config)
    return LSSModel(config, axial_slices=axial_slices,
                    axial_pixel_area_mm2=float(axial_spacing_mm[0] * axial_spacing_mm[1]), text_encoder=text_encoder)


def save_model(model: LSSModel, path: str | Path, extra: dict | None = None) -> Path:
    """Saves what inference needs: the configuration, the weights (with the stored prompt embeddings), the prompts
    and the severity calibration (``model.calibration``: temperatures and abstention threshold).

    A model with a frozen text encoder loads without the text encoder's weights or the ``transformers`` model files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": MODEL_FORMAT_VERSION,
        "config": model.config.model_dump(mode="json"),
        "axial_slices": model.axial_slices,
        "axial_pixel_area_mm2": model.axial_pixel_area_mm2,
        "prompts": {"levels": list(model.prompts.levels), "structures": list(model.prompts.structures)},
        "state_dict": model.state_dict(),
        "calibration": getattr(model, "calibration", SeverityCalibration()).as_dict(),
        "input_range": getattr(model, "input_range", InputRange()).as_dict(),
        "canal_offset": getattr(model, "canal_offset", CanalOffset()).as_dict(),
        "measured_grade": getattr(model, "measured_grade", MeasuredGrade()).as_dict(),
        "extra": extra or {},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> LSSModel:
    """Loads a model saved by ``save_model`` (in eval mode), with its calibration (the identity for a file saved
    without one).

    Raises:
        ValueError: for a file of another format version.
    """
    payload = torch.load(Path(path), map_location=map_location, weights_only=False)
    if payload.get("format_version") != MODEL_FORMAT_VERSION:
        raise ValueError(f"{path}: model format {payload.get('format_version')!r}, expected {MODEL_FORMAT_VERSION}.")
    config = ModelConfig.model_validate(payload["config"])
    prompts = PromptSet(levels=tuple(payload["prompts"]["levels"]), structures=tuple(payload["prompts"]["structures"]))
    state = payload["state_dict"]
    if "prompt_embeddings" in state:
        model = LSSModel(config, payload["axial_slices"], payload["axial_pixel_area_mm2"],
                         prompt_embeddings=state["prompt_embeddings"], prompts=prompts)
    else:
        from lss.model.text import build_text_encoder

        model = LSSModel(config, payload["axial_slices"], payload["axial_pixel_area_mm2"],
                         text_encoder=build_text_encoder(config), prompts=prompts)
    model.load_state_dict(state)
    model.calibration = SeverityCalibration.from_dict(payload.get("calibration"))  # absent: the identity
    model.input_range = InputRange.from_dict(payload.get("input_range"))  # absent: nothing checked
    model.canal_offset = CanalOffset.from_dict(payload.get("canal_offset"))  # absent: the argmax masks
    model.measured_grade = MeasuredGrade.from_dict(payload.get("measured_grade"))  # absent: the head grades
    return model.to(map_location).eval()  # load_state_dict copies into the model's own (CPU) parameters
