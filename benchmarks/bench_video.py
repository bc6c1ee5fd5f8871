"""Sampling cost does not grow with clip length: 16 frames from a 10-minute vs a 10-second 1080p clip.

Generates (once, cached) two H.264 1080p25 clips with a keyframe every 2 s, the
same content per second, then times `load_clip(path, num_frames=16)` on each.
Every sampled frame carries its index as a barcode, which is checked, so the
timing is of correct sampling. The issue requires long / short < 2.

    python benchmarks/bench_video.py [--cache DIR] [--repeats 5] [--minutes 10] [--gop-s 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

WIDTH, HEIGHT, FPS = 1920, 1080, 25
BITS = 16  # barcode bits: frame indices up to 65535
BAND = 120  # barcode band height (Y plane rows)
BLOCK = WIDTH // BITS


def _textures(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A detailed luma texture (blurred noise + gradients) and flat-ish chroma, tileable horizontally."""
    ys, xs = np.mgrid[0:HEIGHT, 0 : WIDTH * 2]
    noise = rng.integers(0, 256, size=(HEIGHT // 8 + 1, WIDTH * 2 // 8 + 1), dtype=np.uint8)
    blocks = np.kron(noise, np.ones((8, 8), dtype=np.uint8))[:HEIGHT, : WIDTH * 2].astype(np.int32)
    luma = (blocks // 2 + (xs // 7 % 64) + (ys // 5 % 64)).clip(0, 255).astype(np.uint8)
    cu = (128 + 40 * np.sin(xs[::2, ::2] / 90.0)).astype(np.uint8)
    cv = (128 + 40 * np.cos(ys[::2, ::2] / 70.0)).astype(np.uint8)
    return luma, cu, cv


def make_clip(path: Path, seconds: float, gop_s: float) -> Path:
    if path.exists():
        return path
    tmp = path.with_suffix(".part.mp4")
    n = int(round(seconds * FPS))
    luma, cu, cv = _textures(np.random.default_rng(0))
    t0 = time.perf_counter()
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        gop = str(int(round(gop_s * FPS)))
        stream.options = {"preset": "ultrafast", "crf": "30", "g": gop, "keyint_min": gop}
        for i in range(n):
            shift = (i * 6) % WIDTH  # the scene pans: every frame differs, P-frames carry real motion
            y = np.ascontiguousarray(luma[:, shift : shift + WIDTH])
            for bit in range(BITS):
                y[:BAND, bit * BLOCK : (bit + 1) * BLOCK] = 235 if (i >> bit) & 1 else 16
            u = cu[:, shift // 2 : shift // 2 + WIDTH // 2]
            v = cv[:, shift // 2 : shift // 2 + WIDTH // 2]
            frame = av.VideoFrame.from_ndarray(
                np.concatenate([y, u.reshape(-1, WIDTH), v.reshape(-1, WIDTH)]), format="yuv420p"
            )
            for packet in stream.encode(frame):
                container.mux(packet)
            if i % 1500 == 0 and i:
                print(f"  {path.name}: {i}/{n} frames, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(path)
    return path


def read_barcode(frame: np.ndarray) -> int:
    """Frame index from an RGB frame of any size (the band scales with it)."""
    h, w = frame.shape[:2]
    band, block = BAND * h // HEIGHT, w / BITS
    grey = frame.mean(axis=2)
    value = 0
    for bit in range(BITS):
        x0, x1 = int(bit * block + block / 4), int((bit + 1) * block - block / 4)
        if grey[band // 4 : band * 3 // 4, x0:x1].mean() > 127:
            value |= 1 << bit
    return value


DECODED = {"frames": 0, "seeks": 0}
CPU: dict[str, list[float]] = {}  # CPU seconds of all decoder threads, per clip file


def _count_decoder_work() -> None:
    """Count decoded frames and seeks: a figure that other processes' load cannot blur."""
    from tvad_chat import video

    next_frame, start = video._Reader._next, video._Reader._start

    def counting_next(self):  # type: ignore[no-untyped-def]
        frame = next_frame(self)
        DECODED["frames"] += frame is not None
        return frame

    def counting_start(self, seek_to):  # type: ignore[no-untyped-def]
        DECODED["seeks"] += seek_to is not None
        return start(self, seek_to)

    video._Reader._next, video._Reader._start = counting_next, counting_start


def time_sampling(path: Path, repeats: int) -> tuple[float, list[float], int]:
    from tvad_chat.video import load_clip

    times = []
    for _ in range(repeats):
        DECODED.update(frames=0, seeks=0)
        t0, c0 = time.perf_counter(), time.process_time()
        clip = load_clip(path, num_frames=16)
        times.append(time.perf_counter() - t0)
        CPU[path.name] = CPU.get(path.name, []) + [time.process_time() - c0]
        codes = [read_barcode(f) for f in clip.frames]
        if codes != clip.frame_indices.tolist():
            raise SystemExit(
                f"WRONG FRAMES from {path.name}: asked {clip.frame_indices.tolist()}, got {codes}"
            )
    return statistics.median(times), times, clip.num_source_frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "tvad_bench_video")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--gop-s", type=float, default=2.0, help="seconds between keyframes")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    tag = f"{WIDTH}x{HEIGHT}_gop{args.gop_s:g}s"
    clips = {
        "short": make_clip(args.cache / f"short_10s_{tag}.mp4", 10.0, args.gop_s),
        "1 min": make_clip(args.cache / f"medium_1min_{tag}.mp4", 60.0, args.gop_s),
        "long": make_clip(args.cache / f"long_{args.minutes:g}min_{tag}.mp4", args.minutes * 60, args.gop_s),
    }
    for path in clips.values():  # warm the page cache and the imports, so every clip is timed the same way
        time_sampling(path, 1)
    _count_decoder_work()
    medians = {}
    work: dict[str, dict[str, int]] = {}
    # Interleave the clips over the repeats so that load from other processes hits them alike.
    runs: dict[str, list[float]] = {name: [] for name in clips}
    frames: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, path in clips.items():
            _, times, frames[name] = time_sampling(path, 1)
            runs[name] += times
            work[name] = dict(DECODED)
    for name, path in clips.items():
        medians[name] = statistics.median(runs[name])
        print(
            f"{name:>5}: {frames[name]:6d} frames, {path.stat().st_size / 1e6:7.1f} MB: 16 frames in "
            f"{medians[name] * 1000:6.0f} ms wall, {statistics.median(CPU[path.name][1:]) * 1000:6.0f} ms CPU, "
            f"{work[name]['frames']} frames decoded, {work[name]['seeks']} seeks"
            f"  (runs: {', '.join(f'{t * 1000:.0f}' for t in runs[name])})"
        )
    ratio = medians["long"] / medians["short"]
    cpu_ratio = statistics.median(CPU[clips["long"].name][1:]) / statistics.median(
        CPU[clips["short"].name][1:]
    )
    print(f"decoded frames long/short = {work['long']['frames'] / work['short']['frames']:.2f}")
    print(f"CPU time long/short = {cpu_ratio:.2f}")
    print(f"wall time 1 min/short = {medians['1 min'] / medians['short']:.2f}")
    print(f"wall time long/short  = {ratio:.2f} (required < 2): {'PASS' if ratio < 2 else 'FAIL'}")
    return 0 if ratio < 2 else 1


if __name__ == "__main__":
    sys.exit(main())
