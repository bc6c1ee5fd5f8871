"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
from shared_data import DATA

from datasets_builder.corpus import CorpusConfig, VideoItem, build_corpus
from datasets_builder.extract import FrameTask, OpenAICompatibleBackend, OpenAIConfig
from tvad_chat.errors import ConfigError

KEY = "sk-test-7f3a9c1e5b2d48e6a0c4f1b9d3e7a5c8"
ENV = "TVAD_TEST_OPENAI_KEY"

ANSWER = {"objects": [{"category": "person", "attributes": {"upper_color": "red", "lower_color": "black"},
                       "box": [40, 20, 80, 100], "anomalous": False, "confidence": 0.9}]}


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.script: deque = deque()  # actions for the next requests, then `default`
        self.default = ("ok", json.dumps(ANSWER), 0.0)
        self.requests: list[dict] = []
        self.arrivals: list[float] = []
        self.inflight = 0
        self.max_inflight = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, code: int, body: dict | str, headers: dict | None = None) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        s = self.server
        with s.lock:
            s.arrivals.append(time.monotonic())
            s.inflight += 1
            s.max_inflight = max(s.max_inflight, s.inflight)
            action = s.script.popleft() if s.script else s.default
        try:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with s.lock:
                s.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            kind = action[0]
            if kind == "ok":
                _, content, delay = action
                time.sleep(delay)
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": content}}]})
            elif kind == "status":
                _, code, headers = action
                # a hostile server echoing the credentials back in its error body
                self._send(code, {"error": {"message": f"nope, you sent {self.headers.get('Authorization')}"}},
                           headers)
            elif kind == "sleep":
                time.sleep(action[1])
                self._send(200, {"choices": [{"message": {"content": json.dumps(ANSWER)}}]})
            elif kind == "garbage":
                self._send(200, "<html>not json</html>")
        finally:
            with s.lock:
                s.inflight -= 1


@pytest.fixture()
def server():
    srv = FakeServer()
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    th.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(ENV, KEY)


def _cfg(url: str, **kw) -> OpenAIConfig:
    base = dict(base_url=url, model="test-vlm", api_key_env=ENV, timeout_s=2.0, retries=2, backoff_s=0.01,
                concurrency=1)
    base.update(kw)
    return OpenAIConfig(**base)


def _task(i: int = 0, w: int = 160, h: int = 120) -> FrameTask:
    rng = np.random.default_rng(i)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return FrameTask(video_id="v", frame_index=i, timestamp=i / 10, width=w, height=h, image=img)


class SleepRecorder:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, s: float) -> None:
        self.waits.append(s)


