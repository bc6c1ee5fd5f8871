"""The corpus runner: videos -> extraction -> timelines -> anomaly pass -> QA -> JSONL.

Output folder layout::

    sft.jsonl          one SFT sample per line (DESIGN.md section 4)
    eval_refs.jsonl    evaluation references for `tvad eval text`
    done.jsonl         one line per finished video (the resume manifest)
    failures.jsonl     videos that failed, with the reason (retried on the next run)
    videos/<split>/<video_id>.json   extraction records, timelines and trajectories of one video
    summary.json       counts (recomputed from the files, so it is right after a resume)

A video's lines are appended only after the video is fully processed, then
its id goes to done.jsonl. A run killed at any point loses at most the video
in progress; the next run skips finished videos, repairs a torn last line,
and the writer's id check drops lines already written for the video in progress.

Videos are processed in this process, or each as a task on an executor (``--workers N``
or ``--ray ADDRESS``: tvad_chat.executor); a video is written only once every video
before it is, so the files are the same whichever runs them (a killed run loses the
videos in flight and those finished behind one still running).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from datasets_builder.enhance import EnhanceConfig, anomaly_focused_pass
from datasets_builder.extract import ExtractionBackend, FrameRecord, FrameTask, GTObject
from datasets_builder.qa import TargetFacts, VideoFacts, build_video_qa, label_segments
from datasets_builder.sources import VideoRecord, read_dataset
from datasets_builder.timeline import AssociationConfig, Timeline, associate, describe_trajectory
from tvad_chat.errors import ConfigError, DataError, TVADError
from tvad_chat.executor import Executor, TaskFailure, run_tasks
from tvad_chat.files import JsonlAppender, atomic_write_text, read_jsonl
from tvad_chat.motion import TrajectoryConfig, iou
from tvad_chat.video import load_clip, sample_indices

log = logging.getLogger(__name__)

SFT_FILE = "sft.jsonl"
REFS_FILE = "eval_refs.jsonl"
DONE_FILE = "done.jsonl"
FAIL_FILE = "failures.jsonl"
SUMMARY_FILE = "summary.json"


@dataclass
class VideoItem:
    """One video as the builder sees it, whatever the source."""

    video_id: str
    split: str
    video: str  # video file or frame folder (goes into the samples)
    fps: float
    width: int
    height: int
    num_frames: int
    read_frames: Callable[[Sequence[int]], np.ndarray] | None = None  # RGB (N, H, W, 3) for frame indices
    annotations: Callable[[int], list[GTObject]] | None = None  # ground-truth objects of a frame
    masks: Callable[[int], np.ndarray | None] | None = None  # anomaly mask of a frame (bool H x W) or None
    frame_labels: Sequence[int] | None = None  # 0/1 per frame, when labelled
    mask_dir: str | None = None
    event: str | None = None
    extract_indices: Sequence[int] | None = None  # override the builder's frame choice
    timestamps: Sequence[float] | None = None  # per source frame, when not index / fps
    # sources that choose their own frames (decoded videos): () -> (frames, indices, timestamps)
    load_sampled: Callable[[], tuple[np.ndarray, Sequence[int], Sequence[float]]] | None = None

    @property
    def key(self) -> str:
        return f"{self.split}/{self.video_id}"

    def time_of(self, index: int) -> float:
        if self.timestamps is not None and 0 <= index < len(self.timestamps):
            return float(self.timestamps[index])
        return index / self.fps if self.fps > 0 else float(index)


@dataclass
class CorpusConfig:
    out_dir: Path
    source: str = "custom"
    stride: int | None = None  # extract every k-th frame; None: all frames (gt) or extract_fps (models)
    extract_fps: float = 2.0  # frames per second extracted by model backends when stride is None
    model_frames: int = 16  # frames the model sees per sample
    anomaly_pass: bool = True
    max_normal_targets: int = 3
    min_normal_observations: int = 3  # shorter normal timelines get no questions
    min_anomaly_confidence: float = 0.5  # without masks: mean confidence of a flagged timeline to count
    limit: int | None = None  # process at most this many new videos
    progress: bool = True
    association: AssociationConfig = field(default_factory=AssociationConfig)
    trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    enhance: EnhanceConfig = field(default_factory=EnhanceConfig)


@dataclass
class CorpusSummary:
    videos_total: int = 0
    videos_done_now: int = 0
    videos_skipped: int = 0  # already finished by an earlier run
    videos_failed: int = 0
    frames_extracted: int = 0
    frames_rejected: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)  # by kind, over the whole file
    samples_by_split: dict[str, int] = field(default_factory=dict)
    anomaly_focused_samples: int = 0
    references: dict[str, int] = field(default_factory=dict)
    videos_in_corpus: int = 0
    anomalous_videos: int = 0
    seconds: float = 0.0
    backend_stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _extract_indices(item: VideoItem, cfg: CorpusConfig, needs_images: bool) -> list[int]:
    if item.extract_indices is not None:
        return [int(i) for i in item.extract_indices]
    if cfg.stride:
        stride = cfg.stride
    elif needs_images:
        stride = max(1, round(item.fps / cfg.extract_fps)) if item.fps > 0 else 1
    else:
        stride = 1
    return list(range(0, item.num_frames, stride))


def _mean_iou(a: Timeline, b: Timeline) -> float:
    """Mean IoU of two timelines' boxes over their shared frames (0 when they share none)."""
    bb = {o.frame_index: o.box for o in b.observations}
    ious = [iou(o.box, bb[o.frame_index]) for o in a.observations if o.frame_index in bb]
    return float(np.mean(ious)) if ious else 0.0


