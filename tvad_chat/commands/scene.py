"""`tvad calibrate SOURCE... --out DIR`: fit a scene profile on normal footage of one camera."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tvad_chat.commands.arguments import positive_number


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "calibrate", help="fit a scene profile on normal footage of one camera",
        description="Learn what is normal for one fixed camera from its own normal clips (video files or frame "
                    "folders): objects, their motion and size in perspective, and the score thresholds that give "
                    "about 1, 0.1 and 0.01 false alarms per minute on held-out normal footage.")
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="normal clips or frame folders of one camera")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="the profile folder to write")
    parser.add_argument("--name", default=None, help="the profile's name (default: the folder's name)")
    parser.add_argument("--fps", type=positive_number, default=None, metavar="F",
                        help="analyse F frames per second (default: every frame)")
    parser.add_argument("--folder-fps", type=positive_number, default=None, metavar="F",
                        help="frame rate of frame folders (images carry no timing; default 25)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from tvad_chat.scene.calibrate import calibrate

    name = args.name or args.out.resolve().name
    with tqdm(desc="calibrating", unit="frame") as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        profile = calibrate(args.sources, name, fps=args.fps, folder_fps=args.folder_fps, progress=progress)
    profile.save(args.out)
    made = profile.made_from
    print(f"scene profile {name!r} written to {args.out}: {made['seconds']} s of normal footage, "
          f"{made['objects']} objects")
    for point in profile.operating_points:
        print(f"  {point.name:>8}  threshold {point.threshold:.3f}  {point.describe()}")
    return 0
