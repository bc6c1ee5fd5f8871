"""The chat page in a real browser: Playwright driving the machine's Chromium (`make browser` installs it).

Starts app.py (as `make run` does) on a free loopback port with the default model (the untrained tiny T-VAD when no checkpoint
exists), uploads a broken file and then a real clip from ../shared/data, asks the judgement question and a
follow-up, and checks that the answers, the heatmap overlay, the score plot and the evidence appear.
Saves a screenshot to tests/artifacts/app_browser.png (and /tmp/tvad_screenshot.png).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from app_server import ARTIFACTS, CHROMIUM, AppDidNotStart, launch_chromium, running_app
from media_factory import first_frames
from shared_data import DATA

from tvad_chat import chat, models, ui

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium missing: run `make browser`"),
    pytest.mark.shared_data("ucsd_ped2", "cuhk_avenue"),
]
playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app")
    try:  # this test follows the T-VAD model path: heatmap overlay, strip, evidence
        with running_app(tmp, TVAD_ANSWERS="model") as (url, _, log_path):
            yield url, tmp, log_path
    except AppDidNotStart as exc:
        pytest.fail(str(exc))


def _bot_texts(page) -> list[str]:
    return page.eval_on_selector_all("#chat [data-testid='bot']", "els => els.map(e => e.innerText.trim())")


def test_upload_ask_follow_up_and_see_evidence(server):
    url, tmp, log_path = server
    # Ped2 test 01 (bicycle) as the page made it for its examples (in its TVAD_CACHE), cut to its first 32 frames:
    # model mode analyses every frame for the scene evidence, and this test's checks do not need the whole clip
    example = ui.build_example_clips(DATA, tmp / "cache" / "examples")[0]
    clip = first_frames(example, 32, tmp / example.name)
    broken = tmp / "broken.mp4"
    broken.write_bytes(b"\x00not a video at all" * 64)
    with playwright_api.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(url)
            page.wait_for_selector("#upload input[type=file]", state="attached", timeout=60_000)
            # No checkpoint in this checkout: the page must say the model is untrained.
            if not (ROOT / models.DEFAULT_MODEL / "config.json").is_file():
                page.wait_for_selector("text=Untrained model", timeout=60_000)

            # A broken upload: a plain message, no stack trace.
            page.locator("#upload input[type=file]").set_input_files(str(broken))
            page.wait_for_function(
                "document.querySelector('#status').innerText.includes('Could not analyse')", timeout=60_000)
            status = page.inner_text("#status")
            assert "Traceback" not in status and 'File "' not in status
            assert "not a video" in status.lower() or "cannot" in status.lower() or "unreadable" in status.lower()

            # Clear the broken clip, then the real one: the page keeps working.
            page.locator("#upload button[aria-label='Clear']").first.click()
            page.locator("#upload input[type=file]").set_input_files(str(clip))
            page.wait_for_function("document.querySelector('#status').innerText.includes('Analysed')",
                                   timeout=120_000)
            page.wait_for_selector("#overlay video", timeout=30_000)
            page.wait_for_selector("#score-plot img", timeout=30_000)
            evidence = page.inner_text("#evidence")
            assert "Heatmap judgement" in evidence
            assert "first (s)" in evidence or "No tracked target" in evidence  # the per-target table

            # The judgement question is pre-filled; then a follow-up from the suggestions row.
            assert page.input_value("#question textarea") == chat.JUDGEMENT_QUESTION
            page.click("#ask")
            page.wait_for_function("document.querySelector('#status').innerText.includes('Ready')",
                                   timeout=90_000)
            first = _bot_texts(page)
            assert len(first) == 1 and first[0]
            # The suggestions depend on the heatmap verdict (anomaly or not): click the first one offered.
            # (the suggestions stay as they were while answers stream: the judgement question may still lead)
            follow_up = page.locator(".suggestion").filter(has_not_text=chat.JUDGEMENT_QUESTION).first
            follow_up_text = follow_up.inner_text().strip()
            assert follow_up_text in ui.FOLLOW_UPS_ANOMALY + ui.FOLLOW_UPS_NORMAL
            follow_up.click()
            page.wait_for_function("document.querySelectorAll(\"#chat [data-testid='bot']\").length >= 2",
                                   timeout=90_000)
            page.wait_for_function("document.querySelector('#status').innerText.includes('Ready')",
                                   timeout=90_000)
            answers = _bot_texts(page)
            assert len(answers) == 2 and all(answers)
            users = page.eval_on_selector_all("#chat [data-testid='user']", "els => els.map(e => e.innerText)")
            assert chat.JUDGEMENT_QUESTION in users[0] and follow_up_text in users[1]
            # The overlay is a playable H.264 video the browser accepts.
            assert page.eval_on_selector("#overlay video", "v => v.currentSrc.length > 0")
            assert page.evaluate("document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.42E01E\"')")
            # ... and the browser decoded it: metadata loaded, no media error (the uploaded clip's player too).
            page.wait_for_function("document.querySelector('#overlay video').readyState >= 1", timeout=30_000)
            errors = page.eval_on_selector_all("video", "vs => vs.map(v => [v.currentSrc, v.error && v.error.code])")
            assert errors and all(code is None for _, code in errors), errors

            # Export: the JSON report arrives as a downloadable file.
            page.get_by_role("button", name="Export JSON report").click()
            page.wait_for_function("document.querySelector('#status').innerText.includes('Exported')",
                                   timeout=30_000)
            assert "tvad_report.json" in page.inner_text("#export-file").replace("\n", "")

            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "app_browser.png"
            page.screenshot(path=str(shot), full_page=True)
            shutil.copy(shot, "/tmp/tvad_screenshot.png")
        finally:
            browser.close()
    assert "unexpected error" not in log_path.read_text()  # every failure was one of ours, with a message
