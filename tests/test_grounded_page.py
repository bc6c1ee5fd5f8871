"""The default (grounded) page in a real browser: a Ped2 clip is matched to the shipped profile, its scene overlay
and hottest moments are shown, six kinds of question are answered from its scene analysis, "show me" moves the
overlay to the event, and moving the sensitivity re-decides the panel and the answers together (the judgement
answer names the same operating point and event count as the panel).

Chromium from Debian (`make browser`), driven by Playwright; saves tests/artifacts/grounded_page.png.
"""

from __future__ import annotations

import re

import pytest
from app_server import ARTIFACTS, CHROMIUM, AppDidNotStart, launch_chromium, running_app
from shared_data import DATA

from tvad_chat import ui

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium missing: run `make browser`"),
    pytest.mark.shared_data("ucsd_ped2"),
]
playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grounded_app")
    try:
        with running_app(tmp, TVAD_ANSWERS="grounded", HOME=str(tmp)) as (url, _, _):  # HOME: no user profiles
            yield url, tmp
    except AppDidNotStart as exc:
        pytest.fail(str(exc))


def _bot_texts(page) -> list[str]:
    return page.eval_on_selector_all("#chat [data-testid='bot']", "els => els.map(e => e.innerText.trim())")


def _ask(page, question: str) -> str:
    before = len(_bot_texts(page))
    page.fill("#question textarea", question)
    page.click("#ask")
    page.wait_for_function(f"document.querySelectorAll(\"#chat [data-testid='bot']\").length > {before}",
                           timeout=60_000)
    page.wait_for_function("document.querySelector('#status').innerText.includes('Ready')", timeout=60_000)
    return _bot_texts(page)[-1]


def _panel_intervals(page) -> list[tuple[float, float]]:
    """The events table's (start, end) rows."""
    evidence = page.inner_text("#evidence")
    if "No unusual event" in evidence:
        return []
    return [(float(a), float(b)) for a, b in re.findall(r"^\s*\d+\s+([\d.]+)\s+([\d.]+)", evidence, re.M)]


def _panel_events(page) -> int:
    return len(_panel_intervals(page))


def test_grounded_answers_and_sensitivity_move_together(server):
    url, tmp = server
    clip = ui.build_example_clips(DATA, tmp / "clips")[0]  # Ped2 test 01 (a bicycle rides in) as mp4
    with playwright_api.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(url)
            page.wait_for_selector("#upload input[type=file]", state="attached", timeout=60_000)
            page.locator("#upload input[type=file]").set_input_files(str(clip))
            page.wait_for_function("document.querySelector('#status').innerText.includes('Analysed')",
                                   timeout=180_000)
            page.wait_for_selector("#score-plot img", timeout=30_000)
            page.wait_for_selector("#overlay video", timeout=30_000)  # the scene's heat over every frame
            page.wait_for_selector("#strip img", timeout=30_000)  # its hottest moments
            evidence = page.inner_text("#evidence")
            assert "decided by scene profile 'ucsd_ped2'" in evidence and "Scene judgement" in evidence
            # the sensitivity in use is the one selected
            in_use = re.search(r"Sensitivity (\S+):", evidence).group(1)
            page.wait_for_function(f"document.querySelector('#sensitivity input[value=\"{in_use}\"]').checked",
                                   timeout=30_000)

            judgement = _ask(page, "Is there an anomaly in this video?")
            assert judgement.startswith("Yes") and "ucsd_ped2" in judgement
            events_in_answer = int(re.search(r"(\d+) unusual event", judgement).group(1))
            assert events_in_answer == _panel_events(page) >= 1
            loose = _panel_intervals(page)
            assert re.search(r"happens: [\d.]+ s to [\d.]+ s \(frames \d+ to \d+\)", _ask(page, "When does it happen?"))
            assert "first seen" in _ask(page, "Where is it?")
            what = _ask(page, "What does it look like?")
            assert "greyscale" in what  # Ped2 is greyscale: no colour may be claimed
            assert "box heights/s" in _ask(page, "How does it move?")
            assert "99.8th percentile of the reference" in _ask(page, "Why is it unusual?") or \
                "median of the reference" in _bot_texts(page)[-1]

            # "Show me" moves the overlay to the event: the box says where, the video is there.
            shown = _ask(page, "Show me")
            at = float(re.search(r"at ([\d.]+) s", shown).group(1))
            page.wait_for_function(
                f"Math.abs(document.querySelector('#overlay video').currentTime - {at}) < 0.15", timeout=30_000)
            assert float(page.input_value("#show-at input")) == pytest.approx(at, abs=0.05)

            # The strictest sensitivity: the panel and the next judgement answer change together.
            page.get_by_label("0.01/min").check()
            page.wait_for_function("document.querySelector('#status').innerText.includes('re-decided')",
                                   timeout=30_000)
            strict = _ask(page, "Is there an anomaly in this video?")
            assert "0.01/min" in strict and "0.01/min" in page.inner_text("#evidence")
            panel = _panel_events(page)
            if strict.startswith("Yes"):
                assert int(re.search(r"(\d+) unusual event", strict).group(1)) == panel
            else:
                assert panel == 0
            # stricter: every event lies inside one of the looser point's (their count may grow: a looser
            # point's hysteresis can join what a stricter one keeps apart)
            for start, end in _panel_intervals(page):
                assert any(a <= start and end <= b for a, b in loose), (start, end, loose)

            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "grounded_page.png"), full_page=True)
        finally:
            browser.close()