def _overlaps(a: Timeline, b: Timeline, thr: float = 0.3) -> bool:
    """Do two timelines follow the same target (mean IoU over shared frames)?"""
    return _mean_iou(a, b) >= thr


def _whole_track(focus: Timeline, timelines: Sequence[Timeline], thr: float = 0.3) -> Timeline | None:
    """The main-pass timeline a focused timeline follows (best mean IoU, at least ``thr``), or None."""
    best = max(timelines, key=lambda tl: _mean_iou(focus, tl), default=None)
    return best if best is not None and _mean_iou(focus, best) >= thr else None


def _spliced(focus: Timeline, main: Timeline) -> Timeline:
    """The target over its whole track: the main pass before and after the anomaly, the focused pass during it.

    The anomaly pass sees the target only in its masked (anomalous) frames, so where it comes from and where
    it goes are in the main pass; the id, category and looks stay the focused pass's (an anomaly target is
    described as it looks during the anomaly: "falling", not "walking").
    """
    a, b = focus.start_frame, focus.end_frame
    obs = ([o for o in main.observations if o.frame_index < a] + list(focus.observations)
           + [o for o in main.observations if o.frame_index > b])
    return Timeline(target_id=focus.target_id, category=focus.category, attributes=dict(focus.attributes),
                    observations=obs)


def _flagged_span(tl: Timeline) -> tuple[int, int]:
    """First and last frame a timeline is flagged anomalous in (its whole span when no frame is flagged)."""
    flagged = [o.frame_index for o in tl.observations if o.anomalous]
    return (flagged[0], flagged[-1]) if flagged else (tl.start_frame, tl.end_frame)


@dataclass
class VideoResult:
    records: list[FrameRecord]
    timelines: list[Timeline]
    facts: VideoFacts
    focus_records: list[FrameRecord] = field(default_factory=list)
    rejected_focus: list[tuple[Timeline, str]] = field(default_factory=list)


class AllFramesRejected(DataError):
    """Every extracted frame of a video was rejected by the backend (the counts go into the build's summary)."""

    def __init__(self, key: str, reasons: Counter, example: str) -> None:
        super().__init__(f"{key}: every frame was rejected ({example})")  # the whole reason, e.g. "...: HTTP 403"
        self.frames = sum(reasons.values())
        self.reasons = reasons


