"""`tvad calibrate SOURCE... --out DIR`: fit a scene profile on normal footage of one camera."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tvad_chat.commands.arguments import positive_number, stage_options


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


def scene_options(parser: argparse.ArgumentParser, outputs: bool = True) -> None:
    """--profile, --sensitivity, --folder-fps, --sam2, --clip (tvad analyze, ask and scan); --heatmaps and --fps with
    ``outputs``."""
    parser.add_argument("--profile", default="auto", metavar="DIR|auto|none",
                        help="scene profile of the camera: a profile folder, auto (default: the installed profile "
                             "whose background matches the clip, else uncalibrated) or none (uncalibrated)")
    parser.add_argument("--sensitivity", default=None, metavar="POINT",
                        help="operating point: 1/min, 0.1/min (default) or 0.01/min false alarms on the camera's "
                             "normal footage")
    if outputs:
        parser.add_argument("--heatmaps", default=None, type=Path, metavar="DIR",
                            help="write one 8-bit grey PNG of heat per analysed frame (000123.png = source frame 123)")
        parser.add_argument("--fps", type=positive_number, default=None, metavar="F",
                            help="analyse F frames per second (default: every frame)")
    parser.add_argument("--folder-fps", type=positive_number, default=None, metavar="F",
                        help="frame rate of a frame folder (images carry no timing; default 25)")
    stage_options(parser)


def stage_bars(tqdm_class: Any) -> tuple[Any, Any]:
    """A progress callback for the stages (one bar per stage, its seconds so far) and a function closing the bars."""
    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int, seconds: float) -> None:
        bar = bars.setdefault(stage, tqdm_class(total=total, desc=stage, unit="step"))
        bar.total = total
        bar.set_postfix_str(f"{seconds:.1f} s", refresh=False)
        bar.update(done - bar.n)

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return progress, close


def run_scene_analyze(args: argparse.Namespace) -> int:
    """`tvad analyze` without --model: the scene analysis of every frame, as a JSON report."""
    import json

    from tqdm import tqdm

    from tvad_chat.files import atomic_write_text
    from tvad_chat.report import scene_report
    from tvad_chat.stages.run import StageSettings, analyze_with_stages, describe_categories, load_stages
    from tvad_chat.video import probe

    stages = load_stages(StageSettings(args.sam2, args.clip, getattr(args, "device", None)))
    for note in stages.notes:
        print(f"warning: {note}", file=sys.stderr)
    total = probe(args.video, folder_fps=args.folder_fps).num_frames
    stage_progress, close_bars = stage_bars(tqdm)
    with tqdm(total=total, desc="analysing", unit="frame") as bar:
        try:
            analysis, choice, results = analyze_with_stages(
                args.video, stages, args.profile, fps=args.fps, folder_fps=args.folder_fps, heatmaps=args.heatmaps,
                progress=bar.update, extra_categories=getattr(args, "events", []), stage_progress=stage_progress)
        finally:
            close_bars()
    report = scene_report(analysis, Path(args.video).name, choice.note, args.sensitivity)
    if results is not None:
        results.add_to_report(report, analysis, args.sensitivity)
    atomic_write_text(args.out, json.dumps(report))
    point = report["operating_point"]
    print(f"{choice.note}; operating point {point['name']} (threshold {point['threshold']})")
    if results is not None and results.timing_text():
        print(f"stages: {results.timing_text()}")
    events = analysis.events(args.sensitivity)
    if not analysis.judged:
        print("no object was judged, so this clip cannot show an unusual event (see above)")
    print(f"{len(events)} unusual event{'s' if len(events) != 1 else ''}" + (":" if events else ""))
    for event in events:
        ranking = results.event_categories(analysis, event) if results is not None else []
        looks = f"; it looks most like {describe_categories(ranking)}" if ranking else ""
        print(f"  {event.start_s:.1f}-{event.end_s:.1f} s (frames {event.first_index}-{event.last_index}), "
              f"tracks {', '.join(map(str, event.track_ids)) or '-'}: {event.why}{looks}")
    print(f"report: {args.out}" + (f"; heat maps: {args.heatmaps}" if args.heatmaps else ""))
    return 0


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from tvad_chat.scene.calibrate import calibrate
    from tvad_chat.scene.profile import check_profile_folder

    check_profile_folder(args.out)  # before minutes of calibration, not after
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
        default = " (default)" if point.name == profile.default_point else ""
        print(f"  {point.name:>8}  threshold {point.threshold:.3f}  {point.describe()}{default}")
    return 0
