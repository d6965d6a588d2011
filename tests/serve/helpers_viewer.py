"""The web viewer driven end to end in Debian's headless Chromium with Playwright against the real Serve app (token
set): upload a DICOM study zip, see the API's grades, load the evidence, follow a report finding to its images, and
see the API's reason for a bad upload. Called by tests/serve/test_serve.py on its Serve app (one Serve start for both).

It needs /usr/bin/chromium (`make browser`); Playwright never downloads a browser here. Its screenshot goes to
outputs/viewer.png; the README's docs/viewer.png was made with
`LSS_VIEWER_SCREENSHOT=docs/viewer.png make test ARGS="-m browser tests/serve/test_serve.py"`."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pydicom
import pytest

from conftest import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = REPO_ROOT / os.environ.get("LSS_VIEWER_SCREENSHOT", "outputs/viewer.png")


def _is_diagnose(response) -> bool:
    return response.request.method == "POST" and response.url.split("?")[0].endswith("/v1/diagnose")


def drive_the_viewer(server: str, token: str, study_zip: Path, tmp_path: Path) -> None:
    """Every step a user takes in the viewer, asserted against what the API answered (``server``: the base URL)."""
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
            page.fill("#token-input", token)
            assert page.evaluate("sessionStorage.getItem('lss.apiToken')") == token
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
