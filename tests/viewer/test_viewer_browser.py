"""The web viewer: served by the ingress (no token for the page itself), and driven end to end in Debian's headless
Chromium with Playwright against the real Serve app with a token set: upload a DICOM study zip, see the API's
grades, load the evidence, follow a report finding to its images, and see the API's reason for a bad upload.

The browser test needs /usr/bin/chromium (`make browser`); Playwright never downloads a browser here. Its
screenshot goes to outputs/viewer.png; the README's docs/viewer.png was made with
`LSS_VIEWER_SCREENSHOT=docs/viewer.png make test ARGS="-m browser tests/viewer"`."""

from __future__ import annotations

import asyncio
import os
import re
import zipfile
from pathlib import Path

import pydicom
import pytest

from conftest import REPO_ROOT

TOKEN = "viewer-token-0123456789"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = REPO_ROOT / os.environ.get("LSS_VIEWER_SCREENSHOT", "outputs/viewer.png")
SMALL = {"ray_actor_options": {"num_cpus": 0.1}, "num_replicas": 1}


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


# ------------------------------------------------------------------------------------------------ the real app
@pytest.fixture(scope="module")
def server(ray_session, tiny_model_file, tmp_path_factory):
    """The shipped local.yaml (as in tests/serve), one small replica each, with a token."""
    import yaml
    from ray import serve

    from lss.serve import deploy_config, free_port, resolve_config

    port = free_port()
    data = yaml.safe_load((REPO_ROOT / "serve_configs" / "local.yaml").read_text())
    data["http_options"]["port"] = port
    app = data["applications"][0]
    app["args"]["model_path"] = str(tiny_model_file)
    app["args"]["overrides"] += [f"serve.api_token={TOKEN}", "serve.max_upload_mb=12",
                                 f"serve.results_dir={tmp_path_factory.mktemp('viewer_results')}"]
    app["deployments"] = [{"name": name, **SMALL} for name in
                          ("LSSApi", "Preprocessor", "Segmenter", "Grader", "Reporter")]
    deploy_config(resolve_config(data))
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


@pytest.fixture(scope="module")
def study_zip(synth_dicom, tmp_path_factory) -> Path:
    """A synthetic DICOM study (no masks), zipped as a user would upload it."""
    _, records = synth_dicom
    source = records[1].resolve(records[1].sagittal().path).parent
    path = tmp_path_factory.mktemp("viewer_upload") / "study.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(source.rglob("*")):
            if file.is_file() and not file.name.endswith((".nii.gz", ".txt", ".json")):
                pydicom.dcmread(file)  # a DICOM file, not a mask or a label
                zf.write(file, str(file.relative_to(source.parent)))
    return path


def _is_diagnose(response) -> bool:
    return response.request.method == "POST" and response.url.split("?")[0].endswith("/v1/diagnose")


