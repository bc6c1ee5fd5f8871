"""A clip scored against itself (no profile of its camera): normal clips raise no event.

Each object is compared with the clip's objects at least 5 s away. Before, an object with none that far took the
farthest distance queried, so a 6 s normal Ped2 clip had nearly every frame in an event (16 of 16 training clips,
94 % of the time); now a clip under 10 s judges no object, and its profile note, which every output carries,
says so."""

import json
from pathlib import Path

import pytest
from shared_data import DATA

from tvad_chat.cli import main
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
def test_a_clip_scored_against_itself_keeps_its_objects_times(tmp_path: Path) -> None:
    """The profile fitted on the clip keeps when each object was seen (only then can it skip objects near in
    time); a 12 s clip's objects are judged, a 6 s clip's are not."""
    clip = PED2_TRAINING / "01"  # 12 s at 10 frames/s
    profile, _ = resolve_profile(clip, "none", folder_fps=10.0)
    assert len(profile.normal_times) == len(profile.normal)
    assert profile.normal_times.min() >= 0.0 and profile.normal_times.max() < 12.0
    analysis, _ = analyze_clip(clip, profile="none", folder_fps=10.0)
    assert (analysis.frames.raw_scores > 0).mean() > 0.5
    short, choice = analyze_clip(_first_seconds(clip, 60, tmp_path / "01"), profile="none", folder_fps=10.0)
    assert not (short.frames.raw_scores > 0).any() and not short.events()
    assert analysis.judged and not short.judged and short.to_report()["judged"] is False
    assert short.point_notes["1/min"].startswith("about 1 false alarm per minute of this clip, its stretches of time "
                                                 "scored against each other")
    assert choice.note.endswith("at 6.0 s the clip is too short to compare its objects with one another (they must "
                                "be seen over 10 s): no object is judged")
    assert "too short" not in resolve_profile(clip, "none", folder_fps=10.0)[1].note


@pytest.mark.slow
@pytest.mark.shared_data("ucsd_ped2")
def test_tvad_analyze_says_a_short_uncalibrated_clip_judged_nothing(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    short = _first_seconds(PED2_TRAINING / "01", 60, tmp_path / "01")
    report = tmp_path / "report.json"
    assert main(["analyze", str(short), "--profile", "none", "--folder-fps", "10", "--out", str(report)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "no object was judged, so this clip cannot show an unusual event (see above)" in lines
    assert json.loads(report.read_text())["judged"] is False
