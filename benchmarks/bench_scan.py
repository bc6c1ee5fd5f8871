"""`tvad scan`: memory over a one-hour clip, throughput of 1 and 2 local workers and 2 Ray workers, Ray's overhead.

Run:  .venv/bin/python benchmarks/bench_scan.py [--hour-fps 0.5] [--clips 4] [--clip-seconds 15] [--data ../shared/data]

Footage (made cheaply, no SynthCampus rendering): Ped2 training folder 01 (360x240) looped forwards and backwards
into H.264 mp4s at 10 fps (ultrafast), analysed with the shipped profiles/ucsd_ped2.
  * one hour: a 3600 s mp4 scanned with 2 local workers at --hour-fps frames per second (every frame of an hour
    would take longer than a benchmark should), in 10-minute segments; the peak resident memory (RSS) of each
    worker process is sampled every 0.2 s, beside the same scan of a 6-minute clip: flat memory means the hour's
    peak is about the 6 minutes' peak;
  * throughput: --clips clips of --clip-seconds, every frame, scanned by 1 local worker, 2 local workers and 2 Ray
    workers (a local Ray instance with num_cpus=2; its start-up time is printed apart, not counted);
  * Ray's overhead per clip: the round trip of an empty task, and (2 Ray workers - 2 local workers) / clips.
The machine may be shared: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from footage import PeakRss, load_average, looped_clip  # noqa: E402


def empty(item: int) -> int:
    """A task that does nothing: its round trip is the executor's own cost."""
    return item


def timed_scan(root: Path, out: Path, settings, executor) -> tuple[float, object]:
    from datasets_builder.sources import VIDEO_EXTENSIONS
    from tvad_chat.scan.run import scan

    start = time.perf_counter()
    try:
        result = scan(root, out, settings, executor, VIDEO_EXTENSIONS)
    finally:
        executor.close()
    return time.perf_counter() - start, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hour-fps", type=float, default=0.5)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--clip-seconds", type=float, default=15.0)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--no-hour", action="store_true", help="skip the one-hour clip")
    args = parser.parse_args()

    from tvad_chat.executor import LocalExecutor, RayExecutor, run_tasks
    from tvad_chat.scan.work import ScanSettings

    frames_dir = args.data / "ucsd_ped2" / "training" / "frames" / "01"
    profile = str(ROOT / "profiles" / "ucsd_ped2")
    print(f"load average before: {load_average()}  ({os.cpu_count()} cores)")
    work = Path(tempfile.mkdtemp(prefix="bench-scan-"))
    try:
        # ---- one hour, memory
        start = time.perf_counter()
        hours = () if args.no_hour else (("six", "6-minute clip"), ("hour", "1-hour clip  "))
        for name, _ in hours:
            looped_clip(work / name / "cam1" / f"{name}.mp4", frames_dir, 3600 if name == "hour" else 360)
        if hours:
            print(f"made the 1-hour and 6-minute mp4s (360x240, 10 fps) in {time.perf_counter() - start:.0f} s")
        settings = ScanSettings(profile=profile, fps=args.hour_fps, segment_s=600.0)
        for name, label in hours:
            with PeakRss(children=True) as rss:
                wall, result = timed_scan(work / name, work / f"out-{name}", settings, LocalExecutor(2))
            assert not result.failed, result.failed
            frames = sum(1 for _ in (work / f"out-{name}").rglob("report.json"))
            print(f"{label}: {result.totals['hours'] * 60:.0f} min at {args.hour_fps} frames/s, "
                  f"{math.ceil(result.totals['hours'] * 3600 / 600) if name == 'hour' else 1} task(s) of analysis, "
                  f"2 workers: {wall:.1f} s; peak RSS of a worker {rss.peak:.0f} MB; "
                  f"{result.totals['events']} events ({frames} report)")

        # ---- throughput
        for k in range(args.clips):
            looped_clip(work / "clips" / f"cam{k}" / f"clip{k}.mp4", frames_dir, args.clip_seconds)
        every = ScanSettings(profile=profile)
        frames = int(args.clips * args.clip_seconds * 10)
        runs = {}
        for label, make in (("1 local worker ", lambda: LocalExecutor(1)), ("2 local workers", lambda: LocalExecutor(2))):
            wall, result = timed_scan(work / "clips", work / f"out-{label.strip()}", every, make())
            runs[label] = wall
            print(f"  {label}: {wall:6.1f} s", flush=True)
        temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        start = time.perf_counter()
        ray_executor = RayExecutor(None, num_cpus=2, include_dashboard=False, _temp_dir=str(temp))
        ray_start = time.perf_counter() - start
        start = time.perf_counter()
        for _ in run_tasks(empty, range(200), ray_executor):
            pass
        empty_task = (time.perf_counter() - start) / 200
        start = time.perf_counter()
        from datasets_builder.sources import VIDEO_EXTENSIONS
        from tvad_chat.scan.run import scan

        scan(work / "clips", work / "out-ray", every, ray_executor, VIDEO_EXTENSIONS)
        runs["2 Ray workers  "] = time.perf_counter() - start
        ray_executor.close()
        shutil.rmtree(temp, ignore_errors=True)
        base = runs["1 local worker "]
        print(f"throughput: {args.clips} clips x {args.clip_seconds:.0f} s, every frame ({frames} frames)")
        for label, wall in runs.items():
            print(f"  {label}: {wall:6.1f} s  {frames / wall:6.1f} frames/s  speed-up {base / wall:.2f}x")
        print(f"Ray: start-up {ray_start:.1f} s (once per scan); empty task round trip {empty_task * 1000:.1f} ms; "
              f"per clip over local processes {(runs['2 Ray workers  '] - runs['2 local workers']) / args.clips:+.2f} s")
        same = (work / "out-ray" / "index.csv").read_bytes() == (work / "out-2 local workers" / "index.csv").read_bytes()
        print(f"Ray index identical to the local one: {same}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
