"""The explainable vision-language model: MONAI backbones, a text encoder, Spatial Patch Cross-Attention, heads.

``build_model(config)`` wires them for one study (sagittal + per-level axial 2.5D inputs); ``save_model`` /
``load_model`` are the inference export (configuration + weights + stored prompt embeddings).
"""

from lss.model.attention import (
    ATTENTIONS,
    AttentionOutput,
    GlobalPoolAttention,
    PromptAttention,
    SpatialPatchCrossAttention,
    build_attention,
    positional_encoding_2d,
)
from lss.model.backbones import BACKBONES, Backbone, BasicUNetBackbone, SegResNetBackbone, build_backbone
from lss.model.heads import SeverityHead
from lss.model.inputs import case_to_sample, collate_samples
from lss.model.prompts import PromptSet, default_prompts
from lss.model.vlm import LSSModel, ModelOutput, build_model, load_model, save_model

__all__ = [
    "ATTENTIONS", "AttentionOutput", "GlobalPoolAttention", "PromptAttention", "SpatialPatchCrossAttention",
    "build_attention", "positional_encoding_2d", "BACKBONES", "Backbone", "BasicUNetBackbone", "SegResNetBackbone",
    "build_backbone", "SeverityHead", "case_to_sample", "collate_samples", "PromptSet", "default_prompts",
    "LSSModel", "ModelOutput", "build_model", "load_model", "save_model",
]
