"""Which installed profile belongs to a clip's camera (``--profile auto``).

Two backgrounds are compared as small blurred grey images (``THUMB`` pixels) by zero-mean normalised
cross-correlation: 1 for the same view, near 0 for unrelated ones; lighting changes shift and scale the
grey levels, which the correlation ignores. A profile is only a candidate for footage of its own size.

Installed profiles: the repository's ``profiles/`` folder, then the folders listed in the environment
variable ``TVAD_PROFILES`` (separated by the path separator), then ``~/.tvad/profiles``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tvad_chat.errors import ProfileError
from tvad_chat.scene.profile import PROFILE_JSON, SceneProfile

log = logging.getLogger(__name__)

THUMB = (64, 48)
SAME_CAMERA = 0.5  # below this, two calibration clips are taken for different cameras
MATCH = 0.7  # a clip is analysed with the best profile at or above this similarity
REPOSITORY_PROFILES = Path(__file__).resolve().parents[2] / "profiles"


def _thumb(grey: np.ndarray) -> np.ndarray:
    small = cv2.resize(np.asarray(grey, np.float32), THUMB, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (3, 3), 0)
    small -= small.mean()
    norm = float(np.linalg.norm(small))
    return small / norm if norm > 0 else small


def background_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two grey backgrounds (any sizes), -1..1."""
    return float(np.sum(_thumb(a) * _thumb(b)))


def profile_folders() -> list[Path]:
    folders = [REPOSITORY_PROFILES]
    folders += [Path(p) for p in os.environ.get("TVAD_PROFILES", "").split(os.pathsep) if p]
    folders.append(Path.home() / ".tvad" / "profiles")
    return folders


def installed_profiles() -> list[Path]:
    """Every profile directory in the installed folders, in folder order then by name."""
    found = []
    for folder in profile_folders():
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir() if (p / PROFILE_JSON).is_file())
    return found


@dataclass
class ProfileMatch:
    profile: SceneProfile | None  # None: no installed profile matches (analyse uncalibrated)
    similarity: float  # of the best candidate (0 when none had the clip's size)
    candidate: str | None  # the best candidate's name, matched or not


def match_profile(background: np.ndarray, size: tuple[int, int], folders: list[Path] | None = None) -> ProfileMatch:
    """The installed profile whose background is most like ``background`` (grey, any size) for ``size`` footage."""
    best: tuple[float, SceneProfile | None] = (0.0, None)
    paths = installed_profiles() if folders is None else [p for f in folders if f.is_dir()
                                                           for p in sorted(f.iterdir()) if (p / PROFILE_JSON).is_file()]
    for path in paths:
        try:
            profile = SceneProfile.load(path)
        except ProfileError as exc:
            log.warning("skipping profile %s: %s", path, exc)
            continue
        if tuple(profile.size) != tuple(size):
            continue
        similarity = background_similarity(background, profile.background)
        if similarity > best[0]:
            best = (similarity, profile)
    similarity, profile = best
    name = profile.name if profile is not None else None
    if profile is None or similarity < MATCH:
        return ProfileMatch(None, similarity, name)
    return ProfileMatch(profile, similarity, name)
