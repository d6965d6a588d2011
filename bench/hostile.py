"""Benchmark: what hostile clients cost a running Serve application (issue 17's findings, measured).

    python bench/hostile.py                    # serve_configs/local.yaml with a token, an untrained small model
    python bench/hostile.py --slow 40 --model outputs/demo/train/demo/best_model.pt

One run prints (and writes to outputs/bench/hostile.json):

1. slow clients: ``--slow`` connections from ``--addresses`` loopback addresses send their headers and 1 KiB of an
   upload, then nothing. How many were refused at once (429: over the per-client cap; 503: over the global one),
   how long the held ones kept their slots before their 408 and disconnection, health's latency during the flood,
   and a valid diagnosis right after;
2. no token, 5 GiB announced: the status, the seconds to it and the bytes the client had to send (headers only);
3. memory amplification: small uploads that declare huge images (a 1024^3 ``.nii.gz``, a 12 mm-voxel NIfTI that
   would upsample to the model's grid, a zip of deflated 4096 x 4096 DICOM slices, a MetaImage declaring 2^31
   voxels). For each: its size, the answer, and how much the Preprocessor replica's peak resident memory (VmHWM)
   rose, next to a valid study's.

Timings on a shared 2-core machine are noisy; the statuses and the memory growth are what to read.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import socket
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
TOKEN = "bench-hostile-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _head(port: int, length: int, token: str | None = TOKEN) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST /v1/diagnose HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Length: {length}\r\n"
            "Content-Type: multipart/form-data; boundary=b0\r\n\r\n").encode()


OPENING = (b'--b0\r\nContent-Disposition: form-data; name="files"; filename="a.nii"\r\n'
           b"Content-Type: application/octet-stream\r\n\r\n" + b"z" * 1024)


def _status(sock: socket.socket, timeout: float) -> tuple[int | None, float]:
    """(the HTTP status, or None when none came in ``timeout`` s; when the server closed the connection after it)."""
    sock.settimeout(timeout)
    started, data = time.perf_counter(), b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        while sock.recv(65536):
            pass
    except (TimeoutError, OSError):
        pass
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
    return status, time.perf_counter() - started


def slow_clients(url: str, port: int, count: int, addresses: int, payload: bytes) -> dict:
    sockets = []
    for i in range(count):
        # Loopback answers on all of 127.0.0.0/8: each source address is another client to the per-client cap.
        source = (f"127.0.0.{2 + i % addresses}", 0)
        sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=source)
        sock.sendall(_head(port, 50 << 20) + OPENING)
        sockets.append(sock)
    health: list[float] = []
    stop = threading.Event()

    def probe():
        while not stop.is_set():
            started = time.perf_counter()
            ok = requests.get(f"{url}/v1/health", timeout=60).status_code == 200
            health.append(time.perf_counter() - started if ok else float("inf"))
            time.sleep(0.2)

    prober = threading.Thread(target=probe)
    prober.start()
    results: list[tuple[int | None, float]] = [(None, 0.0)] * count
    flood_started = time.perf_counter()

    def wait(i: int) -> None:
        results[i] = _status(sockets[i], timeout=120)

    waiters = [threading.Thread(target=wait, args=(i,)) for i in range(count)]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        waiter.join()
    flood_s = time.perf_counter() - flood_started
    stop.set()
    prober.join()
    for sock in sockets:
        sock.close()
    statuses = [s for s, _ in results]
    held = [t for s, t in results if s == 408]
    started = time.perf_counter()
    valid = requests.post(f"{url}/v1/diagnose", files={"files": ("study.zip", payload)}, headers=AUTH,
                          timeout=300).status_code
    return {"connections": count, "client_addresses": addresses,
            "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses), key=str)},
            "held_until_408_s_max": max(held) if held else None, "all_answered_s": flood_s,
            "health_p50_s": float(np.median(health)) if health else None,
            "health_max_s": max(health) if health else None, "health_probes": len(health),
            "valid_after": valid, "valid_after_s": time.perf_counter() - started}


def no_token(port: int) -> dict:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = _head(port, 5 << 30, token=None)
    started = time.perf_counter()
    sock.sendall(head)
    status, _ = _status(sock, timeout=30)
    sock.close()
    return {"status": status, "seconds": time.perf_counter() - started, "bytes_sent": len(head)}


# ------------------------------------------------------------------------------------------- amplification inputs
def _nifti_header_only(shape: tuple[int, int, int], zooms=(1.0, 1.0, 1.0), dtype=np.uint8) -> bytes:
    """A gzipped NIfTI whose header declares ``shape`` but that holds (almost) no data."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_zooms(zooms)
    header.set_sform(np.diag([*zooms, 1.0]), code=1)
    header["vox_offset"] = 352
    return gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * (1 << 20))


def _coarse_nifti() -> bytes:
    import nibabel as nib

    data = np.random.default_rng(0).integers(0, 255, (12, 192, 192), dtype=np.uint8)
    image = nib.Nifti1Image(data, np.diag([12.0, 12.0, 12.0, 1.0]))
    return gzip.compress(image.to_bytes())


