"""Memory soak: the page's resident memory over a bounded loop of sessions (4K upload + questions) on loopback.

Starts app.py (the page, as `make run` does) with a short retention time, then, through gradio_client, runs one
session (upload a 4K clip, ask two questions, leave), waits until the server has ended it, and reads the
server's resident memory (VmRSS); then runs --sessions more the same way and reads it again once they have
ended. Prints both and their ratio: the goal is at most 1.10 (memory returns to within 10 % of its level after
the first session).

    python benchmarks/bench_soak.py --sessions 6
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from app_server import AppDidNotStart, running_app  # noqa: E402
from media_factory import write_video  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def one_session(url: str, clip: Path) -> None:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    try:
        client.predict(handle_file(str(clip)), api_name="/add_clip")
        client.predict(api_name="/work_jobs")
        for question in ("Is there an anomaly in this video?", "When does it happen?"):
            client.predict(question, api_name="/add_question")
            client.predict(api_name="/work_jobs_1")
    finally:
        client.close()


def wait_for_end(log: Path, ended_before: int, sessions: int, timeout: float) -> int:
    """Wait until the server logs `sessions` more ended sessions; returns the new count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ended = log.read_text().count("ended: its files are deleted")
        if ended >= ended_before + sessions:
            return ended
        time.sleep(1)
    raise TimeoutError(f"the server did not end {sessions} session(s) within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=6, help="sessions after the first (default 6)")
    parser.add_argument("--retention-min", type=float, default=0.25, help="TVAD_RETENTION_MIN for the server")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_soak_"))
    clip = write_video(tmp / "street_4k.mp4", num_frames=20, fps=10, width=3840, height=2160)
    try:
        with running_app(tmp, timeout_s=180, TVAD_RETENTION_MIN=str(args.retention_min),
                         GRADIO_TEMP_DIR=str(tmp / "gradio")) as (url, server, log):
            idle = rss_mb(server.pid)
            wait = args.retention_min * 60 + 60
            start = time.perf_counter()
            one_session(url, clip)
            peak = rss_mb(server.pid)
            ended = wait_for_end(log, 0, 1, wait)
            time.sleep(2)
            first = rss_mb(server.pid)
            print(f"server idle: {idle:.0f} MB; during the first session: {peak:.0f} MB; after it ended: {first:.0f} MB "
                  f"({time.perf_counter() - start:.1f} s)")
            for i in range(args.sessions):
                one_session(url, clip)
                print(f"  session {i + 2}: {rss_mb(server.pid):.0f} MB while open")
            wait_for_end(log, ended, args.sessions, wait)
            time.sleep(2)
            last = rss_mb(server.pid)
            files = [p for p in (tmp / "gradio").rglob("*") if p.is_file() and p.stat().st_size]
            print(f"after {args.sessions} more sessions ended: {last:.0f} MB; ratio to after the first {last / first:.3f} "
                  f"(goal <= 1.10); non-empty files left in the upload cache: {len(files)}")
    except AppDidNotStart as exc:
        raise SystemExit(str(exc)) from None


if __name__ == "__main__":
    main()
