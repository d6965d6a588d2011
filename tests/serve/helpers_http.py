"""Raw HTTP/1.1 over a socket, for the tests that must see what a server does before or without a whole request
(an answer before the body, a closed connection), which no HTTP client library shows."""

from __future__ import annotations

import json
import socket


def read_response(sock: socket.socket, timeout: float = 30.0) -> tuple[int, dict, bool]:
    """Reads one response: (status, JSON body, whether the server closed the connection after it).

    The body is read by its Content-Length, or to the end of a chunked body (a proxy may re-chunk it; the JSON is
    taken from between the chunk sizes); a connection still open ``timeout`` s later counts as not closed.
    """
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), None)
    chunked = b"transfer-encoding: chunked" in head.lower()
    closed = False
    while not (length is not None and len(body) >= length) and not (chunked and body.endswith(b"0\r\n\r\n")):
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, OSError):
            break
        if not chunk:
            closed = True
            break
        body += chunk
    if not closed:
        try:
            closed = sock.recv(1) == b""
        except (TimeoutError, OSError):
            closed = False
    if chunked and b"{" in body:
        body = body[body.index(b"{"):body.rindex(b"}") + 1]
    return status, json.loads(body or b"{}"), closed
