"""The one tracker (tvad_chat.tracking) and box overlap (tvad_chat.motion.iou), on cases known by hand."""

import numpy as np
import pytest

from tvad_chat.errors import ConfigError
from tvad_chat.motion import iou, iou_matrix
from tvad_chat.tracking import Tracker, TrackerConfig, track_boxes


def test_iou_reference_values():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    matrix = iou_matrix([(0, 0, 10, 10), (5, 0, 15, 10)], [(0, 0, 10, 10)])
    np.testing.assert_allclose(matrix[:, 0], [1.0, 50 / 150])


def _walker(x0: float, vx: float, steps: int, y: float = 50.0) -> list[tuple[float, ...]]:
    return [(x0 + vx * s, y, x0 + vx * s + 10, y + 20) for s in range(steps)]


def test_two_crossing_walkers_keep_their_ids():
    # one walks right, one left, on rows close enough that boxes overlap while they pass
    a = _walker(0, 6, 20, y=50)
    b = _walker(114, -6, 20, y=56)
    tracks = track_boxes([[a[s], b[s]] for s in range(20)])
    assert len(tracks) == 2
    rights = [t for t in tracks if t.boxes[-1][0] > t.boxes[0][0]]
    assert len(rights) == 1 and rights[0].boxes == [tuple(float(v) for v in box) for box in a]


def test_occlusion_within_max_gap_is_bridged_and_longer_one_is_not():
    path = _walker(0, 5, 12)
    seen = [[box] if s not in (5, 6) else [] for s, box in enumerate(path)]
    assert len(track_boxes(seen, TrackerConfig(max_gap=2))) == 1
    assert len(track_boxes(seen, TrackerConfig(max_gap=1))) == 2


def test_jump_beyond_limit_starts_a_new_track():
    boxes = [[(0, 0, 10, 10)], [(200, 0, 210, 10)]]
    assert [t.steps for t in track_boxes(boxes)] == [[0], [1]]


def test_a_sliver_growing_into_the_full_target_stays_one_track():
    # feet seen at the frame edge, then the whole walker: the centre moves 28 px, 3.5 sliver sizes but
    # under half the walker's size
    boxes = [[(0, 136, 7, 144)], [(0, 80, 16, 144)], [(0, 80, 24, 143)], [(4, 80, 30, 143)]]
    assert [t.steps for t in track_boxes(boxes)] == [[0, 1, 2, 3]]


def test_affinity_none_forbids_a_link_and_payloads_are_kept():
    def same_kind(track, payload):
        return 1.0 if track.payloads[-1] == payload else None

    tracks = track_boxes([[(0, 0, 10, 10)], [(1, 0, 11, 10)]], payloads_per_step=[["car"], ["person"]],
                         affinity=same_kind)
    assert [t.payloads for t in tracks] == [["car"], ["person"]]


def test_streaming_pop_finished_and_step_order():
    tracker = Tracker(TrackerConfig(max_gap=0))
    assert tracker.update(0, [(0, 0, 10, 10)]) == [1]
    assert tracker.update(1, [(1, 0, 11, 10)]) == [1]
    tracker.update(3, [])
    assert [t.id for t in tracker.pop_finished()] == [1]
    assert tracker.pop_finished() == []
    with pytest.raises(ConfigError):
        tracker.update(3, [])
