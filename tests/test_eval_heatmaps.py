"""Heatmaps -> RBDC/TBDC glue (tvad_chat.eval.heatmaps), as used by `tvad eval run` and stage 1's selection."""

import numpy as np
import pytest

from tvad_chat.errors import DataError
from tvad_chat.eval.heatmaps import heatmap_boxes, mask_regions, rbdc_from_heatmaps


def _clip(num_frames=8, size=(112, 168), box=(28, 42, 56, 70), step=14):
    """Masks of one square moving right by one patch per temporal patch, and the matching patch-grid heatmaps."""
    h, w = size
    masks = np.zeros((num_frames, h, w), dtype=bool)
    maps = np.full((num_frames // 2, h // 14, w // 14), 0.05, dtype=np.float32)
    y1, x1, y2, x2 = box
    for f in range(num_frames):
        shift = (f // 2) * step
        masks[f, y1:y2, x1 + shift:x2 + shift] = True
    for p in range(num_frames // 2):
        shift = p * step
        maps[p, y1 // 14:y2 // 14, (x1 + shift) // 14:(x2 + shift) // 14] = 0.95
    return maps, masks


def test_mask_regions_are_connected_components_with_inclusive_boxes():
    masks = np.zeros((1, 20, 30), dtype=bool)
    masks[0, 2:5, 3:9] = True
    masks[0, 10:12, 20:30] = True
    regions = mask_regions(masks)
    assert [box for _, box in regions[0]] == [[3, 2, 8, 4], [20, 10, 29, 11]]


def test_heatmap_boxes_cover_the_hot_patches_on_every_frame_of_their_temporal_patch():
    maps, masks = _clip()
    boxes = heatmap_boxes(maps, len(masks), (168, 112))
    assert len(boxes) == 8 and all(len(b) == 1 for b in boxes)
    (x1, y1, x2, y2), score = boxes[2][0]
    # second temporal patch: the square's patches are columns 4-5, rows 2-4 (bilinear edges move by < 1 patch)
    assert 42 <= x1 + 14 <= 70 and 70 <= x2 <= 98 and 14 <= y1 <= 42 and 56 <= y2 <= 84
    assert score == pytest.approx(0.95, abs=0.01)


def test_a_heatmap_on_the_mask_finds_every_region_and_an_empty_one_none():
    maps, masks = _clip()
    hit = rbdc_from_heatmaps([maps], [masks])
    assert hit["rbdc"] == pytest.approx(100.0) and hit["tbdc"] == pytest.approx(100.0)
    cold = rbdc_from_heatmaps([np.full_like(maps, 0.05)], [masks])
    assert cold["rbdc"] == 0.0 and cold["tbdc"] == 0.0
    # hot in the wrong place: every detection is a false positive, no region is found
    wrong = np.roll(maps, 5, axis=2)
    assert rbdc_from_heatmaps([wrong], [masks])["rbdc"] == 0.0


def test_no_anomalous_region_gives_no_score_and_mismatched_inputs_raise():
    maps, masks = _clip()
    assert rbdc_from_heatmaps([maps], [np.zeros_like(masks)]) == {}
    with pytest.raises(DataError):
        rbdc_from_heatmaps([maps, maps], [masks])
