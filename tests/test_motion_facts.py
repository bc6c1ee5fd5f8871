"""Reading the stated direction of trajectory answers, checked on the motion vocabulary's own phrasings."""

from __future__ import annotations

import math

import pytest

from tvad_chat.eval.motion_facts import direction_accuracy, distinct_share, stated_direction
from tvad_chat.motion import DIRECTION_WORDS, Trajectory, trajectory_phrasings


@pytest.mark.parametrize("direction", sorted(DIRECTION_WORDS))
def test_every_phrasing_of_every_direction_reads_back(direction):
    for phrase in DIRECTION_WORDS[direction]:
        assert stated_direction(f"It enters from the left at 0.5 s, moves {phrase} fast, and leaves.") == direction


def test_builder_phrasings_read_back_their_trajectory():
    moving, still = _trajectory("left", "fast"), _trajectory("none", "slow")
    for tr, expected in ((moving, "left"), (still, "none")):
        for text in trajectory_phrasings(tr, "the cyclist"):
            assert stated_direction(text) == expected, text


def test_first_movement_and_longest_phrase_win():
    assert stated_direction("It moves up and to the right, then turns to the left.") == "up-right"
    assert stated_direction("It moves from right to left, then from left to right.") == "left"
    assert stated_direction("It is a red car.") is None


def test_direction_accuracy_and_distinct_share():
    items = [("moves from left to right fast", ["It moves rightwards."]),
             ("moves from left to right fast", ["It moves from right to left."]),
             ("It is a person.", ["It moves to the left."]),
             ("moves to the left", ["A person in red."])]  # no readable reference: not scored
    result = direction_accuracy(items)
    assert result["count"] == 3 and result["accuracy"] == pytest.approx(100 / 3)
    assert math.isnan(direction_accuracy([])["accuracy"])
    assert distinct_share(["A b.", "a  B.", "c"]) == pytest.approx(200 / 3)


def _trajectory(direction: str, speed_class: str) -> Trajectory:
    return Trajectory(entry="right", exit="left", entry_region="right", exit_region="left", direction=direction,
                      legs=[], turns=[], speed=2.0, speed_class=speed_class, start_time=0.5, end_time=2.9,
                      start_frame=5, end_frame=29, displacement=(-150.0, 0.0), size=40.0)
