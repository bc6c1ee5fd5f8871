"""The page's event handling in a real browser (Playwright driving the machine's Chromium).

The page runs in this process on a loopback port, serving a ChatEngine whose model is a double with known
timing: its analysis takes ANALYSE_S, its answers stream one word every WORD_S. That makes the races a user
hits reproducible: typing while an answer streams, two questions sent back to back, a question sent while the
clip is being analysed, clearing the chat, an AVI upload, and what stays on the server after the page closes.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from app_server import ARTIFACTS, CHROMIUM, launch_chromium
from media_factory import write_video

from tvad_chat import ui
from tvad_chat.chat import ChatEngine, EngineConfig
from tvad_chat.models import ModelInfo
from tvad_chat.pipeline import Analysis

ANALYSE_S = 3.0
WORD_S = 0.15

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium missing: run `make browser`")]
playwright_api = pytest.importorskip("playwright.sync_api")


class TimedModel:
    """A ChatModel double: a slow analysis with real-looking heatmaps, answers that stream word by word."""

    variant = "ahd+rae"

    def __init__(self) -> None:
        self.vision_passes = 0
        self.asked: list[str] = []
        self.lock = threading.Lock()

    def analyze(self, clip, extra_events=(), context=None) -> Analysis:
        time.sleep(ANALYSE_S)
        self.vision_passes += 1
        t = len(clip.frames)
        heat = np.zeros(((t + 1) // 2, 12, 20), np.float32)
        heat[:, 3:9, 4:10] = 0.9
        return Analysis(clip=clip, model_frames_shape=(t, 56, 84), heatmaps=heat,
                        frame_scores=np.linspace(0.2, 0.8, t), judgement=True, score=0.8)

    def answer(self, analysis, history, question, stream=None, max_new_tokens=None) -> str:
        asked = question.splitlines()[-1]  # the engine may put the scene evidence before the question
        with self.lock:
            self.asked.append(asked)
        words = f"Answer {len(history) // 2 + 1} to: {asked}".split()
        for i, word in enumerate(words):
            time.sleep(WORD_S)
            if stream is not None:
                stream(word if i == 0 else " " + word)
        return " ".join(words)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    model = TimedModel()
    engine = ChatEngine(EngineConfig(model="timed", num_frames=6, answers="model", profile="none"), model=model,
                        model_info=ModelInfo(source="timed", trained=True, variant=model.variant))
    demo = ui.build_app(engine, examples=[])
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, show_error=False,
                css=ui.CSS, footer_links=[])
    try:
        yield f"http://127.0.0.1:{port}/", engine, model, tmp_path_factory.mktemp("clips")
    finally:
        demo.close()


@pytest.fixture
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = launch_chromium(p)
        try:
            yield chromium
        finally:
            chromium.close()


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1300})
    page.goto(url)
    page.wait_for_selector("#upload input[type=file]", state="attached", timeout=60_000)
    return page


def _status(page) -> str:
    return page.inner_text("#status")


def _wait_status(page, text: str, timeout: float = 60_000) -> None:
    page.wait_for_function(f"document.querySelector('#status').innerText.includes({text!r})", timeout=timeout)


def _messages(page, role: str) -> list[str]:
    return page.eval_on_selector_all(f"#chat [data-testid='{role}']", "els => els.map(e => e.innerText.trim())")


def _wait_bots(page, expected: list[str], timeout: float = 60_000) -> None:
    """Wait until the chat's answers are exactly ``expected`` (streamed answers are complete)."""
    page.wait_for_function(
        "expected => JSON.stringify([...document.querySelectorAll(\"#chat [data-testid='bot']\")]"
        ".map(e => e.innerText.trim())) === JSON.stringify(expected)", arg=expected, timeout=timeout)


def _upload(page, path: Path) -> None:
    page.locator("#upload input[type=file]").set_input_files(str(path))


def _ask(page, text: str) -> None:
    page.fill("#question textarea", text)
    page.press("#question textarea", "Enter")


def _suggestions(page) -> list[str]:
    return page.eval_on_selector_all(".suggestion", "els => els.filter(e => e.offsetParent).map(e => e.innerText)")


def _toasts(page) -> list[str]:
    return page.eval_on_selector_all(".toast-body, [data-testid='toast-body']", "els => els.map(e => e.innerText)")


