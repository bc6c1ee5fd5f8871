"""Heatmaps -> frame scores, judgement, boxes, tracks and timeline on synthetic maps with known motion."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from tvad_chat.evidence import analyze_heatmaps, frame_heatmaps, iou, render_overlay, upsample_heatmaps


def _clip(num_frames: int, width: int = 320, height: int = 160, fps: float = 10.0):
    return SimpleNamespace(
        frames=np.zeros((num_frames, height, width, 3), np.uint8),
        timestamps=np.arange(num_frames) / fps,
        frame_indices=np.arange(num_frames) * 3,
    )


def _blob_maps(num_patches: int, grid=(8, 16), positions=None, value=0.9) -> np.ndarray:
    maps = np.full((num_patches, *grid), 0.05, np.float32)
    for t in range(num_patches):
        for row, col in positions(t):
            maps[t, row : row + 2, col : col + 2] = value
    return maps


def test_blob_moving_left_to_right() -> None:
    maps = _blob_maps(8, positions=lambda t: [(4, 2 * t)])  # cols 0..14 of 16: edge to edge
    evidence = analyze_heatmaps(maps, None, _clip(16))
    assert evidence.judgement and abs(evidence.score - 0.9) < 1e-6
    assert evidence.frame_scores.shape == (16,)
    assert len(evidence.tracks) == 1
    track = evidence.tracks[0]
    assert track.frames == list(range(16))
    centres = [(b[0] + b[2]) / 2 for b in track.boxes]
    assert all(b >= a for a, b in zip(centres, centres[1:])) and centres[-1] > centres[0] + 200
    entry = evidence.timeline[0]
    assert (entry.entry_side, entry.exit_side, entry.direction) == ("left", "right", "left to right")
    assert entry.first_frame == 0 and entry.last_frame == 45 and entry.end_s == 1.5
    assert "left to right" in entry.summary


def test_two_blobs_two_tracks_and_directions() -> None:
    maps = _blob_maps(6, positions=lambda t: [(0 + t, 3), (5, 13 - 2 * t)])
    evidence = analyze_heatmaps(maps, None, _clip(12))
    assert len(evidence.tracks) == 2
    directions = sorted(e.direction for e in evidence.timeline)
    assert directions == ["right to left", "towards the camera"]


def test_empty_heatmap_says_no() -> None:
    evidence = analyze_heatmaps(np.full((4, 8, 16), 0.2, np.float32), None, _clip(8))
    assert not evidence.judgement
    assert evidence.tracks == [] and evidence.timeline == []
    np.testing.assert_allclose(evidence.frame_scores, 0.2)


def test_class_probs_abnormal_channel_is_used_and_odd_frames() -> None:
    probs = np.zeros((3, 2, 8, 16), np.float32)
    probs[:, 0] = 1.0
    probs[2, 1, 2:4, 2:4], probs[2, 0, 2:4, 2:4] = 0.8, 0.2
    evidence = analyze_heatmaps(probs[:, 1], probs, _clip(5))
    assert evidence.judgement
    np.testing.assert_allclose(evidence.frame_scores, [0, 0, 0, 0, 0.8], atol=1e-6)


def test_frame_heatmaps_and_upsampling() -> None:
    maps = np.random.default_rng(0).random((2, 4, 6)).astype(np.float32)
    per_frame = frame_heatmaps(maps, 5)
    assert per_frame.shape == (5, 4, 6)
    np.testing.assert_array_equal(per_frame[0], per_frame[1])
    np.testing.assert_array_equal(per_frame[4], maps[1])
    full = upsample_heatmaps(maps, 5, (60, 40))
    assert full.shape == (5, 40, 60) and full.min() >= 0 and full.max() <= 1


def test_overlay_colours_only_hot_pixels() -> None:
    frames = np.full((1, 10, 10, 3), 100, np.uint8)
    heat = np.zeros((1, 10, 10), np.float32)
    heat[0, :5] = 1.0
    out = render_overlay(frames, heat)
    assert np.array_equal(out[0, 5:], frames[0, 5:])
    assert not np.array_equal(out[0, :5], frames[0, :5])


def test_iou_hand_computed() -> None:
    assert iou((0, 0, 2, 2), (1, 1, 3, 3)) == 1 / 7
    assert iou((0, 0, 1, 1), (1, 1, 2, 2)) == 0
