"""`tvad scan`: memory over a one-hour clip, throughput of 1 and 2 local workers and 2 Ray workers, Ray's overhead.

Run:  .venv/bin/python benchmarks/bench_scan.py [--hour-fps 0.5] [--clips 4] [--clip-seconds 60] [--data ../shared/data]
      [--profile profiles/ucsd_ped2] [--no-hour]

Footage (made cheaply, no SynthCampus rendering): Ped2 training folder 01 (360x240) looped forwards and backwards
into H.264 mp4s at 10 fps (ultrafast), analysed with the shipped profiles/ucsd_ped2.
  * one hour: a 3600 s mp4 scanned with 2 local workers at --hour-fps frames per second (every frame of an hour
    would take longer than a benchmark should), in 10-minute segments; the peak resident memory (RSS) of each
    worker process is sampled every 0.2 s, beside the same scan of a 6-minute clip: flat memory means the hour's
    peak is about the 6 minutes' peak;
  * throughput, in one run on equal work: --clips clips of --clip-seconds (long enough that a task's start-up does
    not dominate), every frame, scanned by 1 local worker, 2 local workers and 2 Ray workers (a local Ray instance
    on 127.0.0.1 with num_cpus=2, started after the local runs; its start-up and the first round of tasks that
    start its workers are timed apart, not counted). Each run prints the load average before and after it, the
    OpenCV threads each task sets (the cores shared among the workers: 1 each when 2 workers share 2 cores) and the
    peak OS thread count of each worker process (OpenCV, the decoder's and the runtime's own threads). One worker
    is run twice: with both cores' threads (what `--workers 1` gives) and with 1 thread (the unit the executor
    scales: each of 2 workers gets 1), so the speed-up is given against both;
  * Ray's overhead per clip: the round trip of an empty task, and (2 Ray workers - 2 local workers) / clips.
The machine may be shared: the load average is printed before and after; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from footage import PeakRss, load_average, looped_clip  # noqa: E402


def empty(item: int) -> int:
    """A task that does nothing: its round trip is the executor's own cost."""
    return item


def worker_processes() -> list:
    """This process's workers: spawned pool processes, or Ray's worker processes (not its own services)."""
    import psutil

    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            name, command = child.name(), " ".join(child.cmdline())
        except psutil.Error:
            continue
        if ("spawn_main" in command and "resource_tracker" not in command) or (
                name.startswith("ray::") and not name.endswith("Agent")):
            found.append(child)
    return found


class WorkerThreads:
    """The peak OS thread count of each worker process while the block runs (sampled every 0.25 s)."""

    def __init__(self) -> None:
        self.peak: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            for process in worker_processes():
                try:
                    if process.cpu_times().user > 0.5:  # a worker that did some of the work
                        self.peak[process.pid] = max(self.peak.get(process.pid, 0), process.num_threads())
                except psutil.Error:
                    continue
            self._stop.wait(0.25)

    def __enter__(self) -> WorkerThreads:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timed_scan(root: Path, out: Path, settings, executor, close: bool = True) -> tuple[float, object, list[int]]:
    """Wall time, result and the peak OS threads per worker of one scan."""
    from datasets_builder.sources import VIDEO_EXTENSIONS
    from tvad_chat.scan.run import scan

    start = time.perf_counter()
    try:
        with WorkerThreads() as threads:
            result = scan(root, out, settings, executor, VIDEO_EXTENSIONS)
        wall = time.perf_counter() - start
    finally:
        if close:
            executor.close()
    return wall, result, sorted(threads.peak.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hour-fps", type=float, default=0.5)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--clip-seconds", type=float, default=60.0)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--no-hour", action="store_true", help="skip the one-hour clip")
    parser.add_argument("--profile", default=str(ROOT / "profiles" / "ucsd_ped2"),
                        help="scene profile of every clip (default: the shipped profiles/ucsd_ped2)")
    args = parser.parse_args()

    from tvad_chat.executor import LocalExecutor, RayExecutor, run_tasks
    from tvad_chat.scan.work import ScanSettings

    frames_dir = args.data / "ucsd_ped2" / "training" / "frames" / "01"
    profile = args.profile
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
                wall, result, _ = timed_scan(work / name, work / f"out-{name}", settings, LocalExecutor(2))
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
        print(f"throughput: {args.clips} clips x {args.clip_seconds:.0f} s, every frame ({frames} frames)", flush=True)
        runs: dict[str, float] = {}

        def report(label: str, executor, wall: float, threads: list[int], load_before: str) -> None:
            runs[label] = wall
            print(f"  {label}: {wall:6.1f} s  {frames / wall:6.1f} frames/s; OpenCV threads per task "
                  f"{executor.threads}, peak OS threads per worker {threads}; load {load_before} -> "
                  f"{load_average()}", flush=True)

        for label, workers, per_task in (("1 local worker ", 1, None), ("1 worker 1 thr.", 1, 1),
                                         ("2 local workers", 2, None)):
            executor, load_before = LocalExecutor(workers, per_task), load_average()
            out = work / f"out-{workers}{'-1' if per_task else ''}"
            wall, result, threads = timed_scan(work / "clips", out, every, executor)
            assert not result.failed, result.failed
            report(label, executor, wall, threads, load_before)
        temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        start = time.perf_counter()
        ray_executor = RayExecutor(None, num_cpus=2, _temp_dir=str(temp))
        ray_start = time.perf_counter() - start
        try:
            start = time.perf_counter()
            for _ in run_tasks(empty, range(4), ray_executor):  # starts Ray's worker processes
                pass
            warm_up = time.perf_counter() - start
            start = time.perf_counter()
            for _ in run_tasks(empty, range(200), ray_executor):
                pass
            empty_task = (time.perf_counter() - start) / 200
            load_before = load_average()
            wall, result, threads = timed_scan(work / "clips", work / "out-ray", every, ray_executor, close=False)
            assert not result.failed, result.failed
            report("2 Ray workers  ", ray_executor, wall, threads, load_before)
        finally:
            ray_executor.close()
            shutil.rmtree(temp, ignore_errors=True)
        for base_label in ("1 local worker ", "1 worker 1 thr."):
            for label in ("2 local workers", "2 Ray workers  "):
                print(f"  {label}: speed-up {runs[base_label] / runs[label]:.2f}x over {base_label.strip()}")
        print(f"Ray: start-up {ray_start:.1f} s and first tasks {warm_up:.1f} s (once per scan, not counted above); "
              f"empty task round trip {empty_task * 1000:.1f} ms; per clip over local processes "
              f"{(runs['2 Ray workers  '] - runs['2 local workers']) / args.clips:+.2f} s")
        same = (work / "out-ray" / "index.csv").read_bytes() == (work / "out-2" / "index.csv").read_bytes()
        same_one = (work / "out-1" / "index.csv").read_bytes() == (work / "out-2" / "index.csv").read_bytes()
        print(f"index identical: 1 vs 2 local workers {same_one}, Ray vs local {same}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
