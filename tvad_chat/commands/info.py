"""`tvad info VIDEO`: what a clip holds and which frames sampling would take."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from tvad_chat.commands.arguments import positive_number, whole_number


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show a clip's frames, fps, duration, size and the frames sampling takes",
        description=(
            "Show what a video file or frame folder holds (frames, fps, duration, size, rotation, codec) "
            "and which frames sampling takes. Decodes only the sampled frames."
        ),
    )
    parser.add_argument(
        "video", metavar="VIDEO", help="a video file FFmpeg reads, or a folder of numbered frames"
    )
    how = parser.add_mutually_exclusive_group()
    how.add_argument(
        "--frames",
        type=whole_number(1),
        default=None,
        metavar="N",
        help="sample N frames uniformly (default 16)",
    )
    how.add_argument(
        "--fps", type=positive_number, default=None, metavar="F", help="sample F frames per second"
    )
    parser.add_argument(
        "--folder-fps",
        type=positive_number,
        default=None,
        metavar="F",
        help="frame rate of a frame folder (images carry no timing; default 25)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tvad_chat.video import load_clip, probe

    info = probe(args.video, folder_fps=args.folder_fps)
    num_frames = None if args.fps is not None else (args.frames or 16)
    start = time.perf_counter()
    clip = load_clip(args.video, num_frames=num_frames, fps=args.fps, folder_fps=args.folder_fps)
    seconds = time.perf_counter() - start
    sampling = f"{args.fps:g} fps" if args.fps is not None else f"{num_frames} uniform"
    record = {
        "source": str(info.source),
        "kind": info.kind,
        "codec": info.codec,
        "frames": info.num_frames,
        "fps": round(info.fps, 6),
        "variable_frame_rate": info.variable_frame_rate,
        "duration_s": round(info.duration_s, 6),
        "width": info.width,
        "height": info.height,
        "rotation": info.rotation,
        "sampling": sampling,
        "sampled_indices": clip.frame_indices.tolist(),
        "sampled_timestamps_s": [round(float(t), 6) for t in clip.timestamps],
        "sampled_size": [int(clip.frames.shape[2]), int(clip.frames.shape[1])] if len(clip.frames) else None,
        "sample_seconds": round(seconds, 4),
        "warnings": info.warnings,
    }
    for warning in info.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(record))
        return 0
    rate = {True: "variable", False: "constant", None: "unknown"}[info.variable_frame_rate]
    lines = [
        ("source", record["source"]),
        ("kind", info.kind),
        ("codec", info.codec or "-"),
        ("frames", str(info.num_frames)),
        ("fps", f"{info.fps:.3f} ({rate} frame rate)"),
        ("duration", f"{info.duration_s:.3f} s"),
        ("size", f"{info.width}x{info.height}"),
        ("rotation", f"{info.rotation} deg"),
        ("sampling", f"{sampling}: {len(clip.frame_indices)} frames in {seconds:.3f} s"),
        ("indices", " ".join(str(i) for i in record["sampled_indices"])),
        ("times (s)", " ".join(f"{t:.3f}" for t in record["sampled_timestamps_s"])),
    ]
    if record["sampled_size"] and tuple(record["sampled_size"]) != (info.width, info.height):
        lines.append(
            (
                "frames out",
                f"{record['sampled_size'][0]}x{record['sampled_size'][1]} (downscaled for display)",
            )
        )
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        print(f"{key:<{width}}  {value}")
    return 0
