"""`tvad eval text|frames|objects|pixels|run`.

The first four read prediction and reference files; `run` runs a model over a corpus split
(tvad_chat.eval.runner). Each prints a table and, with --json OUT (`run`: --out DIR), writes every
metric in percent (0-100).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tvad_chat.commands.arguments import executor_options, open_chosen_executor


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate predictions: text, frames, objects, pixels, run")
    eval_sub = parser.add_subparsers(dest="eval_command", metavar="WHAT")
    parser.set_defaults(handler=lambda args: (parser.print_help(), 2)[1])

    text = eval_sub.add_parser("text", help="BLEU-4 (target, trajectory) and Yes/No accuracy")
    text.add_argument("--pred", required=True, type=Path, help='JSONL lines {"id", "prediction"}')
    text.add_argument("--ref", required=True, type=Path, help='JSONL lines {"id", "video_id", "kind", "references"}')
    text.add_argument("--tokenize", choices=["13a", "whitespace"], default="13a")
    text.add_argument("--case-sensitive", action="store_true", help="do not lowercase before BLEU")
    text.add_argument("--smooth", choices=["none", "floor", "add-k", "exp"], default="exp")
    text.add_argument("--json", type=Path, help="write the report here")
    text.set_defaults(handler=run_text)

    frames = eval_sub.add_parser("frames", help="frame-level micro and macro ROC-AUC")
    frames.add_argument("--scores", required=True, type=Path, help="JSON {video_id: [per-frame scores]}")
    frames.add_argument("--labels", required=True, type=Path, help="JSON {video_id: [0/1 per frame]}")
    frames.add_argument("--one-class", choices=["skip", "pad"], default="skip",
                        help="videos with one class: skip them in the macro mean, or pad as UBnormal's script")
    frames.add_argument("--sigma", type=float, default=0.0, help="Gaussian smoothing of scores over time (frames)")
    frames.add_argument("--json", type=Path)
    frames.set_defaults(handler=run_frames)

    objects = eval_sub.add_parser("objects", help="RBDC and TBDC")
    objects.add_argument("--gt-tracks", required=True, type=Path, help="folder: per video `track_id, frame, x1, y1, x2, y2`")
    objects.add_argument("--detections", required=True, type=Path, help="folder: per video `frame, x1, y1, x2, y2, score`")
    objects.add_argument("--num-frames", required=True, type=int, help="number of test frames over all videos")
    objects.add_argument("--continuous-iou", action="store_true", help="IoU without the +1 of inclusive pixel boxes")
    objects.add_argument("--json", type=Path)
    objects.set_defaults(handler=run_objects)

    pixels = eval_sub.add_parser("pixels", help="pixel AUROC, AP, AUPRO, max-F1 and the TAO protocol")
    pixels.add_argument("--pred", required=True, type=Path, help="folder of per-frame score maps (PNG or .npy)")
    pixels.add_argument("--gt", required=True, type=Path, help="folder of mask PNGs, same relative names")
    pixels.add_argument("--bins", type=int, default=65536,
                        help="equal-width threshold bins for float maps (8/16-bit PNG maps are exact)")
    pixels.add_argument("--score-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="bin float maps over this range instead of the observed min and max")
    pixels.add_argument("--json", type=Path)
    pixels.set_defaults(handler=run_pixels)

    run = eval_sub.add_parser("run", help="run a model over a corpus split and report every metric (+ ablation)")
    run.add_argument("--model", default="checkpoints/tvad-tiny", help="model directory (backbone + ahd/ + rae/)")
    run.add_argument("--corpus", default="data/synth_corpus", help="corpus folder (sft.jsonl, eval_refs.jsonl)")
    run.add_argument("--split", default="test")
    run.add_argument("--no-ablation", action="store_true", help="only the full model")
    run.add_argument("--max-videos", type=int, default=None)
    run.add_argument("--max-new-tokens", type=int, default=48)
    run.add_argument("--device", default=None)
    run.add_argument("--out", type=Path, default=None, help="write predictions and report.json here")
    executor_options(run, "video", "every video in this process")
    run.set_defaults(handler=run_model)

    scene = eval_sub.add_parser("scene", help="run a scene profile over labelled test clips: frame AUC, RBDC/TBDC, "
                                              "pixel metrics, TAO protocol, temporal IoU")
    scene.add_argument("--profile", required=True, type=Path, metavar="DIR", help="the scene profile")
    scene.add_argument("--dataset", required=True, choices=["ped2", "avenue"],
                       help="layout of the test data (Ped2: testing/frames/NN, Avenue: testing_videos/NN.avi; both "
                            "with testing/frame_labels.json and testing/masks/NN)")
    scene.add_argument("--root", required=True, type=Path, help="the dataset folder")
    scene.add_argument("--sensitivity", default=None, metavar="POINT", help="operating point for temporal IoU")
    scene.add_argument("--sam2", default=None, metavar="ID_OR_PATH",
                       help="also report the pixel metrics with SAM2 masks as the heat's outline (masks.*): a "
                            "published SAM2 id in the hub cache or a local sam2.1_hiera_*.pt")
    scene.add_argument("--json", type=Path)
    scene.set_defaults(handler=run_scene)


def finish(title: str, report: dict, notes: list[str], json_path: Path | None) -> int:
    """Print the table (and the convention notes); write the JSON report when asked."""
    from tvad_chat.eval.report import format_table, write_json

    print(format_table(title, report, notes))
    if json_path is not None:
        write_json(report, json_path)
        print(f"report written to {json_path}")
    return 0


def run_scene(args: argparse.Namespace) -> int:
    from datasets_builder.sources import read_dataset
    from tvad_chat.eval.scene import LabelledClip, evaluate_profile
    from tvad_chat.scene.profile import SceneProfile
    from tvad_chat.stages.run import StageSettings, load_stages

    profile = SceneProfile.load(args.profile)
    stages = load_stages(StageSettings(sam2=args.sam2))
    records = read_dataset(args.dataset, args.root, split="test")
    clips = [LabelledClip(r.video_id, str(r.source), r.fps if r.frames_dir is not None else None, r.frame_labels,
                          r.load_mask if r.has_masks else None) for r in records]
    report = evaluate_profile(profile, clips, point=args.sensitivity, mask_source=stages.sam2)
    notes = [f"profile {profile.name!r}, operating point {args.sensitivity or profile.default_point} for tIoU",
             str(report.pop("tao.note", "")), *stages.notes]
    if stages.sam2 is not None:
        notes.append("masks.*: the same pixel metrics with SAM2's masks of the anomalous tracks as the heat's outline")
    return finish(f"Scene profile on {args.dataset} test clips (percent)", report, notes, args.json)


def run_text(args: argparse.Namespace) -> int:
    from tvad_chat.errors import DataError
    from tvad_chat.eval.io import read_text_items
    from tvad_chat.eval.text import BleuSettings, best_reference_bleu4, corpus_bleu4, yes_no_metrics

    settings = BleuSettings(tokenize=args.tokenize, lowercase=not args.case_sensitive, smooth=args.smooth)
    items = read_text_items(args.pred, args.ref)
    if not items:
        raise DataError(f"{args.ref} holds no references")
    report: dict = {}
    for kind in ("target", "trajectory"):
        chosen = [i for i in items if i["kind"] == kind]
        if chosen:
            scored = best_reference_bleu4(((i["video_id"], i["prediction"], i["references"]) for i in chosen), settings)
            report[f"bleu4.{kind}"] = scored["bleu4"]
            report[f"bleu4.{kind}.items"] = scored["items"]
            report[f"bleu4_corpus.{kind}"] = corpus_bleu4([i["prediction"] for i in chosen],
                                                          [i["references"] for i in chosen])
    yesno = [i for i in items if i["kind"] == "yesno"]
    if yesno:
        metrics = yes_no_metrics([i["prediction"] for i in yesno], [i["references"][0] for i in yesno])
        report["yesno.accuracy"] = metrics["accuracy"]
        report["yesno.balanced_accuracy"] = metrics["balanced_accuracy"]
        report["yesno.count"] = metrics["count"]
        report["yesno.confusion"] = metrics["confusion"]
    report["settings"] = {"bleu4": "T-VAD: best reference per item, mean per video, mean over videos; "
                                   + settings.describe(),
                          "bleu4_corpus": "captioning: whitespace tokens, case kept, multi-reference clipping, "
                                          "one brevity penalty, no smoothing",
                          "yesno": "free text normalised to yes/no/unknown; unknown counts as wrong"}
    return finish("Text metrics (percent)", report, list(report["settings"].values()), args.json)


def run_frames(args: argparse.Namespace) -> int:
    from tvad_chat.eval.frames import frame_auc
    from tvad_chat.eval.io import read_json_series

    report = frame_auc(read_json_series(args.scores), read_json_series(args.labels), args.one_class, args.sigma)
    notes = [f"one-class videos: {args.one_class}; temporal Gaussian sigma = {args.sigma} frames"]
    return finish("Frame-level AUC (percent)", report, notes, args.json)


def run_objects(args: argparse.Namespace) -> int:
    from tvad_chat.eval.io import read_object_files
    from tvad_chat.eval.objects import rbdc_tbdc

    regions, detections, videos = read_object_files(args.gt_tracks, args.detections)
    report = rbdc_tbdc(regions, detections, args.num_frames, args.continuous_iou)
    report["videos"] = len(videos)
    notes = ["one curve point per detection, sorted by score stably (ties: videos by file name, then line "
             f"order); IoU >= 0.1 ({report['iou']}); a region counts once; a detection hitting no region is a "
             "false positive; a track is detected at >= 10% of its regions; x = false positives per frame over "
             "all test frames; area over the points with x <= 1, extended flat to 1"]
    return finish("Object-level RBDC / TBDC (percent)", report, notes, args.json)


def run_pixels(args: argparse.Namespace) -> int:
    from tvad_chat.errors import ConfigError
    from tvad_chat.eval.io import MapFrames
    from tvad_chat.eval.pixels import pixel_metrics

    if args.score_range is not None and args.score_range[1] <= args.score_range[0]:
        raise ConfigError("--score-range LOW HIGH needs LOW < HIGH")
    frames = MapFrames(args.pred, args.gt)
    report = pixel_metrics(frames, bins=args.bins, score_range=args.score_range, progress=len(frames) >= 200)
    report["frames_without_prediction"] = frames.missing
    notes = [f"thresholds: {report['thresholds']}",
             "pooled: all pixels of all frames; AUPRO: 8-connected regions, FPR <= 0.3, normalised by 0.3; "
             "a frame without a map scores lowest everywhere"]
    if "tao.note" in report:
        notes.append(str(report["tao.note"]))
    return finish("Pixel-level metrics (percent)", report, notes, args.json)


def run_model(args: argparse.Namespace) -> int:
    from tvad_chat.eval.runner import evaluate_model, format_report

    executor = open_chosen_executor(args)
    try:
        report = evaluate_model(args.model, args.corpus, args.split, ablation=not args.no_ablation,
                                max_videos=args.max_videos, out=args.out, device=args.device,
                                max_new_tokens=args.max_new_tokens, executor=executor)
    finally:
        if executor is not None:
            executor.close()
    print(f"{args.model} on {args.corpus} ({args.split}, {next(iter(report.values()))['videos']} videos), percent:")
    print(format_report(report))
    return 0
