"""Object masks of the anomalous tracks, behind one interface: the heat-threshold outline (weight-free) or SAM2.

- ``HeatOutline`` (the default): the analysis's own heat at or above ``OUTLINE_LEVEL`` inside the track's box. It
  listens to the analysis as a HeatSink and keeps only the frames with heat that high, cropped.
- ``SAM2Masks``: the sam2 package's video predictor (its own builder and config), prompted with TAO's boxes
  (tvad_chat.stages.tao: robust filter, merge, re-prompting) and propagated forward and backward over each
  segment, so an object keeps its mask before the detector flags it and after it stops.

Masks are kept as crops around their pixels (``ObjectMask``): a full frame of booleans per track and frame would
grow with the clip. ``refine_heat`` turns a frame's heat into the mask-shaped heat the exports and the pixel metrics
read.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from tvad_chat.errors import CheckpointError
from tvad_chat.scene.analyze import SceneAnalysis
from tvad_chat.stages.loading import inference, resolve_weights, stage_device
from tvad_chat.stages.tao import Segment, TrackBox, plan_segments

log = logging.getLogger(__name__)

OUTLINE_LEVEL = 0.5  # heat at the profile's threshold: the outline of a flagged object
BOX_MARGIN = 3  # display pixels around a box that still belong to its object (the heat is blurred)
JPEG_QUALITY = 95  # frames handed to the SAM2 predictor (it reads a folder of JPEGs)
SAM2_CONFIGS = "configs/sam2.1"  # the package's configs of the SAM2.1 models

FrameReader = Callable[[list[int]], np.ndarray]  # source indices -> (T, H, W, 3) uint8 RGB frames
StepProgress = Callable[[int, int], None]  # frames done, frames planned


@dataclass
class ObjectMask:
    """One object's mask in one frame, kept as the crop around its pixels."""

    index: int  # source frame
    size: tuple[int, int]  # (width, height) of the frame
    origin: tuple[int, int]  # (x, y) of the crop's top-left corner
    crop: np.ndarray  # bool (h, w); empty when the mask is

    @classmethod
    def from_full(cls, index: int, mask: np.ndarray) -> ObjectMask:
        mask = np.asarray(mask, bool)
        size = (mask.shape[1], mask.shape[0])
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            return cls(index, size, (0, 0), np.zeros((0, 0), bool))
        x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        return cls(index, size, (int(x1), int(y1)), mask[y1:y2, x1:x2].copy())

    def full(self) -> np.ndarray:
        """The mask at frame size, bool (H, W)."""
        out = np.zeros((self.size[1], self.size[0]), bool)
        x, y = self.origin
        out[y:y + self.crop.shape[0], x:x + self.crop.shape[1]] = self.crop
        return out

    @property
    def area(self) -> int:
        return int(self.crop.sum())

    @property
    def box(self) -> tuple[int, int, int, int] | None:
        """The extremes of the mask (x1, y1, x2, y2; x2, y2 exclusive), as TAO's evaluation boxes; None if empty."""
        if self.area == 0:
            return None
        ys, xs = np.nonzero(self.crop)
        x, y = self.origin
        return x + int(xs.min()), y + int(ys.min()), x + int(xs.max()) + 1, y + int(ys.max()) + 1


TrackMasks = dict[int, dict[int, ObjectMask]]  # track id -> source index -> mask


@dataclass
class MaskRequest:
    """What a mask source may read: the analysis, its anomalous tracks and the frames."""

    analysis: SceneAnalysis
    tracks: dict[int, list[TrackBox]]  # the anomalous tracks (tvad_chat.stages.tao.anomalous_tracks)
    threshold: float  # boxes above it are anomalous
    read_frames: FrameReader
    progress: StepProgress | None = None


class MaskSource(Protocol):
    """Anything that gives the anomalous tracks' masks."""

    name: str  # says which source made the masks, in outputs

    def masks(self, request: MaskRequest) -> TrackMasks:
        """Per anomalous track, a mask at frame size for each frame it was given one."""
        ...


