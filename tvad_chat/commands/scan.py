"""`tvad scan ROOT --out DIR`: the scene analysis of every clip of an archive, an event index and an HTML summary."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tvad_chat.commands.arguments import executor_options, positive_number
from tvad_chat.commands.scene import scene_options


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "scan", help="scan an archive: every clip of every camera, an event index and an HTML summary",
        description="Find every video file and frame folder under ROOT (any depth), analyse each with its camera's "
                    "scene profile, and write a report per clip, an index of all events (index.csv, index.jsonl) "
                    "and a summary page (index.html). Rerunning with the same --out resumes: finished clips are "
                    "skipped. Runs on local worker processes, or on a Ray cluster with --ray.")
    parser.add_argument("root", type=Path, metavar="ROOT", help="the archive: a folder (or one clip)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (reused to resume)")
    scene_options(parser, outputs=False)
    parser.add_argument("--fps", type=positive_number, default=None, metavar="F",
                        help="analyse F frames per second (default: every frame)")
    executor_options(parser, "clip or segment", "the core count")
    parser.add_argument("--segment-minutes", type=positive_number, default=10.0, metavar="M",
                        help="a clip longer than 1.5 x M minutes is analysed in segments of M minutes, in parallel "
                             "(default 10)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from datasets_builder.sources import VIDEO_EXTENSIONS
    from tvad_chat.executor import open_executor
    from tvad_chat.scan.index import duration_text
    from tvad_chat.scan.run import scan
    from tvad_chat.scan.work import ScanSettings

    settings = ScanSettings(profile=args.profile, fps=args.fps, folder_fps=args.folder_fps,
                            sensitivity=args.sensitivity, segment_s=args.segment_minutes * 60, sam2=args.sam2,
                            clip=args.clip)
    executor = open_executor(args.workers, args.ray)
    try:
        with tqdm(desc="scanning", unit="frame") as bar:
            def progress(frames: int, planned: int, clips: int, clips_planned: int) -> None:
                bar.total = planned
                bar.set_postfix_str(f"clips {clips}/{clips_planned}", refresh=False)
                bar.update(frames - bar.n)

            result = scan(args.root, args.out, settings, executor, VIDEO_EXTENSIONS, progress)
    finally:
        executor.close()
    sums = result.totals
    print(f"{result.clips} clips found, {result.skipped} finished before, {result.scanned} done now; "
          f"{duration_text(sums['hours'])} from {sums['cameras']} cameras, {sums['events']} events "
          f"({sums['events_per_hour']:.1f} per hour)"
          + (f"; {sums['not_judged']} clips not judged (no object compared: see the summary)" if sums["not_judged"]
             else ""))
    for clip, reason in result.failed:
        print(f"  failed: {clip}: {reason}")
    print(f"index: {args.out / 'index.csv'}; summary: {result.summary}")
    return 0
