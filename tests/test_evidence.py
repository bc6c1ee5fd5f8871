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
    judge,
    render_overlay,
    upsample_heatmaps,
)
from tvad_chat.motion import heading_label


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


def _walk_maps(num_patches: int, cols, row: int = 4) -> np.ndarray:
    """A 2x2-patch blob in ``row`` at column ``cols[t]`` of patch t (None: not there)."""
    return _blob_maps(num_patches, lambda t: [] if cols[t] is None else [(row, cols[t])])


def test_blob_walking_in_from_the_left_and_out_on_the_right() -> None:
    # not there in patch 0, then one 20-px column per patch from the left edge to the right edge, gone in patch 16
    cols = [None] + list(range(15)) + [None]
    maps = _walk_maps(17, cols)
    evidence = analyze_heatmaps(maps, None, _clip(34))
    assert evidence.judgement and evidence.judgement_score == pytest.approx(0.9)
    assert evidence.score == evidence.judgement_score
    assert evidence.frame_scores.shape == (34,)
    assert len(evidence.tracks) == 1
    track = evidence.tracks[0]
    assert track.frames == list(range(2, 32))  # continuous: every sampled frame of patches 1..15, one identity
    # the blob covers patches [c, c + 2) of 20-pixel patches: centre at 20c + 20 pixels
    centres = [(b[0] + b[2]) / 2 for b in track.boxes]
    np.testing.assert_allclose(centres[::2], [20 * c + 20 for c in range(15)], atol=3)
    entry = evidence.timeline[0]
    assert (entry.entry_side, entry.exit_side, entry.direction) == ("left", "right", "right")
    assert (entry.first_frame, entry.last_frame) == (6, 93)
    assert (entry.start_s, entry.end_s) == (pytest.approx(0.6), pytest.approx(9.3))
    # 20 px per temporal patch (0.6 s) with a 40-px box: 0.83 box heights per second, a walker's speed
    assert entry.speed == pytest.approx(20 / 0.6 / 40, rel=1e-3)
    assert entry.speed_class == "walking"
    assert entry.summary == ("Target 1 enters from the left at 0.6 s, moves from left to right at walking pace, "
                             "and leaves on the right at 9.3 s.")
    assert evidence.to_dict()["timeline"][0]["speed"] == entry.speed


def test_speed_is_in_box_heights_per_second_and_classed_by_the_motion_vocabulary() -> None:
    maps = _walk_maps(17, [None] + list(range(15)) + [None])
    entries = {stride: analyze_heatmaps(maps, None, _clip(34, stride=stride)).timeline[0] for stride in (1, 3, 10)}
    assert {s: e.speed_class for s, e in entries.items()} == {1: "fast", 3: "walking", 10: "slow"}
    assert entries[1].speed == pytest.approx(2.5, rel=1e-3)
    assert entries[1].speed == pytest.approx(10 * entries[10].speed, rel=1e-3)
    still = analyze_heatmaps(_walk_maps(6, [7] * 6), None, _clip(12)).timeline[0]
    assert (still.direction, still.speed_class, still.speed) == ("none", "stationary", 0.0)
    assert (still.entry_side, still.exit_side) == ("start", "end")
    assert "stays in roughly the same place" in still.summary


def test_two_blobs_two_tracks_directions_and_sides() -> None:
    # A walks down the left border from the top-left corner; B walks right to left from the right border.
    # Neither is there in the first and last patch.
    def positions(t: int) -> list[tuple[int, int]]:
        return [] if t in (0, 7) else [(t - 1, 0), (5, 16 - 2 * t)]

    evidence = analyze_heatmaps(_blob_maps(8, positions), None, _clip(16))
    assert len(evidence.tracks) == 2
    assert all(t.frames == list(range(2, 14)) for t in evidence.tracks)
    by_direction = {e.direction: e for e in evidence.timeline}
    assert set(by_direction) == {"down", "left"}
    # B comes in through the right border and vanishes mid-frame
    assert (by_direction["left"].entry_side, by_direction["left"].exit_side) == ("right", "inside")
    # A starts in the top-left corner moving down: it came in from the top; it ends on the left border
    down = by_direction["down"]
    assert (down.entry_side, down.exit_side) == ("top", "left")
    assert (down.speed_class, by_direction["left"].speed_class) == ("walking", "fast")


def test_crossing_blobs_keep_their_identities() -> None:
    # two blobs on the same row swap places; constant-velocity prediction keeps each on its own track
    maps = _blob_maps(7, lambda t: [(2, 1 + 2 * t), (4, 13 - 2 * t)])
    evidence = analyze_heatmaps(maps, None, _clip(14))
    assert len(evidence.tracks) == 2
    assert sorted((e.direction, e.entry_side, e.exit_side) for e in evidence.timeline) == [
        ("left", "start", "end"), ("right", "start", "end")]


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


def test_upsampling_matches_an_independent_bilinear_resampler() -> None:
    maps = np.random.default_rng(0).random((3, 4, 6)).astype(np.float32)
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
@pytest.mark.shared_data("ucsd_ped2")
def test_tracks_on_real_ped2_masks_follow_the_bicycle() -> None:
    """Masks of Ped2 test clip 01 used as a perfect heatmap: one track, moving as its mask does."""
    from PIL import Image

    from heads.ahd import masks_to_patch_grid
    from tests.shared_data import DATA

    folder = DATA / "ucsd_ped2" / "testing" / "masks" / "01"
    indices = np.arange(80, 176, 6)  # 16 frames of the bicycle's ride
    masks = np.stack([np.array(Image.open(folder / f"{i:03d}.png")) > 0 for i in indices])
    grid = masks_to_patch_grid(masks, (17, 25)).numpy().astype(np.float32)
    clip = SimpleNamespace(frames=np.zeros((16, 240, 360, 3), np.uint8), timestamps=indices / 10.0,
                           frame_indices=indices)
    evidence = analyze_heatmaps(grid, None, clip, EvidenceConfig(min_track_patches=3))
    assert evidence.judgement
    assert len(evidence.tracks) == 1 and len(evidence.tracks[0].frames) >= 14
    def foot(mask: np.ndarray) -> np.ndarray:
        ys, xs = np.nonzero(mask)
        return np.array([(xs.min() + xs.max() + 1) / 2, ys.max() + 1.0])

    move = foot(masks[-1]) - foot(masks[0])
    assert evidence.timeline[0].direction == heading_label(float(move[0]), float(move[1]))
    # the frames with mask pixels are the frames whose score says "anomalous"
    labelled = masks.reshape(16, -1).any(1)
    assert np.all(evidence.frame_scores[labelled] > 0.5)


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
