"""The deployments of the serving graph: preprocessing, segmentation (batched), grading and report writing.

    LSSApi (FastAPI ingress) ─► Preprocessor ──(sagittal pass, when axial series need levels)──► Segmenter
                             ─► Segmenter (@serve.batch: one forward for several studies)
                             ─► Grader (measurements, rule grade, review flags)
                             ─► Reporter (report text + evidence PNGs + DICOM SEG/SR under serve.results_dir)

Every deployment takes its settings from ``user_config`` in ``reconfigure`` (so ``serve deploy`` with a new
user_config swaps a model in the running replicas, with no restart), answers ``check_health`` and says which
version it serves. The stages are the functions ``lss diagnose`` uses, so the CLI and the API agree.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ray import serve
from ray.serve.handle import DeploymentHandle

from lss.config import PreprocessConfig, ReportConfig

__all__ = ["Preprocessor", "Segmenter", "Grader", "Reporter", "model_version", "SAFE_NAME"]

logger = logging.getLogger("ray.serve")

SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".raw", ".nrrd", ".dcm")
UPLOAD_PREFIX = "lss_upload_"
STALE_UPLOAD_S = 3600.0


def model_version(path: str | Path) -> str:
    """The version of a model file: the first 12 hex digits of its SHA-256."""
    from lss.preprocessing.pipeline import file_sha256

    return file_sha256(Path(path))[:12]


def _error(code: str, message: str, status: int = 422) -> dict[str, Any]:
    return {"ok": False, "code": code, "message": message, "status": status}


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
    """Upload -> a preprocessed study (the same MONAI transforms as training), in a private temp dir that is always
    removed. Axial series without levels are matched by a sagittal pass through the segmentation deployment."""

    def __init__(self, segmenter: DeploymentHandle) -> None:
        self.segmenter = segmenter
        self.config = PreprocessConfig()
        self.max_unpacked_bytes = 1 << 30
        # A replica killed mid-request cannot run its `finally`: a new one removes upload dirs left for an hour.
        cutoff = time.time() - STALE_UPLOAD_S
        for stale in Path(tempfile.gettempdir()).glob(f"{UPLOAD_PREFIX}*"):
            if stale.is_dir() and stale.stat().st_mtime < cutoff:
                shutil.rmtree(stale, ignore_errors=True)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.config = PreprocessConfig.model_validate(user_config.get("preprocess", {}))
        self.max_unpacked_bytes = int(user_config.get("max_unpacked_mb", 1024)) << 20

    def check_health(self) -> None:
        if not Path(tempfile.gettempdir()).is_dir():
            raise RuntimeError("no temporary directory to unpack uploads into.")

    def version(self) -> dict[str, Any]:
        return {"fingerprint": self.config.model_dump(mode="json")}

    def _locator(self, image):
        """The coarse pass that places the sagittal crop, run by the Segmenter (it holds the model); called from
        the preprocessing thread, so blocking on the response does not block this replica's event loop."""
        shape = tuple(self.config.sagittal_shape[1:])
        centre = self.segmenter.locate.remote(image, shape).result()
        return None if centre is None else np.asarray(centre, dtype=float)

    async def prepare(self, files: list[tuple[str, bytes]], request_id: str, dicom_outputs: bool = False
                      ) -> dict[str, Any]:
        """The study's model-ready arrays, or an error ``{"ok": False, "code", "message", "status"}``; with
        ``dicom_outputs``, also the de-identified source headers the DICOM outputs reference."""
        from lss.data.errors import ErrorCode, StudyError
        from lss.inference.diagnose import match_axial_levels, needs_axial_matching, without_labels
        from lss.inference.study_input import open_study
        from lss.preprocessing.transforms import preprocess_study
        from lss.reporting.findings import build_findings

        folder = Path(tempfile.mkdtemp(prefix=UPLOAD_PREFIX))  # mode 0700: private to this user
        try:
            root = await asyncio.to_thread(_store_upload, files, folder, self.max_unpacked_bytes)
            record = without_labels(await asyncio.to_thread(open_study, root))
            record.study_id = request_id
            case = await asyncio.to_thread(preprocess_study, record, self.config, self._locator)
            # The DICOM outputs (rendered on GET) reference the source images: their de-identified headers are read
            # now, while the upload exists, and only when asked for (reading every header again costs ~0.15 s, and
            # beside the preprocessing, on two cores, ~0.7 s). A NIfTI/MHA upload has none; its DICOM URLs say why.
            dicom = await asyncio.to_thread(_dicom_sources, record) if dicom_outputs else dict(NOT_REQUESTED)
            dicom["axial_slices"] = int(case.axial_image.shape[1])
            matched_levels: list[str] = []
            if needs_axial_matching(record, case):
                first = await self.segmenter.predict.remote(case.arrays(), request_id, case.info)
                matched, levels = match_axial_levels(record, build_findings(first))
                if levels:
                    case = await asyncio.to_thread(preprocess_study, matched, self.config, self._locator)
                    matched_levels = [lv for lv in levels if lv in case.info.get("axial", {})]
            return {"ok": True, "arrays": case.arrays(), "info": case.info, "axial_matched": matched_levels,
                    "axial_series": len(record.axials()), "dicom": dicom}
        except StudyError as error:
            status = 400 if error.code in (ErrorCode.BAD_ARCHIVE, ErrorCode.UNSUPPORTED_FORMAT, ErrorCode.NO_IMAGE,
                                           ErrorCode.NOT_AN_IMAGE, ErrorCode.MULTIPLE_STUDIES) else 422
            return _error(error.code.value, error.message, status)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8)
