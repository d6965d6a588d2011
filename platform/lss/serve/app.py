"""The HTTP API (FastAPI behind ``@serve.ingress``) and the builder of the whole Serve application.

    POST /v1/diagnose                          multipart: one .zip (DICOM or NIfTI files) or NIfTI/MHA files
    GET  /v1/studies/{request_id}/images/{id}  an evidence PNG of a diagnosis
    GET  /v1/studies/{request_id}/dicom/{name} a DICOM output of a DICOM study: seg_sagittal, seg_axial_<level>, sr
    GET  /v1/model                             the versions each deployment serves
    GET  /v1/health                            liveness (no token needed)
    GET  /, /viewer/                           the web viewer (static page; its API calls carry the token)
    GET  /docs, /openapi.json                  the OpenAPI document

Every error is ``{"code", "message"}`` with a 4xx status; a bad upload never takes a replica down. When a token is
set (``LSS_API_TOKEN`` or ``serve.api_token``), every endpoint but health and the viewer's static page needs
``Authorization: Bearer <token>`` (the docs and the OpenAPI document too), checked before any byte of a body is
read (``lss.serve.guard``, which also bounds each upload's size, pace and concurrency). No DICOM patient
identifier is read, logged or returned: the study gets the request's random id.

(No ``from __future__ import annotations`` here: FastAPI resolves the route signatures at import.)
"""


import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from lss.config import LSSConfig, load_config
from lss.data.errors import StudyError
from lss.serve.deployments import Grader, Preprocessor, Reporter, Segmenter
from lss.serve.errors import ServeError, install_log_redaction, study_error_status
from lss.serve.guard import GuardSettings, RequestGuard
from lss.serve.schemas import (
    API_VERSION,
    DiagnosisResponse,
    ErrorResponse,
    HealthResponse,
    LevelResult,
    Measurements,
    ModelInfo,
    ReportSentenceOut,
)

__all__ = ["api", "LSSApi", "build_app", "app_builder", "DEPLOYMENT_NAMES", "TOKEN_ENV"]

logger = logging.getLogger("ray.serve")

TOKEN_ENV = "LSS_API_TOKEN"
DEPLOYMENT_NAMES = ("LSSApi", "Preprocessor", "Segmenter", "Grader", "Reporter")
_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")
_IMAGE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DICOM_NAME = re.compile(r"^[a-z0-9_]{1,32}$")
_ERRORS = {400: "bad request", 401: "unauthorized", 404: "not found", 408: "upload too slow", 413: "too large",
           415: "unsupported", 422: "unusable study", 429: "too many uploads from this client",
           503: "busy or a worker stopped"}
# A request whose chain lost a replica (killed, out of memory) is run again this many times: every stage is a pure
# function of the upload, so a retry is safe, and the other requests in flight with a dying replica still succeed.
REPLICA_DEATH_RETRIES = 2

api = FastAPI(
    title="LSS: explainable lumbar spinal stenosis diagnosis",
    version=API_VERSION,
    description="Upload a lumbar MRI study; get per-level central canal grades with their measurements, a report in "
                "which every finding points to its evidence, and the evidence images.",
)


class APIError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@api.exception_handler(APIError)
async def _api_error(_: Request, error: APIError) -> JSONResponse:
    return JSONResponse(status_code=error.status, content=ErrorResponse(code=error.code, message=error.message)
                        .model_dump())


@api.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
    """Framework errors (unknown route, wrong method) in the documented ``{"code", "message"}`` form."""
    code = getattr(error, "code", None) or {404: "not_found", 405: "method_not_allowed"}.get(error.status_code,
                                                                                            "http_error")
    message = error.detail if isinstance(error.detail, str) else _ERRORS.get(error.status_code, "error")
    return JSONResponse(status_code=error.status_code, content=ErrorResponse(code=code, message=message).model_dump(),
                        headers=getattr(error, "headers", None))


