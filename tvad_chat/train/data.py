"""Training data from a corpus folder (sft.jsonl, DESIGN.md section 4): samples, clip frames, patch-grid masks.

Frames are read once per (video, frame indices) and kept in memory at model size; stages 1 and 2 also cache the
frozen backbone's vision pass per clip, so an epoch after the first costs only the heads and the language model.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from tvad_chat.errors import DataError
from tvad_chat.video import (
    DEFAULT_FOLDER_FPS,
    frame_files,
    load_clip,
    read_mask,
    resize_for_model,
    sampled_fps,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

@dataclass
class Sample:
    """One SFT line of the corpus."""

    id: str
    video: str
    frame_indices: list[int]
    fps: float
    conversation: list[dict[str, str]]
    meta: dict[str, Any] = field(default_factory=dict)
    mask_dir: str | None = None
    video_id: str = ""

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind", ""))

    @property
    def split(self) -> str:
        return str(self.meta.get("split", ""))

    @property
    def clip_key(self) -> tuple[str, tuple[int, ...]]:
        return (self.video, tuple(self.frame_indices))

    @property
    def anomalous_video(self) -> bool | None:
        v = self.meta.get("anomalous_video")
        return None if v is None else bool(v)


def sft_path(corpus: str | Path) -> Path:
    p = Path(corpus)
    if p.is_dir():
        p = p / "sft.jsonl"
    if not p.is_file():
        raise DataError(f"{p}: no SFT corpus here; build one with `tvad build-corpus` (or `make tiny`)")
    return p


def load_samples(corpus: str | Path, split: str | None = None, kinds: Iterable[str] | None = None,
                 anomaly_focused: bool | None = None, limit: int | None = None) -> list[Sample]:
    """SFT samples of ``split`` (None: all), optionally of some kinds or only the anomaly-focused subset."""
    from tvad_chat.files import read_jsonl

    path = sft_path(corpus)
    root = path.parent
    kinds = set(kinds) if kinds is not None else None
    out: list[Sample] = []
    for rec in read_jsonl(path):
        meta = dict(rec.get("meta") or {})
        if split is not None and meta.get("split") != split:
            continue
        if kinds is not None and meta.get("kind") not in kinds:
            continue
        if anomaly_focused is not None and bool(meta.get("anomaly_focused")) != anomaly_focused:
            continue
        try:
            video = _resolve(root, rec["video"])
            sample = Sample(
                id=str(rec["id"]), video=video, frame_indices=[int(i) for i in rec["frame_indices"]],
                fps=float(rec.get("fps") or DEFAULT_FOLDER_FPS), conversation=list(rec["conversation"]), meta=meta,
                mask_dir=_resolve(root, rec["mask_dir"]) if rec.get("mask_dir") else None,
                video_id=str(rec.get("video_id") or meta.get("video_id") or rec["video"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: sample {rec.get('id')!r} is malformed ({exc}); rebuild the corpus") from exc
        out.append(sample)
        if limit is not None and len(out) >= limit:
            break
    return out


def _resolve(root: Path, p: str) -> str:
    path = Path(p)
    if not path.is_absolute() and not path.exists() and (root / path).exists():
        path = root / path
    return str(path)


def unique_clips(samples: Sequence[Sample]) -> list[Sample]:
    """First sample of every distinct (video, frame indices) pair, in order."""
    seen: set = set()
    out = []
    for s in samples:
        if s.clip_key not in seen:
            seen.add(s.clip_key)
            out.append(s)
    return out


def read_masks(mask_dir: str | Path | None, indices: Sequence[int], size: tuple[int, int]) -> np.ndarray:
    """Boolean (N, H, W) anomaly masks of frames ``indices`` (one image per frame, natural order; all-zero when absent).

    A mask file is matched by the number in its name when the folder does not hold one file per frame.
    """
    h, w = size
    out = np.zeros((len(indices), h, w), dtype=bool)
    if mask_dir is None:
        return out
    folder = Path(mask_dir)
    if not folder.is_dir():
        raise DataError(f"{folder}: mask folder not found; rebuild the corpus or fix mask_dir")
    files = frame_files(folder)
    by_number: dict[int, Path] = {}
    for f in files:
        digits = re.findall(r"\d+", f.stem)
        if digits:
            by_number[int(digits[-1])] = f
    for n, fi in enumerate(indices):
        f = files[fi] if fi < len(files) else by_number.get(fi)
        if f is None:
            continue
        out[n] = read_mask(f, (w, h))
    return out


@dataclass
class ClipData:
    """Model-size frames (and masks) of one sample's clip."""

    frames: np.ndarray  # uint8 (T, H, W, 3), sides multiples of 28
    fps: float
    masks: np.ndarray  # bool (T, H, W) at model size
    has_masks: bool


class PerClip(Generic[T]):
    """A value computed once per clip (samples with the same video and frame indices share it), kept in memory."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, tuple[int, ...]], T] = {}

    def get(self, sample: Sample) -> T:
        if sample.clip_key not in self._items:
            self._items[sample.clip_key] = self.compute(sample)
        return self._items[sample.clip_key]

    def compute(self, sample: Sample) -> T:
        raise NotImplementedError

    def clear(self) -> None:
        self._items.clear()


class ClipStore(PerClip[ClipData]):
    """Reads and resizes each clip once."""

    def __init__(self, max_pixels: int = 112 * 168, min_pixels: int = 56 * 56):
        super().__init__()
        self.max_pixels = max_pixels
        self.min_pixels = min_pixels

    def compute(self, sample: Sample) -> ClipData:
        frames = load_clip(sample.video, num_frames=None, folder_fps=sample.fps,
                           frame_indices=sample.frame_indices).frames
        if len(frames) % 2:  # one temporal patch = two frames
            frames = np.concatenate([frames, frames[-1:]], 0)
        small = resize_for_model(frames, max_pixels=self.max_pixels, min_pixels=self.min_pixels)
        masks = read_masks(sample.mask_dir, sample.frame_indices, small.shape[1:3])
        if len(masks) < len(small):
            masks = np.concatenate([masks, masks[-1:]], 0)
        fps = sample.fps if sample.fps > 0 else DEFAULT_FOLDER_FPS
        times = np.asarray(sample.frame_indices, dtype=np.float64) / fps
        return ClipData(frames=small, fps=sampled_fps(times, fps), masks=masks, has_masks=sample.mask_dir is not None)

