"""The deployments of the serving graph: one stage of the diagnosis chain each.

    LSSApi ─(upload)─► Preprocessor ─(PreparedStudy)─► Segmenter ─(StudyPrediction)─► Grader ─(findings)─► Reporter
                        StudyPreparer    sagittal pass  StudySegmenter                 build_findings      StudyReporter
                        (locate / sagittal pass ───────► Segmenter)                                       + evidence,
                                                                                                            DICOM SEG/SR

The ingress passes each ``DeploymentResponse`` straight to the next handle: the arrays travel from stage to stage
through the object store and never through the ingress, which awaits only the Reporter's small summary. Each
deployment wraps the same Ray-free stage ``lss diagnose`` runs (``lss.inference.prepare``, ``lss.inference.segment``,
``lss.reporting.findings``, ``lss.reporting.reporter``), so the CLI and the API agree.

Every deployment validates its ``user_config`` with a pydantic schema (``lss.serve.schemas``) in ``reconfigure`` (so
``serve deploy`` with a new user_config swaps a model in the running replicas, with no restart), answers
``check_health`` and says which version it serves. Failures are raised as typed errors (``StudyError``,
``ServeError``), never returned as values.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from lss.config import PreprocessConfig
from lss.data.cases import model_version
from lss.serve.errors import ServeError, install_log_redaction
from lss.serve.housekeeping import Sweeper, new_upload_folder, prune_results, sweep_uploads
from lss.serve.schemas import PreprocessorSettings, ReporterSettings, SegmenterSettings

__all__ = ["Preprocessor", "Segmenter", "Grader", "GradedStudy", "Reporter", "model_version", "SAFE_NAME"]

logger = logging.getLogger("ray.serve")

SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".raw", ".nrrd", ".dcm")


def _import_the_chain() -> None:
    """Imports the chain's modules (torch, MONAI): a stage deployment receives ``PreparedStudy`` /
    ``StudyPrediction`` objects, whose unpickling imports them. Called in a replica's constructor, so that the
    replica pays it before it is ready rather than on its first request. This module itself imports none of them,
    so the ingress (``LSSApi``), which passes responses on and reads only the findings, imports ~4 s less."""
    import lss.inference.predict  # noqa: F401
    import lss.inference.prepare  # noqa: F401


def _store_upload(files: list[tuple[str, bytes]], folder: Path, max_unpacked_bytes: int) -> Path:
    """Writes the uploaded files into ``folder`` (a zip is unpacked there) and returns the study root."""
    from lss.data.errors import ErrorCode, StudyError
    from lss.inference.study_input import unpack_zip

    study = folder / "study"
    study.mkdir()
    zips = [(n, b) for n, b in files if b[:4] == b"PK\x03\x04" or n.lower().endswith(".zip")]
    if zips and len(files) > 1:
        raise StudyError(ErrorCode.UNSUPPORTED_FORMAT, "upload either one zip or image files, not both.")
    if zips:
        archive = folder / "upload.zip"
        archive.write_bytes(zips[0][1])
        return unpack_zip(archive, study, max_unpacked_bytes)
    for index, (name, payload) in enumerate(files):
        # Client file names can carry patient names: keep only the kind of file and a safe stem.
        clean = SAFE_NAME.sub("_", Path(name or "").name) or f"file{index}"
        if not clean.lower().endswith(IMAGE_SUFFIXES) and payload[:2] != b"\x1f\x8b":
            raise StudyError(ErrorCode.UNSUPPORTED_FORMAT,
                             f"file {index + 1} is not a .zip, NIfTI (.nii/.nii.gz), MetaImage or DICOM (.dcm) file.")
        (study / clean).write_bytes(payload)
    return study


NOT_REQUESTED = {"code": "dicom_not_requested",
                 "error": "DICOM outputs were not asked for: upload with POST /v1/diagnose?dicom=true."}


def _dicom_sources(record) -> dict[str, Any]:
    """``{"sources": DicomSources}`` of a DICOM study, or ``{"code", "error": why not}``."""
    from lss.export.sources import NotDicomError, collect_dicom_sources

    try:
        return {"sources": collect_dicom_sources(record)}
    except NotDicomError as error:
        return {"code": "not_dicom", "error": str(error)}


@serve.deployment(ray_actor_options={"num_cpus": 0.5})
class Preprocessor:
    """Upload -> ``PreparedStudy`` (``lss.inference.prepare.StudyPreparer``), in a private temp dir that is always
    removed. The sagittal crop's locator and the sagittal pass that matches unlabelled axial series (disc centres
    only: a few numbers cross back, not a prediction) run on the Segmenter (it holds the model)."""

    def __init__(self, segmenter: DeploymentHandle) -> None:
        install_log_redaction()
        _import_the_chain()
        self.segmenter = segmenter
        self.settings = PreprocessorSettings()
        # A replica killed mid-request cannot run its `finally`: the live ones remove what it left.
        sweep_uploads()
        self.sweeper = Sweeper(sweep_uploads, self.settings.sweep_interval_s, "lss-upload-sweeper")

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.settings = PreprocessorSettings.model_validate(user_config)
        self.sweeper.interval_s = self.settings.sweep_interval_s
        if self.settings.torch_threads is not None:
            import torch

            torch.set_num_threads(self.settings.torch_threads)

    def check_health(self) -> None:
        import tempfile

        if not Path(tempfile.gettempdir()).is_dir():
            raise RuntimeError("no temporary directory to unpack uploads into.")

    def version(self) -> dict[str, Any]:
        import torch

        return {"fingerprint": self.settings.preprocess.model_dump(mode="json"),
                "torch_threads": torch.get_num_threads()}

    # Both run in the preprocessing thread, so blocking on the Segmenter's answer does not block the event loop;
    # each adds its seconds to `spent` (the request's own list: requests run concurrently).
    def _locate(self, image, spent: list[float]):
        started = time.perf_counter()
        centre = self.segmenter.locate.remote(image, self.settings.preprocess).result()
        spent.append(time.perf_counter() - started)
        return None if centre is None else np.asarray(centre, dtype=float)

    def _find_discs(self, prepared, spent: list[float]):
        started = time.perf_counter()
        discs = self.segmenter.disc_centres.remote(prepared).result()
        spent.append(time.perf_counter() - started)
        return discs

    def _prepare(self, files: list[tuple[str, bytes]], request_id: str, dicom_outputs: bool):
        from lss.inference.prepare import StudyPreparer
        from lss.inference.study_input import open_study

        folder = new_upload_folder()  # mode 0700: private to this user
        try:
            started = time.perf_counter()
            root = _store_upload(files, folder, self.settings.max_unpacked_mb << 20)
            record = open_study(root, limits=self.settings.preprocess.limits)
            unpacked = time.perf_counter() - started
            spent: list[float] = []
            prepared = StudyPreparer(self.settings.preprocess, lambda p: self._find_discs(p, spent),
                                     lambda image: self._locate(image, spent))(record, request_id)
            prepared.extras.update(unpack_s=unpacked, segmenter_calls_s=sum(spent))
            # The DICOM outputs (rendered on GET) reference the source images: their de-identified headers are read
            # now, while the upload exists, and only when asked for (reading every header again costs ~0.15 s, and
            # beside the preprocessing, on two cores, ~0.7 s). A NIfTI/MHA upload has none; its DICOM URLs say why.
            dicom = _dicom_sources(record) if dicom_outputs else dict(NOT_REQUESTED)
            dicom["axial_slices"] = int(prepared.case.axial_image.shape[1])
            prepared.extras["dicom"] = dicom
            return prepared
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    async def prepare(self, files: list[tuple[str, bytes]], request_id: str, dicom_outputs: bool = False):
        """The study's ``PreparedStudy``, with ``extras``: ``dicom`` (with ``dicom_outputs``, the de-identified source
        headers the DICOM outputs reference, else why there are none), ``unpack_s`` (seconds to store, unzip and
        list the upload, which ``seconds`` leaves out) and ``segmenter_calls_s`` (the part of ``seconds`` spent
        waiting for the Segmenter's locator and sagittal passes).

        Raises:
            StudyError: when the upload is not a usable study.
        """
        return await asyncio.to_thread(self._prepare, files, request_id, dicom_outputs)


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8)
class Segmenter:
    """The vision-language model (``lss.inference.segment.StudySegmenter``): masks, severity probabilities and
    attention, for a batch of studies at a time."""

    def __init__(self) -> None:
        install_log_redaction()
        self.stage = None
        self.max_batch_size = 4
        self.batch_wait_timeout_s = 0.01
        self._lock = threading.Lock()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        from lss.inference.segment import StudySegmenter

        settings = SegmenterSettings.model_validate(user_config)
        if self.stage is None or str(self.stage.model_path) != settings.model_path:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"  # a GPU only where Ray gave one
            stage = StudySegmenter(settings.model_path, device)  # load first: requests keep the old one meanwhile
            with self._lock:
                self.stage = stage
            logger.info("Segmenter serves model %s", stage.version)
        if settings.torch_threads is not None:
            import torch

            torch.set_num_threads(settings.torch_threads)
        if settings.max_batch_size is not None:
            self.max_batch_size = settings.max_batch_size
        if settings.batch_wait_timeout_s is not None:
            self.batch_wait_timeout_s = settings.batch_wait_timeout_s
        self.predict.set_max_batch_size(self.max_batch_size)
        self.predict.set_batch_wait_timeout_s(self.batch_wait_timeout_s)

    def check_health(self) -> None:
        if self.stage is None:
            raise RuntimeError("no model loaded.")

    def version(self) -> dict[str, Any]:
        import torch

        return {**self.stage.describe(), "max_batch_size": self.max_batch_size,
                "torch_threads": torch.get_num_threads()}

    def _current(self):
        with self._lock:
            return self.stage

    async def locate(self, image, config: PreprocessConfig) -> list[float] | None:
        """The spine's voxel centre in a whole sagittal field of view (``lss.inference.locate.SpineLocator``)."""
        centre = await asyncio.to_thread(self._current().locate, image, config)
        return None if centre is None else [float(v) for v in centre]

    async def disc_centres(self, prepared) -> dict[str, tuple[float, float, float] | None]:
        """The sagittal pass that matches unlabelled axial series: each level's disc centre in RAS mm, or None."""
        return await asyncio.to_thread(self._current().disc_centres_one, prepared)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.01)
    async def predict(self, studies: list) -> list:
        """``PreparedStudy`` objects -> their ``StudyPrediction`` (one forward pass for the batch)."""
        return await asyncio.to_thread(self._current().predict, studies)


