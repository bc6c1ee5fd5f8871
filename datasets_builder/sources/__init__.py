"""The dataset-reader layer: SynthCampus, UCSD Ped2, CUHK Avenue, and plain folders of video files and
frame folders -> one record type, :class:`VideoRecord`. The corpus builder, training, evaluation and the
tests read datasets through here; frames and masks are read by tvad_chat.video (one frame-folder reader,
one mask threshold).

``VideoRecord`` fields
    video_id      clip name inside the dataset ("train_000003", "01", "08")
    dataset       "synthcampus" | "ped2" | "avenue" | "folder"
    split         the dataset split the clip belongs to
    frames_dir    folder of frame images (Ped2, SynthCampus --format frames), else None
    video_path    video file (Avenue .avi, SynthCampus mp4), else None
    num_frames    frames in the clip
    fps           frame rate (Ped2 has none officially: 10 is used)
    size          (width, height)
    frame_labels  np.int8 per frame (1 = the frame holds an anomaly), None when unlabelled (training clips)
    mask_dir      folder of per-frame anomaly masks, None when the clip has none
    tracks        list[Track] with identities (SynthCampus), None where the annotation has none
    event         the anomaly event type (SynthCampus), None otherwise
    trajectories  per-track structured trajectory records (SynthCampus), None otherwise
    meta          anything else of the source (scene, attributes of the annotation ...)

Methods: ``load_frames(indices) -> uint8 (N, H, W, 3) RGB``, ``load_mask(i) -> bool (H, W) | None``,
``objects(i) -> list[GTObject]`` (what the ground-truth extraction backend needs; for Ped2/Avenue the
mask's connected regions, category "object", no track id), ``boxes(i)`` and ``load_ids(i)`` (SynthCampus
instance-id map).

Readers: :func:`read_synthcampus`, :func:`read_ped2`, :func:`read_avenue`, :func:`read_folder`, and
:func:`read_dataset` by name. Missing or malformed folders raise :class:`tvad_chat.errors.DataError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datasets_builder.extract import GTObject
from tvad_chat.errors import DataError, VideoError
from tvad_chat.video import DEFAULT_FOLDER_FPS, frame_files, load_clip, natural_key, probe, read_mask

Box = tuple[float, float, float, float]
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".ts")
# the shared benchmark data beside the checkout, or TVAD_SHARED_DATA
_SHARED = Path(os.environ.get("TVAD_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
DEFAULT_ROOTS = {"ped2": _SHARED / "ucsd_ped2", "avenue": _SHARED / "cuhk_avenue"}


@dataclass
class Track:
    """One annotated object over time."""

    track_id: str
    category: str
    attributes: dict[str, str] = field(default_factory=dict)
    anomalous: bool = False  # anomalous in at least one frame
    boxes: dict[int, Box] = field(default_factory=dict)  # frame index -> visible box (x1, y1, x2, y2)
    anomalous_frames: set[int] = field(default_factory=set)
    actions: dict[int, str] = field(default_factory=dict)  # frame index -> what it does ("running"...)
    frame_attributes: dict[int, dict[str, str]] = field(default_factory=dict)  # frames where the look changes
    behaviour: str | None = None
    trajectory: dict[str, Any] | None = None


def _by_name(p: Path) -> list:
    return natural_key(p.name)


def mask_boxes(mask: np.ndarray, min_area: int = 20, join_px: int = 4) -> list[Box]:
    """Boxes of a mask's connected regions; parts closer than ``join_px`` are one region (rider + bicycle)."""
    import cv2

    m = (mask > 0).astype(np.uint8)
    joined = cv2.dilate(m, np.ones((2 * join_px + 1, 2 * join_px + 1), np.uint8)) if join_px else m
    n, labels = cv2.connectedComponents(joined, connectivity=8)
    boxes = []
    for k in range(1, n):
        ys, xs = np.nonzero((labels == k) & (m > 0))
        if len(xs) >= min_area:
            boxes.append((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))
    return boxes