@api.exception_handler(RequestValidationError)
async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    """A request that does not fit the route: names the fields only, never echoes what the client sent."""
    fields = sorted({".".join(str(part) for part in e.get("loc", ()) if part != "body") or "request"
                     for e in error.errors()})
    return JSONResponse(status_code=422, content=ErrorResponse(
        code="invalid_request", message=f"the request does not fit this endpoint: check {', '.join(fields)}.")
        .model_dump())


def replica_died(error: BaseException) -> bool:
    """True when ``error`` is, or was caused by, a replica's death: Serve raises the upstream ``ActorDiedError`` of a
    chained ``DeploymentResponse`` wrapped in a ``RayServeException``."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError

    seen: BaseException | None = error
    for _ in range(8):  # causes form a short chain; never loop on a cyclic one
        if seen is None:
            return False
        if isinstance(seen, (ActorDiedError, ActorUnavailableError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@api.middleware("http")
async def _unexpected_error(request: Request, call_next):
    """Anything else: a coded 500 (503 when a replica died mid-request), with no traceback text and no client data
    in the answer or the log (an exception's message can hold an uploaded file name). A middleware, not an
    exception handler: Starlette re-raises after its handler for ``Exception``, and the replica would then log the
    traceback."""
    try:
        return await call_next(request)
    except Exception as error:
        if replica_died(error):
            status, code, message = 503, "unavailable", "a worker of the service stopped during this request; retry."
        else:
            status, code, message = 500, "internal_error", "the request failed inside the service."
        logger.error("request failed: %s (%d %s)", type(error).__name__, status, code)
        return JSONResponse(status_code=status, content=ErrorResponse(code=code, message=message).model_dump())


_GUARD_SETTINGS = [GuardSettings()]  # this replica's; LSSApi.reconfigure replaces it
api.add_middleware(RequestGuard, settings=lambda: _GUARD_SETTINGS[0])


def _responses(*statuses: int) -> dict[int, dict[str, Any]]:
    return {s: {"model": ErrorResponse, "description": _ERRORS.get(s, "error")} for s in statuses}


# ---------------------------------------------------------------------------------------------------- the viewer
# Plain functions, not LSSApi methods: they need no replica state. The page needs no token (it holds no data);
# every API call it makes sends the token the user typed.
STATIC_DIR = Path(__file__).with_name("static")
_STATIC = {"index.html": "text/html; charset=utf-8", "viewer.js": "text/javascript; charset=utf-8",
           "viewer.css": "text/css; charset=utf-8"}
_STATIC_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@api.get("/", include_in_schema=False)
@api.get("/viewer", include_in_schema=False)
async def viewer_redirect(request: Request) -> RedirectResponse:
    return RedirectResponse(request.scope.get("root_path", "").rstrip("/") + "/viewer/", status_code=307)


@api.get("/viewer/", include_in_schema=False)
async def viewer_page() -> FileResponse:
    return await viewer_file("index.html")


@api.get("/viewer/{name}", include_in_schema=False)
async def viewer_file(name: str) -> FileResponse:
    if name not in _STATIC:
        raise APIError(404, "not_found", "no such file.")
    return FileResponse(STATIC_DIR / name, media_type=_STATIC[name], headers=_STATIC_HEADERS)


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
@serve.ingress(api)
class LSSApi:
    """The ingress: checks the request, runs the graph, shapes the answer."""

    def __init__(self, preprocessor: DeploymentHandle, segmenter: DeploymentHandle, grader: DeploymentHandle,
                 reporter: DeploymentHandle, serve_config: dict[str, Any]) -> None:
        install_log_redaction()
        # The Reporter's answer holds StudyFindings, whose unpickling imports this (torch, not MONAI): paid here,
        # before the replica is ready, not by the first request.
        import lss.reporting.findings  # noqa: F401

        self.preprocessor, self.segmenter, self.grader, self.reporter = preprocessor, segmenter, grader, reporter
        self.reconfigure(serve_config)

    def reconfigure(self, serve_config: dict[str, Any]) -> None:
        from lss.config import ServeConfig

        config = ServeConfig.model_validate(serve_config)
        token = os.environ.get(TOKEN_ENV) or config.api_token
        _GUARD_SETTINGS[0] = GuardSettings(
            token=token.encode() if token else None, max_upload_bytes=config.max_upload_mb << 20,
            body_idle_timeout_s=config.body_idle_timeout_s, upload_timeout_s=config.upload_timeout_s,
            max_concurrent_uploads=config.max_concurrent_uploads,
            max_uploads_per_client=config.max_uploads_per_client)

    def check_health(self) -> None:
        return None

    # ------------------------------------------------------------------------------------------------ helpers
    def _image_url(self, request_id: str, image: str) -> str:
        return f"/{API_VERSION}/studies/{request_id}/images/{image}"

    def _dicom_url(self, request_id: str, name: str) -> str:
        return f"/{API_VERSION}/studies/{request_id}/dicom/{name}"

    # ------------------------------------------------------------------------------------------------ routes
    @api.get(f"/{API_VERSION}/health", response_model=HealthResponse)
    async def health(self) -> HealthResponse:
        return HealthResponse()

    @api.get(f"/{API_VERSION}/model", response_model=ModelInfo, responses=_responses(401))
    async def model(self) -> ModelInfo:
        return ModelInfo(segmentation=await self.segmenter.version.remote(),
                         report=await self.reporter.version.remote(),
                         preprocessing=await self.preprocessor.version.remote())

    @api.post(f"/{API_VERSION}/diagnose", response_model=DiagnosisResponse,
              responses=_responses(400, 401, 408, 413, 415, 422, 429, 503))
    async def diagnose(self, files: list[UploadFile] = File(...),
                       dicom: bool = Query(False, description="also make DICOM SEG and SR outputs "
                                                              "(a DICOM study only); "
                                                              "their URLs come in the answer's `dicom`")
                       ) -> DiagnosisResponse:
        """Diagnose one study: one ``.zip`` (a DICOM study, or NIfTI files) or one or more NIfTI/MHA files."""
        # The guard has checked the token, the size and the pace of the body before FastAPI parsed it into `files`.
        started = time.perf_counter()
        payload = []
        for upload in files:
            data = await upload.read()
            if not data:
                raise APIError(400, "empty_file", "an uploaded file is empty.")
            payload.append((upload.filename or "", data))
        request_id = uuid.uuid4().hex
        upload_s = time.perf_counter() - started
        try:
            written = await self._run_chain(payload, request_id, dicom)
        except StudyError as error:
            raise APIError(study_error_status(error), error.code.value, error.message) from None
        except ServeError as error:
            raise APIError(error.status, error.code, error.message) from None
        timings = {"upload": upload_s, **{k: float(v or 0.0) for k, v in written["timings"].items()},
                   "total": time.perf_counter() - started}

        images = {image: self._image_url(request_id, image) for image in written["images"]}
        levels = []
        for finding in written["findings"].levels:
            d = finding.as_dict()
            m = d["measurements"]
            levels.append(LevelResult(
                level=d["level"], severity=d["severity"], probabilities=d["probabilities"], status=d["status"],
                withheld_reason=d["withheld_reason"],
                assessable=d["assessable"], not_assessable_reasons=d["not_assessable_reasons"],
                model_severity=d["model_severity"],
                rule_severity=d["rule_severity"], review=d["review"], review_reason=d["review_reason"],
                lower_confidence=d["lower_confidence"],
                measurements=Measurements(**{k: m[k] for k in Measurements.model_fields}),
                evidence={image: images[image] for image in d["evidence"] if image in images},
            ))
        report = written["report"]
        notes = list(written["findings"].notes)
        if dicom and not written.get("dicom"):
            notes.append(f"No DICOM outputs: {written.get('dicom_error')}")
        check = written.get("report_check")
        if check and check["rewritten"]:
            notes.append("The learned report contradicted the findings ("
                         + "; ".join(c["message"] for c in check["contradictions"])
                         + "); it was replaced by the grounded writer's report.")
        if written["axial_matched"]:
            notes.append("Axial series had no level; they were matched to " + ", ".join(written["axial_matched"])
                         + " by the disc positions found on the sagittal view.")
        logger.info("diagnose %s: %.2f s (%s)", request_id, timings["total"],
                    ", ".join(f"{f.level} {f.severity or f.status}" for f in levels))
        return DiagnosisResponse(
            request_id=request_id, model_version=written.get("model_version") or "unknown",
            writer=report["writer"], has_axial=written["findings"].has_axial, levels=levels,
            assessable=written["findings"].assessable,
            not_assessable_reasons=list(written["findings"].not_assessable_reasons), report=report["text"],
            sentences=[ReportSentenceOut(section=s["section"], text=s["text"], levels=s["levels"])
                       for s in report["sentences"]],
            images=images, notes=notes, timings_s={k: round(v, 4) for k, v in timings.items()},
            sagittal_slices=[self._image_url(request_id, key) for key in written.get("sagittal_slices", [])],
            sagittal_slice=written.get("sagittal_slice"),
            dicom={name: self._dicom_url(request_id, name) for name in written.get("dicom", [])},
        )

    async def _run_chain(self, payload: list[tuple[str, bytes]], request_id: str, dicom: bool) -> dict[str, Any]:
        """The graph: each DeploymentResponse goes straight to the next handle, so the arrays travel from stage to
        stage through the object store; the ingress awaits only the Reporter's summary. Run again when a replica
        died under it (``REPLICA_DEATH_RETRIES``): the death may be another request's doing."""
        for attempt in range(REPLICA_DEATH_RETRIES + 1):
            prepared = self.preprocessor.prepare.remote(payload, request_id, dicom)
            prediction = self.segmenter.predict.remote(prepared)
            graded = self.grader.grade.remote(prediction)
            try:
                return await self.reporter.write.remote(prediction, graded, prepared, request_id)
            except Exception as error:
                if attempt == REPLICA_DEATH_RETRIES or not replica_died(error):
                    raise
                logger.warning("diagnose %s: a replica stopped (%s); running the chain again (%d of %d)",
                               request_id, type(error).__name__, attempt + 1, REPLICA_DEATH_RETRIES)
        raise AssertionError("unreachable")

    @api.get(f"/{API_VERSION}/studies/{{request_id}}/images/{{image_id}}", response_class=Response,
             responses={200: {"content": {"image/png": {}}}, **_responses(401, 404)})
    async def image(self, request_id: str, image_id: str) -> Response:
        """An evidence image of a diagnosis (``image_id`` as in the diagnosis' ``images``)."""
        if not _REQUEST_ID.match(request_id) or not _IMAGE_ID.match(image_id):
            raise APIError(404, "not_found", "no such image.")
        png = await self.reporter.image.remote(request_id, image_id)
        if png is None:
            raise APIError(404, "not_found", "no such image (evidence is kept for serve.results_ttl_s seconds).")
        return Response(content=png, media_type="image/png")

    @api.get(f"/{API_VERSION}/studies/{{request_id}}/dicom/{{name}}", response_class=Response,
             responses={200: {"content": {"application/dicom": {}}}, **_responses(401, 404, 422)})
    async def dicom(self, request_id: str, name: str) -> Response:
        """A DICOM output of a diagnosis (``name`` as in the diagnosis' ``dicom``): a Segmentation of the predicted
        masks (``seg_sagittal``, ``seg_axial_<level>``) or the TID 1500 measurement report (``sr``). Only for a DICOM
        upload (422 ``not_dicom`` otherwise); no patient identifier is in them."""
        if not _REQUEST_ID.match(request_id) or not _DICOM_NAME.match(name):
            raise APIError(404, "not_found", "no such DICOM output.")
        try:
            data = await self.reporter.dicom.remote(request_id, name)
        except ServeError as error:
            raise APIError(error.status, error.code, error.message) from None
        if data is None:
            raise APIError(404, "not_found", "no such DICOM output (outputs are kept for serve.results_ttl_s "
                                             "seconds).")
        return Response(content=data, media_type="application/dicom",
                        headers={"Content-Disposition": f'attachment; filename="{name}.dcm"'})


def build_app(model_path: str | Path, config: LSSConfig | None = None,
              deployment_options: dict[str, dict[str, Any]] | None = None):
    """The Serve application: the ingress bound to the four pipeline deployments.

    Args:
        model_path: the model file the Segmenter loads (its ``user_config``; change it to hot-swap).
        config: ``preprocess``, ``report`` and ``serve`` sections (default ``LSSConfig()``).
        deployment_options: per deployment name, ``.options(...)`` overrides (num_replicas, autoscaling_config,
            ray_actor_options, max_ongoing_requests, user_config, ...), e.g. from a ``serve_configs`` file.

    Raises:
        ValueError: for an unknown deployment name in ``deployment_options``.
    """
    config = config or LSSConfig()
    options = dict(deployment_options or {})
    unknown = set(options) - set(DEPLOYMENT_NAMES)
    if unknown:
        raise ValueError(f"unknown deployments {sorted(unknown)}; the graph has {list(DEPLOYMENT_NAMES)}.")
    serve_config = config.serve
    defaults = {
        "Preprocessor": {"preprocess": config.preprocess.model_dump(mode="json"),
                         "max_unpacked_mb": serve_config.max_unpacked_mb,
                         "sweep_interval_s": serve_config.sweep_interval_s,
                         "torch_threads": serve_config.torch_threads},
        "Segmenter": {"model_path": str(Path(model_path).resolve()), "max_batch_size": serve_config.max_batch_size,
                      "batch_wait_timeout_s": serve_config.batch_wait_timeout_s,
                      "torch_threads": serve_config.torch_threads},
        "Reporter": {"report": config.report.model_dump(mode="json"),
                     "results_dir": str(Path(serve_config.results_dir).resolve()),
                     "results_ttl_s": serve_config.results_ttl_s, "results_max_mb": serve_config.results_max_mb,
                     "sweep_interval_s": serve_config.sweep_interval_s},
        "LSSApi": serve_config.model_dump(mode="json"),
    }

    def opts(name: str) -> dict[str, Any]:
        merged = dict(options.get(name, {}))
        if name in defaults:
            merged["user_config"] = {**defaults[name], **merged.get("user_config", {})}
        merged.pop("name", None)
        return merged

    segmenter = Segmenter.options(**opts("Segmenter")).bind()
    preprocessor = Preprocessor.options(**opts("Preprocessor")).bind(segmenter)
    grader = Grader.options(**opts("Grader")).bind()
    reporter = Reporter.options(**opts("Reporter")).bind()
    ingress_options = opts("LSSApi")
    serve_user_config = ingress_options.pop("user_config")
    return LSSApi.options(**ingress_options, user_config=serve_user_config).bind(
        preprocessor, segmenter, grader, reporter, serve_user_config)


def app_builder(args: dict[str, Any]):
    """Entry point of ``serve run`` / ``serve deploy`` (``import_path: lss.serve.app:app_builder``).

    ``args``: ``model_path`` (required), and optionally ``config`` (a YAML file), ``profile`` and ``overrides``
    (a list of ``section.key=value``). Per-deployment settings come from the Serve config's ``deployments``.
    """
    if "model_path" not in args:
        raise ValueError("the application args need model_path (a model file of lss.model.save_model).")
    config = load_config(args.get("config"), profile=args.get("profile"), overrides=args.get("overrides") or [])
    return build_app(args["model_path"], config)