class GradedStudy(NamedTuple):
    """The Grader's answer: the study's findings and the seconds grading took."""

    findings: Any
    seconds: float


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Grader:
    """Measurements in mm / mm2 from the predicted masks, the rule grade, and review flags
    (``lss.reporting.findings.build_findings``)."""

    def __init__(self) -> None:
        install_log_redaction()
        _import_the_chain()

    def check_health(self) -> None:
        return None

    def version(self) -> dict[str, Any]:
        from lss.anatomy import CUTOFFS

        return {"cutoffs": vars(CUTOFFS)}

    def _grade(self, prediction) -> GradedStudy:
        from lss.reporting.findings import build_findings

        started = time.perf_counter()
        findings = build_findings(prediction)
        return GradedStudy(findings, time.perf_counter() - started)

    async def grade(self, prediction) -> GradedStudy:
        return await asyncio.to_thread(self._grade, prediction)


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class Reporter:
    """The report (``lss.reporting.reporter.StudyReporter``: the grounded writer by default, or the learned generator
    checked against the findings), and the evidence PNGs and DICOM outputs, rendered when first asked for."""

    def __init__(self) -> None:
        from lss.reporting.reporter import StudyReporter

        install_log_redaction()
        _import_the_chain()
        self.stage = StudyReporter()
        self.settings = ReporterSettings()
        self.results_dir = Path(self.settings.results_dir).resolve()
        self.sweeper = Sweeper(self._prune, self.settings.sweep_interval_s, "lss-evidence-sweeper")

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        from lss.reporting.reporter import StudyReporter

        self.settings = ReporterSettings.model_validate(user_config)
        self.stage = StudyReporter(self.settings.report)
        self.results_dir = Path(self.settings.results_dir).resolve()
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.sweeper.interval_s = self.settings.sweep_interval_s

    def check_health(self) -> None:
        if not self.results_dir.is_dir():
            raise RuntimeError(f"results_dir {self.results_dir} is gone.")

    def version(self) -> dict[str, Any]:
        return self.stage.describe()

    def _prune(self) -> int:
        return prune_results(self.results_dir, self.settings.results_ttl_s, self.settings.results_max_mb << 20)

    def _write(self, prediction, graded: GradedStudy, prepared, request_id: str) -> dict[str, Any]:
        import pickle

        from lss.reporting.evidence import all_evidence_ids, link_evidence, sagittal_slice_ids

        started = time.perf_counter()
        findings = graded.findings
        # Evidence is rendered when first asked for (GET), not here: a dozen matplotlib figures would triple the
        # latency of every diagnosis, and most clients look at one or two images.
        link_evidence(findings)
        folder = self.results_dir / request_id
        folder.mkdir(mode=0o700, parents=True)
        with open(folder / "state.pkl", "wb") as handle:  # written and read only by this deployment
            pickle.dump((prediction, findings), handle)
        dicom = prepared.extras.get("dicom") or {"error": "the study's DICOM headers were not kept."}
        with open(folder / "dicom.pkl", "wb") as handle:  # de-identified source headers, or why there are none
            pickle.dump(dicom, handle)
        dicom_names: list[str] = []
        if dicom.get("sources") is not None:
            from lss.export import dicom_output_names

            dicom_names = dicom_output_names(prediction, dicom["sources"])
        report, check = self.stage.write(findings, prediction)
        return {"report": report.as_dict(), "findings": findings, "images": all_evidence_ids(),
                "sagittal_slices": sagittal_slice_ids(prediction), "sagittal_slice": int(prediction.sagittal_slice),
                "dicom": dicom_names, "dicom_error": dicom.get("error"),
                "report_check": None if check is None else check.as_dict(),
                "axial_matched": list(prepared.axial_matched), "model_version": prediction.info.get("model_version"),
                "timings": {"unpack": prepared.extras.get("unpack_s"), "preprocess": prepared.seconds,
                            "preprocess_segmenter_calls": prepared.extras.get("segmenter_calls_s"),
                            "segmentation": prediction.info.get("segmentation_s"),
                            "grading": graded.seconds, "report": time.perf_counter() - started}}

    async def write(self, prediction, graded: GradedStudy, prepared, request_id: str) -> dict[str, Any]:
        """Stores the state the evidence is rendered from and writes the report.

        Returns:
            What the ingress answers with (no arrays): ``report``, ``findings``, evidence ``images`` ids,
            ``sagittal_slices``, ``dicom`` output names, ``report_check``, ``axial_matched``, ``model_version`` and
            each stage's ``timings``.
        """
        return await asyncio.to_thread(self._write, prediction, graded, prepared, request_id)

    def _image(self, request_id: str, key: str) -> bytes | None:
        import pickle

        from lss.reporting.evidence import SLICE_PREFIX, all_evidence_ids, render_evidence_png, sagittal_slice_ids

        folder = self.results_dir / request_id
        if (key not in all_evidence_ids() and not key.startswith(SLICE_PREFIX)) or not (folder / "state.pkl").is_file():
            return None
        path = folder / f"{key}.png"
        if not path.is_file():
            with open(folder / "state.pkl", "rb") as handle:
                prediction, findings = pickle.load(handle)
            if key not in all_evidence_ids() and key not in sagittal_slice_ids(prediction):
                return None
            tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
            tmp.write_bytes(render_evidence_png(prediction, findings, key))
            tmp.replace(path)
        return path.read_bytes()

    async def image(self, request_id: str, key: str) -> bytes | None:
        """The PNG of one evidence image (rendered on first request, then kept), or None when unknown/expired."""
        try:
            return await asyncio.to_thread(self._image, request_id, key)
        except FileNotFoundError:  # pruned (expired or over results_max_mb) while being read
            return None

    def _dicom(self, request_id: str, name: str) -> bytes | None:
        import pickle

        from lss.export import OutputIdentity, dicom_output_names, write_dicom_outputs

        folder = self.results_dir / request_id
        if not (folder / "state.pkl").is_file() or not (folder / "dicom.pkl").is_file():
            return None
        with open(folder / "dicom.pkl", "rb") as handle:
            dicom = pickle.load(handle)
        if dicom.get("sources") is None:
            raise ServeError(422, dicom.get("code", "not_dicom"),
                             f"no DICOM outputs for this study: {dicom.get('error')}")
        path = folder / "dicom" / f"{name}.dcm"
        if not path.is_file():
            with open(folder / "state.pkl", "rb") as handle:
                prediction, findings = pickle.load(handle)
            if name not in dicom_output_names(prediction, dicom["sources"]):
                return None
            # All outputs at once: the SR references the SEGs' UIDs. UIDs derive from the (random) request id,
            # so a concurrent render writes the same instances.
            try:
                write_dicom_outputs(prediction, findings, dicom["sources"], folder / "dicom",
                                    axial_slices=dicom["axial_slices"],
                                    identity=OutputIdentity(seed=request_id,
                                                            model_version=prediction.info.get("model_version")))
            except ValueError as error:  # geometry DICOM cannot store, a source image that cannot be referenced
                raise ServeError(422, "dicom_unavailable", f"the DICOM outputs cannot be built: {error}") from None
        return path.read_bytes() if path.is_file() else None

    async def dicom(self, request_id: str, name: str) -> bytes | None:
        """One DICOM output (``lss.export``: "seg_sagittal", "seg_axial_<level>", "sr"), rendered with the others
        on first request, then kept; None when the request or the output is unknown/expired.

        Raises:
            ServeError: 422 ``not_dicom`` when the study was not DICOM, ``dicom_unavailable`` when its outputs
                cannot be built.
        """
        try:
            return await asyncio.to_thread(self._dicom, request_id, name)
        except FileNotFoundError:  # pruned while being read
            return None
