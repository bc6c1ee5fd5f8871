"""Pictures of an analysed clip: the heatmap overlay (frames and mp4), a frame strip and the score plot.

No model logic: everything drawn comes from the clip's :class:`~tvad_chat.pipeline.Analysis`.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from matplotlib.figure import Figure

from tvad_chat.errors import ConfigError
from tvad_chat.evidence import render_overlay, upsample_heatmaps
from tvad_chat.pipeline import Analysis
from tvad_chat.report import INTERVAL_THRESHOLD, anomaly_intervals, frame_times
from tvad_chat.scene.analyze import SceneAnalysis
from tvad_chat.video import VideoLimits, probe, sampled_fps, stream_clip


def display_heatmaps(analysis: Analysis) -> np.ndarray | None:
    """(T, H, W) float heatmap for every sampled frame at display size (tvad_chat.evidence conventions)."""
    if analysis.heatmaps is None:
        return None
    frames = analysis.clip.frames
    return upsample_heatmaps(analysis.heatmaps, len(frames), (int(frames.shape[2]), int(frames.shape[1])))


def overlay_frames(analysis: Analysis, alpha: float = 0.5) -> np.ndarray:
    """Sampled frames with the anomaly heatmap blended in and tracked boxes drawn; uint8 (T, H, W, 3)."""
    frames = analysis.clip.frames
    heat = display_heatmaps(analysis)
    if heat is None:
        return frames.copy()
    out = np.ascontiguousarray(render_overlay(frames, heat, alpha=alpha))
    for track in analysis.tracks:
        for frame, box in zip(track.frames, track.boxes, strict=True):
            if not 0 <= frame < len(out):
                continue
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            cv2.rectangle(out[frame], (x0, y0), (x1, y1), (255, 255, 255), 1)
            cv2.putText(out[frame], str(track.id), (x0 + 2, max(10, y0 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (255, 255, 255), 1, cv2.LINE_AA)
    return out


def write_video(frames: np.ndarray, path: str | Path, fps: float = 10.0, times: np.ndarray | None = None,
                end_s: float | None = None) -> Path:
    """Encode RGB frames as H.264 mp4 (yuv420p, browser-playable) with PyAV.

    ``times`` (seconds, increasing) places each frame at its own time, each shown until the next one and the
    last until ``end_s``: the video then has the clip's timeline whatever the frames' spacing. Without
    ``times`` the frames play at ``fps``.
    """
    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or len(frames) == 0:
        raise ConfigError("no frames to encode")
    with H264Writer(path, width=int(frames.shape[2]), height=int(frames.shape[1]), fps=fps) as writer:
        for i, frame in enumerate(frames):
            writer.add(frame, i / max(1.0, float(fps)) if times is None else float(times[i]))
        writer.close(end_s)
    return Path(path)


class H264Writer:
    """Frames written one at a time at their own times (ms time base) into a browser-playable mp4."""

    TIME_BASE = Fraction(1, 1000)

    def __init__(self, path: str | Path, width: int, height: int, fps: float = 10.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.width, self.height = width // 2 * 2, height // 2 * 2  # yuv420p needs even sides
        self.container = av.open(str(self.path), mode="w")
        rate = Fraction(max(1.0, float(fps))).limit_denominator(1000)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        self.stream.time_base = self.stream.codec_context.time_base = self.TIME_BASE
        # No B-frames: mp4 keeps durations as decode-time steps, so decode order must be display order.
        self.stream.options = {"crf": "23", "preset": "veryfast", "movflags": "+faststart", "bf": "0"}
        self.pts: list[int] = []  # every frame's time in ms, for the packets' durations
        self.packets: list[av.Packet] = []
        self.closed = False

    def __enter__(self) -> H264Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.closed:
            self.close()

    def add(self, frame: np.ndarray, time_s: float) -> None:
        """One RGB frame shown from ``time_s`` (later than the previous frame's time; equal ones are dropped)."""
        pts = int(round(time_s * 1000))
        if self.pts and pts <= self.pts[-1]:
            return
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[: self.height, : self.width]), format="rgb24")
        vf.pts, vf.time_base = pts, self.TIME_BASE
        self.pts.append(pts)
        self.packets += self.stream.encode(vf)

    def close(self, end_s: float | None = None) -> None:
        """Flush and write; the last frame lasts until ``end_s`` (default: as long as the one before it)."""
        self.closed = True
        try:
            self.packets += self.stream.encode()
            step = self.pts[-1] - self.pts[-2] if len(self.pts) > 1 else 100
            end = max(self.pts[-1] + 1, int(round(end_s * 1000))) if end_s is not None else self.pts[-1] + step
            duration = dict(zip(self.pts, np.diff([*self.pts, end]).tolist(), strict=True))
            for packet in self.packets:
                packet.duration = duration.get(packet.pts, step)
                self.container.mux(packet)
        finally:
            self.container.close()


