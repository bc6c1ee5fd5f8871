"""Run a model over a corpus split and report the evaluation suite (`tvad eval run --model DIR --split test`).

Per video: the paper's dialogue in its order (judgement -> appearance -> trajectory), each question asked with
the model's own earlier answers as history, plus the AHD heatmaps. Reported (percent): BLEU-4 on target and
trajectory answers (best reference, mean per video, mean over videos), the direction the trajectory answers
state (right or wrong, tvad_chat.eval.motion_facts) and how many of them differ from one another (BLEU alone
rewards one template answer for every clip), Yes/No accuracy and balanced accuracy (also per anomaly type:
an open-set split's types differ in how far training transfers to them, and one plain accuracy hides which),
the heatmap judgement's accuracy, frame micro/macro AUC, RBDC/TBDC (heatmap boxes vs mask regions) and pooled
pixel AUROC/AP. With ``--ablation`` the same for the paper's Table 4 rows:

* backbone only: the stage-0 backbone (``DIR/backbone`` when present, else DIR's backbone) without heads;
* + AHD: that backbone with the AHD (heatmaps, evidence; the answers are still the plain model's);
* + RAE (no AHD maps): DIR's stage-2 backbone and RAE, but the RAE reads a blank map (both classes 0.5
  everywhere) instead of the AHD's: what the trained prompt encoder and LoRA answer without pixel evidence.
  (RAE encodes the AHD's maps, so a model with RAE and no AHD at all does not exist in this architecture.)
* full: the whole model (stage-2 backbone, AHD, RAE).

The videos run in this process by default, or as one task each on an executor (``--workers N``, ``--ray``:
tvad_chat.executor); either way the predictions are written in the split's video order and the metrics are the
same.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tvad_chat.errors import DataError
from tvad_chat.executor import Executor, TaskFailure, run_tasks
from tvad_chat.train.data import Sample, load_samples, read_masks

logger = logging.getLogger(__name__)

QUESTION_ORDER = ("judgement", "target", "trajectory")


@dataclass
class VideoTask:
    video_id: str
    sample: Sample  # the longest dialogue sample of the video
    questions: list[tuple[str, str]]  # (ref id, question) in dialogue order
    anomalous: bool


@dataclass
class VideoHeat:
    """What the heatmap metrics read of one video: frame scores and labels, each frame's boxes, masks, maps."""

    scores: list[float]
    labels: list[int]
    boxes: list[list[tuple[list[float], float]]]  # per frame: (xyxy, score)
    masks: np.ndarray  # bool (T, H, W)
    maps: np.ndarray  # float (T, H, W): the heatmaps at the masks' size


@dataclass
class VideoAnswers:
    """One video's answers under one variant, and its heatmap evidence when the variant has an AHD."""

    video_id: str
    predictions: list[tuple[str, str]]  # (ref id, answer) in dialogue order
    heat_judgement: bool | None = None
    heat: VideoHeat | None = None


@dataclass
class VariantResult:
    name: str
    predictions: dict[str, str] = field(default_factory=dict)
    heat_judgements: dict[str, bool] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def video_tasks(samples: list[Sample], max_videos: int | None = None) -> list[VideoTask]:
    """One dialogue per video: the judgement/target/trajectory chain written by the corpus builder."""
    by_video: dict[str, dict[str, Sample]] = defaultdict(dict)
    for s in samples:
        suffix = s.id.rsplit("/", 1)[-1]
        if suffix in QUESTION_ORDER:
            by_video[s.video_id][suffix] = s
    tasks = []
    for vid, kinds in by_video.items():
        last = next((kinds[k] for k in reversed(QUESTION_ORDER) if k in kinds), None)
        if last is None:
            continue
        users = [m["content"] for m in last.conversation if m["role"] == "user"]
        names = [k for k in QUESTION_ORDER if k in kinds][: len(users)]
        qs = [(f"{vid}/{k}", q) for k, q in zip(names, users)]
        tasks.append(VideoTask(vid, last, qs, bool(last.anomalous_video if last.anomalous_video is not None
                                                   else last.mask_dir)))
    tasks.sort(key=lambda t: t.video_id)
    return tasks[:max_videos] if max_videos else tasks


