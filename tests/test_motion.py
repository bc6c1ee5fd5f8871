"""The motion vocabulary (tvad_chat.motion), checked on paths whose answers are known by hand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tvad_chat.motion import (
    SPEED_CLASSES,
    Trajectory,
    cut_by_frame,
    describe_path,
    end_phrase,
    entry_and_exit,
    foot_points,
    full_views,
    measure_motion,
    path_speed,
    speed_class_of,
    target_sizes,
    trajectory_phrasings,
)

FPS = 10.0


def _boxes(feet: list[tuple[float, float]], w: float = 10.0, h: float = 40.0) -> np.ndarray:
    return np.array([(x - w / 2, y - h, x + w / 2, y) for x, y in feet], dtype=float)


def test_foot_point_and_sizes():
    b = np.array([[10, 20, 30, 100], [10, 80, 90, 100]], dtype=float)  # standing, then lying
    assert foot_points(b).tolist() == [[20.0, 100.0], [50.0, 100.0]]
    assert target_sizes(b, "person").tolist() == [80.0, 80.0]  # a person is as long lying as standing
    assert target_sizes(b, "car").tolist() == [80.0, 20.0]  # anything else: its box height


def test_speed_is_the_median_over_windows_in_sizes_per_second():
    # 0.8 sizes/s for 2 s, then standing still for 1 s: the median of the 0.4 s windows is the walk
    xs = [100 + 0.8 * 40 / FPS * i for i in range(21)] + [100 + 0.8 * 40 * 2.0] * 10
    times = np.arange(len(xs)) / FPS
    speed = path_speed(np.array([[x, 100.0] for x in xs]), np.full(len(xs), 40.0), times)
    assert speed == pytest.approx(0.8)
    # shorter than a window: the whole span is the one sample
    assert path_speed(np.array([[0.0, 0], [12.0, 0]]), np.array([40.0, 40.0]), np.array([0, 0.1])) == pytest.approx(3.0)


def test_speed_classes_and_their_net_progress_rule():
    names = [n for _, n in SPEED_CLASSES]
    assert [speed_class_of(v, moving=v > 0.1) for v in (0.05, 0.3, 0.8, 2.0, 5.0)] == names
    assert speed_class_of(2.0, moving=False) == "slow"  # running on the spot
    assert speed_class_of(0.0, moving=True) == "slow"  # walked somewhere, then stood still


def test_partial_views_do_not_move_a_standing_target():
    # legs hidden behind a bench for the last 6 frames: the box bottom jumps up 30 px, the target stays
    boxes = _boxes([(100.0, 150.0)] * 24)
    boxes[18:, 3] = 120.0
    times = np.arange(24) / FPS
    assert full_views(target_sizes(boxes, "person"), times).tolist() == list(range(18))
    mo = measure_motion(foot_points(boxes), target_sizes(boxes, "person"), times)
    assert mo.direction == "none" and mo.speed == 0.0 and mo.speed_class == "stationary"
    # measured on every box, the hidden legs would read as a move up the frame
    every = measure_motion(foot_points(boxes), np.full(24, 40.0), times)
    assert every.direction == "up"


def test_boxes_cut_by_the_frame_are_left_out_of_positions():
    boxes = np.array([[0, 10, 8, 50], [20, 10, 30, 50], [300, 10, 320, 50], [100, 150, 110, 192]], dtype=float)
    assert cut_by_frame(boxes, 320, 192).tolist() == [True, False, True, True]  # the top edge does not cut feet
    # a walker entering from the left: its box grows from the edge; the heading comes from the full views
    feet = [(2.0 + 3 * i, 120.0 - 1.0 * i) for i in range(30)]
    boxes = _boxes(feet)
    boxes[:, 0] = np.maximum(boxes[:, 0], 0.0)
    times = np.arange(30) / FPS
    mo = measure_motion(foot_points(boxes), target_sizes(boxes, "person"), times, cut_by_frame(boxes, 320, 192))
    assert mo.kept[0] > 0 and mo.direction == "right"
    entry, exit_ = entry_and_exit(boxes[0], boxes[-1], mo.path, 320, 192, False, True)
    assert (entry, exit_) == ("left", "end")


def test_describe_path_takes_positions_from_feet_and_sizes_from_boxes():
    # the same box every frame, but the exact feet walk right at 0.8 sizes per second
    boxes = _boxes([(100.0, 150.0)] * 20)
    feet = [(100.0 + 0.8 * 40 / FPS * i, 150.0) for i in range(20)]
    times = np.arange(20) / FPS
    still = describe_path(boxes, times, list(range(20)), 320, 192, starts_with_clip=True, ends_with_clip=True)
    assert (still.direction, still.speed_class, still.speed) == ("none", "stationary", 0.0)
    tr = describe_path(boxes, times, list(range(20)), 320, 192, starts_with_clip=False, ends_with_clip=True,
                       category="person", feet=np.array(feet))
    assert (tr.direction, tr.speed_class, tr.entry, tr.exit) == ("right", "walking", "inside", "end")
    assert tr.speed == pytest.approx(0.8) and tr.size == 40.0
    assert tr.entry_region == "bottom-left"  # from the box (centre 100, 130 of 320 x 192), not the feet


def test_phrases_of_each_kind_of_beginning_and_end():
    tr = Trajectory(entry="left", exit="inside", entry_region="left", exit_region="centre", direction="right",
                    legs=[], turns=[], speed=0.8, speed_class="walking", start_time=1.0, end_time=3.3, start_frame=10,
                    end_frame=33, displacement=(100.0, 0.0), size=40.0)
    assert trajectory_phrasings(tr, "the person")[0] == (
        "The person enters from the left at 1.0 s, moves from left to right at walking pace, and disappears in "
        "the centre of the frame at 3.3 s.")
    assert end_phrase(tr, entering=False, variant=1) == "is lost from view in the centre at 3.3 s"
    at_ends = replace(tr, entry="start", exit="end")
    assert end_phrase(at_ends, entering=True) == "is already in view at the start, in the left of the frame"
    assert end_phrase(at_ends, entering=False, variant=2) == "ends the clip in the centre of the frame"
    assert end_phrase(replace(tr, exit="top"), entering=False) == "leaves on the top at 3.3 s"