# Containers and video codecs every current browser plays (Chromium, Firefox, Safari).
_PLAYABLE = {"mp4": {"h264", "vp9", "av1"}, "webm": {"vp8", "vp9", "av1"}}
PREVIEW_MAX_SIDE = 640  # display copies are downscaled to this
PREVIEW_MAX_FPS = 15.0


def browser_playable(path: str | Path) -> bool:
    """Whether a browser's <video> plays this file as it is (container and codec), without decoding it."""
    try:
        with av.open(str(path)) as container:
            formats = set(container.format.name.split(","))
            codecs = {s.codec_context.name for s in container.streams.video}
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        return False
    kind = "webm" if "webm" in formats and Path(path).suffix.lower() == ".webm" else "mp4" if "mp4" in formats else None
    return kind is not None and len(codecs) == 1 and codecs <= _PLAYABLE[kind]


def display_copy(source: str | Path, path: str | Path) -> Path:
    """An H.264 mp4 of ``source`` a browser plays: every frame (at most PREVIEW_MAX_FPS a second) at its own time,
    downscaled to PREVIEW_MAX_SIDE, decoded chunk by chunk (memory does not grow with the clip's length)."""
    info = probe(source)
    fps = PREVIEW_MAX_FPS if info.fps > PREVIEW_MAX_FPS else None  # None: every frame
    limits = VideoLimits(max_display_side=PREVIEW_MAX_SIDE)
    writer = None
    try:
        for chunk in stream_clip(source, fps=fps, limits=limits, chunk=64):
            if writer is None:
                writer = H264Writer(path, width=chunk.frames.shape[2], height=chunk.frames.shape[1],
                                    fps=fps or info.fps)
            for frame, t in zip(chunk.frames, chunk.timestamps, strict=True):
                writer.add(frame, float(t))
    finally:
        if writer is not None:
            writer.close(info.duration_s)
    if writer is None:
        raise ConfigError("no frames to encode")
    return Path(path)


def playback_fps(analysis: Analysis) -> float:
    """Frame rate that plays the sampled frames at the clip's real pace (at least 2 fps so it is watchable)."""
    return float(min(30.0, max(2.0, sampled_fps(frame_times(analysis), 2.0))))