def make_clip(sample: Sample):
    from tvad_chat.video import Clip, load_clip

    frames = load_clip(sample.video, num_frames=None, folder_fps=sample.fps, frame_indices=sample.frame_indices).frames
    idx = np.asarray(sample.frame_indices, dtype=np.int64)
    fps = sample.fps if sample.fps > 0 else 25.0
    return Clip(frames=frames, timestamps=idx / fps, frame_indices=idx, source=Path(sample.video), source_fps=fps,
                source_size=(int(frames.shape[2]), int(frames.shape[1])), num_source_frames=int(idx.max()) + 1,
                duration_s=float((idx.max() + 1) / fps))


def video_heat(task: VideoTask, clip, analysis) -> VideoHeat:
    """The heatmaps of a video against its masks, as :func:`heatmap_metrics` reads them."""
    from tvad_chat.evidence import upsample_heatmaps

    h, w = clip.frames.shape[1:3]
    masks = read_masks(task.sample.mask_dir, task.sample.frame_indices, (h, w))
    ev = analysis.evidence
    boxes = [[(list(b.xyxy), float(b.score)) for b in (ev.boxes[f] if ev is not None and f < len(ev.boxes) else [])]
             for f in range(len(masks))]
    return VideoHeat(scores=[float(s) for s in analysis.frame_scores],
                     labels=masks.reshape(len(masks), -1).any(1).astype(int).tolist(), boxes=boxes, masks=masks,
                     maps=upsample_heatmaps(analysis.heatmaps, len(masks), (w, h)))


def answer_video(tvad, task: VideoTask, max_new_tokens: int = 48) -> VideoAnswers:
    """The video's dialogue, each question asked with the model's own earlier answers as history."""
    clip = make_clip(task.sample)
    analysis = tvad.analyze(clip)
    history: list[tuple[str, str]] = []
    out = VideoAnswers(task.video_id, [])
    for ref_id, question in task.questions:
        answer = tvad.answer(analysis, history, question, max_new_tokens=max_new_tokens)
        out.predictions.append((ref_id, answer.strip()))
        history.append((question, answer))
    if analysis.heatmaps is not None:
        out.heat_judgement = bool(analysis.judgement)
        if not isinstance(tvad.ahd, BlankMaps):  # a blank map is no evidence to score
            out.heat = video_heat(task, clip, analysis)
    return out


@dataclass
class VideoJob:
    """One video for a worker: the variant to load (by name), the video, and the threads it may use."""

    model_dir: str
    variant: str
    device: str | None
    task: VideoTask
    max_new_tokens: int
    threads: int


def answer_video_job(job: VideoJob) -> VideoAnswers:
    """:func:`answer_video` in a worker process, with the variant from the process's model cache."""
    import cv2

    torch.set_num_threads(job.threads)
    cv2.setNumThreads(job.threads)
    return answer_video(load_variant(job.model_dir, job.variant, job.device), job.task, job.max_new_tokens)


def run_variant(name: str, tvad, tasks: list[VideoTask], max_new_tokens: int = 48, progress: bool = True,
                executor: Executor | None = None, model_dir: str | Path | None = None, device: str | None = None
                ) -> tuple[VariantResult, dict[str, VideoHeat]]:
    """Dialogue answers and heatmap evidence of one model variant over the tasks, in the tasks' order.

    Without an executor ``tvad`` answers here; with one, each video is a task that loads the variant ``name`` of
    ``model_dir`` in its worker (``tvad`` is then None). A video whose task failed raises DataError.
    """
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), desc=f"eval {name}", unit="video")
    answers: dict[str, VideoAnswers] = {}
    if executor is None:
        for task in tasks:
            answers[task.video_id] = answer_video(tvad, task, max_new_tokens)
            if bar is not None:
                bar.update(1)
    else:
        jobs = [VideoJob(str(model_dir), name, device, task, max_new_tokens, executor.threads) for task in tasks]
        for job, value in run_tasks(answer_video_job, jobs, executor):
            if isinstance(value, TaskFailure):
                raise DataError(f"{job.task.video_id} ({name}): {value.reason}")
            answers[job.task.video_id] = value
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    res = VariantResult(name)
    heats: dict[str, VideoHeat] = {}
    for task in tasks:
        video = answers[task.video_id]
        res.predictions.update(video.predictions)
        if video.heat_judgement is not None:
            res.heat_judgements[task.video_id] = video.heat_judgement
        if video.heat is not None:
            heats[task.video_id] = video.heat
    return res, heats


