"""Pydantic schemas of every HTTP response of the API (they make its OpenAPI document)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from lss.config import PreprocessConfig, ReportConfig

__all__ = [
    "API_VERSION",
    "Measurements",
    "LevelResult",
    "ReportSentenceOut",
    "DiagnosisResponse",
    "ErrorResponse",
    "HealthResponse",
    "ModelInfo",
    "PreprocessorSettings",
    "SegmenterSettings",
    "ReporterSettings",
]

API_VERSION = "v1"


class Measurements(BaseModel):
    """What was measured at a level, and on which slice."""

    area_mm2: float | None = Field(None, description="dural sac cross-sectional area on the axial slice (mm2)")
    ap_mm: float | None = Field(None, description="dural sac antero-posterior diameter on the axial slice (mm)")
    axial_slice: dict | None = Field(None, description="the axial image measured: series id and slice index")
    sagittal_ap_mm: float | None = Field(None, description="canal AP diameter on the mid-sagittal slice (mm)")
    disc_height_mm: float | None = Field(None, description="disc height on the mid-sagittal slice (mm)")
    sagittal_slice: int | None = None


class LevelResult(BaseModel):
    """One level's central canal finding."""

    level: str = Field(..., examples=["L4/L5"])
    severity: str | None = Field(..., description="the stated grade: Normal/Mild, Moderate or Severe; null when the "
                                 "level is not assessable or the grade is withheld (see status)")
    status: str = Field("graded", description="graded, withheld (the model's calibrated confidence is below its "
                        "threshold, or the model's and the measurements' grades disagree: see withheld_reason) or "
                        "not_assessable (see not_assessable_reasons)")
    withheld_reason: str = Field("", description="why the grade is withheld; empty unless status is withheld")
    assessable: bool = True
    not_assessable_reasons: list[str] = Field(default_factory=list, description="why the level cannot be graded")
    model_severity: str | None = Field(None, description="the model's own grade, also when withheld; null when the "
                                       "level is not assessable")
    probabilities: dict[str, float] | None = Field(..., description="calibrated severity probabilities; null when "
                                                   "the level is not assessable")
    rule_severity: str | None = Field(None, description="the grade of the measurements by the documented cut-offs")
    review: bool = Field(..., description="true when a reader should check this level: the model's and the "
                         "measurements' grades disagree (then the grade is withheld), the canal looks interrupted "
                         "on the sagittal view, or no dural sac was found on the axial slice")
    review_reason: str = ""
    lower_confidence: bool = Field(..., description="true when the level had no axial image")
    measurements: Measurements
    evidence: dict[str, str] = Field(default_factory=dict, description="evidence image id -> URL")


class ReportSentenceOut(BaseModel):
    section: str
    text: str
    levels: list[str]


class DiagnosisResponse(BaseModel):
    """The answer to one uploaded study."""

    request_id: str = Field(..., description="random id of this request; the evidence URLs contain it")
    api_version: str = API_VERSION
    model_version: str = Field(..., description="version (file hash prefix) of the segmentation/grading model")
    writer: str = Field(..., description="the report writer: grounded or learned")
    has_axial: bool
    assessable: bool = Field(True, description="false when no level could be assessed (see not_assessable_reasons)")
    not_assessable_reasons: list[str] = Field(default_factory=list, description="problems of the whole study")
    levels: list[LevelResult]
    report: str
    sentences: list[ReportSentenceOut]
    images: dict[str, str] = Field(..., description="evidence image id -> URL (GET it with the same token)")
    sagittal_slices: list[str] = Field(default_factory=list, description="URL of each slice of the sagittal crop, in "
                                       "order (PNG, on request; for a slice slider)")
    sagittal_slice: int | None = Field(None, description="index in sagittal_slices of the slice the model segments "
                                       "(the only one drawn with masks)")
    notes: list[str] = Field(default_factory=list)
    timings_s: dict[str, float] = Field(default_factory=dict, description="seconds per pipeline stage")
    dicom: dict[str, str] = Field(default_factory=dict, description="DICOM output name -> URL (application/dicom; "
                                  "GET it with the same token): seg_sagittal, seg_axial_<level> per level with axial "
                                  "images, sr (TID 1500 measurements); empty for a NIfTI/MHA upload")


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body: a machine-readable code and a sentence for a person."""

    code: str = Field(..., examples=["bad_archive", "missing_sagittal", "too_large", "unauthorized"])
    message: str


class HealthResponse(BaseModel):
    status: str = "ok"
    api_version: str = API_VERSION


class ModelInfo(BaseModel):
    """What each deployment serves."""

    api_version: str = API_VERSION
    segmentation: dict
    report: dict
    preprocessing: dict


# ------------------------------------------------------------------------------------ deployments' user_config
class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PreprocessorSettings(_Settings):
    """``user_config`` of the Preprocessor deployment."""

    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    max_unpacked_mb: int = Field(1024, ge=1, description="largest unpacked content of an uploaded zip")
    sweep_interval_s: float = Field(60.0, gt=0, description="how often upload folders of dead replicas are removed")
    torch_threads: int | None = Field(None, ge=1, description="intra-op threads of each replica's resampling (MONAI "
                                      "runs it in torch); None keeps Ray's setting (OMP_NUM_THREADS = the replica's "
                                      "whole CPUs, at least 1)")


class SegmenterSettings(_Settings):
    """``user_config`` of the Segmenter deployment; a new ``model_path`` hot-swaps the model in running replicas.
    Batching settings left out keep their current values (a hot swap may give only ``model_path``)."""

    model_path: str = Field(..., min_length=1, description="a model file of lss.model.save_model")
    max_batch_size: int | None = Field(None, ge=1, description="studies per forward pass (@serve.batch); 1: off")
    batch_wait_timeout_s: float | None = Field(None, ge=0)
    torch_threads: int | None = Field(None, ge=1, description="intra-op threads of each replica's model; None keeps "
                                      "Ray's setting (OMP_NUM_THREADS = the replica's whole CPUs, at least 1)")


class ReporterSettings(_Settings):
    """``user_config`` of the Reporter deployment."""

    report: ReportConfig = Field(default_factory=ReportConfig)
    results_dir: str = "outputs/serve/results"
    results_ttl_s: float = Field(3600.0, gt=0)
    results_max_mb: int = Field(2048, ge=1, description="evidence kept on disk at most (least recently used goes)")
    sweep_interval_s: float = Field(60.0, gt=0, description="how often expired or excess evidence is removed")
