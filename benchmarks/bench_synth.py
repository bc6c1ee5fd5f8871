"""Benchmark SynthCampus generation: N clips (default 100 x 32 frames at 320x192) written to a temp folder.

    python benchmarks/bench_synth.py [--clips 100] [--frames 32] [--size 320x192] [--workers 2] [--format mp4]

Prints wall time, CPU time (this process and its workers) and clips per second. Target: 100 clips in
under 120 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets_builder.synth.generate import ClipConfig  # noqa: E402
from datasets_builder.synth.writer import generate_split  # noqa: E402


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=100)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--size", default="320x192")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--format", default="mp4", choices=("mp4", "frames"))
    ap.add_argument("--split", default="train")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    cfg = ClipConfig(frames=args.frames, width=w, height=h)
    with tempfile.TemporaryDirectory() as tmp:
        c0, t0 = _cpu(), time.perf_counter()
        done = generate_split(tmp, args.split, args.clips, seed=0, cfg=cfg, fmt=args.format, workers=args.workers)
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    print(f"clips: {len(done)} x {args.frames} frames at {w}x{h}, format {args.format}, workers {args.workers}")
    print(f"wall: {wall:.1f} s  cpu: {cpu:.1f} s  ({len(done) / wall:.2f} clips/s, "
          f"{len(done) * args.frames / wall:.0f} frames/s)  disk: {size / 1e6:.1f} MB")
    print(f"target (100 clips < 120 s): {'met' if wall * 100 / max(len(done), 1) < 120 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