@dataclass
class VideoRecord:
    video_id: str
    dataset: str
    split: str
    frames_dir: Path | None
    video_path: Path | None
    num_frames: int
    fps: float
    size: tuple[int, int]
    frame_labels: np.ndarray | None
    mask_dir: Path | None = None
    tracks: list[Track] | None = None
    event: str | None = None
    trajectories: list[dict[str, Any]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    _mask_files: list[Path] | None = field(default=None, repr=False)

    @property
    def source(self) -> Path:
        """The frame folder or video file (what tvad_chat.video.load_clip takes)."""
        src = self.frames_dir or self.video_path
        assert src is not None
        return src

    @property
    def has_masks(self) -> bool:
        return self.mask_dir is not None

    # -- frames
    def load_frames(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """RGB uint8 (N, H, W, 3) for the given 0-based frame indices (all frames when None)."""
        idx = list(range(self.num_frames)) if indices is None else [int(i) for i in indices]
        for i in idx:
            if not 0 <= i < self.num_frames:
                raise DataError(f"{self.video_id}: frame {i} out of range (0..{self.num_frames - 1})")
        if not idx:
            return np.zeros((0, self.size[1], self.size[0], 3), np.uint8)
        return load_clip(self.source, num_frames=None, folder_fps=self.fps, frame_indices=idx).frames

    # -- masks and objects
    def load_mask(self, i: int) -> np.ndarray | None:
        """Boolean anomaly mask (H, W) of frame i, or None when the clip has no masks."""
        if self.mask_dir is None:
            return None
        if self._mask_files is None:
            self._mask_files = frame_files(self.mask_dir)
        if not 0 <= i < len(self._mask_files):
            raise DataError(f"{self.mask_dir}: no mask for frame {i} ({len(self._mask_files)} masks)")
        return read_mask(self._mask_files[i])

    def objects(self, i: int) -> list[GTObject]:
        """Annotated objects of frame i (tracks where present, else the mask's connected regions)."""
        if self.tracks is not None:
            return [GTObject(track_id=t.track_id, category=t.category, box=t.boxes[i],
                             attributes=_extract_attributes(t, i), anomalous=i in t.anomalous_frames)
                    for t in self.tracks if i in t.boxes]
        m = self.load_mask(i)
        if m is None:
            return []
        return [GTObject(track_id=None, category="object", box=b, anomalous=True) for b in mask_boxes(m)]

    def boxes(self, i: int) -> list[Box]:
        return [o.box for o in self.objects(i)]

    def load_ids(self, i: int) -> np.ndarray | None:
        """Instance-id map (uint16) of frame i (SynthCampus), else None."""
        ids_dir = self.meta.get("ids_dir")
        if not ids_dir:
            return None
        import cv2

        m = cv2.imread(str(Path(ids_dir) / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        if m is None:
            raise DataError(f"{ids_dir}: no instance-id map for frame {i}")
        return m


def _extract_attributes(t: Track, i: int) -> dict[str, str]:
    """The track's attributes under the extraction keys, with the frame's action."""
    keys = ("upper_color", "lower_color", "color", "size", "carrying", "hat")
    out = {k: v for k, v in t.frame_attributes.get(i, t.attributes).items() if k in keys}
    if i in t.actions:
        out["action"] = t.actions[i]
    return out


# --------------------------------------------------------------------------- SynthCampus


def read_synthcampus(root: str | Path, split: str = "train") -> list[VideoRecord]:
    """Clips written by ``tvad synth`` under ``root/split`` (or ``root`` itself when it is a split folder)."""
    root = Path(root)
    base = root / split if (root / split).is_dir() else root
    if not base.is_dir():
        raise DataError(f"{base}: no SynthCampus split folder; generate one with `tvad synth --out {root} "
                        f"--split {split} --clips N`")
    folders = sorted(p for p in base.iterdir() if (p / "annotation.json").is_file())
    if not folders:
        raise DataError(f"{base}: no SynthCampus clips (folders with annotation.json)")
    return [read_synthcampus_clip(f) for f in folders]


def read_synthcampus_clip(folder: str | Path) -> VideoRecord:
    folder = Path(folder)
    path = folder / "annotation.json"
    try:
        ann = json.loads(path.read_text(encoding="utf-8"))
        T = int(ann["num_frames"])
        labels = np.asarray(ann["frame_labels"], np.int8)
        video = folder / ann["video"]
        size = (int(ann["width"]), int(ann["height"]))
        objs = ann["objects"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: missing or malformed SynthCampus annotation ({err})") from None
    if len(labels) != T:
        raise DataError(f"{path}: {len(labels)} frame labels for {T} frames")
    if not video.exists():
        raise DataError(f"{video}: the clip's video or frame folder is missing")
    tracks = []
    for o in objs:
        boxes = {int(k): tuple(float(v) for v in b) for k, b in o["boxes"].items()}
        # per-frame flags and actions come from the frame table (an interval may have gaps: jaywalking)
        mine = [(fr["index"], ob) for fr in ann["frames"] for ob in fr["objects"] if ob["track_id"] == o["track_id"]]
        anom_frames = {i for i, ob in mine if ob["anomalous"]}
        actions = {i: ob["action"] for i, ob in mine if ob.get("action")}
        frame_attrs = {i: dict(ob["attributes"]) for i, ob in mine if "attributes" in ob}
        tracks.append(Track(track_id=str(o["track_id"]), category=o["category"], attributes=dict(o["attributes"]),
                            anomalous=bool(o["anomalous"]), boxes=boxes, anomalous_frames=anom_frames, actions=actions,
                            frame_attributes=frame_attrs,
                            behaviour=o.get("behaviour"), trajectory=o.get("trajectory")))
    trajectories = [dict(t.trajectory, track_id=t.track_id, behaviour=t.behaviour, category=t.category,
                         anomalous=t.anomalous) for t in tracks if t.trajectory]
    mask_dir = folder / ann.get("mask_dir", "masks")
    ids_dir = folder / ann.get("ids_dir", "ids")
    return VideoRecord(
        video_id=ann["video_id"], dataset="synthcampus", split=ann["split"],
        frames_dir=video if video.is_dir() else None, video_path=video if video.is_file() else None,
        num_frames=T, fps=float(ann["fps"]), size=size, frame_labels=labels,
        mask_dir=mask_dir if mask_dir.is_dir() else None, tracks=tracks, event=ann.get("event"),
        trajectories=trajectories,
        meta={"scene": ann.get("scene"), "event_frames": ann.get("event_frames"),
              "event_description": ann.get("event_description"), "lighting": ann.get("lighting"),
              "effects": ann.get("effects"), "ids_dir": str(ids_dir) if ids_dir.is_dir() else None,
              "annotation": str(path)},
    )


# --------------------------------------------------------------------------- UCSD Ped2 / CUHK Avenue


def _labels(root: Path, vid: str, split: str, n: int) -> np.ndarray | None:
    if split != "test":
        return np.zeros(n, np.int8)  # training footage is normal only
    path = root / "testing" / "frame_labels.json"
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: missing or malformed frame labels ({err})") from None
    if vid not in table:
        return None
    lab = np.asarray(table[vid], np.int8)
    if len(lab) != n:
        raise DataError(f"{path}: clip {vid} has {len(lab)} labels for {n} frames")
    return lab


def _check_split(split: str, name: str) -> None:
    if split not in ("train", "test"):
        raise DataError(f"{name} has the splits train and test (got {split!r})")


# UCSD Ped2 ships frames without timing; the UCSD pedestrian footage was captured at 10 fps. Every reader
# of Ped2 (these records, the corpus builder) uses this one value so "when" answers mean the same seconds.
PED2_FPS = 10.0


def _probed(source: Path, dataset: str, split: str, folder_fps: float | None = None) -> VideoRecord:
    """A record of a video file or frame folder with the frame count, rate and size it probes to."""
    try:
        info = probe(source, folder_fps=folder_fps)
    except VideoError as err:
        raise DataError(f"{source}: unreadable {dataset} clip ({err})") from None
    folder = source.is_dir()
    return VideoRecord(video_id=source.name if folder else source.stem, dataset=dataset, split=split,
                       frames_dir=source if folder else None, video_path=None if folder else source,
                       num_frames=int(info.num_frames), fps=float(info.fps), size=(int(info.width), int(info.height)),
                       frame_labels=None)


def _add_masks(rec: VideoRecord, root: Path) -> VideoRecord:
    """Test clips of Ped2/Avenue: the per-frame masks under root/testing/masks/<clip> and the frame labels."""
    mask_dir = root / "testing" / "masks" / rec.video_id if rec.split == "test" else None
    if mask_dir is not None and mask_dir.is_dir():
        rec.mask_dir = mask_dir
        rec._mask_files = frame_files(mask_dir)
        n_masks = len(rec._mask_files)
        if n_masks != rec.num_frames:
            if rec.frames_dir is not None:
                raise DataError(f"{mask_dir}: {n_masks} masks for {rec.num_frames} frames")
            # container frame counts can be estimates: the masks are the per-frame annotation
            rec.num_frames = n_masks
    rec.frame_labels = _labels(root, rec.video_id, rec.split, rec.num_frames)
    return rec


def read_ped2(root: str | Path | None = None, split: str = "test") -> list[VideoRecord]:
    """UCSD Ped2 as laid out in shared/data: {training,testing}/frames/NN/NNN.jpg, testing/masks/NN/NNN.png."""
    _check_split(split, "UCSD Ped2")
    root = Path(root) if root else DEFAULT_ROOTS["ped2"]
    base = root / ("testing" if split == "test" else "training") / "frames"
    if not base.is_dir():
        raise DataError(f"{base}: no UCSD Ped2 frames here; pass the dataset root (holding training/ and testing/)")
    out = [_add_masks(_probed(d, "ped2", split, PED2_FPS), root)
           for d in sorted((p for p in base.iterdir() if p.is_dir()), key=_by_name)]
    if not out:
        raise DataError(f"{base}: no clip folders")
    return out


def read_avenue(root: str | Path | None = None, split: str = "test") -> list[VideoRecord]:
    """CUHK Avenue as laid out in shared/data: {training,testing}_videos/NN.avi, testing/masks/NN/NNNN.png."""
    _check_split(split, "CUHK Avenue")
    root = Path(root) if root else DEFAULT_ROOTS["avenue"]
    base = root / ("testing_videos" if split == "test" else "training_videos")
    if not base.is_dir():
        raise DataError(f"{base}: no CUHK Avenue videos here; pass the dataset root (holding testing_videos/)")
    out = [_add_masks(_probed(v, "avenue", split), root) for v in sorted(base.glob("*.avi"), key=_by_name)]
    if not out:
        raise DataError(f"{base}: no .avi videos")
    return out


def read_folder(root: str | Path, split: str = "test") -> list[VideoRecord]:
    """Every video file and frame folder directly under ``root``, unannotated (frame folders at
    tvad_chat.video.DEFAULT_FOLDER_FPS)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; pass a folder of videos or frame folders")
    entries = [p for p in sorted(root.iterdir(), key=_by_name)
               if (p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS) or (p.is_dir() and frame_files(p))]
    if not entries:
        raise DataError(f"{root}: no video files or frame folders found")
    return [_probed(p, "folder", split, DEFAULT_FOLDER_FPS) for p in entries]


def read_dataset(name: str, root: str | Path | None = None, split: str = "test") -> list[VideoRecord]:
    """Any of the readers by name: synth | synthcampus | ped2 | avenue | folder."""
    if name in ("synth", "synthcampus", "folder") and root is None:
        raise DataError(f"{name} needs a folder (SynthCampus: the one written by `tvad synth --out DIR`)")
    if name in ("synth", "synthcampus"):
        return read_synthcampus(root, split)
    if name == "ped2":
        return read_ped2(root, split)
    if name == "avenue":
        return read_avenue(root, split)
    if name == "folder":
        return read_folder(root, split)
    raise DataError(f"unknown dataset {name!r}; choose synthcampus, ped2, avenue or folder")


__all__ = ["Track", "VideoRecord", "mask_boxes", "read_avenue", "read_dataset", "read_folder", "read_ped2",
           "read_synthcampus", "read_synthcampus_clip"]
