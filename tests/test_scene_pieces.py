"""Pieces of one object (a torso above legs, split where clothes match the background) are measured as one
object; two people, or pieces that move apart, stay apart (tvad_chat.scene.features.join_stacked)."""

from __future__ import annotations

import numpy as np
import pytest

from tvad_chat.scene.features import Perspective, join_stacked, joined, measure
from tvad_chat.scene.objects import ObjectConfig, ObjectFinder, SceneObject

FLAT = Perspective(slope=0.0, intercept=60.0, row_min=0.0, row_max=240.0, min_height=60.0)  # people 60 px tall


def piece(box: tuple[int, int, int, int], flow: tuple[float, float] = (2.0, 0.0)) -> SceneObject:
    """A solid piece whose pixels all move by ``flow`` (pixels per frame, image y down)."""
    x1, y1, x2, y2 = box
    mask = np.ones((y2 - y1, x2 - x1), bool)
    return SceneObject(box, mask, np.tile(np.float32(flow), (int(mask.sum()), 1)))


def union(*pieces: SceneObject) -> SceneObject:
    """The pieces as one object, built independently of the join: one mask, the flow of every pixel."""
    x1, y1 = min(p.box[0] for p in pieces), min(p.box[1] for p in pieces)
    x2, y2 = max(p.box[2] for p in pieces), max(p.box[3] for p in pieces)
    mask = np.zeros((y2 - y1, x2 - x1), bool)
    flow = np.zeros((y2 - y1, x2 - x1, 2), np.float32)
    for p in pieces:
        px1, py1, px2, py2 = p.box
        mask[py1 - y1:py2 - y1, px1 - x1:px2 - x1] |= p.mask
        flow[py1 - y1:py2 - y1, px1 - x1:px2 - x1][p.mask] = p.flow
    return SceneObject((x1, y1, x2, y2), mask, flow[mask])


def test_a_torso_above_its_legs_is_one_object_measured_as_the_whole() -> None:
    torso, legs = piece((100, 100, 120, 128)), piece((102, 136, 118, 160))  # gap 8 px, 60 px tall together
    measures = [measure(o, 0.1) for o in (torso, legs)]
    assert join_stacked(measures, FLAT) == [[0, 1]]
    [whole] = joined(measures, [[0, 1]])
    reference = measure(union(torso, legs), 0.1)
    assert whole.box == reference.box == (100, 100, 120, 160)
    np.testing.assert_allclose(whole.direction_flow, reference.direction_flow, rtol=1e-6)
    assert whole.fill == pytest.approx(reference.fill)
    assert whole.p90_flow == pytest.approx(reference.p90_flow)  # every pixel moves alike here


def test_three_pieces_join_and_an_unrelated_object_stays_apart() -> None:
    objects = [piece((300, 20, 320, 40)), piece((100, 100, 120, 118)), piece((101, 122, 119, 138)),
               piece((100, 142, 121, 158))]
    assert join_stacked([measure(o, 0.1) for o in objects], FLAT) == [[0], [1, 2, 3]]


@pytest.mark.parametrize("second, why", [
    (piece((100, 170, 120, 230)), "two people one above the other: together twice a person's height"),
    (piece((102, 136, 118, 160), flow=(-2.0, 0.0)), "pieces moving in opposite directions"),
    (piece((140, 130, 160, 160)), "side by side, not one above the other"),
    (piece((102, 150, 118, 160)), "a gap of a third of a person"),
])
def test_what_is_not_one_object_stays_apart(second: SceneObject, why: str) -> None:
    first = piece((100, 100, 120, 128))
    assert join_stacked([measure(first, 0.1), measure(second, 0.1)], FLAT) == [[0], [1]], why


def test_a_person_split_by_background_coloured_clothes_is_found_as_one_object() -> None:
    """Through the object finder: a person standing still whose waist matches the background comes out in two
    pieces, which the join makes one box over head to feet."""
    background = np.full((240, 360), 100, np.uint8)
    frame = background.copy()
    frame[100:128, 100:120] = 200  # torso
    frame[142:160, 102:118] = 30  # legs; rows 128-141 (the waist) are the colour of the ground
    finder = ObjectFinder(ObjectConfig(), background=background)
    finder.step(frame)
    objects = finder.step(frame)
    assert len(objects) == 2
    measures = [measure(o, 0.1) for o in objects]
    groups = join_stacked(measures, FLAT)
    assert groups == [[0, 1]]
    [whole] = joined(measures, groups)
    x1, y1, x2, y2 = whole.box
    assert abs(y1 - 100) <= 2 and abs(y2 - 160) <= 2 and abs(x1 - 100) <= 2 and abs(x2 - 120) <= 2
