"""Chat latency with the default model on this machine: upload-to-first-answer and follow-up, 10 s and 2 min clips.

Run:  HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_chat.py [--repeats 3] [--frames 16] [--model DIR]

Clips are real CUHK Avenue footage (training videos 12 and 16, 640x360, 25 fps) from ../shared/data, looped to
10 s and 120 s and encoded once as H.264 mp4 (cached under the system temp dir), so both lengths have the same
content and the only difference is the length the decoder must seek through.

Per repeat, a fresh session (as a new page visitor would get):
  upload->first answer = decode + sample + analyze (vision pass, heatmaps, RAE, prefix cache) + judgement answer
  first token          = the same, up to the first streamed chunk
  follow-up            = each of two follow-up questions on the analysed clip (no vision pass)
Prints medians in seconds. Answers are generated to the model's own limit (default max_new_tokens).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tvad_chat import chat  # noqa: E402
from tvad_chat.files import atomic_output  # noqa: E402
from tvad_chat.models import DEFAULT_MODEL  # noqa: E402
from tvad_chat.render import write_video  # noqa: E402
from tvad_chat.ui import FOLLOW_UPS_ANOMALY, SHARED_DATA  # noqa: E402
from tvad_chat.video import load_clip  # noqa: E402

AVENUE = SHARED_DATA / "cuhk_avenue" / "training_videos"


def make_clip(seconds: float, out_dir: Path) -> Path:
    """Avenue training footage looped to ``seconds`` at 25 fps, H.264 mp4 (cached)."""
    target = out_dir / f"avenue_loop_{int(seconds)}s.mp4"
    if target.is_file():
        return target
    parts = [load_clip(AVENUE / name, num_frames=None).frames for name in ("12.avi", "16.avi")]
    base = np.concatenate(parts)
    need = int(round(seconds * 25))
    frames = np.concatenate([base] * (need // len(base) + 1))[:need]
    with atomic_output(target) as tmp:
        write_video(frames, tmp, fps=25.0)
    return target


def bench(engine: chat.ChatEngine, clip: Path, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"upload_to_first_answer": [], "first_chunk": [], "analyze": [],
                                     "follow_up": []}
    model, _ = engine.model()
    for _ in range(repeats):
        session = engine.new_session()
        start = time.perf_counter()
        engine.load_video(session, clip)
        times["analyze"].append(time.perf_counter() - start)
        first_chunk: list[float] = []

        def on_chunk(_chunk: str, seen: list[float] = first_chunk, t0: float = start) -> None:
            if not seen:
                seen.append(time.perf_counter() - t0)

        engine.ask(session, chat.JUDGEMENT_QUESTION, stream=on_chunk)
        times["upload_to_first_answer"].append(time.perf_counter() - start)
        times["first_chunk"].append(first_chunk[0] if first_chunk else float("nan"))
        passes = model.vision_passes
        for q in FOLLOW_UPS_ANOMALY[:2]:
            t = time.perf_counter()
            engine.ask(session, q)
            times["follow_up"].append(time.perf_counter() - t)
        assert model.vision_passes == passes, "a follow-up re-ran the vision pass"
        engine.close_session(session.id)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args()
    if not AVENUE.is_dir():
        sys.exit(f"{AVENUE} not found: the benchmark needs ../shared/data")
    cache = Path(tempfile.gettempdir()) / "tvad_bench_chat"
    cache.mkdir(exist_ok=True)
    clips = {"10 s": make_clip(10, cache), "2 min": make_clip(120, cache)}

    engine = chat.ChatEngine(chat.EngineConfig(model=args.model, num_frames=args.frames))
    t = time.perf_counter()
    model, info = engine.model()
    load_s = time.perf_counter() - t
    import torch

    print(f"model: {info.source} ({info.variant}, {'trained' if info.trained else 'UNTRAINED, random weights'}); "
          f"max_new_tokens={model.config.max_new_tokens}; loaded in {load_s:.1f} s; "
          f"torch threads={torch.get_num_threads()}; frames sampled={args.frames}; repeats={args.repeats}")
    # Warm-up (first-call allocations, lazy imports) outside the figures.
    warm = engine.new_session()
    engine.load_video(warm, clips["10 s"])
    engine.ask(warm, chat.JUDGEMENT_QUESTION)
    print(f"{'clip':>6} | {'analyze':>8} | {'1st chunk':>9} | {'upload->1st answer':>18} | {'follow-up':>9}  (median s)")
    for name, path in clips.items():
        r = bench(engine, path, args.repeats)
        med = {k: statistics.median(v) for k, v in r.items()}
        print(f"{name:>6} | {med['analyze']:8.2f} | {med['first_chunk']:9.2f} | {med['upload_to_first_answer']:18.2f}"
              f" | {med['follow_up']:9.2f}")


if __name__ == "__main__":
    main()