def text_metrics(res: VariantResult, refs: dict[str, dict[str, Any]], tasks: list[VideoTask]) -> dict[str, Any]:
    from tvad_chat.eval.motion_facts import direction_accuracy, distinct_share
    from tvad_chat.eval.text import best_reference_bleu4, yes_no_metrics

    out: dict[str, Any] = {}
    for kind in ("target", "trajectory"):
        items = [(r["video_id"], res.predictions[i], r["references"]) for i, r in refs.items()
                 if r["kind"] == kind and i in res.predictions]
        if items:
            out[f"bleu4.{kind}"] = best_reference_bleu4(items)["bleu4"]
            out[f"distinct.{kind}"] = distinct_share([p for _, p, _ in items])
        if kind == "trajectory" and items:
            out["trajectory.direction"] = direction_accuracy([(p, r) for _, p, r in items])["accuracy"]
    yn = [(res.predictions[i], r["references"][0]) for i, r in refs.items() if r["kind"] == "yesno"
          and i in res.predictions]
    if yn:
        m = yes_no_metrics([p for p, _ in yn], [r for _, r in yn])
        out["yesno.accuracy"], out["yesno.balanced_accuracy"] = m["accuracy"], m["balanced_accuracy"]
        out["yesno.by_type"] = yes_no_by_type(res, refs, tasks)
    if res.heat_judgements:
        truth = {t.video_id: t.anomalous for t in tasks}
        hits = [res.heat_judgements[v] == truth[v] for v in res.heat_judgements]
        out["heatmap_judgement.accuracy"] = 100.0 * sum(hits) / len(hits)
    return out


def video_type(sample: Sample, anomalous: bool) -> str:
    """A video's anomaly type as the corpus names it ('normal' for normal videos, 'anomalous' if unnamed)."""
    if not anomalous:
        return "normal"
    return str(sample.meta.get("event") or "anomalous")


def yes_no_by_type(res: VariantResult, refs: dict[str, dict[str, Any]], tasks: list[VideoTask]
                   ) -> dict[str, dict[str, float]]:
    """Per anomaly type: videos, Yes/No accuracy and the share answered "yes" (percent)."""
    from tvad_chat.eval.text import YES, normalize_yes_no

    types = {t.video_id: video_type(t.sample, t.anomalous) for t in tasks}
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for i, r in refs.items():
        if r["kind"] == "yesno" and i in res.predictions:
            groups[types[r["video_id"]]].append((normalize_yes_no(res.predictions[i]),
                                                 normalize_yes_no(r["references"][0])))
    return {name: {"videos": len(pairs), "accuracy": 100.0 * sum(p == r for p, r in pairs) / len(pairs),
                   "said_yes": 100.0 * sum(p == YES for p, _ in pairs) / len(pairs)}
            for name, pairs in sorted(groups.items())}


def heatmap_metrics(heats: dict[str, VideoHeat]) -> dict[str, Any]:
    """Frame AUC, RBDC/TBDC and pooled pixel metrics of the heatmaps against the masks."""
    from tvad_chat.eval.frames import frame_auc
    from tvad_chat.eval.heatmaps import object_metrics
    from tvad_chat.eval.pixels import PixelFrame, pooled_pixel_metrics

    scores, labels = {}, {}
    videos = []
    pixel_frames = []
    for vid, heat in sorted(heats.items()):
        labels[vid] = heat.labels
        scores[vid] = heat.scores
        pixel_frames += [PixelFrame(score=heat.maps[f], mask=heat.masks[f]) for f in range(len(heat.masks))]
        videos.append((heat.boxes, heat.masks))
    out: dict[str, Any] = {}
    try:
        fa = frame_auc(scores, labels)
        out["frame.micro_auc"], out["frame.macro_auc"] = fa.get("micro_auc"), fa.get("macro_auc")
    except DataError as exc:
        logger.warning("frame AUC: %s", exc)
    objects = object_metrics(videos)
    if objects:
        out["rbdc"], out["tbdc"] = objects["rbdc"], objects["tbdc"]
        px = pooled_pixel_metrics(pixel_frames)
        out["pixel.auroc"], out["pixel.ap"] = px.get("auroc"), px.get("ap")
    return out


