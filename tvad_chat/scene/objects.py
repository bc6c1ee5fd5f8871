"""Candidate objects in one frame of a fixed camera: background model + dense optical flow.

Per frame, on a grey working copy no wider than ``work_width`` pixels:

- motion: OpenCV's DIS optical flow between the previous and this frame (preset MEDIUM: it beat FAST
  clearly on Ped2 in the prototype, at about 13 ms a frame for 360x240 on 2 threads), computed backwards
  (this frame to the previous) and negated, so that every vector sits on this frame's pixel: forward flow
  marks where a fast object was one frame ago, and boxes of fast objects trailed behind them;
- foreground: pixels that differ from the background image by more than ``diff_threshold`` grey levels,
  and pixels within two pixels of those that move faster than ``flow_threshold`` pixels a frame (DIS smears
  a fast object's flow several pixels onto the still background around it: counted, that halo made boxes
  too large and joined fast objects to their neighbours); closed and opened with a small ellipse, then
  closed with a thin vertical bar so that a person's parts form one object;
- objects: 8-connected components of the foreground larger than ``min_area`` working pixels, each with
  its box (working pixels), its pixel mask inside the box and the flow vectors on its pixels;
- background: starts from the profile's background image (or the first frame) and follows slow
  changes (light, parked things) with a running average over pixels that are not foreground.

Flow near the image border is unreliable (DIS extrapolates), so a ``border`` frame of pixels never
counts as moving.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from tvad_chat.errors import ConfigError


@dataclass
class ObjectConfig:
    work_width: int = 360  # frames wider than this are downscaled (aspect kept) before any measure
    diff_threshold: float = 22.0  # grey levels from the background that make a pixel foreground
    flow_threshold: float = 0.8  # pixels per frame (working scale) that make a pixel foreground
    min_area: int = 40  # working pixels; smaller components are noise
    background_rate: float = 0.02  # running-average rate of the background on non-foreground pixels
    border: int = 3  # working pixels at the image border where flow is not trusted
    join_height: int = 11  # working pixels: vertical gaps this small are closed (head, body and legs of one
    # person often separate where clothes match the background)

    def __post_init__(self) -> None:
        if self.work_width < 64:
            raise ConfigError(f"work_width must be at least 64 pixels, got {self.work_width}")


@dataclass
class SceneObject:
    """One candidate object in one frame, in working pixels."""

    box: tuple[int, int, int, int]  # x1, y1, x2, y2 (x2, y2 exclusive)
    mask: np.ndarray  # bool (y2 - y1, x2 - x1): the object's pixels inside its box
    flow: np.ndarray  # float32 (N, 2): flow vectors (pixels per frame) on the object's pixels

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def work_size(width: int, height: int, work_width: int) -> tuple[int, int]:
    """(width, height) of the working copy of a frame."""
    if width <= work_width:
        return width, height
    return work_width, max(16, int(round(height * work_width / width)))


def to_work_grey(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 frame -> grey uint8 at the working size."""
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
    if (grey.shape[1], grey.shape[0]) != size:
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return grey


class ObjectFinder:
    """Finds moving or new objects frame by frame; keeps only the previous frame and the background."""

    def __init__(self, config: ObjectConfig | None = None, background: np.ndarray | None = None) -> None:
        self.config = config or ObjectConfig()
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        self._join = cv2.getStructuringElement(cv2.MORPH_RECT, (3, self.config.join_height))
        self._near = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        self._background = None if background is None else np.asarray(background, np.float32)
        self._previous: np.ndarray | None = None
        self.flow: np.ndarray | None = None  # the last frame's flow field (H, W, 2), working pixels
        self.foreground: np.ndarray | None = None  # the last frame's foreground (H, W) bool

    @property
    def background(self) -> np.ndarray | None:
        return None if self._background is None else np.clip(self._background + 0.5, 0, 255).astype(np.uint8)

    def step(self, grey: np.ndarray, frames_since_previous: int = 1) -> list[SceneObject]:
        """Objects of this working-size grey frame; flow is per ``frames_since_previous`` source frames."""
        cfg = self.config
        if self._background is None or self._background.shape != grey.shape:
            self._background = grey.astype(np.float32)
        if self._previous is None or self._previous.shape != grey.shape:
            flow = np.zeros((*grey.shape, 2), np.float32)
        else:
            # flow at this frame's pixels (from this frame back to the previous one, negated): a fast object's
            # moving pixels are where it is now, not where it was (forward flow marks its previous place)
            flow = -self._flow.calc(grey, self._previous, None)
        self._previous = grey
        b = cfg.border
        flow[:b], flow[-b:], flow[:, :b], flow[:, -b:] = 0, 0, 0, 0
        magnitude = np.hypot(flow[..., 0], flow[..., 1])
        difference = cv2.absdiff(grey.astype(np.float32), self._background)
        changed = cv2.GaussianBlur(difference, (5, 5), 0) > cfg.diff_threshold
        near = cv2.dilate(changed.astype(np.uint8), self._near).astype(bool)
        moving = (magnitude > cfg.flow_threshold * max(1, frames_since_previous)) & near
        foreground = (changed | moving).astype(np.uint8)
        foreground = cv2.morphologyEx(foreground, cv2.MORPH_CLOSE, self._kernel)
        foreground = cv2.morphologyEx(foreground, cv2.MORPH_OPEN, self._kernel)
        foreground = cv2.morphologyEx(foreground, cv2.MORPH_CLOSE, self._join)
        cv2.accumulateWeighted(grey.astype(np.float32), self._background, cfg.background_rate,
                               mask=(1 - foreground))
        count, labels, stats, _ = cv2.connectedComponentsWithStats(foreground, connectivity=8)
        objects = []
        for label in range(1, count):
            x, y, w, h, area = stats[label]
            if area < cfg.min_area:
                continue
            mask = labels[y:y + h, x:x + w] == label
            objects.append(SceneObject((int(x), int(y), int(x + w), int(y + h)), mask,
                                       flow[y:y + h, x:x + w][mask]))
        self.flow, self.foreground = flow, foreground.astype(bool)
        return objects