def process_video(item: VideoItem, backend: ExtractionBackend, cfg: CorpusConfig) -> VideoResult:
    """Extraction, timelines, the anomaly-focused pass and the facts the QA is built from."""
    needs_images = bool(getattr(backend, "needs_images", True))
    times: dict[int, float] = {}
    if needs_images and item.load_sampled is not None:
        frames, idx, ts = item.load_sampled()
        indices = [int(i) for i in idx]
        times = {int(i): float(t) for i, t in zip(idx, ts)}
        if len(frames):
            item.height, item.width = int(frames.shape[1]), int(frames.shape[2])
    else:
        indices = _extract_indices(item, cfg, needs_images)
        frames = item.read_frames(indices) if (needs_images and item.read_frames is not None and indices) else None
    if not indices:
        raise DataError(f"{item.key}: the video has no frames")
    if needs_images and frames is None:
        raise DataError(f"{item.key}: this backend needs frames but the source gives none")
    tasks = []
    for n, fi in enumerate(indices):
        ann = item.annotations(fi) if item.annotations is not None else None
        tasks.append(FrameTask(video_id=item.video_id, frame_index=fi, timestamp=times.get(fi, item.time_of(fi)),
                               width=item.width, height=item.height,
                               image=None if frames is None else frames[n], annotations=ann))
    records = backend.extract_many(tasks)
    if records and not any(r.ok for r in records):
        raise AllFramesRejected(item.key, Counter((r.error or "unknown").split(":")[0] for r in records),
                                records[0].error or "unknown")
    timelines = associate(records, cfg.association)
    first, last = indices[0], indices[-1]

    def facts_of(tl: Timeline, anomalous: bool, focused: bool,
                 span: tuple[int, int] | None = None) -> TargetFacts:
        tr = describe_trajectory(tl, item.width, item.height, clip_start_frame=first, clip_end_frame=last,
                                 config=cfg.trajectory)
        return TargetFacts(timeline=tl, trajectory=tr, anomalous=anomalous, anomaly_focused=focused,
                           anomaly_span=span)

    anomaly_targets: list[TargetFacts] = []
    focus_records: list[FrameRecord] = []
    rejected: list[tuple[Timeline, str]] = []
    masks: dict[int, np.ndarray] = {}
    if cfg.anomaly_pass and item.masks is not None:
        for fi in indices:
            m = item.masks(fi)
            if m is not None and np.any(m):
                masks[fi] = m
    if masks:
        ecfg = replace(cfg.enhance, trust_backend_flags=cfg.enhance.trust_backend_flags
                       or getattr(backend, "name", "") == "gt")
        res = anomaly_focused_pass(tasks, masks, backend, ecfg, cfg.association)
        focus_records, rejected = res.records, res.rejected
        # Described over the whole track (a faller was in view before falling), asked "when" over the anomaly.
        by_main: dict[str, TargetFacts] = {}
        for tl in res.timelines:
            span = (tl.start_frame, tl.end_frame)
            main = _whole_track(tl, timelines)
            if main is None:  # the main pass missed it: the anomalous frames are all there is
                anomaly_targets.append(facts_of(tl, True, True, span))
            elif main.target_id in by_main:  # another piece of a target already described: widen its "when"
                t = by_main[main.target_id]
                t.anomaly_span = (min(t.anomaly_span[0], span[0]), max(t.anomaly_span[1], span[1]))
            else:
                by_main[main.target_id] = facts_of(_spliced(tl, main), True, True, span)
                anomaly_targets.append(by_main[main.target_id])
    else:
        flagged = [tl for tl in timelines if tl.anomalous and tl.confidence >= cfg.min_anomaly_confidence]
        flagged.sort(key=lambda t: (-len(t.observations), -t.confidence, t.start_frame))
        anomaly_targets = [facts_of(tl, True, False, _flagged_span(tl)) for tl in flagged]
    anomaly_tls = [t.timeline for t in anomaly_targets]
    normal = [tl for tl in timelines
              if not tl.anomalous and len(tl.observations) >= cfg.min_normal_observations
              and not any(_overlaps(tl, a) for a in anomaly_tls)]
    normal.sort(key=lambda t: (-len(t.observations), t.start_frame))
    normal_targets = [facts_of(tl, False, False) for tl in normal]

    if item.frame_labels is not None:
        labels = [int(bool(v)) for v in item.frame_labels]
        anomalous = any(labels)
        segments = label_segments(labels) if anomalous else None
    else:
        anomalous = bool(anomaly_targets)
        segments = None
    if not anomalous:
        anomaly_targets = []
    facts = VideoFacts(
        video_id=item.key, split=item.split, video=item.video,
        frame_indices=sample_indices(item.num_frames, cfg.model_frames).tolist(), anomalous=anomalous,
        mask_dir=item.mask_dir, fps=item.fps, event=item.event, anomaly_segments=segments,
        targets=anomaly_targets, normal_targets=normal_targets,
        extra_meta={"source": cfg.source, "backend": getattr(backend, "name", "custom")},
    )
    return VideoResult(records=records, timelines=timelines, facts=facts, focus_records=focus_records,
                       rejected_focus=rejected)


