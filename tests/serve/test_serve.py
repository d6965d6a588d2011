"""The real Serve application on 127.0.0.1, called over HTTP: a valid study gets a complete answer, each bad input
gets its 4xx and the replicas keep serving, the token guards every endpoint but health, no patient identifier
leaves the server, a hot swap of the model changes the reported version with no failed request, and the shipped
Serve config files pass Ray's own schemas."""

from __future__ import annotations

import gzip
import io
import socket
import threading
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import requests
import torch
from helpers_http import read_response
from helpers_viewer import drive_the_viewer

from conftest import REAL_SCAN, REPO_ROOT
from lss.anatomy import LEVELS
from lss.config import ModelConfig
from lss.serve import deploy_config, free_port, load_serve_config, model_version, resolve_config
from lss.serve.runner import ServeConfigError

TOKEN = "test-token-0123456789"
PATIENT_NAME, PATIENT_ID = "ROE^RICHARD^X", "MRN-5551234"
SMALL = {"ray_actor_options": {"num_cpus": 0.1}}


def _second_model(tmp_path_factory) -> Path:
    from lss.model import build_model, save_model
    from lss.model.text import TextEncoder

    torch.manual_seed(1)
    config = ModelConfig(base_channels=8, attention_dim=32, text_encoder="random-small")
    return save_model(build_model(config, text_encoder=TextEncoder("random-small")),
                      tmp_path_factory.mktemp("model_b") / "model_b.pt")


def _serve_config(port: int, model: Path, results: Path, segmenter_user_config: dict | None = None) -> dict:
    """The shipped local.yaml, made small for 2 CPUs, on a free port, with a token and small upload limits."""
    import yaml

    data = yaml.safe_load((REPO_ROOT / "serve_configs" / "local.yaml").read_text())
    data["http_options"]["port"] = port
    app = data["applications"][0]
    app["args"]["model_path"] = str(model)
    app["args"]["overrides"] += [f"serve.api_token={TOKEN}", "serve.max_upload_mb=12", "serve.max_unpacked_mb=40",
                                 f"serve.results_dir={results}", "serve.body_idle_timeout_s=2",
                                 "serve.max_uploads_per_client=4", "serve.max_concurrent_uploads=8",
                                 "serve.sweep_interval_s=1"]
    app["deployments"] = [{"name": name, **SMALL, "num_replicas": 1} for name in
                          ("LSSApi", "Preprocessor", "Segmenter", "Grader", "Reporter")]
    if segmenter_user_config:
        app["deployments"][2]["user_config"] = segmenter_user_config
    return data


@pytest.fixture(scope="module")
def server(ray_session, tiny_model_file, tmp_path_factory):
    from ray import serve

    port = free_port()
    results = tmp_path_factory.mktemp("serve_results")
    deploy_config(resolve_config(_serve_config(port, tiny_model_file, results)))
    yield {"url": f"http://127.0.0.1:{port}", "port": port, "results": results, "model": tiny_model_file}
    serve.shutdown()


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def _post(server, files, headers=None, timeout=120, dicom=False):
    return requests.post(f"{server['url']}/v1/diagnose", files=files, headers=_auth() if headers is None else headers,
                         params={"dicom": "true"} if dicom else None, timeout=timeout)


@pytest.fixture(scope="module")
def dicom_zip(synth_dicom, tmp_path_factory) -> bytes:
    """A synthetic DICOM study (no masks) zipped, with a patient name and id in every header."""
    root, records = synth_dicom
    source = records[1].resolve(records[1].sagittal().path).parent
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(source.rglob("*")):
            if path.is_file() and not path.name.endswith((".nii.gz", ".txt", ".json")):
                ds = pydicom.dcmread(path)
                ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
                out = io.BytesIO()
                ds.save_as(out)
                zf.writestr(str(path.relative_to(source.parent)), out.getvalue())
    return buffer.getvalue()


def _nifti_bytes(data: np.ndarray, zooms=(3.5, 0.6, 0.6)) -> bytes:
    image = nib.Nifti1Image(data.astype(np.float32), np.diag([*zooms, 1.0]))
    return gzip.compress(image.to_bytes())