def test_good_answer_request_shape_and_box_scaling(server):
    be = OpenAICompatibleBackend(_cfg(server.url, image_max_side=80))  # 160x120 frame sent as 80x60
    rec = be.extract(_task(0))
    assert rec.ok and rec.error is None and rec.repairs == []
    inst = rec.instances[0]
    assert inst.box == (80.0, 40.0, 160.0, 120.0) and inst.attributes["upper_color"] == "red"
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == f"Bearer {KEY}"
    body = req["body"]
    assert body["model"] == "test-vlm" and body["temperature"] == 0.0
    text, image = body["messages"][0]["content"]
    assert "80 pixels wide and 60 pixels high" in text["text"]
    url = image["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (60, 80, 3)


def test_malformed_json_is_repaired_or_rejected_with_reason(server):
    be = OpenAICompatibleBackend(_cfg(server.url, parse_retries=1))
    server.script.extend([("ok", "```json\n{'objects': [{'category': 'car', 'box': [1, 2, 30, 40],},]}\n```", 0)])
    rec = be.extract(_task(1))
    assert rec.ok and set(rec.repairs) >= {"code_fence", "single_quotes"} and rec.instances[0].category == "car"
    # unparseable twice: asked again once, then rejected with the parser's reason
    server.script.extend([("ok", "I see a person.", 0), ("ok", '{"objects": [{"category": ', 0)])
    n0 = len(server.requests)
    rec = be.extract(_task(2))
    assert not rec.ok and rec.instances == []
    assert rec.error.startswith("unparseable answer: no complete JSON")
    assert len(server.requests) - n0 == 2
    # unparseable, then good: the re-ask rescues the frame
    server.script.extend([("ok", "sorry", 0)])
    assert be.extract(_task(3)).ok
    # a body that is not a chat completion at all is not retried
    server.script.extend([("garbage",)])
    n0 = len(server.requests)
    rec = be.extract(_task(4))
    assert not rec.ok and "not an OpenAI chat completion" in rec.error
    assert be.stats.repaired == 1


def test_429_honours_retry_after_and_500_backs_off_exponentially(server):
    be = OpenAICompatibleBackend(_cfg(server.url, retries=3, backoff_s=0.05))
    server.script.extend([("status", 429, {"Retry-After": "0.3"})])
    t0 = time.monotonic()
    rec = be.extract(_task(0))
    assert rec.ok and len(server.requests) == 2
    assert time.monotonic() - t0 >= 0.3
    rec_sleep = SleepRecorder()
    be2 = OpenAICompatibleBackend(_cfg(server.url, retries=3, backoff_s=0.05), sleep=rec_sleep)
    server.script.extend([("status", 500, {}), ("status", 503, {}), ("status", 502, {})])
    assert be2.extract(_task(0)).ok
    assert len(rec_sleep.waits) == 3
    for k, w in enumerate(rec_sleep.waits):  # 0.05, 0.1, 0.2 with +-20 % jitter
        assert 0.05 * 2**k * 0.8 <= w <= 0.05 * 2**k * 1.2
    assert be2.stats.retries == 3


def test_retries_are_bounded_and_the_reason_recorded(server):
    rec_sleep = SleepRecorder()
    be = OpenAICompatibleBackend(_cfg(server.url, retries=2), sleep=rec_sleep)
    server.default = ("status", 500, {})
    rec = be.extract(_task(0))
    assert not rec.ok and "HTTP 500" in rec.error and "gave up after 3 attempts" in rec.error
    assert len(server.requests) == 3 and len(rec_sleep.waits) == 2
    assert KEY not in rec.error and "***" in rec.error  # the echoed credentials were scrubbed
    # client errors other than 408/429 are not retried
    server.default = ("status", 401, {})
    n0 = len(server.requests)
    rec = be.extract(_task(1))
    assert len(server.requests) - n0 == 1 and "HTTP 401" in rec.error and ENV in rec.error and KEY not in rec.error


def test_timeout_is_retried_then_recorded(server):
    be = OpenAICompatibleBackend(_cfg(server.url, timeout_s=0.3, retries=1))
    server.script.extend([("sleep", 1.0)])
    t0 = time.monotonic()
    rec = be.extract(_task(0))
    assert rec.ok and len(server.requests) == 2 and 0.3 <= time.monotonic() - t0 < 1.0
    server.script.extend([("sleep", 0.8), ("sleep", 0.8)])
    rec = be.extract(_task(1))
    assert not rec.ok and "timeout after 0.3 s" in rec.error


def test_connection_refused_is_retried_then_recorded():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    rec_sleep = SleepRecorder()
    be = OpenAICompatibleBackend(_cfg(f"http://127.0.0.1:{port}/v1", retries=2), sleep=rec_sleep)
    rec = be.extract(_task(0))
    assert not rec.ok and "connection refused" in rec.error and "gave up after 3 attempts" in rec.error
    assert len(rec_sleep.waits) == 2


def test_bounded_concurrency_keeps_order(server):
    server.default = ("ok", json.dumps(ANSWER), 0.15)
    be = OpenAICompatibleBackend(_cfg(server.url, concurrency=3))
    tasks = [_task(i) for i in range(9)]
    t0 = time.monotonic()
    recs = be.extract_many(tasks)
    elapsed = time.monotonic() - t0
    be.close()
    assert [r.frame_index for r in recs] == list(range(9)) and all(r.ok for r in recs)
    assert server.max_inflight == 3
    assert elapsed < 9 * 0.15 * 0.8  # overlapped, not serial


def test_rate_limit_spaces_request_starts(server):
    be = OpenAICompatibleBackend(_cfg(server.url, concurrency=4, rate_per_s=20.0))
    recs = be.extract_many([_task(i) for i in range(8)])
    be.close()
    assert all(r.ok for r in recs)
    arr = sorted(server.arrivals)
    gaps = np.diff(arr)
    assert arr[-1] - arr[0] >= 7 * 0.05 * 0.9
    assert gaps.min() >= 0.05 * 0.6  # thread wake-up jitter aside, starts are ~50 ms apart


def test_missing_key_and_bad_options_are_config_errors(monkeypatch):
    monkeypatch.delenv(ENV)
    with pytest.raises(ConfigError, match=ENV):
        OpenAICompatibleBackend(_cfg("http://127.0.0.1:1/v1"))
    monkeypatch.setenv(ENV, KEY)
    with pytest.raises(ConfigError, match="base-url"):
        OpenAICompatibleBackend(_cfg("127.0.0.1:1"))
    with pytest.raises(ConfigError, match="concurrency"):
        OpenAICompatibleBackend(_cfg("http://x/v1", concurrency=0))
    be = OpenAICompatibleBackend(_cfg("http://127.0.0.1:1/v1", api_key_env=None))
    assert be._key is None
    be = OpenAICompatibleBackend(_cfg("http://127.0.0.1:1/v1"))
    assert KEY not in repr(be) and KEY not in repr(be.config)


def _walker_item(vid: str, n: int = 6) -> VideoItem:
    frames = np.random.default_rng(0).integers(0, 255, (n, 120, 160, 3), dtype=np.uint8)
    return VideoItem(video_id=vid, split="test", video=f"/data/{vid}.avi", fps=10.0, width=160, height=120,
                     num_frames=n, read_frames=lambda idx: frames[list(idx)])


def test_api_key_in_no_file_and_no_log_line(server, tmp_path: Path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    # a mix of good answers, server errors that echo the credentials, and a failing video
    server.script.extend([("status", 500, {}), ("ok", json.dumps(ANSWER), 0), ("status", 429, {"Retry-After": "0"})])
    be = OpenAICompatibleBackend(_cfg(server.url, concurrency=2, retries=1))
    cfg = CorpusConfig(out_dir=tmp_path / "out", source="folder", stride=1, progress=True)
    build_corpus([_walker_item("a"), _walker_item("b")], be, cfg)
    server.default = ("status", 403, {})
    build_corpus([_walker_item("c")], be, cfg)
    be.close()
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"sft.jsonl", "eval_refs.jsonl", "done.jsonl", "failures.jsonl", "summary.json"}
    failures = (tmp_path / "out" / "failures.jsonl").read_text()
    assert "HTTP 403" in failures  # the failing video was recorded, with its reason
    for p in files:
        assert KEY.encode() not in p.read_bytes(), p
    log_text = "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP 500" in log_text or "retry" in log_text  # retries were logged ...
    assert KEY not in log_text  # ... without the key
    out, err = capsys.readouterr()
    assert KEY not in out and KEY not in err


@pytest.mark.slow
@pytest.mark.shared_data("ucsd_ped2", "cuhk_avenue")
def test_cli_folder_source_on_real_footage_keeps_the_key_out_of_everything(server, tmp_path: Path):
    """`tvad build-corpus --source folder --backend openai` as a user runs it, with --verbose logging."""
    import shutil
    import subprocess
    import sys

    data = tmp_path / "videos"
    (data / "ped2_01").mkdir(parents=True)
    for i in range(12):  # a real Ped2 frame folder (a bicycle enters later in this clip)
        shutil.copy(f"{DATA}/ucsd_ped2/testing/frames/01/{i:03d}.jpg", data / "ped2_01")
    shutil.copy(DATA / "cuhk_avenue/testing_videos/08.avi", data / "avenue_08.avi")
    server.script.extend([("status", 503, {"Retry-After": "0"})])
    out = tmp_path / "corpus"
    root = Path(__file__).resolve().parents[1]
    env = dict(__import__("os").environ, PYTHONPATH=str(root), **{ENV: KEY})
    cmd = [sys.executable, "-m", "tvad_chat.cli", "--verbose", "build-corpus", "--source", "folder",
           "--backend", "openai", "--data", str(data), "--out", str(out), "--base-url", server.url,
           "--model", "test-vlm", "--api-key-env", ENV, "--concurrency", "2", "--retries", "2",
           "--extract-fps", "5", "--timeout", "5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert KEY not in proc.stdout and KEY not in proc.stderr
    assert "retry" in proc.stderr  # the 503 was logged and retried
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos_in_corpus"] == 2 and summary["frames_rejected"] == 0
    # 36 Avenue frames at 25 fps sampled at 5 fps, 12 folder frames at the folder rate
    assert summary["frames_extracted"] >= 8 + 2
    assert all(r["auth"] == f"Bearer {KEY}" for r in server.requests)
    for p in out.rglob("*"):
        if p.is_file():
            assert KEY.encode() not in p.read_bytes(), p
    dump = json.loads((out / "videos" / "test" / "avenue_08.json").read_text())
    assert dump["width"] == 640 and dump["records"][0]["instances"][0]["box"][2] > dump["records"][0]["instances"][0]["box"][0]
    # a second run resumes: nothing new is requested
    n_requests = len(server.requests)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=120)
    assert proc.returncode == 0 and len(server.requests) == n_requests and "2 already done" in proc.stdout
