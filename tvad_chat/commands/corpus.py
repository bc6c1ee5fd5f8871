"""`tvad build-corpus`: the fine-grained text corpus (SFT JSONL + evaluation references)."""

from __future__ import annotations

import argparse
import json
import logging

from tvad_chat.commands.arguments import executor_options, open_chosen_executor
from tvad_chat.errors import ConfigError

log = logging.getLogger(__name__)

SOURCES = ("synth", "ped2", "avenue", "folder")
BACKENDS = ("gt", "openai", "local")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "build-corpus",
        help="build the text corpus: frame extraction -> timelines -> anomaly-focused QA (resumable)",
        description=(
            "Extract every frame with a backend (ground truth, an OpenAI-compatible server, or a local "
            "vision-language model), link targets along time, describe their motion, look again at the "
            "anomaly alone, and write SFT samples and evaluation references as JSON Lines. Rerunning with "
            "the same --out skips finished videos. With --workers or --ray the videos run in worker processes or "
            "on a Ray cluster (each worker loads the backend's model once); the files are the same."
        ),
    )
    p.add_argument("--source", choices=SOURCES, required=True,
                   help="synth: SynthCampus; ped2 / avenue: the annotated benchmarks; folder: your videos")
    p.add_argument("--backend", choices=BACKENDS, default="gt",
                   help="gt: annotations; openai: an OpenAI-compatible endpoint; local: a transformers VLM")
    p.add_argument("--out", required=True, help="output folder (created; reused to resume)")
    p.add_argument("--data", default=None, help="dataset root (for folder: a folder of videos / frame folders)")
    p.add_argument("--split", default=None, help="dataset split (default: test for ped2/avenue, train for synth)")
    g = p.add_argument_group("openai backend")
    g.add_argument("--base-url", default=None, help="e.g. http://127.0.0.1:8000/v1 (chat/completions is appended)")
    g.add_argument("--model", default=None, help="model name (openai) or local model directory (local)")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="name of the environment variable holding the API key (NONE: no authentication)")
    g.add_argument("--concurrency", type=int, default=4, help="parallel requests (per worker)")
    g.add_argument("--rate", type=float, default=None, help="at most this many requests per second (per worker)")
    g.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    g.add_argument("--retries", type=int, default=4, help="retries for 408/429/5xx, timeouts, refused connections")
    g.add_argument("--json-mode", action="store_true", help='send response_format={"type": "json_object"}')
    lg = p.add_argument_group("local backend")
    lg.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    lg.add_argument("--dtype", default=None, choices=["bf16", "fp16", "fp32"], help="default: bf16 on CUDA")
    c = p.add_argument_group("sampling")
    c.add_argument("--stride", type=int, default=None,
                   help="extract every k-th frame (default: every frame for gt, --extract-fps for models)")
    c.add_argument("--extract-fps", type=float, default=2.0, help="frames per second extracted by model backends")
    c.add_argument("--frames", type=int, default=16, help="frames per sample the model sees")
    c.add_argument("--limit", type=int, default=None, help="process at most N new videos")
    c.add_argument("--no-anomaly-pass", action="store_true", help="skip the mask-and-blur re-extraction")
    c.add_argument("--max-normal-targets", type=int, default=3, help="normal targets asked about per video")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    executor_options(p, "video", "every video in this process")
    p.set_defaults(handler=run)


def make_backend(args: argparse.Namespace):
    from datasets_builder.extract import (
        GroundTruthBackend,
        LocalVLMBackend,
        OpenAICompatibleBackend,
        OpenAIConfig,
    )

    if args.backend == "gt":
        if args.source == "folder":
            raise ConfigError("--source folder has no annotations: use --backend openai or --backend local")
        return GroundTruthBackend()
    if args.backend == "openai":
        if not args.base_url or not args.model:
            raise ConfigError("--backend openai needs --base-url and --model")
        key_env = None if str(args.api_key_env).upper() in ("NONE", "") else args.api_key_env
        cfg = OpenAIConfig(base_url=args.base_url, model=args.model, api_key_env=key_env, timeout_s=args.timeout,
                           retries=args.retries, rate_per_s=args.rate, concurrency=args.concurrency,
                           json_mode=args.json_mode)
        return OpenAICompatibleBackend(cfg)
    if not args.model:
        raise ConfigError("--backend local needs --model DIR (a local transformers model directory)")
    return LocalVLMBackend(model_dir=args.model, device=args.device, dtype=args.dtype)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from datasets_builder.corpus import CorpusConfig, build_corpus, source_items

    for name in ("concurrency", "frames", "retries"):
        if getattr(args, name) < (0 if name == "retries" else 1):
            raise ConfigError(f"--{name} is out of range ({getattr(args, name)})")
    if args.stride is not None and args.stride < 1:
        raise ConfigError("--stride must be >= 1")
    if args.extract_fps <= 0:
        raise ConfigError("--extract-fps must be > 0")
    backend = make_backend(args)
    split = args.split or ("train" if args.source == "synth" else "test")
    items = source_items(args.source, args.data, split, extract_fps=args.extract_fps, stride=args.stride)
    cfg = CorpusConfig(out_dir=Path(args.out), source=args.source, stride=args.stride,
                       extract_fps=args.extract_fps, model_frames=args.frames,
                       anomaly_pass=not args.no_anomaly_pass, max_normal_targets=args.max_normal_targets,
                       limit=args.limit, progress=not args.no_progress)
    executor = open_chosen_executor(args)
    try:
        summary = build_corpus(items, backend, cfg, executor)
    finally:
        if executor is not None:
            executor.close()
        backend.close()
    s = summary.to_dict()
    print(f"videos: {s['videos_done_now']} built now, {s['videos_skipped']} already done, "
          f"{s['videos_failed']} failed ({s['videos_in_corpus']} in the corpus, {s['anomalous_videos']} anomalous)")
    print(f"frames extracted: {s['frames_extracted']}, rejected: {s['frames_rejected']} {s['reject_reasons'] or ''}")
    print("samples: " + json.dumps(s["samples"]) + f"; anomaly-focused: {s['anomaly_focused_samples']}")
    print("references: " + json.dumps(s["references"]))
    print(f"written to {Path(args.out).resolve()} (sft.jsonl, eval_refs.jsonl, summary.json)")
    if s["videos_failed"] and not s["videos_done_now"]:
        print("every video failed: see failures.jsonl for the reasons")
        return 1
    return 0