# ------------------------------------------------------------------------------------------------------------ happy
def test_a_dicom_study_gets_a_complete_answer_and_its_images(server, dicom_zip):
    response = _post(server, {"files": ("study.zip", dicom_zip, "application/zip")}, dicom=True)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [lv["level"] for lv in body["levels"]] == list(LEVELS)
    assert body["model_version"] == model_version(server["model"])
    assert body["report"].startswith("TECHNIQUE:") and body["writer"] == "grounded"
    for level in body["levels"]:
        if level["assessable"]:
            assert set(level["probabilities"]) == {"Normal/Mild", "Moderate", "Severe"}
            assert level["severity"] in level["probabilities"] or level["status"] == "withheld"
        else:  # no grade and no probabilities, but the reasons
            assert level["severity"] is None and level["probabilities"] is None and level["not_assessable_reasons"]
        assert set(level["evidence"]) <= set(body["images"])
    assert set(body["timings_s"]) >= {"preprocess", "segmentation", "grading", "report", "total"}
    image = requests.get(server["url"] + body["images"]["montage"], headers=_auth(), timeout=60)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content[:8] == b"\x89PNG\r\n\x1a\n"
    # No patient identifier in the answer.
    assert PATIENT_NAME not in response.text and PATIENT_ID not in response.text and "ROE" not in response.text
    # Every slice of the sagittal crop, for a slice slider; only listed slices exist.
    slices = body["sagittal_slices"]
    assert len(slices) > 1 and 0 <= body["sagittal_slice"] < len(slices)
    first = requests.get(server["url"] + slices[0], headers=_auth(), timeout=60)
    assert first.status_code == 200 and first.content[:8] == b"\x89PNG\r\n\x1a\n"
    beyond = slices[0].rsplit("_", 1)[0] + f"_{len(slices):02d}"
    assert requests.get(server["url"] + beyond, headers=_auth(), timeout=60).status_code == 404
    # The DICOM outputs (SEG per series, TID 1500 SR), rendered on GET, token-guarded, identifier-free.
    assert {"seg_sagittal", "sr"} <= set(body["dicom"])
    assert requests.get(server["url"] + body["dicom"]["sr"], timeout=60).status_code == 401
    for name, url in body["dicom"].items():
        got = requests.get(server["url"] + url, headers=_auth(), timeout=120)
        assert got.status_code == 200 and got.headers["content-type"] == "application/dicom", got.text[:200]
        ds = pydicom.dcmread(io.BytesIO(got.content))
        assert ds.Modality == ("SR" if name == "sr" else "SEG") and ds.PatientName == ""
        assert b"ROE" not in got.content and PATIENT_ID.encode() not in got.content


# ------------------------------------------------------------------------------------------------------------ one chain
@pytest.mark.browser
def test_the_viewer_in_chromium(server, dicom_zip, tmp_path):
    """The web viewer in headless Chromium on this app (tests/serve/helpers_viewer.py), before any hot swap or kill."""
    study_zip = tmp_path / "study.zip"
    study_zip.write_bytes(dicom_zip)
    drive_the_viewer(server["url"], TOKEN, study_zip, tmp_path)


def test_the_api_and_the_cli_run_the_same_chain(server, dicom_zip, tiny_model_file, tmp_path):
    """The same study through Serve and through ``Diagnoser`` (the stages without Ray): the same grades,
    probabilities, measurements and report sentences (the request id replaces the study id in Serve)."""
    from lss.inference import Diagnoser

    archive = tmp_path / "study.zip"
    archive.write_bytes(dicom_zip)
    # The test server's Segmenter runs torch on one thread (Ray's OMP_NUM_THREADS for a fractional CPU): the local
    # run does too, so that both sum in the same order (the untrained model's logits are nearly tied).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = Diagnoser(tiny_model_file).diagnose_path(archive)
    finally:
        torch.set_num_threads(threads)
    body = _post(server, {"files": ("study.zip", dicom_zip)}).json()
    # Runs before the hot-swap test below, which leaves the server on another model.
    assert body["model_version"] == model_version(tiny_model_file)
    assert [lv["level"] for lv in body["levels"]] == [f.level for f in local.findings.levels]
    for served, finding in zip(body["levels"], local.findings.levels, strict=True):
        expected = finding.as_dict()
        assert served["status"] == expected["status"] and served["severity"] == expected["severity"]
        assert served["probabilities"] == expected["probabilities"]
        for key in ("area_mm2", "ap_mm", "sagittal_ap_mm", "disc_height_mm"):
            assert served["measurements"][key] == expected["measurements"][key], key
    assert [s["text"] for s in body["sentences"]] == [s.text for s in local.report.sentences]
    assert body["model_version"] == local.info["model_version"]


