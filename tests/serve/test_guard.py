"""The connection guard (``lss.serve.guard``) in front of a real uvicorn server on 127.0.0.1, over raw sockets: a
client without a token is refused before its body, a declared or streamed body over the limit gets a 413 before it
is all sent, slow clients get a 408 and are disconnected, uploads are capped per client and in all, and health
answers throughout. No Ray here: ``tests/serve/test_serve.py`` repeats the key cases through Serve's proxy."""

from __future__ import annotations

import select
import socket
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI, File, UploadFile
from helpers_http import read_response

from lss.serve import free_port
from lss.serve.guard import GuardSettings, RequestGuard

TOKEN = "guard-token"
AUTH = f"Authorization: Bearer {TOKEN}\r\n"
SETTINGS = GuardSettings(token=TOKEN.encode(), max_upload_bytes=1 << 20, body_idle_timeout_s=0.6,
                         upload_timeout_s=2.0, max_concurrent_uploads=3, max_uploads_per_client=2)


@pytest.fixture(scope="module")
def server():
    current = {"settings": SETTINGS}
    app = FastAPI()

    @app.get("/v1/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model():
        return {"model": "m"}

    @app.post("/v1/diagnose")
    async def diagnose(files: list[UploadFile] = File(...)):
        total = 0
        for upload in files:
            total += len(await upload.read())
        return {"bytes": total}

    guard_box: dict[str, RequestGuard] = {}

    class Probe(RequestGuard):  # the guard itself, kept reachable so tests can read its upload count
        def __init__(self, app, settings):
            super().__init__(app, settings)
            guard_box["guard"] = self

    app.add_middleware(Probe, settings=lambda: current["settings"])
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not uv.started and time.time() < deadline:
        time.sleep(0.05)
    assert uv.started
    yield {"port": port, "current": current, "guard": guard_box}
    uv.should_exit = True
    thread.join(timeout=10)


def _connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server["port"]), timeout=10)
    return sock


