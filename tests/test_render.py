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
