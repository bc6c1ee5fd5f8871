"""The scan: find the clips, skip the finished ones, run the rest on an executor, write each atomically, index.

Crash safety: a clip's thumbnails and report are each written atomically (a hidden temporary file, then a rename)
and only then is its completion record appended (one fsync'd line), so a scan killed at any moment leaves every
finished clip complete and no visible half-written file; the next run removes the hidden leftovers and redoes only
the clips without a record. A clip that cannot be read or analysed gets a record with status "failed" and its
reason; the scan goes on. A clip whose file changed since its record (size or modification time) is scanned again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvad_chat.errors import ConfigError, TVADError
from tvad_chat.executor import Executor, TaskFailure
from tvad_chat.files import JsonlAppender, atomic_output, atomic_write_text, read_jsonl
from tvad_chat.scan.discover import ArchiveClip, discover
from tvad_chat.scan.index import read_settings, totals, write_index, write_summary
from tvad_chat.scan.work import (
    PreparedProfile,
    ScanSettings,
    analyze_segment,
    analyze_whole,
    finish_joined,
    join_segments,
    plan_segments,
    prepare_profile,
)
from tvad_chat.scene.analyze import SceneAnalysis
from tvad_chat.stages.run import StageResults
from tvad_chat.video import probe

log = logging.getLogger(__name__)

DONE = "done.jsonl"
Progress = Callable[[int, int, int, int], None]  # frames done, frames planned, clips done, clips planned


@dataclass
class ScanResult:
    clips: int  # found under the root
    skipped: int  # finished by an earlier run
    scanned: int  # finished by this run
    failed: list[tuple[str, str]]  # (clip, reason) of every failed clip, this run's and earlier ones'
    totals: dict[str, Any]
    summary: Path


@dataclass
class _Job:
    """A clip in flight: its plan, and its segments' results as they arrive."""

    clip: ArchiveClip
    duration_s: float
    frames: int  # frames it analyses (the progress bar's unit)
    segments: list[Any]  # source frame indices per segment
    prepared: PreparedProfile | None = None
    parts: dict[int, SceneAnalysis] = field(default_factory=dict)
    joined: SceneAnalysis | None = None


def scan(root: str | Path, out: str | Path, settings: ScanSettings, executor: Executor,
         video_extensions: Sequence[str], progress: Progress | None = None) -> ScanResult:
    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings)
    _remove_leftovers(out)
    clips = discover(root, video_extensions, exclude=[out])
    finished = _finished(out, clips)
    todo = [c for c in clips if _record_id(c) not in finished]
    scanned = 0
    with JsonlAppender(out / DONE) as done:
        def record(rec: dict[str, Any]) -> None:
            nonlocal scanned
            done.append_batch([rec])
            finished[rec["id"]] = rec
            scanned += 1

        jobs: dict[str, _Job] = {}
        for clip in todo:
            try:
                info = probe(clip.path, folder_fps=settings.folder_fps)
            except (TVADError, OSError) as exc:
                record(_failed(clip, _reason(exc)))
                continue
            segments = plan_segments(info.num_frames, info.fps, settings)
            jobs[clip.id] = _Job(clip, info.duration_s, sum(len(s) for s in segments), segments)
        _run(jobs, settings, executor, out, record, progress)
    records = [finished[_record_id(c)] for c in clips if _record_id(c) in finished]
    rows = write_index(out, records)
    summary = write_summary(out, root, records, rows)
    failed = [(r["clip"], r["reason"]) for r in records if r["status"] != "ok"]
    return ScanResult(len(clips), len(clips) - len(todo), scanned, failed, totals(records), summary)


def _run(jobs: dict[str, _Job], settings: ScanSettings, executor: Executor, out: Path,
         record: Callable[[dict[str, Any]], None], progress: Progress | None) -> None:
    """Submit every job's tasks (at most two per slot in flight) and finish each clip as its last task returns."""
    threads = executor.threads
    planned = sum(j.frames for j in jobs.values())
    frames_done = clips_done = 0
    queue: deque[tuple[tuple[str, str, int], Any, tuple[Any, ...]]] = deque()
    for job in jobs.values():
        if len(job.segments) == 1:
            queue.append(((job.clip.id, "whole", 0), analyze_whole, (job.clip.path, settings, threads)))
        else:
            queue.append(((job.clip.id, "prepare", 0), prepare_profile, (job.clip.path, settings, threads)))
    if progress is not None:
        progress(0, planned, 0, len(jobs))
    while queue or executor.pending():
        while queue and executor.pending() < 2 * executor.slots:
            key, fn, args = queue.popleft()
            executor.submit(key, fn, *args)
        key, value = executor.next_result()
        clip_id, stage, part = key
        job = jobs.get(clip_id)
        if job is None:  # the clip failed already: the rest of its tasks count for nothing
            continue
        if isinstance(value, TaskFailure):
            record(_failed(job.clip, value.reason))
            frames_done += job.frames - sum(len(job.segments[k]) for k in job.parts)
            del jobs[clip_id]
            clips_done += 1
        elif stage == "whole":
            record(_write_clip(out, job, value.analysis, value.note, value.thumbnails, value.stages, settings))
            frames_done += job.frames
            del jobs[clip_id]
            clips_done += 1
        elif stage == "prepare":
            job.prepared = value
            for k, indices in enumerate(job.segments):  # ahead of other clips: the clip finishes sooner
                queue.appendleft(((clip_id, "segment", k), analyze_segment,
                                  (job.clip.path, value, indices, settings, threads)))
        elif stage == "segment":
            job.parts[part] = value
            frames_done += len(job.segments[part])
            if len(job.parts) == len(job.segments):
                job.joined = join_segments([job.parts[k] for k in range(len(job.segments))])
                job.parts.clear()
                queue.appendleft(((clip_id, "finish", 0), finish_joined,
                                  (job.clip.path, settings, job.joined, threads)))
        else:  # thumbnails and stages of a joined clip
            thumbs, stages = value
            record(_write_clip(out, job, job.joined, job.prepared.note, thumbs, stages, settings))
            del jobs[clip_id]
            clips_done += 1
        if progress is not None:
            progress(frames_done, planned, clips_done, clips_done + len(jobs))