def test_dicom_outputs_are_made_only_when_asked_for(server, dicom_zip):
    body = _post(server, {"files": ("study.zip", dicom_zip, "application/zip")}).json()
    assert body["dicom"] == {}
    got = requests.get(f"{server['url']}/v1/studies/{body['request_id']}/dicom/sr", headers=_auth(), timeout=60)
    assert got.status_code == 422 and got.json()["code"] == "dicom_not_requested" and "dicom=true" in got.text


def test_a_sagittal_nifti_alone_is_answered_with_lower_confidence(server):
    response = _post(server, {"files": ("t2_lumbar.nii.gz", REAL_SCAN.read_bytes(), "application/gzip")}, dicom=True)
    assert response.status_code == 200, response.text
    body = response.json()
    assert not body["has_axial"] and all(lv["lower_confidence"] for lv in body["levels"])
    if body["assessable"]:
        assert any("sagittal view only" in note for note in body["notes"])
    else:  # the untrained test model reads no spine: no grade anywhere, the reasons instead
        assert body["not_assessable_reasons"] and all(lv["severity"] is None for lv in body["levels"])
    assert body["dicom"] == {}  # no DICOM source images to reference: no DICOM outputs, and their URLs say why
    assert any(note.startswith("No DICOM outputs:") for note in body["notes"])
    got = requests.get(f"{server['url']}/v1/studies/{body['request_id']}/dicom/sr", headers=_auth(), timeout=60)
    assert got.status_code == 422 and got.json()["code"] == "not_dicom" and "DICOM input" in got.json()["message"]


def test_health_model_info_and_openapi(server):
    assert requests.get(f"{server['url']}/v1/health", timeout=30).json() == {"status": "ok", "api_version": "v1"}
    info = requests.get(f"{server['url']}/v1/model", headers=_auth(), timeout=30).json()
    assert info["segmentation"]["model_version"] == model_version(server["model"])
    # serve_configs/local.yaml's serve.torch_threads=2 reaches both stages that run torch (Ray alone would give a
    # replica of num_cpus < 1 one thread)
    assert info["segmentation"]["torch_threads"] == info["preprocessing"]["torch_threads"] == 2
    assert info["report"]["writer"] == "grounded"
    assert requests.get(f"{server['url']}/openapi.json", timeout=30).status_code == 401
    assert requests.get(f"{server['url']}/docs", timeout=30).status_code == 401
    schema = requests.get(f"{server['url']}/openapi.json", headers=_auth(), timeout=30).json()
    assert {"/v1/diagnose", "/v1/health", "/v1/model"} <= set(schema["paths"])
    assert "DiagnosisResponse" in schema["components"]["schemas"]


# ------------------------------------------------------------------------------------------------------------ errors
def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _dicom_variant(dicom_zip: bytes, change) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(dicom_zip))
    entries = {}
    for name in source.namelist():
        ds = pydicom.dcmread(io.BytesIO(source.read(name)))
        change(ds)
        out = io.BytesIO()
        ds.save_as(out)
        entries[name] = out.getvalue()
    return _zip(entries)


def _set_modality(ds):
    ds.Modality = "CT"