@pytest.mark.browser
def test_the_viewer_in_chromium(server, study_zip, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    expect = sync_api.expect
    expect.set_options(timeout=30_000)
    bad = tmp_path / "notes.txt"
    bad.write_text("not a study")

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(60_000)
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None)
            # Any request off this server would be a CDN or a leak: refuse it and fail.
            page.route(re.compile(r"^(?!" + re.escape(server) + r"/).*"),
                       lambda route: (problems.append(f"external request {route.request.url}"), route.abort()))

            page.goto(server + "/")
            assert page.url == server + "/viewer/"
            page.fill("#token-input", TOKEN)
            assert page.evaluate("sessionStorage.getItem('lss.apiToken')") == TOKEN
            # Record every state the status box goes through (uploading -> processing -> done).
            page.evaluate("""() => { window.__states = [];
                const s = document.getElementById('status');
                new MutationObserver(() => window.__states.push(s.dataset.state))
                    .observe(s, {attributes: true, childList: true, characterData: true, subtree: true}); }""")

            with page.expect_response(_is_diagnose, timeout=180_000) as answer:
                page.set_input_files("#upload-input", str(study_zip))
            assert answer.value.status == 200, answer.value.text()
            body = answer.value.json()
            expect(page.locator("#status")).to_have_attribute("data-state", "done")
            states = page.evaluate("window.__states")
            assert "processing" in states and states[-1] == "done", states
            expect(page.locator("#error")).to_be_hidden()

            # The grades (and probabilities) shown are the API's.
            assert page.locator("#grades-body tr").count() == len(body["levels"]) == 5
            for level in body["levels"]:
                row = page.locator(f'#grades [data-level="{level["level"]}"]')
                # A level without a stated grade says why, never the model's guess.
                shown = level["severity"] or ("grade withheld" if level["status"] == "withheld" else "not assessable")
                assert row.locator(".grade").text_content() == shown
                if level["probabilities"] is not None:
                    p = level["probabilities"]["Severe"]
                    assert row.locator('[data-severity="Severe"]').text_content() == f"{100 * p:.1f}%"
            sentences = page.locator('[data-testid="sentence"]')
            assert [sentences.nth(i).text_content() for i in range(sentences.count())] == [
                s["text"] for s in body["sentences"]]

            # An evidence image loads (fetched with the token), and a finding leads to its evidence.
            page.wait_for_function("() => { const i = document.getElementById('sagittal-image');"
                                   " return i.complete && i.naturalWidth > 0; }")
            finding = page.locator('[data-testid="sentence"][data-section="findings"][data-levels="L4/L5"]')
            finding.click()
            expect(finding).to_have_class(re.compile(r"\bactive\b"))
            card = page.locator('.evidence-card[data-level="L4/L5"]')
            expect(card).to_have_class(re.compile(r"\bhighlight\b"))
            expect(page.locator('.evidence-card.highlight')).to_have_count(1)
            expect(page.locator('#grades tr[data-level="L4/L5"]')).to_have_class(re.compile(r"\bhighlight\b"))
            assert page.locator("#view-label").text_content() == "L4/L5"  # the slider follows
            page.wait_for_function("() => [...document.querySelectorAll('#evidence img')]"
                                   ".every(i => i.complete && i.naturalWidth > 0)", timeout=180_000)
            assert card.locator('figure[data-image="axial_L4-L5"] img').evaluate("i => i.naturalWidth") > 0
            assert card.locator('figure[data-image="attention_L4-L5"] img').evaluate("i => i.naturalWidth") > 0
            # The slider steps through the levels (the server renders one sagittal slice).
            page.locator("#view-slider").fill("1")
            expect(page.locator('.evidence-card[data-level="L1/L2"]')).to_have_class(re.compile(r"\bhighlight\b"))
            finding.click()
            # The slice slider: every slice of the sagittal crop, fetched on request; the segmented one has the masks.
            slider = page.locator("#slice-slider")
            assert int(slider.get_attribute("max")) == len(body["sagittal_slices"]) - 1 > 0
            assert int(slider.input_value()) == body["sagittal_slice"]
            expect(page.locator("#slice-label")).to_contain_text("(segmented)")
            with page.expect_response(lambda r: r.url.endswith(body["sagittal_slices"][0]), timeout=60_000) as png:
                slider.fill("0")
            assert png.value.status == 200 and png.value.headers["content-type"] == "image/png"
            expect(page.locator("#slice-label")).to_have_text(re.compile(r"^slice 0 of \d+$"))
            page.wait_for_function("() => { const i = document.getElementById('sagittal-image');"
                                   " return i.dataset.loaded === 'true' && i.naturalWidth > 0; }")
            slider.fill(str(body["sagittal_slice"]))
            expect(page.locator("#slice-label")).to_contain_text("(segmented)")
            # The DICOM outputs download with the token: the SR is a DICOM file.
            assert sorted(body["dicom"]) == sorted(
                page.locator("#dicom-links [data-dicom]").evaluate_all("bs => bs.map(b => b.dataset.dicom)"))
            with page.expect_download(timeout=120_000) as download:
                page.locator('#dicom-links [data-dicom="sr"]').click()
            saved = tmp_path / "sr.dcm"
            download.value.save_as(saved)
            assert pydicom.dcmread(saved).Modality == "SR"
            assert not problems, problems

            page.evaluate("window.scrollTo(0, 0)")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            # A file that is not a study: the API's code and reason are shown.
            with page.expect_response(_is_diagnose, timeout=60_000) as answer:
                page.set_input_files("#upload-input", str(bad))
            assert answer.value.status == 400
            reason = answer.value.json()
            expect(page.locator("#error")).to_be_visible()
            expect(page.locator("#error-code")).to_have_text(reason["code"])
            expect(page.locator("#error-message")).to_have_text(reason["message"])
            expect(page.locator("#status")).to_have_attribute("data-state", "error")
            expect(page.locator("#result")).to_be_hidden()

            # No token: the API's 401 reaches the user, with what to do.
            page.fill("#token-input", "")
            assert page.evaluate("sessionStorage.getItem('lss.apiToken')") == ""
            with page.expect_response(_is_diagnose, timeout=60_000) as answer:
                page.set_input_files("#upload-input", str(study_zip))
            assert answer.value.status == 401
            expect(page.locator("#error-code")).to_have_text("unauthorized")
            expect(page.locator("#error-message")).to_contain_text(answer.value.json()["message"])
        finally:
            browser.close()
