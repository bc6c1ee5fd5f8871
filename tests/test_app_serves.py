"""`make run` and `tvad app` serve the page: start each as a user would and fetch the page over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["make run", "tvad app"])
def test_app_serves_page_on_loopback(tmp_path: Path, how: str) -> None:
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    env.pop("TVAD_PORT", None)
    if how == "make run":  # app.py with the address in the environment, as the Makefile starts it
        command = ["app.py"]
        env.update(TVAD_HOST="127.0.0.1", TVAD_PORT=str(port))
    else:  # the installed command imports tvad_chat.ui (no app.py in a wheel)
        command = ["-m", "tvad_chat.cli", "app", "--host", "127.0.0.1", "--port", str(port)]
    log = (tmp_path / "app.log").open("w")
    proc = subprocess.Popen([sys.executable, *command], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        body = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    assert response.status == 200
                    body = response.read().decode("utf-8", "replace")
                    break
            except OSError:
                time.sleep(1)
        assert body is not None, f"app did not serve; log:\n{(tmp_path / 'app.log').read_text()[-3000:]}"
        assert "T-VAD Chat" in body
    finally:
        proc.terminate()
        proc.wait(timeout=30)