def _write_clip(out: Path, job: _Job, analysis: SceneAnalysis, note: str, thumbs: list[bytes],
                stages: StageResults | None, settings: ScanSettings) -> dict[str, Any]:
    """The clip's thumbnails and report (each atomically; with the stages' results when any ran), then its
    completion record (returned)."""
    clip = job.clip
    folder = Path("clips") / clip.slug
    report = {"video": clip.id, "camera": clip.camera, "profile_note": note,
              "wall_start": clip.wall_start.isoformat() if clip.wall_start else None,
              **analysis.to_report(settings.sensitivity)}
    if stages is not None:
        stages.add_to_report(report, analysis, settings.sensitivity)
    names = []
    for k, data in enumerate(thumbs):
        name = (folder / f"event-{k:02d}.jpg").as_posix()
        with atomic_output(out / name) as tmp:
            tmp.write_bytes(data)
        names.append(name)
    for event, name in zip(report["events"], names, strict=True):
        event["thumbnail"] = name
    atomic_write_text(out / folder / "report.json", json.dumps(report))
    return {**_base(clip), "status": "ok", "reason": "", "profile": analysis.profile_name, "profile_note": note,
            "judged": analysis.judged, "duration_s": round(job.duration_s, 3), "frames": len(analysis.frames),
            "report": (folder / "report.json").as_posix(),
            "events": [{k: e[k] for k in ("start", "end", "peak_score", "peak_time", "track_ids", "why", "thumbnail")}
                       for e in report["events"]]}


def _base(clip: ArchiveClip) -> dict[str, Any]:
    return {"id": _record_id(clip), "clip": clip.id, "camera": clip.camera, "kind": clip.kind,
            "fingerprint": clip.fingerprint, "wall_start": clip.wall_start.isoformat() if clip.wall_start else None}


def _failed(clip: ArchiveClip, reason: str) -> dict[str, Any]:
    log.warning("%s failed: %s", clip.id, reason)
    return {**_base(clip), "status": "failed", "reason": reason, "profile": None, "profile_note": "",
            "duration_s": 0.0, "frames": 0, "report": None, "events": []}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {Path(exc.filename).name}" if exc.filename else "")
    return str(exc)


def _record_id(clip: ArchiveClip) -> str:
    return f"{clip.id}@{clip.fingerprint}"


def _finished(out: Path, clips: list[ArchiveClip]) -> dict[str, dict[str, Any]]:
    """The completion records of the clips as they are now (records of changed or removed files are ignored)."""
    path = out / DONE
    if not path.exists():
        return {}
    with JsonlAppender(path):  # cuts a line torn by a killed run
        pass
    current = {_record_id(c) for c in clips}
    return {r["id"]: r for r in read_jsonl(path, required=("id", "status")) if r["id"] in current}


def _check_settings(out: Path, settings: ScanSettings) -> None:
    wanted = dataclasses.asdict(settings)
    held = read_settings(out)
    if held is None:
        atomic_write_text(out / "scan.json", json.dumps(wanted, indent=1))
    elif differ := ", ".join(f"{k} {held.get(k)!r} -> {v!r}" for k, v in wanted.items() if held.get(k) != v):
        # a setting newer than the scan (absent from scan.json) matches when it is left at its default, None
        raise ConfigError(f"{out} holds a scan made with other settings ({differ}): give another --out folder, "
                          "or the same settings to resume it")


def _remove_leftovers(out: Path) -> None:
    """Hidden temporary files of writes that a killed run did not finish (never a finished file)."""
    for leftover in (out / "clips").glob("*/.*.part*") if (out / "clips").is_dir() else ():
        leftover.unlink(missing_ok=True)
    for leftover in out.glob(".*.part*"):
        leftover.unlink(missing_ok=True)