def _upload_head(length: int | None, auth: str = AUTH, boundary: str = "b0undary") -> bytes:
    size = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    return (f"POST /v1/diagnose HTTP/1.1\r\nHost: x\r\n{auth}{size}"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode()


def _part(payload: bytes, boundary: str = "b0undary") -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.nii\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()


def _slow_start(length: int = 600_000) -> bytes:
    """The headers and the first KiB of a valid multipart upload that declares ``length`` bytes."""
    head = _part(b"")
    return _upload_head(length) + head[:head.index(b"\r\n\r\n") + 4] + b"z" * 1024


def _get(server, path: str, auth: str = AUTH) -> int:
    sock = _connect(server)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n".encode())
    status, _, _ = read_response(sock)
    sock.close()
    return status


def test_a_valid_upload_passes_and_gives_its_slot_back(server):
    body = _part(b"x" * 1000)
    sock = _connect(server)
    sock.sendall(_upload_head(len(body)) + body)
    status, answer, _ = read_response(sock)
    sock.close()
    assert status == 200 and answer == {"bytes": 1000}
    assert server["guard"]["guard"].active_uploads == 0


def test_no_token_is_refused_before_the_body(server):
    """A 5 GiB upload without a token: the 401 comes after the headers alone, and the connection is closed."""
    for auth in ("", "Authorization: Bearer wrong\r\n", f"Authorization: {TOKEN}\r\n"):
        sock = _connect(server)
        started = time.perf_counter()
        sock.sendall(_upload_head(5 << 30, auth=auth))  # not one byte of the body
        status, answer, closed = read_response(sock)
        sock.close()
        assert status == 401 and answer["code"] == "unauthorized" and closed
        assert time.perf_counter() - started < 5


def test_a_declared_length_over_the_limit_is_a_413_before_the_body(server):
    sock = _connect(server)
    sock.sendall(_upload_head(300 << 20))
    status, answer, closed = read_response(sock)
    sock.close()
    assert status == 413 and answer["code"] == "too_large" and closed


def test_a_chunked_body_over_the_limit_is_cut_at_the_limit(server):
    """A chunked upload declares no length: it is counted as it arrives and refused once past 1 MiB, long before
    the 8 MiB the client would send."""
    sock = _connect(server)
    head = _part(b"")
    opening = head[:head.index(b"\r\n\r\n") + 4]  # the part's headers, then its content chunk by chunk
    sock.sendall(_upload_head(None) + f"{len(opening):x}\r\n".encode() + opening + b"\r\n")
    chunk = b"y" * (64 << 10)
    sent, answered = 0, False
    while sent < 8 << 20:
        try:
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            answered = True
            break
        sent += len(chunk)
        if select.select([sock], [], [], 0.002)[0]:
            answered = True
            break
    assert answered and sent < 3 << 20, sent
    status, answer, _ = read_response(sock)
    sock.close()
    assert status == 413 and answer["code"] == "too_large"


def test_slow_clients_are_capped_timed_out_and_health_still_answers(server):
    """Two slow uploads from one client hold its two slots; the third is refused at once (429); health and other
    GETs answer meanwhile; after the idle timeout both slow ones get a 408 and are disconnected."""
    slow = []
    for _ in range(2):
        sock = _connect(server)
        sock.sendall(_slow_start())  # then nothing
        slow.append(sock)
    time.sleep(0.1)
    assert server["guard"]["guard"].active_uploads == 2
    third = _connect(server)
    third.sendall(_slow_start())
    status, answer, closed = read_response(third)
    third.close()
    assert status == 429 and answer["code"] == "too_many_uploads" and closed
    started = time.perf_counter()
    assert _get(server, "/v1/health", auth="") == 200 and _get(server, "/v1/model") == 200
    assert time.perf_counter() - started < 5  # answered while the slow uploads hold their slots
    for sock in slow:
        status, answer, closed = read_response(sock, timeout=10)
        sock.close()
        assert status == 408 and answer["code"] == "timeout" and closed
    assert server["guard"]["guard"].active_uploads == 0


def test_a_trickling_client_is_cut_at_the_upload_deadline(server):
    """Bytes every 0.3 s never trip the 0.6 s idle timeout, but the whole upload may take 2 s at most."""
    sock = _connect(server)
    sock.sendall(_slow_start())
    started = time.perf_counter()
    while time.perf_counter() - started < 6:
        try:
            sock.sendall(b"t" * 100)
        except (BrokenPipeError, ConnectionResetError):
            break
        if select.select([sock], [], [], 0.3)[0]:
            break
    elapsed = time.perf_counter() - started
    status, answer, _ = read_response(sock)
    sock.close()
    assert status == 408 and answer["code"] == "timeout"
    assert 1.8 < elapsed < 4.0, elapsed


def test_the_global_upload_cap_answers_503(server):
    server["current"]["settings"] = GuardSettings(token=TOKEN.encode(), max_upload_bytes=1 << 20,
                                                  body_idle_timeout_s=0.6, upload_timeout_s=2.0,
                                                  max_concurrent_uploads=1, max_uploads_per_client=1)
    try:
        held = _connect(server)
        held.sendall(_slow_start())
        time.sleep(0.1)
        other = _connect(server)
        other.sendall(_slow_start())
        status, answer, _ = read_response(other)
        other.close()
        assert status == 503 and answer["code"] == "busy"
        assert read_response(held)[0] == 408
        held.close()
    finally:
        server["current"]["settings"] = SETTINGS


def test_public_paths_need_no_token_and_the_rest_do(server):
    assert _get(server, "/v1/health", auth="") == 200
    assert _get(server, "/v1/model", auth="") == 401
    assert _get(server, "/docs", auth="") == 401 and _get(server, "/openapi.json", auth="") == 401
    assert _get(server, "/openapi.json") == 200


@pytest.mark.parametrize("kwargs", [
    {"max_upload_bytes": 0}, {"body_idle_timeout_s": 0}, {"max_concurrent_uploads": 2, "max_uploads_per_client": 3},
])
def test_impossible_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        GuardSettings(**kwargs)