def box_region(xyxy: tuple[float, float, float, float], size: tuple[int, int],
               margin: int = BOX_MARGIN) -> tuple[slice, slice]:
    """Rows and columns of a box rounded outwards, widened by ``margin``, inside the frame."""
    x1, y1, x2, y2 = xyxy
    cols = slice(max(0, int(np.floor(x1)) - margin), min(size[0], int(np.ceil(x2)) + margin))
    rows = slice(max(0, int(np.floor(y1)) - margin), min(size[1], int(np.ceil(y2)) + margin))
    return rows, cols


class HeatOutline:
    """The weight-free masks: the analysis's heat at or above OUTLINE_LEVEL inside each box of the track.

    Pass ``sink`` as the analysis's heat sink; ``masks`` then reads what it kept.
    """

    name = "heat outline"

    def __init__(self, level: float = OUTLINE_LEVEL) -> None:
        self.level = level
        self._outlines: dict[int, ObjectMask] = {}  # source index -> the frame's heat >= level

    def sink(self, index: int, heat: np.ndarray) -> None:
        hot = np.asarray(heat) >= self.level
        if hot.any():
            self._outlines[int(index)] = ObjectMask.from_full(int(index), hot)

    def masks(self, request: MaskRequest) -> TrackMasks:
        width, height = request.analysis.size
        out: TrackMasks = {}
        for track_id, boxes in request.tracks.items():
            per_frame = out.setdefault(track_id, {})
            for b in boxes:
                mask = np.zeros((height, width), bool)
                outline = self._outlines.get(b.index)
                if outline is not None:
                    rows, cols = box_region(b.xyxy, (width, height))
                    mask[rows, cols] = outline.full()[rows, cols]
                per_frame[b.index] = ObjectMask.from_full(b.index, mask)
        return out


def sam2_config(checkpoint: Path) -> str:
    """The package's config of a published SAM2 checkpoint, from its file name (sam2.1_hiera_tiny.pt, ...)."""
    from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES

    by_file = {name: config for config, name in HF_MODEL_ID_TO_FILENAMES.values()}
    if checkpoint.name not in by_file:
        raise CheckpointError(f"SAM2 masks: cannot tell which SAM2 model {checkpoint.name} is; keep the published "
                              f"file name ({', '.join(sorted(by_file))})")
    return by_file[checkpoint.name]


def find_sam2_checkpoint(spec: str) -> Path:
    """The SAM2 checkpoint file of ``spec``: a .pt file, a folder holding one published checkpoint, or the hub id
    of a published model (facebook/sam2.1-hiera-tiny, ...)."""
    from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES

    spec = str(spec).strip()
    published = {name for _, name in HF_MODEL_ID_TO_FILENAMES.values()}
    if spec in HF_MODEL_ID_TO_FILENAMES and not Path(spec).exists():
        name = HF_MODEL_ID_TO_FILENAMES[spec][1]
        path = resolve_weights(spec, "SAM2 masks", "--sam2", (name,), fetch=name).path / name
        if not path.is_file():
            raise CheckpointError(f"SAM2 masks: {spec!r} has no {name}; give --sam2 a local checkpoint file")
        return path
    if not Path(spec).expanduser().exists():
        raise CheckpointError(f"SAM2 masks: {spec} is neither a checkpoint file or folder here nor a published "
                              f"SAM2 model ({', '.join(HF_MODEL_ID_TO_FILENAMES)})")
    path = resolve_weights(spec, "SAM2 masks", "--sam2", ()).path
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.name in published)
        if len(found) != 1:
            raise CheckpointError(f"SAM2 masks: {path} holds {len(found)} published SAM2 checkpoints "
                                  f"({', '.join(p.name for p in found) or 'none'}); give --sam2 the file itself")
        return found[0]
    return path


