"""The connection guard of the HTTP API: what a request must show before its body is read, and how long and how
large that body may be.

A pure ASGI middleware in front of the FastAPI routes (``LSSApi``). In order, before any byte of the body is read:

1. public paths (health, the viewer's static page) pass untouched;
2. the bearer token is checked (401): a client without one never gets to send its body;
3. a ``Content-Length`` over ``serve.max_upload_mb`` is refused (413);
4. an upload takes one of ``serve.max_concurrent_uploads`` slots, and at most ``serve.max_uploads_per_client`` of
   them per client address (503 / 429 otherwise, with ``Retry-After``), so slow clients can fill neither the
   ingress' ``max_ongoing_requests`` nor keep health from answering.

Then the body is read through a counting ``receive``: past ``serve.max_upload_mb`` (chunked uploads declare no
length) it is a 413; a client silent for ``serve.body_idle_timeout_s`` or still sending after
``serve.upload_timeout_s`` gets a 408 and its connection is closed. The slot is given back as soon as the body is
complete, so processing time does not count against uploads.

Every refusal is the documented ``{"code", "message"}`` body; nothing the client sent is echoed or logged.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["GuardSettings", "RequestGuard", "BodyRejected", "PUBLIC_PATHS"]

logger = logging.getLogger("ray.serve")

# Paths that need no token: liveness, and the viewer's static page (it holds no data; its API calls send the token).
PUBLIC_PATHS = ("/v1/health", "/", "/viewer", "/viewer/")
PUBLIC_PREFIXES = ("/viewer/",)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class GuardSettings:
    """What the guard enforces (from ``lss.config.ServeConfig``).

    Args:
        token: the bearer token every non-public path needs; None: no authentication.
        max_upload_bytes: the largest request body.
        body_idle_timeout_s: longest silence while a body is being received.
        upload_timeout_s: longest time to receive a whole body.
        max_concurrent_uploads: bodies received at once, over all clients.
        max_uploads_per_client: bodies received at once from one client address.
    """

    token: bytes | None = None
    max_upload_bytes: int = 200 << 20
    body_idle_timeout_s: float = 15.0
    upload_timeout_s: float = 300.0
    max_concurrent_uploads: int = 16
    max_uploads_per_client: int = 4

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1:
            raise ValueError(f"max_upload_bytes must be positive, got {self.max_upload_bytes}.")
        if self.body_idle_timeout_s <= 0 or self.upload_timeout_s <= 0:
            raise ValueError("body_idle_timeout_s and upload_timeout_s must be positive.")
        if not 1 <= self.max_uploads_per_client <= self.max_concurrent_uploads:
            raise ValueError("need 1 <= max_uploads_per_client <= max_concurrent_uploads, got "
                             f"{self.max_uploads_per_client} and {self.max_concurrent_uploads}.")


class BodyRejected(HTTPException):
    """Raised from the guarded ``receive`` once the guard has answered (the body is too large or too slow), to stop
    the app. An ``HTTPException``, so FastAPI's body parsing passes it on; whatever the app then tries to send is
    dropped: the guard's own answer already went out."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status_code=status, detail=message,
                         headers={"Connection": "close"})
        self.code = code


def _json(status: int, code: str, message: str, extra_headers: dict[str, str] | None = None):
    body = json.dumps({"code": code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra_headers or {}).items()]

    async def respond(send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return respond


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class RequestGuard:
    """ASGI middleware enforcing ``GuardSettings``; ``settings`` is read per request, so ``reconfigure`` applies at
    once.

    Args:
        app: the ASGI app behind it.
        settings: a callable giving the current ``GuardSettings``.
    """

    def __init__(self, app: ASGIApp, settings) -> None:
        self.app = app
        self.settings = settings
        self.uploads: Counter[str] = Counter()

    @property
    def active_uploads(self) -> int:
        return sum(self.uploads.values())

    def _authorized(self, scope: Scope, token: bytes | None) -> bool:
        if token is None:
            return True
        scheme, _, given = (_header(scope, b"authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        settings: GuardSettings = self.settings()
        if not self._authorized(scope, settings.token):
            await _json(401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is required.",
                        {"WWW-Authenticate": "Bearer"})(send)
            return
        if scope.get("method") not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limit_mb = settings.max_upload_bytes >> 20
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.strip().isdigit() or int(declared) > settings.max_upload_bytes):
            await _json(413, "too_large", f"the upload is larger than {limit_mb} MiB (serve.max_upload_mb).")(send)
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        if self.active_uploads >= settings.max_concurrent_uploads:
            await _json(503, "busy", "too many uploads in progress; retry shortly.", {"Retry-After": "5"})(send)
            return
        if self.uploads[client] >= settings.max_uploads_per_client:
            await _json(429, "too_many_uploads", f"at most {settings.max_uploads_per_client} uploads at once per "
                        "client; wait for one to finish.", {"Retry-After": "5"})(send)
            return
        self.uploads[client] += 1
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self.uploads[client] -= 1
                if self.uploads[client] <= 0:
                    del self.uploads[client]

        deadline = time.monotonic() + settings.upload_timeout_s
        received, started, answered = 0, False, False

        async def refuse(status: int, code: str, message: str) -> BodyRejected:
            nonlocal answered
            release()
            if not started:
                await _json(status, code, message)(send)
                answered = True
            return BodyRejected(status, code, message)

        async def guarded_receive() -> Message:
            nonlocal received
            if not held:  # the body is complete: later receives only wait for a disconnect
                return await receive()
            wait = min(settings.body_idle_timeout_s, deadline - time.monotonic())
            try:
                message = await asyncio.wait_for(receive(), timeout=max(wait, 0.0))
            except TimeoutError:
                logger.info("upload refused: the client sent nothing for %.0f s or exceeded %.0f s (408)",
                            settings.body_idle_timeout_s, settings.upload_timeout_s)
                raise await refuse(408, "timeout", "the upload was too slow: the connection is closed.") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > settings.max_upload_bytes:
                    raise await refuse(413, "too_large",
                                       f"the upload is larger than {limit_mb} MiB (serve.max_upload_mb).")
                if not message.get("more_body", False):
                    release()
            else:
                release()
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if answered:  # the app's own answer to BodyRejected (FastAPI may turn it into a 400): already answered
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracked_send)
        except BodyRejected:
            if not answered:
                raise
        finally:
            release()
