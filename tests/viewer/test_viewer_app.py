"""The web viewer's files, served by the ingress without a token (the page itself carries no data), through the FastAPI
app with no replica. The viewer driven in Chromium against the real Serve app is tests/serve/helpers_viewer.py, run
by test_serve.py on its app."""

from __future__ import annotations

import asyncio


# ------------------------------------------------------------------------------------------------ no server needed
def _asgi_get(app, path: str) -> tuple[int, dict[str, str], bytes]:
    """One GET through the FastAPI app itself (the viewer routes are plain functions, no replica needed)."""
    messages: list[dict] = []
    requested = False

    async def receive():
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        while not any(m["type"] == "http.response.body" and not m.get("more_body") for m in messages):
            await asyncio.sleep(0.001)
        return {"type": "http.disconnect"}

    async def send(message):
        messages.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in messages if m["type"] == "http.response.start")
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


def test_the_viewer_is_served_without_a_token_and_the_root_redirects_to_it():
    from lss.serve.app import api

    for path in ("/", "/viewer"):
        status, headers, _ = _asgi_get(api, path)
        assert status == 307 and headers["location"] == "/viewer/"
    status, headers, html = _asgi_get(api, "/viewer/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'id="upload-input"' in html and b'src="viewer.js"' in html
    assert "script-src 'self'" in headers["content-security-policy"]
    for name, kind in (("viewer.js", "text/javascript"), ("viewer.css", "text/css")):
        status, headers, text = _asgi_get(api, f"/viewer/{name}")
        assert status == 200 and headers["content-type"].startswith(kind)
        # Nothing from the internet; server text never goes through innerHTML.
        assert b"http://" not in text and b"https://" not in text and b"innerHTML" not in text
    assert b"http://" not in html and b"https://" not in html
    assert _asgi_get(api, "/viewer/..%2Fapp.py")[0] == 404
    assert _asgi_get(api, "/viewer/app.py")[0] == 404
