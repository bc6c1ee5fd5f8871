"""Write SynthCampus clips to disk and generate whole splits (parallel, resumable).

Layout under the output folder::

    dataset.json                      format, seed, size, frames, fps, split table (rewritten per run)
    <split>/<video_id>/annotation.json   the clip's annotation (generate.py documents the fields)
    <split>/<video_id>/video.mp4         H.264 (format mp4), or frames/000000.png ... (format frames)
    <split>/<video_id>/masks/000000.png  anomaly mask per frame, 8-bit 0/255
    <split>/<video_id>/ids/000000.png    instance-id map per frame, 16-bit (0 = background)

A clip folder is complete when annotation.json exists (written last, atomically): reruns skip it.
Frames PNGs, masks, ids and annotation JSON are byte-identical for the same seed; the mp4 is encoded
single-threaded with fixed x264 options, which makes its decoded frames identical too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from datasets_builder.synth.generate import FORMAT, ClipConfig, SynthClip, generate_clip
from datasets_builder.synth.splits import SPLITS, check_split
from tvad_chat.errors import ConfigError
from tvad_chat.files import atomic_output, atomic_write_text

log = logging.getLogger(__name__)

ANNOTATION = "annotation.json"


def _write_mp4(frames: np.ndarray, path: Path, fps: float) -> None:
    import av

    with atomic_output(path) as tmp, av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast", "threads": "1"}
        stream.thread_count = 1
        container.metadata["comment"] = "SynthCampus"
        for f in frames:
            for pkt in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(pkt)
        for pkt in stream.encode():
            container.mux(pkt)


def write_clip(clip: SynthClip, folder: Path, fmt: str = "mp4") -> Path:
    """Write one clip into ``folder`` (created); returns the annotation path."""
    if fmt not in ("mp4", "frames"):
        raise ConfigError(f"--format must be mp4 or frames (got {fmt!r})")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    (folder / "ids").mkdir(exist_ok=True)
    T = clip.frames.shape[0]
    png = [cv2.IMWRITE_PNG_COMPRESSION, 3]
    for t in range(T):
        cv2.imwrite(str(folder / "masks" / f"{t:06d}.png"), clip.masks[t], png)
        cv2.imwrite(str(folder / "ids" / f"{t:06d}.png"), clip.ids[t], png)
    ann = dict(clip.annotation)
    if fmt == "frames":
        (folder / "frames").mkdir(exist_ok=True)
        for t in range(T):
            cv2.imwrite(str(folder / "frames" / f"{t:06d}.png"), clip.frames[t][..., ::-1], png)
        ann["video"] = "frames"
    else:
        _write_mp4(clip.frames, folder / "video.mp4", ann["fps"])
        ann["video"] = "video.mp4"
    ann["mask_dir"] = "masks"
    ann["ids_dir"] = "ids"
    path = folder / ANNOTATION
    atomic_write_text(path, json.dumps(ann, sort_keys=True, separators=(",", ":")))
    return path


def _job(args: tuple[int, str, int, dict, str, str]) -> str:
    seed, split, index, cfg, out, fmt = args
    clip = generate_clip(seed, split, index, ClipConfig(**cfg))
    folder = Path(out) / split / clip.annotation["video_id"]
    write_clip(clip, folder, fmt)
    return clip.annotation["video_id"]


def generate_split(out: str | Path, split: str, clips: int, seed: int = 0, cfg: ClipConfig | None = None,
                   fmt: str = "mp4", workers: int = 1, start: int = 0,
                   progress: Callable[[Iterable], Iterable] | None = None) -> list[str]:
    """Generate clips ``start .. start+clips-1`` of ``split`` under ``out``; returns the video ids written."""
    check_split(split)
    if clips < 0 or workers < 1:
        raise ConfigError("--clips must be >= 0 and --workers >= 1")
    cfg = cfg or ClipConfig()
    if cfg.width % 2 or cfg.height % 2 or cfg.width < 64 or cfg.height < 64:
        raise ConfigError(f"--size must be even and at least 64x64 (got {cfg.width}x{cfg.height})")
    if cfg.frames < 2:
        raise ConfigError("--frames must be >= 2")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "seed": seed, "width": cfg.width, "height": cfg.height, "frames": cfg.frames,
            "fps": cfg.fps, "splits": {k: list(v) for k, v in SPLITS.items()}}
    old_path = root / "dataset.json"
    if old_path.exists():
        # finished clips are skipped on a rerun: they must come from the same settings
        try:
            old = json.loads(old_path.read_text(encoding="utf-8"))
        except ValueError:
            old = {}
        diff = [k for k in ("seed", "width", "height", "frames", "fps") if k in old and old[k] != meta[k]]
        if diff:
            raise ConfigError(f"{root} holds clips made with other settings ({', '.join(f'{k}={old[k]}' for k in diff)}); "
                              "use another --out folder or the same settings")
    atomic_write_text(old_path, json.dumps(meta, indent=1, sort_keys=True))
    todo = [i for i in range(start, start + clips)
            if not (root / split / f"{split}_{i:06d}" / ANNOTATION).exists()]
    jobs = [(seed, split, i, asdict(cfg), str(root), fmt) for i in todo]
    done: list[str] = []
    wrap = progress or (lambda it: it)
    if workers == 1 or len(jobs) <= 1:
        for vid in wrap(map(_job, jobs)):
            done.append(vid)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for vid in wrap(pool.map(_job, jobs, chunksize=1)):
                done.append(vid)
    log.info("%s: wrote %d clips (%d already there)", split, len(done), clips - len(todo))
    return done