BAD_INPUTS = {
    "not a zip": (lambda z: ("x.zip", b"PK\x03\x04 truncated nonsense"), 400, "bad_archive"),
    "zip slip": (lambda z: ("x.zip", _zip({"../../evil.nii.gz": b"x"})), 400, "bad_archive"),
    "zip bomb": (lambda z: ("x.zip", _zip({"zeros.nii": b"\0" * (45 << 20)})), 400, "bad_archive"),
    "too large": (lambda z: ("big.nii.gz", b"\x1f\x8b" + b"\1" * (13 << 20)), 413, "too_large"),
    "text file": (lambda z: ("notes.txt", b"hello"), 400, "unsupported_format"),
    "empty file": (lambda z: ("a.nii.gz", b""), 400, "empty_file"),
    "corrupt nifti": (lambda z: ("a.nii.gz", gzip.compress(b"not a nifti header at all" * 20)), 400, None),
    "no image in zip": (lambda z: ("x.zip", _zip({"readme.txt": b"nothing"})), 400, "no_image"),
    "wrong modality": (lambda z: ("ct.zip", _dicom_variant(z, _set_modality)), 422, None),
    "NaN voxels": (lambda z: ("nan.nii.gz", _nifti_bytes(np.full((12, 128, 192), np.nan))), 422, "non_finite"),
    "too few slices": (lambda z: ("thin.nii.gz", _nifti_bytes(np.random.default_rng(0).random((1, 128, 192)))),
                       422, None),
    "absurd spacing": (lambda z: ("huge.nii.gz", _nifti_bytes(np.random.default_rng(0).random((12, 64, 64)),
                                                              (80.0, 0.02, 0.02))), 422, "absurd_spacing"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_a_4xx_with_a_reason(server, dicom_zip, case):
    make, status, code = BAD_INPUTS[case]
    name, data = make(dicom_zip)
    response = _post(server, {"files": (name, data, "application/octet-stream")})
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message"} and body["message"]
    if code is not None:
        assert body["code"] == code
    assert 400 <= response.status_code < 500


def test_missing_sagittal_is_a_422(server, synth_nifti):
    root, records = synth_nifti
    axial = records[0].resolve(records[0].axials()[0].path)
    response = _post(server, {"files": (axial.name, axial.read_bytes(), "application/gzip")})
    assert response.status_code == 422 and response.json()["code"] == "missing_sagittal"


def test_the_server_keeps_serving_after_bad_input(server, dicom_zip):
    for _ in range(2):
        assert _post(server, {"files": ("x.zip", b"PK\x03\x04junk")}).status_code == 400
    assert _post(server, {"files": ("study.zip", dicom_zip)}).status_code == 200


# ------------------------------------------------------------------------------------------------------------ security
def test_every_endpoint_but_health_needs_the_token(server, dicom_zip):
    assert requests.get(f"{server['url']}/v1/health", timeout=30).status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        assert requests.get(f"{server['url']}/v1/model", headers=headers, timeout=30).status_code == 401
        response = _post(server, {"files": ("study.zip", dicom_zip)}, headers=headers)
        assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    image = f"{server['url']}/v1/studies/{'0' * 32}/images/montage"
    assert requests.get(image, timeout=30).status_code == 401
    assert requests.get(image, headers=_auth(), timeout=30).status_code == 404
    assert requests.get(f"{server['url']}/v1/studies/..%2F..%2Fetc/images/passwd", headers=_auth(),
                        timeout=30).status_code == 404


def _raw(server, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server["port"]), timeout=30)
    sock.sendall(data)
    return sock


def _upload_head(length: int, token: str | None = TOKEN) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST /v1/diagnose HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {length}\r\n"
            "Content-Type: multipart/form-data; boundary=b0\r\n\r\n").encode()


SLOW_OPENING = (b'--b0\r\nContent-Disposition: form-data; name="files"; filename="a.nii"\r\n'
                b"Content-Type: application/octet-stream\r\n\r\n" + b"z" * 1024)


def test_a_client_without_a_token_is_refused_before_its_body(server):
    """A 5 GiB upload announced without a token is answered 401 after its headers alone, and disconnected."""
    sock = _raw(server, _upload_head(5 << 30, token=None))
    status, body, closed = read_response(sock)
    sock.close()
    assert status == 401 and body["code"] == "unauthorized" and closed


def test_a_declared_length_over_the_limit_is_refused_before_the_body(server):
    sock = _raw(server, _upload_head(300 << 20))
    status, body, closed = read_response(sock)
    sock.close()
    assert status == 413 and body["code"] == "too_large" and closed