def _video_dump(item: VideoItem, res: VideoResult) -> dict[str, Any]:
    f = res.facts
    return {
        "video_id": item.video_id, "split": item.split, "video": item.video, "fps": item.fps,
        "width": item.width, "height": item.height, "num_frames": item.num_frames,
        "anomalous": f.anomalous, "anomaly_segments": f.anomaly_segments, "event": item.event,
        "records": [r.to_dict() for r in res.records],
        "timelines": [tl.to_dict() for tl in res.timelines],
        "anomaly_targets": [{"timeline": t.timeline.to_dict(), "trajectory": t.trajectory.to_dict(),
                             "anomaly_focused": t.anomaly_focused,
                             "anomaly_span": list(t.anomaly_span) if t.anomaly_span else None}
                            for t in f.targets],
        "normal_targets": [{"timeline": t.timeline.to_dict(), "trajectory": t.trajectory.to_dict()}
                           for t in f.normal_targets],
        "focus_records": [r.to_dict() for r in res.focus_records],
        "rejected_focus_timelines": [{"timeline": tl.to_dict(), "reason": why} for tl, why in res.rejected_focus],
    }


def summarize(out_dir: Path) -> CorpusSummary:
    """Counts over the files in out_dir (whole corpus, all runs)."""
    s = CorpusSummary()
    sft, refs, done = out_dir / SFT_FILE, out_dir / REFS_FILE, out_dir / DONE_FILE
    kinds: Counter = Counter()
    splits: Counter = Counter()
    if sft.exists():
        for rec in read_jsonl(sft):
            kinds[rec["meta"]["kind"]] += 1
            splits[rec["meta"]["split"]] += 1
            s.anomaly_focused_samples += bool(rec["meta"].get("anomaly_focused"))
    if refs.exists():
        s.references = dict(Counter(r["kind"] for r in read_jsonl(refs)))
    if done.exists():
        ds = list(read_jsonl(done))
        s.videos_in_corpus = len(ds)
        s.anomalous_videos = sum(bool(d.get("anomalous")) for d in ds)
    s.samples, s.samples_by_split = dict(kinds), dict(splits)
    return s


@dataclass
class VideoOutcome:
    """What one video gives the builder to write and count: its files' content, or why it failed."""

    key: str
    dump: dict[str, Any] | None = None  # videos/<split>/<id>.json; None: the video failed
    samples: list[dict[str, Any]] = field(default_factory=list)
    references: list[dict[str, Any]] = field(default_factory=list)
    anomalous: bool = False
    frames: int = 0  # extracted (main and anomaly passes)
    rejected: Counter = field(default_factory=Counter)  # rejected frames by reason
    failure: str = ""
    backend_stats: dict[str, float] = field(default_factory=dict)  # what the video added to the backend's counts


