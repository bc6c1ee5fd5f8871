"""Start the page (app.py, as `make run` does) on a free loopback port and wait until it serves.

One helper for the browser tests and benchmarks/bench_soak.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class AppDidNotStart(RuntimeError):
    """The page did not serve within the time allowed (the message holds the end of its log)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_app(folder: Path, timeout_s: float = 150.0, **env: str) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """(url, process, log path) of the page started with the environment plus ``env``; stopped on exit."""
    port = free_port()
    environment = dict(os.environ, TVAD_HOST="127.0.0.1", TVAD_PORT=str(port), HF_HUB_OFFLINE="1",
                       TRANSFORMERS_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
                       TVAD_CACHE=str(folder / "cache"), **env)
    log_path = folder / "app.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=environment, stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AppDidNotStart(f"the page did not start; log:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, proc, log_path
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# Debian's Chromium (`make browser`), never a browser a test tool downloads; flags for a closed network.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = ROOT / "tests" / "artifacts"  # screenshots the browser tests leave to look at


def launch_chromium(playwright):
    """The machine's Chromium, headless, driven by Playwright."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
