"""One call from a clip to its scene analysis: choose the profile, stream the clip, export heat maps.

Profile choice (``profile`` argument): a profile directory; ``"auto"`` (the default) matches the clip's
background against the installed profiles (tvad_chat.scene.match); ``None`` or ``"none"`` analyses the
clip uncalibrated. Uncalibrated means the clip is scored against itself: a profile is fitted on the clip
(its stretches of time cross-validated for the thresholds) and each object is compared with the clip's
objects at least 5 s away (tvad_chat.scene.scoring.Density); in a clip under 10 s no object is judged. That
finds what is rare within the clip, which fails when the anomaly fills much of it, so every output says
"uncalibrated".
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tvad_chat.errors import ProfileError
from tvad_chat.files import atomic_directory
from tvad_chat.scene.analyze import (
    SELF_EXCLUDE_S,
    FrameSink,
    HeatSink,
    SceneAnalysis,
    SceneAnalyzer,
    heat_to_uint8,
)
from tvad_chat.scene.calibrate import CalibrationConfig, calibrate, clip_background
from tvad_chat.scene.match import match_profile
from tvad_chat.scene.objects import ObjectConfig
from tvad_chat.scene.profile import SceneProfile
from tvad_chat.scene.scoring import judges_itself, judging_span
from tvad_chat.video import stream_clip

log = logging.getLogger(__name__)

UNCALIBRATED = CalibrationConfig(min_seconds=3.0, min_objects=20)
MATCH_SAMPLES = 15  # frames whose median is the clip's background for matching


@dataclass
class ProfileChoice:
    profile: SceneProfile | None  # None: uncalibrated
    how: str  # "given" | "matched" | "uncalibrated"
    note: str  # one line for every output: which profile decided, or why none


def choose_profile(source: str | Path, profile: str | Path | None = "auto",
                   folder_fps: float | None = None) -> ProfileChoice:
    if profile is not None and str(profile) not in ("auto", "none"):
        chosen = SceneProfile.load(profile)
        return ProfileChoice(chosen, "given", f"scene profile {chosen.name!r}")
    if profile is None or str(profile) == "none":
        return ProfileChoice(None, "uncalibrated", "uncalibrated (no scene profile asked for): lower confidence")
    background, size = clip_background(source, ObjectConfig().work_width, MATCH_SAMPLES, folder_fps)
    found = match_profile(background, size)
    if found.profile is not None:
        return ProfileChoice(found.profile, "matched",
                             f"scene profile {found.profile.name!r} (matched by background, similarity "
                             f"{found.similarity:.2f})")
    why = (f"the closest, {found.candidate!r}, has similarity {found.similarity:.2f}" if found.candidate
           else "no installed profile is for footage of this size")
    return ProfileChoice(None, "uncalibrated", f"uncalibrated: no scene profile matches this camera ({why}); "
                         "lower confidence; calibrate one with `tvad calibrate`")


def resolve_profile(source: str | Path, profile: str | Path | None = "auto", fps: float | None = None,
                    folder_fps: float | None = None) -> tuple[SceneProfile, ProfileChoice]:
    """The profile a clip is analysed with: the chosen one, or (uncalibrated) one fitted on the clip itself."""
    choice = choose_profile(source, profile, folder_fps)
    if choice.profile is not None:
        return choice.profile, choice
    try:
        fitted = calibrate([source], "uncalibrated", UNCALIBRATED, fps=fps, folder_fps=folder_fps, keep_times=True)
    except ProfileError as exc:
        raise ProfileError(f"cannot analyse this clip without a scene profile: {exc}. Give a profile of "
                           "this camera (--profile DIR) or a longer clip") from None
    if not judges_itself(fitted.normal_times, SELF_EXCLUDE_S):  # the rule tvad_chat.scene.scoring.Density applies
        seconds, needed = float(fitted.made_from["seconds"]), judging_span(SELF_EXCLUDE_S)
        choice = dataclasses.replace(choice, note=f"{choice.note}; at {seconds:.1f} s the clip is too short to compare "
                                     f"its objects with one another (they must be seen over {needed:.0f} s): no "
                                     "object is judged")
    return fitted, choice


def clip_analyzer(profile: SceneProfile, source: str | Path, folder_fps: float | None = None) -> SceneAnalyzer:
    """An analyzer for a clip of the profile's camera, starting from the clip's own background."""
    background, size = clip_background(source, profile.objects.work_width, MATCH_SAMPLES, folder_fps)
    if background.shape != profile.background.shape:
        raise ProfileError(f"{Path(source).name} is {size[0]}x{size[1]} footage but profile {profile.name!r} was "
                           f"made for {profile.size[0]}x{profile.size[1]}: use a profile of this camera, or "
                           "--profile none")
    return SceneAnalyzer(profile, background=background)


def analyze_source(profile: SceneProfile, source: str | Path, fps: float | None = None,
                   folder_fps: float | None = None, heat_sink: HeatSink | None = None,
                   progress: Callable[[int], None] | None = None,
                   frame_sink: FrameSink | None = None) -> SceneAnalysis:
    """Stream a whole clip through a profile."""
    return clip_analyzer(profile, source, folder_fps).run(stream_clip(source, fps=fps, folder_fps=folder_fps),
                                                           heat=heat_sink, progress=progress, frames=frame_sink)


def analyze_clip(source: str | Path, profile: str | Path | None = "auto", fps: float | None = None,
                 folder_fps: float | None = None, heatmaps: str | Path | None = None,
                 heat_sink: HeatSink | None = None, progress: Callable[[int], None] | None = None,
                 frame_sink: FrameSink | None = None) -> tuple[SceneAnalysis, ProfileChoice]:
    """The scene analysis of a clip and how its profile was chosen; heat PNGs into ``heatmaps`` if given,
    every frame's heat map to ``heat_sink`` and every frame with its heat map to ``frame_sink`` if given."""
    chosen, choice = resolve_profile(source, profile, fps, folder_fps)
    if heatmaps is None:
        analysis = analyze_source(chosen, source, fps, folder_fps, heat_sink, progress, frame_sink)
    else:
        with atomic_directory(heatmaps) as folder:
            def write(index: int, heat: np.ndarray) -> None:
                if not cv2.imwrite(str(folder / f"{index:06d}.png"), heat_to_uint8(heat)):
                    raise ProfileError(f"could not write heat maps to {heatmaps}")
                if heat_sink is not None:
                    heat_sink(index, heat)
            analysis = analyze_source(chosen, source, fps, folder_fps, write, progress, frame_sink)
    if choice.profile is None:
        analysis.profile_name = None
    return analysis, choice
