"""Pictures of an analysis without a model: the overlay video on the clip's timeline, display copies of uploads
a browser cannot play."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from media_factory import read_barcode, write_sparse_avi, write_video

from tvad_chat import render
from tvad_chat.pipeline import Analysis
from tvad_chat.video import load_clip


def _analysis(clip) -> Analysis:
    """A hand-made analysis: heat in the left half of every frame, scores rising over time."""
    t, h, w = len(clip.frames), 12, 20
    heat = np.zeros(((t + 1) // 2, h, w), np.float32)  # one map per two frames, as the vision tower's
    heat[:, :, : w // 2] = 0.9
    return Analysis(clip=clip, model_frames_shape=(t, 56, 84), heatmaps=heat,
                    frame_scores=np.linspace(0.1, 0.9, t), judgement=True, score=0.9)


def _decoded(path: Path) -> tuple[list[np.ndarray], list[float], float]:
    with av.open(str(path)) as container:
        frames, times = [], []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.pts * frame.time_base))
        return frames, times, container.duration / 1e6


def test_overlay_video_has_the_clips_timeline_and_burned_in_times(tmp_path: Path) -> None:
    # A 12-s clip sampled at 6 uneven-looking points: the overlay must show each at its own time.
    source = write_video(tmp_path / "walk.mp4", num_frames=120, fps=10, width=160, height=96)
    clip = load_clip(source, num_frames=6)
    analysis = _analysis(clip)
    out = render.write_overlay_video(analysis, tmp_path / "overlay.mp4")
    assert render.browser_playable(out)
    frames, times, duration = _decoded(out)
    assert len(frames) == 6
    # Frames at their own times; the first one stands for the clip's start.
    np.testing.assert_allclose(times, [0.0, *clip.timestamps[1:]], atol=0.002)
    assert duration == pytest.approx(clip.duration_s, abs=0.05)  # as long as the clip, like the score plot
    overlay = render.overlay_frames(analysis)
    for frame, rendered in zip(frames, overlay, strict=True):
        h = frame.shape[0]
        top = np.abs(frame[: h // 2].astype(int) - rendered[: h // 2, : frame.shape[1]]).mean()
        corner = np.abs(frame[h - 14:, :30].astype(int) - rendered[h - 14: h, :30]).mean()
        assert top < 8 and corner > 40  # the picture as rendered, the time burned in at the bottom left
    assert frames[0][-8:, 2:30].max() > 200 and frames[0][-8:, 2:30].min() < 60  # white text on black


def test_display_copy_of_an_avi_plays_in_a_browser(tmp_path: Path) -> None:
    kept = [0, 3, 9, 10, 30, 44]
    avi = write_sparse_avi(tmp_path / "cam.avi", kept, header_frames=45, fps=15)
    assert not render.browser_playable(avi)
    copy = render.display_copy(avi, tmp_path / "cam.preview.mp4")
    assert render.browser_playable(copy)
    frames, times, duration = _decoded(copy)
    assert [read_barcode(f) for f in frames] == kept  # every stored frame, at its own time
    np.testing.assert_allclose(times, np.asarray(kept) / 15, atol=0.002)
    assert duration == pytest.approx(45 / 15, abs=0.05)
    mp4 = write_video(tmp_path / "ok.mp4", num_frames=5)
    assert render.browser_playable(mp4)
    (tmp_path / "junk.mp4").write_bytes(b"junk" * 100)
    assert not render.browser_playable(tmp_path / "junk.mp4")


def test_scene_overlay_writer_keeps_the_timeline_and_the_hottest_moments(tmp_path: Path) -> None:
    """30 fps in, at most 15 written, each at its own time; heat blended where it is; the strip holds the three
    hottest moments at least a second apart, in time order."""
    writer = render.SceneOverlayWriter(tmp_path / "scene.mp4", strip_count=3, spacing_s=1.0, fps=15.0)
    peaks = {30: 0.9, 35: 0.95, 90: 0.6, 120: 0.3, 150: 0.8}  # frame -> peak heat; 30 and 35 are 1/6 s apart
    for k in range(180):
        frame = np.full((96, 160, 3), 90, np.uint8)
        heat = np.zeros((96, 160), np.float32)
        heat[30:60, 40:80] = peaks.get(k, 0.0)
        writer(k, k / 30.0, frame, heat)
    assert writer.close(6.0) == tmp_path / "scene.mp4"
    frames, times, duration = _decoded(tmp_path / "scene.mp4")
    assert len(frames) == 90 and duration == pytest.approx(6.0, abs=0.05)
    assert np.allclose(np.diff(times), 1 / 15, atol=2e-3)
    hot = frames[round(150 / 30 * 15)]  # frame 150 (5.0 s) was written: heat 0.8 inside the box, none outside
    assert abs(int(hot[45, 60, 0]) - 90) > 40 and np.abs(hot[10, 140].astype(int) - 90).max() <= 6
    assert [round(t * 30) for t, _ in writer.moments] == [35, 90, 150]  # 0.95 beat 0.9 within a second
    assert [p for _, p in writer.moments] == pytest.approx([0.95, 0.6, 0.8], abs=1e-6)
    strip = writer.strip()
    assert strip.shape[0] == 120 and strip.shape[1] == 3 * 200 + 2 * 3


def test_scene_overlay_writer_without_frames_writes_nothing(tmp_path: Path) -> None:
    writer = render.SceneOverlayWriter(tmp_path / "none.mp4")
    assert writer.close(3.0) is None and writer.strip() is None and not (tmp_path / "none.mp4").exists()