def video_outcome(item: VideoItem, backend: ExtractionBackend, cfg: CorpusConfig) -> VideoOutcome:
    """Process one video (a failure of ours, e.g. an unreadable video, is returned, not raised)."""
    before = dict(vars(backend.stats)) if hasattr(backend, "stats") else {}
    out = VideoOutcome(item.key)
    try:
        res = process_video(item, backend, cfg)
        qa = build_video_qa(res.facts, cfg.max_normal_targets)
    except TVADError as err:
        out.failure = str(err)
        if isinstance(err, AllFramesRejected):  # its frames were extracted, and all rejected
            out.frames = err.frames
            out.rejected = Counter(err.reasons)
    else:
        records = res.records + res.focus_records
        out.dump, out.samples, out.references = _video_dump(item, res), qa.samples, qa.references
        out.anomalous, out.frames = res.facts.anomalous, len(records)
        out.rejected = Counter((r.error or "unknown").split(":")[0] for r in records if not r.ok)
    if before:
        out.backend_stats = {k: v - before[k] for k, v in vars(backend.stats).items()}
    return out


@dataclass
class VideoJob:
    """One video for a worker process: the video, the backend (a model backend travels as its settings), the
    settings, and the threads it may use."""

    item: VideoItem
    backend: ExtractionBackend
    cfg: CorpusConfig
    threads: int


def video_job_outcome(job: VideoJob) -> VideoOutcome:
    """:func:`video_outcome` in a worker."""
    import cv2

    cv2.setNumThreads(job.threads)
    return video_outcome(job.item, job.backend, job.cfg)


def _outcomes(todo: list[VideoItem], backend: ExtractionBackend, cfg: CorpusConfig,
              executor: Executor | None) -> Iterable[tuple[VideoItem, VideoOutcome]]:
    """(item, outcome) in the order of ``todo``, whichever order the executor finishes them in."""
    if executor is None:
        for item in todo:
            yield item, video_outcome(item, backend, cfg)
        return
    waiting: dict[int, VideoOutcome] = {}
    position = {id(item): n for n, item in enumerate(todo)}
    jobs = (VideoJob(item, backend, cfg, executor.threads) for item in todo)
    following = 0
    for job, value in run_tasks(video_job_outcome, jobs, executor):
        if isinstance(value, TaskFailure):  # the worker died, or a bug of ours raised
            value = VideoOutcome(job.item.key, failure=value.reason)
        waiting[position[id(job.item)]] = value
        while following in waiting:
            yield todo[following], waiting.pop(following)
            following += 1


def build_corpus(items: Iterable[VideoItem], backend: ExtractionBackend, cfg: CorpusConfig,
                 executor: Executor | None = None) -> CorpusSummary:
    """Process every video not yet done in cfg.out_dir; returns the summary (also written to summary.json).

    With an ``executor`` each video is a task in a worker process or on a Ray cluster (``backend`` is pickled to
    it); the files written are the same as without.
    """
    t0 = time.monotonic()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.model_frames < 1:
        raise ConfigError("--frames must be >= 1")
    if cfg.stride is not None and cfg.stride < 1:
        raise ConfigError("--stride must be >= 1")
    items = list(items)
    done_ids: set[str] = set()
    if (out / DONE_FILE).exists():
        done_ids = {str(d["id"]) for d in read_jsonl(out / DONE_FILE)}
    counters = {"done": 0, "skipped": 0, "failed": 0, "frames": 0, "rejected": 0}
    reasons: Counter = Counter()
    stats: Counter = Counter()
    todo = [it for it in items if it.key not in done_ids]
    counters["skipped"] = len(items) - len(todo)
    if cfg.limit is not None:
        todo = todo[: cfg.limit]
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="build-corpus", unit="video")
    with JsonlAppender(out / SFT_FILE) as sft, JsonlAppender(out / REFS_FILE) as refs, \
            JsonlAppender(out / DONE_FILE) as done, JsonlAppender(out / FAIL_FILE) as fails:
        for item, outcome in _outcomes(todo, backend, cfg, executor):
            counters["frames"] += outcome.frames
            counters["rejected"] += sum(outcome.rejected.values())
            reasons.update(outcome.rejected)
            stats.update(outcome.backend_stats)
            if outcome.dump is None:
                counters["failed"] += 1
                log.warning("%s: %s", item.key, outcome.failure)
                fails.append_batch([{"id": f"{item.key}@{time.time():.6f}", "video_id": item.key,
                                     "reason": outcome.failure}])
            else:
                dump_path = out / "videos" / item.split / f"{_safe_name(item.video_id)}.json"
                atomic_write_text(dump_path, json.dumps(outcome.dump, ensure_ascii=False))
                sft.append_batch(outcome.samples)
                refs.append_batch(outcome.references)
                done.append_batch([{"id": item.key, "samples": len(outcome.samples),
                                    "references": len(outcome.references), "anomalous": outcome.anomalous}])
                counters["done"] += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(samples=len(sft.ids), failed=counters["failed"])
    if bar is not None:
        bar.close()
    summary = summarize(out)
    summary.videos_total = len(items)
    summary.videos_done_now = counters["done"]
    summary.videos_skipped = counters["skipped"]
    summary.videos_failed = counters["failed"]
    summary.frames_extracted = counters["frames"]
    summary.frames_rejected = counters["rejected"]
    summary.reject_reasons = dict(reasons)
    if hasattr(backend, "stats"):
        summary.backend_stats = {k: stats.get(k, 0) for k in vars(backend.stats)}
    summary.seconds = round(time.monotonic() - t0, 3)
    atomic_write_text(out / SUMMARY_FILE, json.dumps(summary.to_dict(), indent=2))
    return summary


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# --------------------------------------------------------------------------- sources