def build_sam2_predictor(config: str, checkpoint: Path | None, device: str | None = None,
                         image_size: int | None = None):
    """The sam2 package's video predictor from its own ``config`` (e.g. configs/sam2.1/sam2.1_hiera_t.yaml) and a
    checkpoint (None: random weights); ``image_size`` overrides the config's input size (tests, benchmarks)."""
    from sam2.build_sam import build_sam2_video_predictor

    overrides = [] if image_size is None else [f"++model.image_size={int(image_size)}"]
    try:
        predictor = build_sam2_video_predictor(config, str(checkpoint) if checkpoint else None,
                                               device=str(stage_device(device)), hydra_overrides_extra=overrides)
    except (RuntimeError, KeyError) as exc:
        why = str(exc) or "missing or unexpected weights"
        raise CheckpointError(f"SAM2 masks: {checkpoint} does not fit the model of {config} ({why}); give --sam2 an "
                              "unmodified published checkpoint") from None
    if importlib.util.find_spec("sam2._C") is None:  # without the optional CUDA op that fills small holes
        predictor.fill_hole_area = 0
    return predictor


class SAM2Masks:
    """SAM2 video masks of the anomalous tracks: TAO's prompts, propagated forward and backward per segment."""

    name = "SAM2"

    def __init__(self, predictor, source: str = "random weights") -> None:
        self.predictor = predictor
        self.source = source  # the checkpoint, for outputs
        self.device = stage_device(str(predictor.device))

    @classmethod
    def load(cls, spec: str, device: str | None = None) -> SAM2Masks:
        """From a hub id or a local checkpoint (CheckpointError when missing, with how to provide it)."""
        checkpoint = find_sam2_checkpoint(spec)
        return cls(build_sam2_predictor(sam2_config(checkpoint), checkpoint, device), spec)

    def masks(self, request: MaskRequest) -> TrackMasks:
        segments = plan_segments(request.tracks, request.threshold)
        total = sum(len(s.positions) for s in segments)
        out: TrackMasks = {}
        done = 0
        for segment in segments:
            for track_id, per_frame in self._segment(request, segment).items():
                out.setdefault(track_id, {}).update(per_frame)
            done += len(segment.positions)
            if request.progress is not None:
                request.progress(done, total)
        return out

    def _segment(self, request: MaskRequest, segment: Segment) -> TrackMasks:
        indices = [request.analysis.frames[p].index for p in segment.positions]
        frames = request.read_frames(indices)
        first = segment.positions[0]
        out: TrackMasks = {}
        with tempfile.TemporaryDirectory(prefix="tvad-sam2-") as folder:
            for k, frame in enumerate(frames):
                cv2.imwrite(str(Path(folder) / f"{k}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            with inference(self.device, bf16_on_cpu=True):
                state = self.predictor.init_state(folder, offload_video_to_cpu=True)
                for prompt in segment.prompts:
                    self.predictor.add_new_points_or_box(state, prompt.position - first, prompt.object_id,
                                                         box=list(prompt.xyxy))
                start = min(p.position for p in segment.prompts) - first
                for reverse in (False, True):
                    for k, object_ids, logits in self.predictor.propagate_in_video(state, start_frame_idx=start,
                                                                                   reverse=reverse):
                        masks = (logits[:, 0] > 0).cpu().numpy()
                        for object_id, mask in zip(object_ids, masks, strict=True):
                            out.setdefault(int(object_id), {})[indices[k]] = ObjectMask.from_full(indices[k], mask)
                self.predictor.reset_state(state)
        return out


def refine_heat(heat: np.ndarray, masks: list[tuple[ObjectMask, tuple[float, float, float, float] | None, float]]
                ) -> np.ndarray:
    """A frame's heat with the masks as the outline. Each item is (mask, the track's box in this frame or None,
    heat value): a mask's pixels get at least its value; inside the boxes, pixels on no mask get 0 (the mask says
    where the object is, not the blurred foreground); elsewhere the heat stays (the propagation may reach beyond
    the detector's box, and other objects keep theirs)."""
    out = np.array(heat, np.float32, copy=True)
    painted = np.zeros_like(out)
    on_mask = np.zeros(out.shape, bool)
    in_box = np.zeros(out.shape, bool)
    for mask, xyxy, value in masks:
        full = mask.full()
        painted[full] = np.maximum(painted[full], value)
        on_mask |= full
        if xyxy is not None:
            rows, cols = box_region(xyxy, mask.size)
            in_box[rows, cols] = True
    return np.where(on_mask, np.maximum(out, painted), np.where(in_box, np.float32(0.0), out))