def test_slow_clients_cannot_take_the_service_down(server, dicom_zip):
    """Ten connections that send their headers and 1 KiB, then nothing: four hold this client's upload slots, the
    rest are refused at once (429); health answers meanwhile; the slow four get a 408 and are disconnected after the
    idle timeout; a valid study is then diagnosed."""
    slow = [_raw(server, _upload_head(5 << 20) + SLOW_OPENING) for _ in range(10)]
    statuses = [read_response(sock, timeout=20) for sock in slow]
    for sock in slow:
        sock.close()
    codes = sorted(status for status, _, _ in statuses)
    assert codes.count(429) == 6 and codes.count(408) == 4, codes
    assert all(closed for *_, closed in statuses)
    started = time.perf_counter()
    assert requests.get(f"{server['url']}/v1/health", timeout=30).status_code == 200
    assert time.perf_counter() - started < 5
    assert _post(server, {"files": ("study.zip", dicom_zip)}).status_code == 200


def test_health_answers_while_slow_uploads_hold_their_slots(server):
    slow = [_raw(server, _upload_head(5 << 20) + SLOW_OPENING) for _ in range(4)]
    try:
        time.sleep(0.5)
        started = time.perf_counter()
        assert requests.get(f"{server['url']}/v1/health", timeout=30).status_code == 200
        assert requests.get(f"{server['url']}/v1/model", headers=_auth(), timeout=30).status_code == 200
        assert time.perf_counter() - started < 5
    finally:
        for sock in slow:
            sock.close()


def _replica(deployment: str):
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == "serve" and f"#{deployment}#" in a["name"]]
    assert len(names) == 1, names
    return ray.get_actor(names[0], namespace="serve")


def test_requests_in_flight_survive_a_replica_killed_under_them(server, dicom_zip):
    """The Preprocessor replica is killed (as the OOM killer would) while three valid studies are in flight: each is
    run again on the replacement replica and answered 200, and the upload folder the dead replica left is swept."""
    import tempfile

    import ray

    from lss.serve.housekeeping import UPLOAD_PREFIX

    statuses: list[int] = []
    workers = [threading.Thread(target=lambda: statuses.append(
        _post(server, {"files": ("study.zip", dicom_zip)}, timeout=180).status_code)) for _ in range(3)]
    for worker in workers:
        worker.start()
    replica = _replica("Preprocessor")
    pid = ray.get(replica.__ray_call__.remote(lambda self: __import__("os").getpid()))
    time.sleep(0.3)
    ray.kill(replica, no_restart=True)
    for worker in workers:
        worker.join(timeout=240)
    assert statuses == [200, 200, 200]
    # What a replica killed mid-upload leaves (it may not have got that far here): the new replica's sweeper (every
    # serve.sweep_interval_s = 1 s) removes it although it is fresh, because its process is gone.
    left = Path(tempfile.mkdtemp(prefix=f"{UPLOAD_PREFIX}{pid}_"))
    (left / "study.dcm").write_bytes(b"DICM")
    deadline = time.time() + 30
    while time.time() < deadline and list(Path(tempfile.gettempdir()).glob(f"{UPLOAD_PREFIX}{pid}_*")):
        time.sleep(0.5)
    assert not list(Path(tempfile.gettempdir()).glob(f"{UPLOAD_PREFIX}{pid}_*"))


def _case_upload(case, folder: Path) -> tuple[str, bytes]:
    """What a client would send for a fuzz case: its one file as it is, or its files zipped."""
    target = case.write(folder)
    if target.is_file() and len(case.files) == 1:
        return target.name, target.read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in case.files.items():
            zf.writestr(name, data)
    return "study.zip", buffer.getvalue()