def item_from_record(record: VideoRecord, extract_fps: float | None = 2.0, stride: int | None = None) -> VideoItem:
    """A dataset record (datasets_builder.sources) as the builder's VideoItem.

    Unannotated folder clips are decoded at ``extract_fps`` frames per second, or every ``stride``-th frame
    when given; annotated clips are read at the frames the builder chooses.
    """
    labels = None if record.frame_labels is None else record.frame_labels.tolist()
    item = VideoItem(video_id=record.video_id, split=record.split, video=str(record.source), fps=record.fps,
                     width=record.size[0], height=record.size[1], num_frames=record.num_frames,
                     read_frames=record.load_frames, frame_labels=labels, event=record.event,
                     mask_dir=str(record.mask_dir) if record.mask_dir is not None else None)
    if record.dataset == "folder":
        item.load_sampled = partial(_load_sampled, record.source, record.fps, extract_fps, stride)
    else:
        item.annotations = record.objects
        item.masks = record.load_mask if record.mask_dir is not None else None
    return item


def _load_sampled(source: Path, folder_fps: float, extract_fps: float | None, stride: int | None
                  ) -> tuple[np.ndarray, Sequence[int], Sequence[float]]:
    if stride:
        clip = load_clip(source, num_frames=None, fps=None, folder_fps=folder_fps)
        sl = slice(None, None, stride)
    else:
        clip = load_clip(source, num_frames=None, fps=extract_fps, folder_fps=folder_fps)
        sl = slice(None)
    return clip.frames[sl], clip.frame_indices[sl].tolist(), clip.timestamps[sl].tolist()


def source_items(source: str, data: str | Path | None, split: str, extract_fps: float | None = 2.0,
                 stride: int | None = None) -> list[VideoItem]:
    """The videos of a source as VideoItems: synth, ped2, avenue (annotated) or folder."""
    if source not in ("synth", "ped2", "avenue", "folder"):
        raise ConfigError(f"unknown --source {source!r}; choose synth, ped2, avenue or folder")
    if source in ("synth", "folder") and data is None:
        raise ConfigError(f"--source {source} needs --data DIR" + (": a folder written by `tvad synth`"
                                                                     if source == "synth" else ""))
    if source in ("ped2", "avenue") and split not in ("test", "train"):
        raise ConfigError(f"--split for {source} is test or train (got {split!r})")
    return [item_from_record(r, extract_fps, stride) for r in read_dataset(source, data, split)]