def load_refs(corpus: str | Path, ids: set[str]) -> dict[str, dict[str, Any]]:
    from tvad_chat.files import read_jsonl

    path = Path(corpus) / "eval_refs.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: no evaluation references; build the corpus with `tvad build-corpus`")
    return {r["id"]: r for r in read_jsonl(path) if r["id"] in ids}


def variant_file_name(name: str) -> str:
    """'+ RAE (no AHD maps)' -> 'plus_rae_no_ahd_maps': a file-name-safe form of a variant's name."""
    import re

    return re.sub(r"[^a-z0-9]+", "_", name.lower().replace("+", "plus")).strip("_")


class BlankMaps(torch.nn.Module):
    """Stands in for the AHD: same taps and widths, but every patch is 50/50 normal/abnormal (no evidence)."""

    def __init__(self, ahd):
        super().__init__()
        self.config = ahd.config

    def forward(self, layer_grids, class_vectors):
        from heads.ahd import ABNORMAL, AHDOutput

        t, h, w = layer_grids[0].shape[-4:-1]
        logits = torch.zeros(*layer_grids[0].shape[:-4], t, 2, h, w)
        probs = logits.softmax(dim=-3)
        return AHDOutput(class_logits=logits, class_probs=probs, heatmap=probs[..., ABNORMAL, :, :], layer_logits=[])


def variant_names(model_dir: str | Path, ablation: bool) -> list[str]:
    """The variants evaluated, in the report's order (the heads present in ``model_dir`` decide the middle rows)."""
    root = Path(model_dir)
    if not ablation:
        return ["full"]
    return (["backbone only"] + (["+ AHD"] if (root / "ahd").is_dir() else [])
            + (["+ RAE (no AHD maps)"] if (root / "rae").is_dir() else []) + ["full"])


# What a process loaded last: the model by (directory, heads, device), and the variant made of it by (directory,
# name, device). A worker answers many videos of a variant and the variants come one after another, so it loads
# each model once, not once per video; holding one of each bounds its memory. "+ AHD" reuses the backbone of
# "backbone only", "full" the model of "+ RAE (no AHD maps)".
_MODEL: dict[tuple[str, tuple[str, ...], str | None], Any] = {}
_VARIANT: dict[tuple[str, str, str | None], Any] = {}


def _load(directory: Path, heads: tuple[str, ...], device: str | None):
    from tvad_chat.pipeline import TVAD

    key = (str(directory), heads, device)
    if key not in _MODEL:
        _MODEL.clear()
        _MODEL[key] = TVAD.from_pretrained(directory, device=device, use_heads=heads)
    return _MODEL[key]


def load_variant(model_dir: str | Path, name: str, device: str | None = None):
    """The TVAD of one variant of :func:`variant_names` (the backbone-only rows use ``DIR/backbone`` if present)."""
    key = (str(model_dir), name, device)
    if key not in _VARIANT:
        _VARIANT.clear()
        _VARIANT[key] = _make_variant(Path(model_dir), name, device)
    return _VARIANT[key]


def _make_variant(root: Path, name: str, device: str | None):
    from tvad_chat.pipeline import TVAD

    base_dir = root / "backbone" if (root / "backbone" / "config.json").is_file() else root
    if name == "backbone only":
        return _load(base_dir, (), device)
    if name == "+ AHD":
        from heads.ahd import AnomalyHeatmapDecoder

        base = _load(base_dir, (), device)
        return TVAD(base.backbone, ahd=AnomalyHeatmapDecoder.from_pretrained(root / "ahd"), config=base.config)
    full = _load(root, ("ahd", "rae"), device)
    if name == "+ RAE (no AHD maps)":
        return TVAD(full.backbone, ahd=BlankMaps(full.ahd), rae=full.rae, config=full.config)
    if name == "full":
        return full
    raise ValueError(f"unknown variant {name!r}")