def _peak_rss_mb(pid: int) -> float:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def test_mutated_uploads_over_http_end_in_200_or_a_coded_4xx(server, tmp_path):
    """Seeded mutations of DICOM, zip, NIfTI and MetaImage uploads (``tests/data/helpers_fuzz.py``; the reader-level
    suite runs hundreds), sent over HTTP: each is answered 200 or a coded 4xx naming no client text, the Preprocessor
    replica survives them all (same process) and its peak memory stays within budget."""
    import sys

    import ray

    sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
    from helpers_fuzz import FORMATS, leaked_fragments, make_case, seed_inputs

    seeds = seed_inputs(tmp_path / "seeds")
    replica = _replica("Preprocessor")
    pid = ray.get(replica.__ray_call__.remote(lambda self: __import__("os").getpid()))
    outcomes = []
    for fmt in FORMATS:
        for seed in range(1000, 1015):
            name, data = _case_upload(make_case(fmt, seed, seeds), tmp_path / f"{fmt}_{seed}")
            response = _post(server, {"files": (name, data, "application/octet-stream")})
            outcomes.append((fmt, seed, response.status_code))
            assert response.status_code == 200 or 400 <= response.status_code < 500, (fmt, seed, response.text)
            if response.status_code != 200:
                body = response.json()
                assert set(body) == {"code", "message"} and not leaked_fragments(response.text), (fmt, seed, body)
    assert requests.get(f"{server['url']}/v1/health", timeout=30).status_code == 200
    assert ray.get(_replica("Preprocessor").__ray_call__.remote(lambda self: __import__("os").getpid())) == pid
    assert _peak_rss_mb(pid) < 3072, _peak_rss_mb(pid)
    assert len({status for *_, status in outcomes}) > 1  # the mutations reached more than one outcome


def test_no_patient_identifier_in_the_logs(server, dicom_zip):
    import ray

    assert _post(server, {"files": ("study.zip", dicom_zip)}).status_code == 200
    # Names that break the unpacking (a file and a folder of the same name): refused, and the name is in no log.
    hostile = _zip({f"{PATIENT_NAME}_x": b"a file", f"{PATIENT_NAME}_x/b.dcm": b"DICM"})
    response = _post(server, {"files": (f"{PATIENT_ID}.zip", hostile)})
    assert response.status_code == 400 and PATIENT_NAME not in response.text and PATIENT_ID not in response.text
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    refusal = "Refused: bad_archive (an expected error; no traceback)."
    deadline, lines = time.time() + 20, []
    while time.time() < deadline and not any(refusal in line for _, line in lines):  # the replicas flush when they do
        time.sleep(0.5)
        # (file, line) of every Ray log of this session, so that a failure names the file, not megabytes of text
        lines = [(p.relative_to(logs).as_posix(), line) for p in sorted(logs.rglob("*"))
                 if p.is_file() and p.suffix in (".log", ".out", ".err")
                 for line in p.read_text(errors="ignore").splitlines()]

    def found(text: str) -> list[tuple[str, str]]:
        return [(name, line[:300]) for name, line in lines if text in line]

    assert found("diagnose")  # the replicas did log this request...
    assert found(refusal), f"no {refusal!r} in {len(lines)} log lines"
    for secret in (PATIENT_NAME, PATIENT_ID, "RICHARD", "5551234"):
        leaks = found(secret)
        assert not leaks, leaks[:3]  # ...but never who it was
    tracebacks = found("lss.data.errors.StudyError")
    assert not tracebacks, tracebacks[:3]  # no traceback of an expected refusal


# ------------------------------------------------------------------------------------------------------------ hot swap
def test_a_hot_swap_changes_the_version_with_no_failed_request(server, dicom_zip, tmp_path_factory):
    model_b = _second_model(tmp_path_factory)
    statuses: list[int] = []
    stop = threading.Event()

    def load():
        while not stop.is_set():
            statuses.append(_post(server, {"files": ("study.zip", dicom_zip)}).status_code)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(2.0)
        # `serve deploy` of the same config with the Segmenter's user_config changed: reconfigure, no restart.
        deploy_config(resolve_config(_serve_config(server["port"], server["model"], server["results"],
                                                   {"model_path": str(model_b)})))
        deadline = time.time() + 60
        version = None
        while time.time() < deadline:
            version = requests.get(f"{server['url']}/v1/model", headers=_auth(), timeout=30).json()[
                "segmentation"]["model_version"]
            if version == model_version(model_b):
                break
            time.sleep(0.5)
        time.sleep(2.0)
    finally:
        stop.set()
        worker.join(timeout=120)
    assert version == model_version(model_b)
    assert statuses and all(s == 200 for s in statuses), statuses
    body = _post(server, {"files": ("study.zip", dicom_zip)}).json()
    assert body["model_version"] == model_version(model_b)