def test_avi_previews_and_question_during_analysis_waits(page_server, browser):
    url, engine, model, tmp = page_server
    avi = write_video(tmp / "camera 3.avi", codec="mjpeg", num_frames=40, fps=10, pix_fmt="yuvj420p")
    page = _open(browser, url)
    assert "30 min" in page.inner_text("#limits") and "deleted" in page.inner_text("#limits")
    _upload(page, avi)
    page.wait_for_function("document.querySelector('#status').innerText.includes('Analysing')", timeout=30_000)
    _ask(page, "Is there an anomaly in this video?")  # while the clip is analysed
    page.wait_for_function("document.querySelector('#question textarea').value === ''", timeout=10_000)
    page.wait_for_function("document.querySelector('#status').innerText.includes('after it')"
                           " || document.querySelector('#status').innerText.includes('when the clip')", timeout=10_000)
    assert _messages(page, "user") == ["Is there an anomaly in this video?"]  # shown, waiting its turn
    _wait_bots(page, ["Answer 1 to: Is there an anomaly in this video?"])
    _wait_status(page, "Ready")
    assert _messages(page, "user") == ["Is there an anomaly in this video?"]
    assert _messages(page, "bot") == ["Answer 1 to: Is there an anomaly in this video?"]
    # The AVI plays: a display copy (H.264 mp4) was made, the browser decoded it, no error toast.
    page.wait_for_function("document.querySelector('#preview video') && "
                           "document.querySelector('#preview video').readyState >= 1", timeout=30_000)
    errors = page.eval_on_selector_all("video", "vs => vs.map(v => [v.currentSrc, v.error && v.error.code])")
    assert errors and all(code is None for _, code in errors), errors
    assert not any("playable" in t.lower() for t in _toasts(page)), _toasts(page)
    text = page.inner_text("body")
    assert "/tmp/" not in text and "gradio/" not in text  # no server path anywhere on the page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page_avi_answered.png"), full_page=True)
    page.close()


def test_typing_survives_streaming_and_back_to_back_questions_keep_order(page_server, browser):
    url, engine, model, tmp = page_server
    clip = write_video(tmp / "walk.mp4", num_frames=30, fps=10)
    page = _open(browser, url)
    _upload(page, clip)
    _wait_status(page, "Analysed")
    page.wait_for_function("[...document.querySelectorAll('.suggestion')].some(e => e.offsetParent)", timeout=10_000)
    offered = _suggestions(page)
    _ask(page, "First question?")
    _ask(page, "Second question?")  # sent right after the first, while it streams
    page.wait_for_function("document.querySelector('#status').innerText.includes('Answering')", timeout=30_000)
    assert _suggestions(page) == offered  # what the user reads is what a click sends, while answers stream
    page.type("#question textarea", "a draft I am typing", delay=20)
    assert _suggestions(page) == offered
    _wait_bots(page, ["Answer 1 to: First question?", "Answer 2 to: Second question?"])
    _wait_status(page, "Ready")
    assert page.input_value("#question textarea") == "a draft I am typing"  # never erased by the stream
    assert _messages(page, "user") == ["First question?", "Second question?"]
    assert _messages(page, "bot") == ["Answer 1 to: First question?", "Answer 2 to: Second question?"]
    page.screenshot(path=str(ARTIFACTS / "page_two_questions.png"), full_page=True)

    # The trash icon clears the session's history: the next answer does not bring the old dialogue back.
    page.locator("#chat button[aria-label='Clear']").first.click()
    page.wait_for_function("document.querySelectorAll(\"#chat [data-testid='bot']\").length == 0", timeout=10_000)
    page.fill("#question textarea", "")
    _ask(page, "Third question?")
    _wait_bots(page, ["Answer 1 to: Third question?"])
    _wait_status(page, "Ready")
    assert _messages(page, "user") == ["Third question?"]
    assert _messages(page, "bot") == ["Answer 1 to: Third question?"]  # the model saw an empty history
    page.close()


def test_files_are_deleted_when_the_page_closes(page_server, browser):
    url, engine, model, tmp = page_server
    clip = write_video(tmp / "gone.mp4", num_frames=20, fps=10)
    page = _open(browser, url)
    _upload(page, clip)
    _wait_status(page, "Analysed")
    page.wait_for_selector("#overlay video", timeout=30_000)
    served = page.eval_on_selector_all("video", "vs => vs.map(v => v.currentSrc).filter(s => s)")
    assert len(served) == 2  # the preview (the upload itself) and the overlay
    for link in served:
        with urllib.request.urlopen(link, timeout=10) as response:
            assert response.status == 200
    sessions = set(engine._sessions)
    page.close()  # the browser leaves: Gradio's unload event ends the session
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and set(engine._sessions) >= sessions:
        time.sleep(0.5)
    assert not set(engine._sessions) >= sessions, "the session was not ended"
    for link in served:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(link, timeout=10)
        assert err.value.code in (403, 404)
