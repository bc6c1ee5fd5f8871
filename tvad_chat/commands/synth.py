"""`tvad synth`: generate SynthCampus clips (video, annotation JSON, anomaly masks, instance ids)."""

from __future__ import annotations

import argparse
import re
from typing import Any

from tvad_chat.errors import ConfigError

SPLIT_NAMES = ("normal_train", "train", "val", "test")


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 320x192, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "synth", help="generate SynthCampus clips with full ground truth",
        description=("Generate procedural surveillance clips (5 scenes, articulated people, cyclists, "
                     "skateboarders, vehicles, carts) with per-frame instance ids, anomaly masks, boxes, "
                     "tracks, trajectory records and frame labels. Splits: normal_train (normal only); "
                     "train / val / test with disjoint anomaly types."))
    p.add_argument("--out", required=True, help="output folder (clips go to OUT/SPLIT/VIDEO_ID/)")
    p.add_argument("--clips", type=int, required=True, help="number of clips")
    p.add_argument("--split", default="train", choices=SPLIT_NAMES)
    p.add_argument("--seed", type=int, default=0, help="dataset seed (same seed, same clips)")
    p.add_argument("--start", type=int, default=0, help="index of the first clip (to extend a split)")
    p.add_argument("--frames", type=int, default=32, help="frames per clip")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate of the clips")
    p.add_argument("--size", type=_size, default=(320, 192), help="WIDTHxHEIGHT (even numbers)")
    p.add_argument("--format", dest="fmt", choices=("mp4", "frames"), default="mp4",
                   help="mp4 (H.264) or frames (PNG folder)")
    p.add_argument("--no-effects", action="store_true", help="no sensor noise, blur or compression artefacts")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from datasets_builder.synth.generate import ClipConfig
    from datasets_builder.synth.writer import generate_split

    if args.clips < 0:
        raise ConfigError("--clips must be >= 0")
    if args.workers < 1:
        raise ConfigError("--workers must be >= 1")
    if args.fps <= 0:
        raise ConfigError("--fps must be > 0")
    w, h = args.size
    cfg = ClipConfig(frames=args.frames, width=w, height=h, fps=args.fps, effects=not args.no_effects)

    def bar(it):
        return tqdm(it, total=args.clips, desc=f"synth {args.split}", unit="clip", disable=args.no_progress)

    t0 = time.perf_counter()
    done = generate_split(args.out, args.split, args.clips, seed=args.seed, cfg=cfg, fmt=args.fmt,
                          workers=args.workers, start=args.start, progress=bar)
    dt = time.perf_counter() - t0
    print(f"{args.split}: {len(done)} clips written to {args.out}/{args.split} in {dt:.1f} s "
          f"({args.clips - len(done)} already there)")
    return 0