class Segmenter:
    """The vision-language model: masks, severity probabilities and attention for a batch of studies."""

    def __init__(self) -> None:
        self.model = None
        self.model_path: str | None = None
        self.model_version: str | None = None
        self.max_batch_size = 4
        self.batch_wait_timeout_s = 0.01
        self.device = "cpu"
        self._lock = threading.Lock()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        from lss.model import load_model

        path = user_config.get("model_path")
        if not path:
            raise ValueError("the Segmenter's user_config needs model_path.")
        if path != self.model_path or self.model is None:
            import torch

            self.device = "cuda" if torch.cuda.is_available() else "cpu"  # a GPU only where Ray gave one
            model = load_model(path, map_location=self.device).eval()  # load first: requests keep the old one
            version = model_version(path)
            with self._lock:
                self.model, self.model_path, self.model_version = model, str(path), version
            logger.info("Segmenter serves model %s", version)
        # A hot swap may give only model_path: the batching settings then stay as they were.
        self.max_batch_size = int(user_config.get("max_batch_size", self.max_batch_size))
        self.batch_wait_timeout_s = float(user_config.get("batch_wait_timeout_s", self.batch_wait_timeout_s))
        self.predict.set_max_batch_size(self.max_batch_size)
        self.predict.set_batch_wait_timeout_s(self.batch_wait_timeout_s)

    def check_health(self) -> None:
        if self.model is None:
            raise RuntimeError("no model loaded.")

    def version(self) -> dict[str, Any]:
        return {"model_version": self.model_version, "model_file": Path(self.model_path or "").name,
                "max_batch_size": self.max_batch_size}

    async def locate(self, image, shape: tuple[int, int]) -> list[float] | None:
        """The spine's voxel centre in a whole sagittal field of view (``lss.inference.locate.SpineLocator``)."""
        from lss.inference.locate import SpineLocator

        with self._lock:
            model = self.model
        centre = await asyncio.to_thread(SpineLocator(model, shape, self.device), image)
        return None if centre is None else [float(v) for v in centre]

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.01)
    async def predict(self, arrays: list[dict], study_ids: list[str], infos: list[dict]) -> list:
        from lss.inference.predict import predict_cases

        with self._lock:
            model, version = self.model, self.model_version
        predictions = await asyncio.to_thread(predict_cases, model, arrays, study_ids, infos, self.device)
        for prediction in predictions:
            prediction.info = {**prediction.info, "model_version": version, "batch_size": len(arrays)}
        return predictions


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Grader:
    """Measurements in mm / mm2 from the predicted masks, the rule grade, and review flags."""

    def check_health(self) -> None:
        return None

    def version(self) -> dict[str, Any]:
        from lss.anatomy import CUTOFFS

        return {"cutoffs": vars(CUTOFFS)}

    async def grade(self, prediction):
        from lss.reporting.findings import build_findings

        return await asyncio.to_thread(build_findings, prediction)


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class Reporter:
    """The report (grounded writer by default, or the learned generator) and the evidence PNGs."""

    def __init__(self) -> None:
        self.config = ReportConfig()
        self.generator = None
        self.generator_version: str | None = None
        self.results_dir = Path("outputs/serve/results")
        self.results_ttl_s = 3600.0

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = ReportConfig.model_validate(user_config.get("report", {}))
        generator, version = None, None
        if config.writer == "learned":
            from lss.reporting.generator import load_generator

            if not config.generator_path:
                raise ValueError("report.writer=learned needs report.generator_path.")
            generator = load_generator(config.generator_path)
            version = model_version(Path(config.generator_path) / "generator.json")
        self.config, self.generator, self.generator_version = config, generator, version
        self.results_dir = Path(user_config.get("results_dir", self.results_dir)).resolve()
        self.results_ttl_s = float(user_config.get("results_ttl_s", self.results_ttl_s))
        self.results_dir.mkdir(parents=True, exist_ok=True)

    def check_health(self) -> None:
        if not self.results_dir.is_dir():
            raise RuntimeError(f"results_dir {self.results_dir} is gone.")

    def version(self) -> dict[str, Any]:
        return {"writer": self.config.writer, "generator_version": self.generator_version}

    def _prune(self) -> None:
        cutoff = time.time() - self.results_ttl_s
        for folder in self.results_dir.iterdir():
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)

    def _write(self, prediction, findings, request_id: str, dicom: dict[str, Any] | None = None) -> dict[str, Any]:
        import pickle

        import torch

        from lss.reporting.evidence import all_evidence_ids, link_evidence, sagittal_slice_ids
        from lss.reporting.consistency import enforce_consistency
        from lss.reporting.grounded import GroundedReportWriter

        # Evidence is rendered when first asked for (GET), not here: a dozen matplotlib figures would triple the
        # latency of every diagnosis, and most clients look at one or two images.
        link_evidence(findings)
        folder = self.results_dir / request_id
        folder.mkdir(mode=0o700, parents=True)
        with open(folder / "state.pkl", "wb") as handle:  # written and read only by this deployment
            pickle.dump((prediction, findings), handle)
        dicom = dicom or {"error": "the study's DICOM headers were not kept."}
        with open(folder / "dicom.pkl", "wb") as handle:  # de-identified source headers, or why there are none
            pickle.dump(dicom, handle)
        dicom_names: list[str] = []
        if dicom.get("sources") is not None:
            from lss.export import dicom_output_names

            dicom_names = dicom_output_names(prediction, dicom["sources"])
        check = None
        if self.generator is None:
            report = GroundedReportWriter().write(findings)
        else:
            features = torch.as_tensor(prediction.level_features, dtype=torch.float32)[None]
            text = self.generator.generate(features, self.config.style)[0]
            # Never returned unchecked: a text the findings contradict is replaced by the grounded writer's.
            checked = enforce_consistency(text, findings)
            report, check = checked.report(findings.study_id, writer="learned"), checked.as_dict()
        self._prune()
        return {"report": report.as_dict(), "findings": findings, "images": all_evidence_ids(),
                "sagittal_slices": sagittal_slice_ids(prediction), "sagittal_slice": int(prediction.sagittal_slice),
                "dicom": dicom_names, "report_check": check}

    async def write(self, prediction, findings, request_id: str, dicom: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
        return await asyncio.to_thread(self._write, prediction, findings, request_id, dicom)

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
        return await asyncio.to_thread(self._image, request_id, key)

    def _dicom(self, request_id: str, name: str) -> bytes | dict[str, Any] | None:
        import pickle

        from lss.export import OutputIdentity, dicom_output_names, write_dicom_outputs

        folder = self.results_dir / request_id
        if not (folder / "state.pkl").is_file() or not (folder / "dicom.pkl").is_file():
            return None
        with open(folder / "dicom.pkl", "rb") as handle:
            dicom = pickle.load(handle)
        if dicom.get("sources") is None:
            return _error(dicom.get("code", "not_dicom"), f"no DICOM outputs for this study: {dicom.get('error')}", 422)
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
                return _error("dicom_unavailable", f"the DICOM outputs cannot be built: {error}", 422)
        return path.read_bytes() if path.is_file() else None

    async def dicom(self, request_id: str, name: str) -> bytes | dict[str, Any] | None:
        """One DICOM output (``lss.export``: "seg_sagittal", "seg_axial_<level>", "sr"), rendered with the others
        on first request, then kept; None when the request or the output is unknown/expired, an error dict
        (422 not_dicom) when the study was not DICOM."""
        return await asyncio.to_thread(self._dicom, request_id, name)