def timestamp_frames(frames: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Copies of ``frames`` with their time burned in at the bottom left (white on a black box)."""
    out = np.ascontiguousarray(frames).copy()
    for frame, t in zip(out, times, strict=True):
        label = f"{float(t):.1f} s"
        scale = max(0.4, frame.shape[0] / 480)
        (w, h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        y = frame.shape[0] - 4
        cv2.rectangle(frame, (0, y - h - base - 4), (w + 8, frame.shape[0]), (0, 0, 0), -1)
        cv2.putText(frame, label, (4, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def write_overlay_video(analysis: Analysis, path: str | Path) -> Path:
    """The overlay frames on the clip's own timeline (each analysed frame at its time, held until the next, the
    video as long as the clip), with the time burned in: its clock matches the clip and the score plot."""
    times = frame_times(analysis)
    shown = times.copy()
    shown[0] = 0.0  # the first analysed frame stands for the clip's start (its burned-in time is its own)
    return write_video(timestamp_frames(overlay_frames(analysis), times), path, fps=playback_fps(analysis),
                       times=shown, end_s=max(float(analysis.clip.duration_s), float(times[-1])))


def frame_strip(analysis: Analysis, count: int = 8, height: int = 120) -> np.ndarray:
    """A row of overlay frames (evenly spaced, the most anomalous one included) with their times; uint8 RGB."""
    frames = overlay_frames(analysis)
    t = len(frames)
    picks = set(np.linspace(0, t - 1, num=min(count, t)).round().astype(int).tolist())
    scores = analysis.frame_scores
    scored = scores is not None and len(scores) == t
    if scored:
        peak = int(np.argmax(scores))
        if peak not in picks:
            picks.discard(min(picks, key=lambda p: abs(p - peak)))
            picks.add(peak)
    times = frame_times(analysis)
    return strip_of([(frames[i], f"{times[i]:.1f}s" + (f"  {float(scores[i]):.2f}" if scored else ""))
                     for i in sorted(picks)], height)


def strip_of(tiles: list[tuple[np.ndarray, str]], height: int = 120) -> np.ndarray:
    """RGB frames side by side at one height, each labelled at its bottom (the page's image label sits on the
    strip's top left), separated by white lines; uint8 RGB."""
    row = []
    for frame, label in tiles:
        w = max(1, int(round(frame.shape[1] * height / frame.shape[0])))
        tile = cv2.resize(frame, (w, height), interpolation=cv2.INTER_AREA).copy()
        cv2.rectangle(tile, (0, height - 18), (min(w, 6 + 7 * len(label)), height), (0, 0, 0), -1)
        cv2.putText(tile, label, (4, height - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1,
                    cv2.LINE_AA)
        row += [tile, np.full((height, 3, 3), 255, dtype=np.uint8)]
    return np.concatenate(row[:-1], axis=1)


class SceneOverlayWriter:
    """A scene analysis's overlay, written while the analysis runs (a FrameSink: frames are never kept).

    Every frame (at most PREVIEW_MAX_FPS a second, downscaled to PREVIEW_MAX_SIDE) with its heat blended in,
    the outline of heat at 0.5 (the operating point's threshold) drawn and its time burned in, on the clip's
    own timeline; and the ``strip_count`` hottest moments, at least ``spacing_s`` apart, kept small for the
    frame strip.
    """

    OUTLINE = 0.5  # heat at the threshold (tvad_chat.scene.analyze: s^2 / (s^2 + t^2))

    def __init__(self, path: str | Path, strip_count: int = 8, spacing_s: float = 1.0, strip_height: int = 120,
                 fps: float = PREVIEW_MAX_FPS, max_side: int = PREVIEW_MAX_SIDE) -> None:
        self.path = Path(path)
        self.strip_count, self.spacing_s, self.strip_height = strip_count, spacing_s, strip_height
        self.fps, self.max_side = fps, max_side
        self._writer: H264Writer | None = None
        self._last_written: float | None = None
        self._hottest: list[tuple[float, float, np.ndarray]] = []  # (peak heat, time, small overlay frame)

    def __call__(self, index: int, time: float, frame: np.ndarray, heat: np.ndarray) -> None:
        scale = min(1.0, self.max_side / max(frame.shape[:2]))
        size = (max(2, int(frame.shape[1] * scale)), max(2, int(frame.shape[0] * scale)))
        if scale < 1.0:
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            heat = cv2.resize(heat, size, interpolation=cv2.INTER_LINEAR)
        peak = float(heat.max()) if heat.size else 0.0
        due = self._last_written is None or time - self._last_written >= 1.0 / self.fps - 1e-6
        keep = peak > 0 and self._worth_keeping(peak, time)
        if not (due or keep):
            return
        shown = render_overlay(frame[None], heat[None])[0]
        if peak >= self.OUTLINE:
            contours, _ = cv2.findContours((heat >= self.OUTLINE).astype(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(shown, contours, -1, (255, 255, 255), 1)
        shown = timestamp_frames(shown[None], np.array([time]))[0]
        if due:
            if self._writer is None:
                self._writer = H264Writer(self.path, width=size[0], height=size[1], fps=self.fps)
            self._writer.add(shown, 0.0 if self._last_written is None else time)  # the first frame opens the clip
            self._last_written = time
        if keep:
            self._keep(peak, time, shown)

    def _worth_keeping(self, peak: float, time: float) -> bool:
        near = [h for h in self._hottest if abs(h[1] - time) < self.spacing_s]
        if near:
            return peak > max(h[0] for h in near)
        return len(self._hottest) < self.strip_count or peak > min(h[0] for h in self._hottest)

    def _keep(self, peak: float, time: float, shown: np.ndarray) -> None:
        w = max(1, int(round(shown.shape[1] * self.strip_height / shown.shape[0])))
        small = cv2.resize(shown, (w, self.strip_height), interpolation=cv2.INTER_AREA)
        self._hottest = [h for h in self._hottest if abs(h[1] - time) >= self.spacing_s]
        self._hottest.append((peak, time, small))
        self._hottest.sort(key=lambda h: -h[0])
        del self._hottest[self.strip_count:]

    def close(self, end_s: float) -> Path | None:
        """Finish the mp4 (the last frame lasts until ``end_s``); None when no frame came."""
        if self._writer is None:
            return None
        self._writer.close(end_s)
        return self.path

    @property
    def moments(self) -> list[tuple[float, float]]:
        """The kept hottest moments as (seconds, peak heat), in time order."""
        return [(t, p) for p, t, _ in sorted(self._hottest, key=lambda h: h[1])]

    def strip(self) -> np.ndarray | None:
        """The hottest moments in time order with their times and heat; None when nothing was hot."""
        if not self._hottest:
            return None
        return strip_of([(small, f"{t:.1f}s  heat {p:.2f}") for p, t, small in sorted(self._hottest,
                                                                                     key=lambda h: h[1])],
                        self.strip_height)


def score_figure(analysis: Analysis, trained: bool = True) -> Figure:
    """Matplotlib figure: per-frame anomaly score over time, detected interval(s) shaded.

    ``trained=False`` says in the title that the model has random weights (its scores are noise).
    """
    fig = Figure(figsize=(7, 2.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    times = frame_times(analysis)
    if analysis.frame_scores is None:
        ax.text(0.5, 0.5, "this model has no heatmap head: no per-frame scores", ha="center", va="center",
                transform=ax.transAxes)
    else:
        scores = np.asarray(analysis.frame_scores, dtype=np.float64)
        ax.plot(times, scores, marker="o", ms=3, lw=1.5, color="#c0392b", label="anomaly score")
        ax.axhline(INTERVAL_THRESHOLD, color="grey", lw=0.8, ls="--")
        pad = 0.5 / playback_fps(analysis)
        for k, (a, b) in enumerate(anomaly_intervals(analysis)):
            ax.axvspan(a - pad, b + pad, color="#f5b041", alpha=0.35, label="detected" if k == 0 else None)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)  # beside the curve
    ax.set_xlabel("time (s)")
    ax.set_ylabel("score")
    title = "Per-frame anomaly score" if trained else "Per-frame anomaly score (UNTRAINED model: noise)"
    ax.set_title(title, fontsize=10)
    return fig


def scene_score_figure(analysis: SceneAnalysis, point: str | None = None) -> Figure:
    """Matplotlib figure of a scene analysis: every analysed frame's score over time, the operating point's
    threshold and its events shaded (exactly the events the answers and the report give)."""
    fig = Figure(figsize=(7, 2.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    name = point or analysis.default_point
    threshold = analysis.threshold(name)
    times = analysis.times
    ax.plot(times, analysis.scores, lw=1.3, color="#c0392b", label="frame score")
    ax.axhline(threshold, color="grey", lw=0.8, ls="--", label=f"threshold ({name})")
    step = 0.5 / analysis.fps
    for k, event in enumerate(analysis.events(name)):
        ax.axvspan(event.start_s - step, event.end_s + step, color="#f5b041", alpha=0.35,
                   label="unusual" if k == 0 else None)
    ax.set_ylim(bottom=0.0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("score")
    against = f"scene profile {analysis.profile_name!r}" if analysis.profile_name else "the clip itself (uncalibrated)"
    ax.set_title(f"Every frame's score against {against}", fontsize=9)
    return fig
