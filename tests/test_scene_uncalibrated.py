"""A clip scored against itself (no profile of its camera): a normal clip raises no event, at any length.

Before the stretch rule, analysis compared each object only with objects at least 5 s away while the thresholds
were measured without that rule; a 6 s normal Ped2 clip then had nearly every frame in an event (16 of 16
training clips, 94 % of the time)."""

from pathlib import Path

import numpy as np
import pytest
from shared_data import DATA

from tvad_chat.scene.run import analyze_clip, resolve_profile

PED2_TRAINING = DATA / "ucsd_ped2" / "training" / "frames"
AVENUE_TRAINING = DATA / "cuhk_avenue" / "training_videos"


def _first_seconds(clip: Path, frames: int, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for frame in sorted(clip.iterdir())[:frames]:
        (folder / frame.name).symlink_to(frame)
    return folder


@pytest.mark.slow
@pytest.mark.shared_data("ucsd_ped2", "cuhk_avenue")
def test_normal_clips_of_real_cameras_raise_no_event_uncalibrated(tmp_path: Path) -> None:
    clips = [(_first_seconds(PED2_TRAINING / name, 60, tmp_path / name), 10.0) for name in ("01", "05", "09", "13")]
    clips += [(PED2_TRAINING / "02", 10.0), (AVENUE_TRAINING / "12.avi", None)]
    flagged = {}
    for clip, folder_fps in clips:
        analysis, choice = analyze_clip(clip, profile="none", folder_fps=folder_fps)
        assert choice.how == "uncalibrated" and analysis.profile_name is None
        flagged[clip.name] = [(e.start_s, e.end_s) for e in analysis.events()]
    assert not any(flagged.values()), flagged


@pytest.mark.slow
@pytest.mark.shared_data("ucsd_ped2")
def test_objects_are_compared_with_the_other_stretches_of_the_clip(tmp_path: Path) -> None:
    """The profile fitted on the clip keeps when each object was seen and where its stretches begin; the
    stretches are those the thresholds were measured on (4, equal in frames)."""
    clip = _first_seconds(PED2_TRAINING / "03", 80, tmp_path / "03")
    profile, _ = resolve_profile(clip, "none", folder_fps=10.0)
    np.testing.assert_allclose(profile.stretch_starts, [2.0, 4.0, 6.0])
    assert len(profile.normal_times) == len(profile.normal)
    assert profile.normal_times.min() >= 0.0 and profile.normal_times.max() < 8.0
