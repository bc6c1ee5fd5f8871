"""One target, one vocabulary: the corpus statements and the page's evidence rows of a SynthCampus track agree.

The corpus side runs the builder's own path on the clip's ground-truth boxes (ground-truth extraction ->
association -> trajectory -> phrasing); the page side runs tvad_chat.evidence on the heatmap a perfect AHD
would give for that target (its instance mask at patch resolution, as training targets are made). Both must
say the same direction, speed class and sides, in the same words, and agree with SynthCampus's own record.
The targets are chosen away from class boundaries: a heat box is up to a patch taller than the target, so
the page's speeds in box heights per second read 10-20 % lower than the corpus's.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from datasets_builder.extract import FrameTask, GroundTruthBackend, GTObject
from datasets_builder.synth.generate import ClipConfig, SynthClip, generate_clip
from datasets_builder.timeline import associate, describe_trajectory
from tvad_chat.evidence import analyze_heatmaps
from tvad_chat.motion import movement_phrase, trajectory_phrasings

CONFIG = ClipConfig(frames=32, width=320, height=192, fps=10.0, effects=False)
GRID = (24, 40)  # 8 x 8 pixel patches


def _corpus_trajectory(clip: SynthClip, track_id: str):
    """The corpus builder's trajectory of one annotated track, from the clip's ground-truth boxes."""
    ann = clip.annotation
    category = {o["track_id"]: o["category"] for o in ann["objects"]}
    tasks = [FrameTask(video_id=ann["video_id"], frame_index=f["index"], timestamp=f["time"], width=ann["width"],
                       height=ann["height"],
                       annotations=[GTObject(o["track_id"], category[o["track_id"]], tuple(o["box"]))
                                    for o in f["objects"]]) for f in ann["frames"]]
    timelines = associate(GroundTruthBackend().extract_many(tasks))
    timeline = next(tl for tl in timelines if tl.majority_track_id() == (track_id, 1.0))
    return describe_trajectory(timeline, ann["width"], ann["height"], clip_start_frame=0,
                               clip_end_frame=ann["num_frames"] - 1)


def _evidence_rows(clip: SynthClip, instance_id: int):
    """The page's timeline rows for a heatmap that is exactly the target's mask at patch resolution."""
    from heads.ahd import masks_to_patch_grid

    heat = np.where(masks_to_patch_grid(clip.ids == instance_id, GRID).numpy() > 0, 0.9, 0.05).astype(np.float32)
    num_frames = clip.frames.shape[0]
    stand_in = SimpleNamespace(frames=clip.frames, timestamps=np.arange(num_frames) / CONFIG.fps,
                               frame_indices=np.arange(num_frames))
    return analyze_heatmaps(heat, None, stand_in).timeline


@pytest.mark.parametrize(("index", "track_id", "expected"), [
    (3, "5", ("right", "walking", "left", "end")),  # walks in from the left, still walking when the clip ends
    (4, "2", ("left", "walking", "start", "left")),  # in view from the start, walks out on the left
    (7, "4", ("right", "very fast", "left", "end")),  # a van driving in from the left
    (13, "2", ("left", "walking", "right", "end")),  # walks in from the right
])
def test_corpus_statements_and_evidence_rows_say_the_same(index: int, track_id: str, expected: tuple) -> None:
    clip = generate_clip(0, "train", index, CONFIG)
    record = next(o["trajectory"] for o in clip.annotation["objects"] if o["track_id"] == track_id)
    corpus = _corpus_trajectory(clip, track_id)
    rows = _evidence_rows(clip, int(track_id))
    assert len(rows) == 1
    row = rows[0]
    assert (record["direction"], record["speed_class"], record["entry"], record["exit"]) == expected
    assert (corpus.direction, corpus.speed_class, corpus.entry, corpus.exit) == expected
    assert (row.direction, row.speed_class, row.entry_side, row.exit_side) == expected
    # the same words: the corpus statement's motion clause is the page's
    statement = trajectory_phrasings(corpus, "the target")[0]
    clause = movement_phrase(corpus)
    assert clause in statement and clause in row.summary
