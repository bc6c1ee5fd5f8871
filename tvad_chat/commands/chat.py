"""`tvad app`, `tvad ask VIDEO "question" [--follow-up ...]`, `tvad analyze VIDEO --out report.json`.

All three run on tvad_chat.chat.ChatEngine, the same path the web page uses.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from tvad_chat.commands.arguments import output_file, stage_options, whole_number
from tvad_chat.commands.scene import run_scene_analyze, scene_options

if TYPE_CHECKING:
    from tvad_chat.chat import ChatEngine, Session

MIN_FRAMES, MAX_FRAMES = 2, 64  # as tvad_chat.chat checks them (not imported: `tvad --help` stays light)
PLOT_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")  # formats matplotlib writes


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, metavar="DIR_OR_ID",
                        help="model directory or hub id (default checkpoints/tvad-tiny; an untrained tiny model "
                             "is built when it does not exist, and the output says so)")
    parser.add_argument("--frames", type=whole_number(MIN_FRAMES, MAX_FRAMES), default=16, metavar="N",
                        help=f"frames sampled per clip ({MIN_FRAMES}-{MAX_FRAMES})")
    parser.add_argument("--events", default=[], type=_events, metavar="LIST",
                        help="extra anomaly categories to look for, comma separated (e.g. 'bicycle, cart')")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda when present)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16... (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--load-in-4bit", action="store_true", help="quantise the language model (bitsandbytes)")


def _events(text: str) -> list[str]:
    """An argparse type: the anomaly categories of --events, checked as the engine checks them."""
    from tvad_chat.chat import parse_events
    from tvad_chat.errors import ConfigError

    try:
        return parse_events(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def register(subparsers: Any) -> None:
    app = subparsers.add_parser("app", help="serve the chat web page",
                                description="Serve the T-VAD Chat page (Gradio) on a loopback address by default.")
    app.add_argument("--host", default=None, help="address to bind (default TVAD_HOST or 127.0.0.1)")
    app.add_argument("--port", type=int, default=None, help="port (default TVAD_PORT or 7860)")
    app.add_argument("--model", default=None, metavar="DIR_OR_ID", help="model directory or hub id")
    stage_options(app)
    app.set_defaults(handler=run_app)

    ask = subparsers.add_parser(
        "ask", help="ask questions about a clip",
        description="Analyse a clip once, then answer a question and any follow-ups (answers stream to stdout).")
    ask.add_argument("video", metavar="VIDEO", help="a video file or a folder of numbered frames")
    ask.add_argument("question", nargs="?", default=None,
                     help='the first question (default: "Is there an anomaly in this video?")')
    ask.add_argument("--follow-up", action="append", default=[], metavar="QUESTION",
                     help="a follow-up question (repeatable; asked in order, with the dialogue so far)")
    ask.add_argument("--max-new-tokens", type=whole_number(1), default=None, metavar="N", help="answer length limit")
    ask.add_argument("--json", action="store_true", help="print one JSON object (answers, judgement, timings)")
    scene_options(ask, outputs=False)
    _model_options(ask)
    ask.set_defaults(handler=run_ask)

    analyze = subparsers.add_parser(
        "analyze", help="analyse a clip: JSON report with every frame's score and boxes, events, heat maps",
        description="Analyse every frame of a clip against the camera's scene profile (found by its background "
                    "with --profile auto, the default) and write a JSON report: per frame its score and boxes, the "
                    "unusual events with why, the operating point. With --model, the T-VAD model's analysis of "
                    "sampled frames instead (report, overlay video, score plot).")
    analyze.add_argument("video", metavar="VIDEO", help="a video file or a folder of numbered frames")
    analyze.add_argument("--out", required=True, type=output_file(".json"), metavar="REPORT.json",
                         help="where to write the report")
    scene_options(analyze)
    analyze.add_argument("--overlay", default=None, type=output_file(".mp4"), metavar="OUT.mp4",
                         help="(with --model) write the overlay video")
    analyze.add_argument("--plot", default=None, type=output_file(*PLOT_SUFFIXES), metavar="OUT.png",
                         help="(with --model) write the score plot (png, svg, pdf or jpg)")
    _model_options(analyze)
    analyze.set_defaults(handler=run_analyze)


def _engine(args: argparse.Namespace) -> tuple[ChatEngine, Session]:
    from tvad_chat.chat import ChatEngine, EngineConfig
    from tvad_chat.models import DEFAULT_MODEL
    from tvad_chat.stages.run import StageSettings

    # without --model the answers are composed from the scene analysis; with it, the model answers
    config = EngineConfig(model=args.model or DEFAULT_MODEL, num_frames=args.frames,
                          extra_events=args.events, device=args.device, dtype=args.dtype,
                          load_in_4bit=args.load_in_4bit, answers="model" if args.model else "grounded",
                          profile=args.profile, sensitivity=args.sensitivity, folder_fps=args.folder_fps,
                          stages=StageSettings(args.sam2, args.clip, args.device))
    engine = ChatEngine(config)
    return engine, engine.new_session()


def _progress(stage: float, text: str) -> None:
    print(f"[{stage:4.0%}] {text}", file=sys.stderr)


def _warnings(session: Session) -> list[str]:
    """What the user should know about the answers: the model's caveat (untrained, or shipped), the clip's, and
    the stages that could not run."""
    notes = [session.model_info.note] if session.model_info is not None and session.model_info.note else []
    notes += list(session.stages.notes) if session.stages is not None else []
    return notes + (list(session.analysis.clip.warnings) if session.analysis is not None else [])


def _warn(session: Session) -> None:
    for note in _warnings(session):
        print(f"warning: {note}", file=sys.stderr)


def run_ask(args: argparse.Namespace) -> int:
    from tvad_chat.chat import JUDGEMENT_QUESTION

    engine, session = _engine(args)
    analysis = engine.load_video(session, args.video, progress=None if args.json else _progress)
    _warn(session)
    questions = [args.question or JUDGEMENT_QUESTION, *args.follow_up]
    answers, answer_seconds = [], []
    for q in questions:
        if args.json:
            start = time.perf_counter()
            answers.append(engine.ask(session, q, max_new_tokens=args.max_new_tokens))
            answer_seconds.append(round(time.perf_counter() - start, 4))
            continue
        print(f"Q: {q}\nA: ", end="", flush=True)
        answers.append(engine.ask(session, q, stream=lambda chunk: print(chunk, end="", flush=True),
                                  max_new_tokens=args.max_new_tokens))
        print(flush=True)
    if args.json:
        scene = session.answerer.summary() if session.answerer is not None else {"scene_note": session.scene_note}
        print(json.dumps({
            "video": str(args.video),
            "answers": session.answers,
            "model": session.model_info.source if session.model_info else None,
            "trained": session.model_info.trained if session.model_info else None,
            **scene,
            "model_judgement": None if analysis is None else analysis.judgement,
            "model_score": None if analysis is None or analysis.score is None else float(analysis.score),
            "dialogue": [{"question": q, "answer": ans, "seconds": sec}
                         for q, ans, sec in zip(questions, answers, answer_seconds, strict=True)],
            "timings_s": {} if analysis is None else {k: round(float(v), 4) for k, v in analysis.timings.items()},
            "vision_passes": session.vision_passes,
            "warnings": _warnings(session),
            **_stages_json(session),
        }))
    return 0


def _stages_json(session: Session) -> dict[str, Any]:
    """The stages' entries for `tvad ask --json`: per event its ranked categories, and the stages' sources and times."""
    if session.stages is None or session.scene is None:
        return {}
    point = session.answerer.point if session.answerer is not None else None
    report = {"events": [{} for _ in session.scene.events(point)]}
    session.stages.add_to_report(report, session.scene, point)
    return {"event_categories": [e.get("categories", []) for e in report["events"]], "stages": report["stages"]}


def run_analyze(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.model is None:
        return run_scene_analyze(args)

    from tvad_chat.render import score_figure, write_overlay_video
    from tvad_chat.report import write_report

    engine, session = _engine(args)
    analysis = engine.load_video(session, args.video, progress=_progress)
    _warn(session)
    print(f"report: {write_report(analysis, args.out, session.model_info)}")
    if args.overlay:
        print(f"overlay: {write_overlay_video(analysis, args.overlay)}")
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        trained = session.model_info is None or session.model_info.trained
        score_figure(analysis, trained=trained).savefig(args.plot)
        print(f"plot: {args.plot}")
    verdict = {True: "anomaly", False: "no anomaly", None: "no judgement (no heatmap head)"}[analysis.judgement]
    print(f"judgement: {verdict}" + (f" (score {analysis.score:.3f})" if analysis.score is not None else ""))
    return 0


def run_app(args: argparse.Namespace) -> int:
    import os

    from tvad_chat.stages.run import CLIP_ENV, SAM2_ENV
    from tvad_chat.ui import main

    for name, value in ((SAM2_ENV, args.sam2), (CLIP_ENV, args.clip)):  # the page's engine reads them
        if value is not None:
            os.environ[name] = value
    main(host=args.host, port=args.port, model=args.model)
    return 0