# ------------------------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("name", ["local.yaml", "gpu.yaml"])
def test_the_shipped_serve_configs_pass_rays_schemas(name):
    data = load_serve_config(REPO_ROOT / "serve_configs" / name)
    names = {d["name"] for d in data["applications"][0]["deployments"]}
    assert names == {"LSSApi", "Preprocessor", "Segmenter", "Grader", "Reporter"}
    if name == "local.yaml":
        assert data["http_options"]["host"] == "127.0.0.1"


@pytest.mark.parametrize("change, message", [
    (lambda d: d["applications"][0]["deployments"][2]["autoscaling_config"].update(min_replicas=3, max_replicas=2),
     "autoscaling_config"),
    (lambda d: d["applications"][0]["deployments"].append({"name": "Nope"}), "unknown deployment"),
    (lambda d: d["applications"][0]["args"].pop("model_path"), "model_path"),
    (lambda d: d.update(applications="not a list"), "not a valid Ray Serve config"),
])
def test_a_bad_serve_config_fails_before_deploy(tmp_path, change, message):
    import yaml

    data = yaml.safe_load((REPO_ROOT / "serve_configs" / "local.yaml").read_text())
    change(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ServeConfigError, match=message):
        load_serve_config(path)


def test_lss_serve_refuses_a_bad_config_before_starting_anything(tmp_path, capsys):
    from lss.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text("applications: 3\n")
    assert main(["serve", "--serve-config", str(path), "--model", str(tmp_path / "m.pt")]) == 2
    assert "not a valid Ray Serve config" in capsys.readouterr().err


def test_upload_dirs_are_removed_after_success_and_failure(server, dicom_zip):
    import tempfile

    def leftovers() -> set[str]:
        return {p.name for p in Path(tempfile.gettempdir()).glob("lss_upload_*")}

    before = leftovers()
    assert _post(server, {"files": ("study.zip", dicom_zip)}).status_code == 200
    assert _post(server, {"files": ("x.zip", _zip({"../x.nii": b"1"}))}).status_code == 400
    assert _post(server, {"files": ("nan.nii.gz", _nifti_bytes(np.full((12, 128, 192), np.nan)))}).status_code == 422
    assert leftovers() <= before


# ------------------------------------------------------------------------------------------------------------ no spine
# Scans with no lumbar spine to grade (tests/helpers_volumes.py): a head, a knee, a blank volume, noise, an axial-only
# and a coronal-only study, a single sagittal slice. The untrained model grades anything; only the gate may stop it.
from helpers_no_grade import assert_every_level_not_assessable  # noqa: E402
from helpers_volumes import BAD_STUDIES, study_bytes  # noqa: E402