def evaluate_model(model_dir: str | Path, corpus: str | Path, split: str = "test", ablation: bool = True,
                   max_videos: int | None = None, out: str | Path | None = None, device: str | None = None,
                   progress: bool = True, max_new_tokens: int = 48, executor: Executor | None = None
                   ) -> dict[str, dict[str, Any]]:
    """Every metric per variant; with ``out`` also writes predictions and the report there (atomically).

    With an ``executor`` each video is a task in a worker process (or on a Ray cluster), which loads the variant.
    """
    from tvad_chat.files import atomic_write_text

    tasks = video_tasks(load_samples(corpus, split=split), max_videos)
    if not tasks:
        raise DataError(f"{corpus}: no dialogue samples in split {split!r}")
    refs = load_refs(corpus, {rid for t in tasks for rid, _ in t.questions})
    report: dict[str, dict[str, Any]] = {}
    try:
        for name in variant_names(model_dir, ablation):
            tvad = load_variant(model_dir, name, device) if executor is None else None
            res, heats = run_variant(name, tvad, tasks, max_new_tokens=max_new_tokens, progress=progress,
                                     executor=executor, model_dir=model_dir, device=device)
            metrics = text_metrics(res, refs, tasks)
            if heats:
                metrics.update(heatmap_metrics(heats))
            if name == "+ RAE (no AHD maps)":  # a blank map has no heatmap judgement to report
                metrics.pop("heatmap_judgement.accuracy", None)
            metrics["videos"] = len(tasks)
            report[name] = metrics
            if out is not None:
                atomic_write_text(Path(out) / f"predictions_{variant_file_name(name)}.jsonl",
                                  "".join(json.dumps({"id": i, "prediction": p}) + "\n"
                                          for i, p in res.predictions.items()))
    finally:  # this process's models (a worker keeps its own until it ends)
        _VARIANT.clear()
        _MODEL.clear()
    if out is not None:
        atomic_write_text(Path(out) / "report.json", json.dumps(report, indent=2, default=str))
    return report


COLUMNS = [("yesno.accuracy", "Yes/No"), ("yesno.balanced_accuracy", "bal."), ("bleu4.target", "BLEU target"),
           ("bleu4.trajectory", "BLEU traj."), ("trajectory.direction", "traj. dir."),
           ("distinct.trajectory", "distinct traj."), ("heatmap_judgement.accuracy", "heat judg."),
           ("frame.micro_auc", "micro AUC"), ("frame.macro_auc", "macro AUC"), ("rbdc", "RBDC"), ("tbdc", "TBDC"),
           ("pixel.auroc", "px AUROC"), ("pixel.ap", "px AP")]


def format_report(report: dict[str, dict[str, Any]]) -> str:
    """A Markdown table, one row per variant (percent; '-' where a variant has no such output)."""
    head = "| variant | " + " | ".join(c for _, c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, m in report.items():
        cells = []
        for key, _ in COLUMNS:
            v = m.get(key)
            cells.append("-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{float(v):.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    types = sorted({t for m in report.values() for t in m.get("yesno.by_type", {})}, key=lambda t: (t == "normal", t))
    if types:
        counts = {t: next(m["yesno.by_type"][t]["videos"] for m in report.values() if t in m.get("yesno.by_type", {}))
                  for t in types}
        lines += ["", "Yes/No accuracy per video type (percent; in brackets: share answered yes):",
                  "| variant | " + " | ".join(f"{t} ({counts[t]})" for t in types) + " |",
                  "|" + "---|" * (len(types) + 1)]
        for name, m in report.items():
            by_type = m.get("yesno.by_type", {})
            cells = [f"{by_type[t]['accuracy']:.1f} ({by_type[t]['said_yes']:.0f})" if t in by_type else "-"
                     for t in types]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