def _deflated_dicom_zip(slices: int = 14, side: int = 4096) -> bytes:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian, MRImageStorage, generate_uid

    buffer = io.BytesIO()
    series = generate_uid()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(slices):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MRImageStorage
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
            ds = pydicom.Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
            ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "MR", series, series
            ds.Rows = ds.Columns = side
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 4.0
            ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
            ds.ImagePositionPatient = [i * 4.0, 0, 0]
            ds.PixelData = b"\0" * (side * side * 2)
            out = io.BytesIO()
            ds.save_as(out, enforce_file_format=True)
            zf.writestr(f"s/{i:03d}.dcm", out.getvalue())
    return buffer.getvalue()


def _huge_mha() -> bytes:
    header = ("ObjectType = Image\nNDims = 3\nDimSize = 2048 1024 1024\nElementSpacing = 1 1 1\n"
              "ElementType = MET_UCHAR\nCompressedData = True\nCompressedDataSize = 1024\nElementDataFile = LOCAL\n")
    return header.encode() + b"\0" * 1024


def _replica_pid(deployment: str) -> int:
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == "serve" and f"#{deployment}#" in a["name"]]
    actor = ray.get_actor(names[0], namespace="serve")
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def amplification(url: str, payload: bytes) -> list[dict]:
    cases = [("valid study (zip of DICOM)", "study.zip", payload),
             ("1024^3 uint8 .nii.gz, header only", "big.nii.gz", _nifti_header_only((1024, 1024, 1024))),
             ("12x192x192 NIfTI, 12 mm voxels", "coarse.nii.gz", _coarse_nifti()),
             ("zip of 14 deflated 4096^2 DICOM slices", "deflated.zip", _deflated_dicom_zip()),
             ("MetaImage declaring 2048x1024x1024", "huge.mha", _huge_mha())]
    rows = []
    for label, name, data in cases:
        pid = _replica_pid("Preprocessor")
        before = _peak_mb(pid)
        started = time.perf_counter()
        response = requests.post(f"{url}/v1/diagnose", files={"files": (name, data)}, headers=AUTH, timeout=600)
        seconds = time.perf_counter() - started
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        alive = _replica_pid("Preprocessor") == pid
        rows.append({"input": label, "upload_kb": round(len(data) / 1024, 1), "status": response.status_code,
                     "code": body.get("code"), "seconds": round(seconds, 2),
                     "peak_rss_rise_mb": round(_peak_mb(pid) - before, 1) if alive else None,
                     "replica_survived": alive})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a model file (default: an untrained model with the small random encoder)")
    parser.add_argument("--slow", type=int, default=40, help="slow connections to open at once")
    parser.add_argument("--addresses", type=int, default=10, help="loopback source addresses they come from")
    parser.add_argument("--out", default="outputs/bench/hostile")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import yaml
    from ray import serve

    from lss.config import RayConfig
    from lss.ray_session import init_ray, shutdown_ray
    from lss.serve import deploy_config, free_port, resolve_config
    from serve import _model, _study_zip

    payload = _study_zip(out / "study")
    model = _model(args.model, out, "random-small")
    init_ray(RayConfig(object_store_mb=600))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = yaml.safe_load((REPO / "serve_configs" / "local.yaml").read_text())
    data["http_options"]["port"] = port
    app = data["applications"][0]
    app["args"]["model_path"] = str(model)
    app["args"]["overrides"] = list(app["args"].get("overrides") or []) + [
        f"serve.api_token={TOKEN}", f"serve.results_dir={(out / 'results').resolve()}"]
    deploy_config(resolve_config(data))
    report: dict = {"config": "serve_configs/local.yaml + a token"}
    try:
        requests.post(f"{url}/v1/diagnose", files={"files": ("study.zip", payload)}, headers=AUTH, timeout=300)

        report["slow_clients"] = row = slow_clients(url, port, args.slow, args.addresses, payload)
        print(f"slow clients: {row['connections']} connections from {row['client_addresses']} addresses (headers + "
              f"1 KiB, then silence) -> statuses "
              f"{row['statuses']}; held slots released by 408 after at most {row['held_until_408_s_max']:.1f} s; "
              f"health p50 {row['health_p50_s']:.3f} s, max {row['health_max_s']:.3f} s over "
              f"{row['health_probes']} probes during the flood; a valid study right after: {row['valid_after']} in "
              f"{row['valid_after_s']:.2f} s", flush=True)

        report["no_token"] = row = no_token(port)
        print(f"no token, 5 GiB announced: {row['status']} after {row['seconds']:.3f} s, the client sent "
              f"{row['bytes_sent']} bytes (headers only)", flush=True)

        report["amplification"] = rows = amplification(url, payload)
        for row in rows:
            rise = "n/a (replica died)" if row["peak_rss_rise_mb"] is None else f"+{row['peak_rss_rise_mb']:.0f} MB"
            print(f"memory: {row['input']:<40} {row['upload_kb']:>8.1f} KB -> {row['status']} "
                  f"{row['code'] or ''} in {row['seconds']:.2f} s; Preprocessor peak RSS {rise}", flush=True)
    finally:
        (out / "hostile.json").write_text(json.dumps(report, indent=2))
        serve.shutdown()
        shutdown_ray()


if __name__ == "__main__":
    main()
