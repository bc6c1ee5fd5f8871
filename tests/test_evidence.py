"""Heatmaps -> frame scores, judgement, boxes, tracks and timeline, on maps with known motion."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tvad_chat.errors import ConfigError
from tvad_chat.evidence import (
    EvidenceConfig,
    analyze_heatmaps,
    detect_boxes,
    direction_words,
    frame_heatmaps,
    iou,
    judge,
    render_overlay,
    upsample_heatmaps,
)


def _clip(num_frames: int, width: int = 320, height: int = 160, fps: float = 10.0, stride: int = 3):
    """A stand-in for tvad_chat.video.Clip: every ``stride``-th source frame sampled at ``fps``."""
    return SimpleNamespace(
        frames=np.zeros((num_frames, height, width, 3), np.uint8),
        timestamps=np.arange(num_frames) * stride / fps,
        frame_indices=np.arange(num_frames) * stride,
    )


def _blob_maps(num_patches: int, positions, grid=(8, 16), value=0.9) -> np.ndarray:
    """Background 0.05, a 2x2-patch blob at each (row, col) of positions(t) for patch t."""
    maps = np.full((num_patches, *grid), 0.05, np.float32)
    for t in range(num_patches):
        for row, col in positions(t):
            maps[t, row : row + 2, col : col + 2] = value
    return maps


def test_blob_moving_left_to_right() -> None:
    maps = _blob_maps(8, lambda t: [(4, 2 * t)])  # columns 0..15 of 16: edge to edge
    clip = _clip(16)
    evidence = analyze_heatmaps(maps, None, clip)
    assert evidence.judgement and evidence.judgement_score == pytest.approx(0.9)
    assert evidence.score == evidence.judgement_score
    assert evidence.frame_scores.shape == (16,)
    assert len(evidence.tracks) == 1
    track = evidence.tracks[0]
    assert track.frames == list(range(16))  # continuous: every sampled frame, one identity
    centres = [(b[0] + b[2]) / 2 for b in track.boxes]
    assert all(b >= a for a, b in zip(centres, centres[1:], strict=False))
    # the blob covers patches [2t, 2t+2) of 20-pixel patches: centre at 40t + 20 pixels
    np.testing.assert_allclose(centres[::2], [40 * t + 20 for t in range(8)], atol=3)
    entry = evidence.timeline[0]
    assert (entry.entry_side, entry.exit_side, entry.direction) == ("left", "right", "left to right")
    assert (entry.first_frame, entry.last_frame) == (0, 45)
    assert (entry.start_s, entry.end_s) == (0.0, 4.5)
    # 280 px of a 357.8 px diagonal in 4.2 s between the first and last distinct boxes... ~0.19 diag/s
    assert entry.speed == pytest.approx(280 / np.hypot(320, 160) / 4.5, rel=0.02)
    assert entry.speed_class == "normal"
    assert "left to right" in entry.summary and "enters from the left" in entry.summary
    assert "leaves on the right" in entry.summary


def test_speed_classes_follow_frame_size_per_second() -> None:
    maps = _blob_maps(8, lambda t: [(4, 2 * t)])
    fast = analyze_heatmaps(maps, None, _clip(16, stride=1)).timeline[0]  # same path in a third of the time
    slow = analyze_heatmaps(maps, None, _clip(16, stride=30)).timeline[0]
    assert (fast.speed_class, slow.speed_class) == ("fast", "slow")
    assert fast.speed == pytest.approx(30 * slow.speed, rel=1e-3)


def test_two_blobs_two_tracks_and_directions() -> None:
    # one walks down (towards the camera) along the left border, one right to left from the right border
    maps = _blob_maps(6, lambda t: [(t, 0), (5, 14 - 2 * t)])
    evidence = analyze_heatmaps(maps, None, _clip(12))
    assert len(evidence.tracks) == 2
    assert all(t.frames == list(range(12)) for t in evidence.tracks)
    by_direction = {e.direction: e for e in evidence.timeline}
    assert set(by_direction) == {"right to left", "towards the camera"}
    assert (by_direction["right to left"].entry_side, by_direction["right to left"].exit_side) == ("right", "inside")
    # starts in the top-left corner moving down: it came in from the top; it ends on the left border
    down = by_direction["towards the camera"]
    assert (down.entry_side, down.exit_side) == ("top", "left")


def test_crossing_blobs_keep_their_identities() -> None:
    # two blobs on the same row swap places; constant-velocity prediction keeps each on its own track
    maps = _blob_maps(7, lambda t: [(2, 1 + 2 * t), (4, 13 - 2 * t)])
    evidence = analyze_heatmaps(maps, None, _clip(14))
    assert len(evidence.tracks) == 2
    directions = sorted(e.direction for e in evidence.timeline)
    assert directions == ["left to right", "right to left"]


def test_empty_heatmap_says_no() -> None:
    evidence = analyze_heatmaps(np.zeros((4, 8, 16), np.float32), None, _clip(8))
    assert not evidence.judgement and evidence.judgement_score == 0.0
    assert evidence.tracks == [] and evidence.timeline == []
    np.testing.assert_allclose(evidence.frame_scores, 0.0)
    weak = analyze_heatmaps(np.full((4, 8, 16), 0.49, np.float32), None, _clip(8))
    assert not weak.judgement and weak.tracks == []


def test_judgement_reads_both_channels() -> None:
    probs = np.zeros((3, 2, 8, 16), np.float32)
    probs[:, 0] = 1.0
    probs[2, 1, 2:4, 2:4], probs[2, 0, 2:4, 2:4] = 0.8, 0.2
    evidence = analyze_heatmaps(probs[:, 1], probs, _clip(5))
    assert evidence.judgement and evidence.judgement_score == pytest.approx(0.8)
    np.testing.assert_allclose(evidence.frame_scores, [0, 0, 0, 0, 0.8], atol=1e-6)  # odd frame: own patch
    # at the strongest patch the normal channel wins: "no", whatever the absolute level
    probs[2, 0, 2:4, 2:4] = 0.85
    assert judge(probs[:, 1], probs) == (False, pytest.approx(0.8))
    with pytest.raises(ConfigError):
        analyze_heatmaps(probs[:, 1], probs[:, :1], _clip(5))


def test_frame_heatmaps_and_upsampling() -> None:
    maps = np.random.default_rng(0).random((3, 4, 6)).astype(np.float32)
    per_frame = frame_heatmaps(maps, 5)
    assert per_frame.shape == (5, 4, 6)
    for f in range(5):
        np.testing.assert_array_equal(per_frame[f], maps[f // 2])
    full = upsample_heatmaps(maps, 5, (60, 40))  # 10-pixel patches
    assert full.shape == (5, 40, 60) and full.dtype == np.float32
    # against an independent bilinear resampler: pixel (y, x) samples the patch grid at
    # ((y + 0.5) / 10 - 0.5, (x + 0.5) / 10 - 0.5), edges held
    from scipy.ndimage import map_coordinates

    ys, xs = np.meshgrid((np.arange(40) + 0.5) / 10 - 0.5, (np.arange(60) + 0.5) / 10 - 0.5, indexing="ij")
    for f in range(5):
        expected = map_coordinates(maps[f // 2], [ys, xs], order=1, mode="nearest")
        np.testing.assert_allclose(full[f], expected, atol=1e-2)


def test_boxes_equal_scaled_components_of_the_map() -> None:
    grid = np.zeros((6, 8), np.float32)
    grid[1:3, 1:3] = 1.0
    grid[4, 6] = 0.9
    boxes = detect_boxes(grid, 0, (160, 120))  # 20 x 20 pixel patches
    assert len(boxes) == 2
    big = max(boxes, key=lambda b: (b.xyxy[2] - b.xyxy[0]))
    # a 2x2 block of ones: > 0.5 between the centres of its outer neighbours, i.e. +- half a patch
    np.testing.assert_allclose(big.xyxy, (20, 20, 60, 60), atol=3)
    assert big.score == pytest.approx(1.0)


@pytest.mark.slow  # imports torch for masks_to_patch_grid
def test_tracks_on_real_ped2_masks_follow_the_bicycle() -> None:
    """Masks of Ped2 test clip 01 used as a perfect heatmap: one track, moving as its mask does."""
    from PIL import Image

    from heads.ahd import masks_to_patch_grid
    from tests.shared_data import DATA

    folder = DATA / "ucsd_ped2" / "testing" / "masks" / "01"
    if not folder.is_dir():
        pytest.skip("shared Ped2 data not present")
    indices = np.arange(80, 176, 6)  # 16 frames of the bicycle's ride
    masks = np.stack([np.array(Image.open(folder / f"{i:03d}.png")) > 0 for i in indices])
    grid = masks_to_patch_grid(masks, (17, 25)).numpy().astype(np.float32)
    clip = SimpleNamespace(frames=np.zeros((16, 240, 360, 3), np.uint8), timestamps=indices / 10.0,
                           frame_indices=indices)
    evidence = analyze_heatmaps(grid, None, clip, EvidenceConfig(min_track_patches=3))
    assert evidence.judgement
    assert len(evidence.tracks) == 1 and len(evidence.tracks[0].frames) >= 14
    ys, xs = np.nonzero(masks[0])
    ye, xe = np.nonzero(masks[-1])
    expected = direction_words(float(xe.mean() - xs.mean()), float(ye.mean() - ys.mean()))
    assert evidence.timeline[0].direction == expected
    # the frames with mask pixels are the frames whose score says "anomalous"
    labelled = masks.reshape(16, -1).any(1)
    assert np.all(evidence.frame_scores[labelled] > 0.5)


def test_direction_words_sectors() -> None:
    assert direction_words(1, 0) == "left to right"
    assert direction_words(-1, 0.1) == "right to left"
    assert direction_words(0.1, 1) == "towards the camera"
    assert direction_words(0, -1) == "away from the camera"
    assert direction_words(1, 1) == "left to right, towards the camera"
    assert direction_words(-1, -0.9) == "right to left, away from the camera"


def test_overlay_colours_only_hot_pixels() -> None:
    frames = np.full((2, 10, 10, 3), 100, np.uint8)
    heat = np.zeros((2, 10, 10), np.float32)
    heat[:, :5] = 1.0
    out = render_overlay(frames, heat, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == frames.shape
    assert np.array_equal(out[:, 5:], frames[:, 5:])
    # JET at 1.0 is dark red (128, 0, 0) in RGB: half-and-half with grey 100
    np.testing.assert_allclose(out[0, 0, 0], [114, 50, 50], atol=1)
    # patch maps are upsampled to the frames
    grid_out = render_overlay(frames, np.ones((1, 2, 2), np.float32))
    assert not np.array_equal(grid_out, frames)
    with pytest.raises(ConfigError):
        render_overlay(frames.astype(np.float32), heat)


def test_iou_hand_computed() -> None:
    assert iou((0, 0, 2, 2), (1, 1, 3, 3)) == 1 / 7
    assert iou((0, 0, 1, 1), (1, 1, 2, 2)) == 0
