"""Scene profiles: analysis speed on Ped2 and Avenue, calibration time on Ped2, memory over a one-hour clip.

Run:  .venv/bin/python benchmarks/bench_scene.py [--threads 2] [--repeats 3] [--hour-fps 2] [--hour-seconds 3600]
      [--calibrate-avenue] [--data ../shared/data]

Measures (one run; the machine may be shared, so the load average is printed before and after, and CPU time
is printed beside wall time):
  * calibration: `calibrate` on Ped2's 16 training folders at --folder-fps 10 (the profile is written to a
    temporary folder);
  * analysis frames/s: `analyze_clip` (profile load, decode, objects, scores, tracks, events; no heat maps) on
    Ped2 test clip 01 (360x240, frame folder at 10 fps) and Avenue test video 21 (640x360, 25 fps), every
    frame, best and median of --repeats runs; with the shipped profiles/ucsd_ped2 and profiles/cuhk_avenue
    when present, else the Ped2 profile just calibrated and an Avenue profile calibrated on its two training
    videos (--calibrate-avenue forces that);
  * memory: a one-hour 10 fps mp4 (360x240, H.264) made by looping Ped2's training frames is analysed with the
    Ped2 profile at --hour-fps frames per second (subsampled: every frame of an hour would take longer than
    this benchmark should); resident memory (RSS) before, after and its peak (sampled every 0.2 s and the
    kernel's VmHWM), and the growth after - before.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from footage import PeakRss, load_average, looped_clip, rss_mb  # noqa: E402


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu



def analysis_speed(source: Path, profile: Path, repeats: int, folder_fps: float | None) -> dict[str, float]:
    from tvad_chat.scene.run import analyze_clip

    walls, cpus, frames = [], [], 0
    for _ in range(repeats):
        (analysis, _), wall, cpu = timed(lambda: analyze_clip(source, profile, folder_fps=folder_fps))
        frames = len(analysis.frames)
        walls.append(wall)
        cpus.append(cpu)
    return {"frames": frames, "best": frames / min(walls), "median": frames / statistics.median(walls),
            "cpu": frames / statistics.median(cpus)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="OpenCV and torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hour-fps", type=float, default=2.0, help="analysed frames per second of the hour clip")
    parser.add_argument("--hour-seconds", type=int, default=3600)
    parser.add_argument("--calibrate-avenue", action="store_true", help="calibrate Avenue even if shipped")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()

    import cv2
    import torch

    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    from tvad_chat.scene.calibrate import calibrate

    ped2, avenue = args.data / "ucsd_ped2", args.data / "cuhk_avenue"
    print(f"bench_scene: {os.cpu_count()} CPUs, cv2.setNumThreads({args.threads}) -> cv2.getNumThreads() = "
          f"{cv2.getNumThreads()}, torch threads {torch.get_num_threads()} (the scene analysis uses no torch), "
          f"OpenCV {cv2.__version__}")
    print(f"load average at start (1/5/15 min): {load_average()}")
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench_scene_") as tmp:
        tmp = Path(tmp)
        training = sorted((ped2 / "training" / "frames").iterdir())
        profile, wall, cpu = timed(lambda: calibrate(training, "ucsd_ped2", folder_fps=10))
        profile.save(tmp / "ucsd_ped2")
        made = profile.made_from
        rows.append(("calibration, Ped2 16 training folders (folder-fps 10)", f"{wall:.1f} s wall",
                     f"{cpu:.1f} s CPU; {made['frames']} frames, {made['objects']} objects"))

        shipped = ROOT / "profiles"
        ped2_profile = shipped / "ucsd_ped2" if (shipped / "ucsd_ped2" / "profile.json").is_file() else tmp / "ucsd_ped2"
        avenue_profile = shipped / "cuhk_avenue"
        if args.calibrate_avenue or not (avenue_profile / "profile.json").is_file():
            videos = sorted((avenue / "training_videos").iterdir())
            calibrate(videos, "cuhk_avenue").save(tmp / "cuhk_avenue")
            avenue_profile = tmp / "cuhk_avenue"

        for label, source, prof, folder_fps in (
                ("analysis, Ped2 test 01 (360x240)", ped2 / "testing" / "frames" / "01", ped2_profile, 10.0),
                ("analysis, Avenue test 21 (640x360)", avenue / "testing_videos" / "21.avi", avenue_profile, None)):
            speed = analysis_speed(source, prof, args.repeats, folder_fps)
            where = "shipped" if prof.parent == shipped else "calibrated here"
            rows.append((label, f"{speed['best']:.1f} frames/s best",
                         f"median {speed['median']:.1f}, {speed['cpu']:.1f} per CPU-second; {speed['frames']} "
                         f"frames x {args.repeats}; profile {prof.name} ({where})"))

        from tvad_chat.scene.run import analyze_clip

        clip, wall, _ = timed(lambda: looped_clip(tmp / "hour.mp4", training[0], args.hour_seconds))
        print(f"made a {args.hour_seconds} s 10 fps clip in {wall:.0f} s ({clip.stat().st_size / 2**20:.0f} MB)")
        analyze_clip(ped2 / "testing" / "frames" / "01", ped2_profile, folder_fps=10)  # warm: imports, caches
        before = rss_mb()
        with PeakRss() as peak:
            (analysis, _), wall, cpu = timed(lambda: analyze_clip(clip, ped2_profile, fps=args.hour_fps))
        after = rss_mb()
        rows.append((f"one-hour clip (360x240, analysed at {args.hour_fps:g} fps: {len(analysis.frames)} frames)",
                     f"RSS +{after - before:.0f} MB",
                     f"before {before:.0f} MB, after {after:.0f} MB, peak {peak.peak:.0f} MB (VmHWM {vm_hwm_mb():.0f} MB)"
                     f"; {wall:.0f} s wall, {len(analysis.frames) / wall:.1f} frames/s; "
                     f"{len(analysis.events())} events"))
        del analysis

    width = max(len(r[0]) for r in rows)
    print()
    for name, value, detail in rows:
        print(f"{name:<{width}}  {value:>22}  {detail}")
    print(f"\nload average at end (1/5/15 min): {load_average()}")
    print("reproduce: .venv/bin/python benchmarks/bench_scene.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
