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
from tvad_chat.video import sampled_fps


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


def write_video(frames: np.ndarray, path: str | Path, fps: float = 10.0) -> Path:
    """Encode RGB frames as H.264 mp4 (yuv420p, browser-playable) with PyAV."""
    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or len(frames) == 0:
        raise ConfigError("no frames to encode")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2  # yuv420p needs even sides
    rate = Fraction(max(1.0, float(fps))).limit_denominator(1000)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast", "movflags": "+faststart"}
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h, :w]), format="rgb24")
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def playback_fps(analysis: Analysis) -> float:
    """Frame rate that plays the sampled frames at the clip's real pace (at least 2 fps so it is watchable)."""
    return float(min(30.0, max(2.0, sampled_fps(frame_times(analysis), 2.0))))


def write_overlay_video(analysis: Analysis, path: str | Path) -> Path:
    """The overlay frames as an mp4 playing at the clip's pace."""
    return write_video(overlay_frames(analysis), path, fps=playback_fps(analysis))


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
    tiles = []
    for i in sorted(picks):
        f = frames[i]
        w = max(1, int(round(f.shape[1] * height / f.shape[0])))
        tile = cv2.resize(f, (w, height), interpolation=cv2.INTER_AREA).copy()
        label = f"{times[i]:.1f}s" + (f"  {float(scores[i]):.2f}" if scored else "")
        cv2.rectangle(tile, (0, 0), (min(w, 6 + 7 * len(label)), 18), (0, 0, 0), -1)
        cv2.putText(tile, label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
        tiles.append(np.full((height, 3, 3), 255, dtype=np.uint8))
    return np.concatenate(tiles[:-1], axis=1)


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
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("score")
    title = "Per-frame anomaly score" if trained else "Per-frame anomaly score (UNTRAINED model: noise)"
    ax.set_title(title, fontsize=10)
    return fig