@pytest.mark.parametrize("case", list(BAD_STUDIES))
def test_a_scan_without_a_lumbar_spine_is_never_graded_over_http(server, case, tmp_path):
    """A 422 with a StudyError code, or a 200 whose every level is not assessable, with reasons and no grade."""
    from lss.data.errors import ErrorCode

    response = _post(server, {"files": (f"{case}.nii.gz", study_bytes(case, tmp_path), "application/gzip")})
    allowed = BAD_STUDIES[case].codes
    if response.status_code != 200:
        assert response.status_code == 422, response.text
        body = response.json()
        assert set(body) == {"code", "message"} and body["message"]
        assert body["code"] in {code.value for code in ErrorCode}, body
        assert not allowed or body["code"] in allowed, f"{case}: {body}, expected one of {sorted(allowed)}"
    else:
        body = response.json()
        assert_every_level_not_assessable(body, body["report"], stated_field="severity")
        assert all(s["text"] for s in body["sentences"])
    health = requests.get(f"{server['url']}/v1/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_the_server_still_diagnoses_after_scans_without_a_lumbar_spine(server, tmp_path):
    for case in ("blank", "single_slice"):
        assert _post(server, {"files": (f"{case}.nii.gz", study_bytes(case, tmp_path), "application/gzip")}
                     ).status_code in (200, 422)
    response = _post(server, {"files": ("t2_lumbar.nii.gz", REAL_SCAN.read_bytes(), "application/gzip")})
    assert response.status_code == 200, response.text
    assert [lv["level"] for lv in response.json()["levels"]] == list(LEVELS)


def test_framework_errors_answer_code_and_message(server):
    response = requests.get(f"{server['url']}/v1/no-such-route", headers=_auth(), timeout=30)
    assert response.status_code == 404 and set(response.json()) == {"code", "message"}
    response = requests.post(f"{server['url']}/v1/diagnose", headers=_auth(), timeout=30)  # no files field
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request" and "files" in response.json()["message"]


def test_the_local_config_serves_the_model_make_demo_writes():
    """`make demo` then `lss serve`: the shipped config's default model is where the demo job saves it."""
    import importlib.util

    import yaml

    spec = importlib.util.spec_from_file_location("demo_job", REPO_ROOT / "jobs" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    data = yaml.safe_load((REPO_ROOT / "serve_configs" / "local.yaml").read_text())
    assert Path(data["applications"][0]["args"]["model_path"]) == demo.model_path(demo.DEFAULT_OUT)


@pytest.mark.parametrize("content, message", [(None, "does not exist"), (b"not a model", "cannot be loaded")])
def test_lss_serve_names_a_bad_model_file_in_one_line_before_ray_starts(tmp_path, capsys, content, message):
    from lss.cli import main

    model = tmp_path / "model.pt"
    if content is not None:
        model.write_bytes(content)
    started = time.perf_counter()
    assert main(["serve", "--model", str(model)]) == 2
    # Only our line: a Ray session an earlier test started may still forward its replicas' log lines to stderr.
    ours = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lss serve:")]
    assert len(ours) == 1 and message in ours[0] and str(model) in ours[0]
    assert time.perf_counter() - started < 20  # no Ray start, no deploy attempt


def test_lss_serve_names_a_bad_application_setting_in_one_line_before_ray_starts(tmp_path, capsys):
    import yaml

    from lss.cli import main

    data = yaml.safe_load((REPO_ROOT / "serve_configs" / "local.yaml").read_text())
    data["applications"][0]["args"]["overrides"].append("report.style=narrative")  # not a grounded style
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(data))
    started = time.perf_counter()
    assert main(["serve", "--serve-config", str(path), "--model", str(tmp_path / "absent.pt")]) == 2
    ours = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lss serve:")]
    assert len(ours) == 1 and "'lss'" in ours[0] and "narrative" in ours[0] and "grounded writer" in ours[0]
    assert time.perf_counter() - started < 20  # no Ray start, no deploy attempt


def test_stage_errors_cross_process_boundaries_intact():
    import pickle

    from lss.data.errors import ErrorCode, StudyError
    from lss.serve.errors import ServeError, study_error_status

    error = pickle.loads(pickle.dumps(StudyError(ErrorCode.MISSING_SAGITTAL, "no sagittal series.", "a/b")))
    assert (error.code, error.message, error.path) == (ErrorCode.MISSING_SAGITTAL, "no sagittal series.", "a/b")
    assert study_error_status(error) == 422
    assert study_error_status(StudyError(ErrorCode.BAD_ARCHIVE, "x")) == 400
    served = pickle.loads(pickle.dumps(ServeError(422, "not_dicom", "no DICOM.")))
    assert (served.status, served.code, served.message) == (422, "not_dicom", "no DICOM.")
    with pytest.raises(ValueError, match="4xx or 5xx"):
        ServeError(200, "ok", "fine")


@pytest.mark.parametrize("schema, config, field", [
    ("SegmenterSettings", {"model_path": "m.pt", "max_batch": 4}, "max_batch"),
    ("SegmenterSettings", {"model_path": "m.pt", "max_batch_size": 0}, "max_batch_size"),
    ("PreprocessorSettings", {"max_unpacked_mb": 0}, "max_unpacked_mb"),
    ("ReporterSettings", {"report": {"writer": "poet"}}, "writer"),
])
def test_deployment_user_configs_are_validated(schema, config, field):
    from pydantic import ValidationError

    import lss.serve.schemas as schemas

    with pytest.raises(ValidationError, match=field):
        getattr(schemas, schema).model_validate(config)
