"""A scene profile: what normal looks like for one fixed camera, saved as a small versioned folder.

Layout of a profile directory (written in one go: a reader sees the old profile or the new, never a mix):

    profile.json   format version, camera size, settings, perspective, feature names and scales,
                   reference percentiles, operating points, how it was made
    arrays.npz     normal object features (N, F), per-place normal speed (rows, cols), background (H, W) uint8

Arrays are read with ``allow_pickle=False``: a profile is data, never code.
"""

from __future__ import annotations

import json
import logging
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tvad_chat.errors import ProfileError
from tvad_chat.files import atomic_directory
from tvad_chat.scene.features import FEATURE_NAMES, Perspective
from tvad_chat.scene.objects import ObjectConfig
from tvad_chat.scene.scoring import ScoringConfig

log = logging.getLogger(__name__)

FORMAT_VERSION = 4  # 4: pieces of one object joined; 3 (objects at the frame edge unscored) was reverted; 2: flow at
# the current frame, foreground gated by change (format 1 measured objects otherwise)
PROFILE_JSON = "profile.json"
ARRAYS = "arrays.npz"
# what the "why" of an event quotes: percentiles of the normal objects' raw measures
REFERENCE_PERCENTILES = (50.0, 99.0, 99.8)


@dataclass
class OperatingPoint:
    """A score threshold and the false alarms per minute it gives on held-out normal footage."""

    name: str  # "1/min", "0.1/min", "0.01/min"
    target_per_minute: float
    threshold: float
    measured_per_minute: float  # on the held-out footage (cross-validated over the calibration clips)
    measured: bool  # False: the target is rarer than the footage can show; threshold set above all of it

    def describe(self, footage: str = "this camera's normal footage") -> str:
        """The rate in words, per minute of ``footage`` (what the rate was measured on)."""
        minutes = 1.0 / self.target_per_minute
        every = f"{minutes:.0f} minutes" if minutes > 1 else "minute"
        note = "" if self.measured else " (fewer than the footage could show)"
        return f"about 1 false alarm per {every} of {footage}{note}"


def check_profile_folder(directory: str | Path) -> Path:
    """A folder a profile may be written to: new, empty, or an older profile (replaced whole)."""
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or (any(directory.iterdir())
                                                          and not (directory / PROFILE_JSON).is_file())):
        raise ProfileError(f"{directory} exists and is not a scene profile: choose an empty or new folder")
    return directory


@dataclass
class SceneProfile:
    name: str
    size: tuple[int, int]  # (width, height) of the camera's display frames
    work_size: tuple[int, int]  # (width, height) the measures are taken at
    objects: ObjectConfig
    scoring: ScoringConfig
    perspective: Perspective
    scales: np.ndarray  # (F,) feature divisors
    normal: np.ndarray  # (N, F) features of the normal objects
    place_speed: np.ndarray  # (rows, cols) 99th percentile of object speed (heights/s) seen at each place
    background: np.ndarray  # (H, W) uint8 grey at work size
    operating_points: list[OperatingPoint]
    default_point: str = "0.1/min"
    reference: dict[str, dict[str, float]] = field(default_factory=dict)  # measure -> percentile -> value
    made_from: dict[str, Any] = field(default_factory=dict)  # sources, minutes, frames, objects, fps
    # seconds of each normal object, only for a clip scored against itself (never saved)
    normal_times: np.ndarray | None = None

    def point(self, name: str | None = None) -> OperatingPoint:
        wanted = name or self.default_point
        for point in self.operating_points:
            if point.name == wanted:
                return point
        names = ", ".join(p.name for p in self.operating_points)
        raise ProfileError(f"profile {self.name!r} has no operating point {wanted!r}; it has {names}")

    def save(self, directory: str | Path) -> Path:
        directory = check_profile_folder(directory)
        meta = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "size": list(self.size),
            "work_size": list(self.work_size),
            "objects": asdict(self.objects),
            "scoring": self.scoring.to_dict(),
            "perspective": self.perspective.to_dict(),
            "feature_names": list(FEATURE_NAMES),
            "scales": [float(s) for s in self.scales],
            "operating_points": [asdict(p) for p in self.operating_points],
            "default_point": self.default_point,
            "reference": self.reference,
            "made_from": self.made_from,
        }
        with atomic_directory(directory) as tmp:
            (tmp / PROFILE_JSON).write_text(json.dumps(meta, indent=2))
            np.savez_compressed(tmp / ARRAYS, normal=self.normal.astype(np.float32),
                                place_speed=self.place_speed.astype(np.float32),
                                background=self.background.astype(np.uint8))
        log.info("scene profile %r saved to %s", self.name, directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> SceneProfile:
        directory = Path(directory)
        meta_path = directory / PROFILE_JSON
        if not meta_path.is_file():
            raise ProfileError(f"{directory} is not a scene profile (no {PROFILE_JSON}); make one with "
                               "`tvad calibrate NORMAL_CLIPS... --out DIR`")
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProfileError(f"{meta_path} is corrupt ({exc}); calibrate the profile again") from None
        version = meta.get("format_version") if isinstance(meta, dict) else None
        if not isinstance(version, int):
            raise ProfileError(f"{meta_path} has no format version: it is not a scene profile of ours")
        if version > FORMAT_VERSION:
            raise ProfileError(f"profile {directory.name} was made by a newer T-VAD Chat (format {version}, this "
                               f"version reads up to {FORMAT_VERSION}): upgrade, or calibrate it again here")
        if version < FORMAT_VERSION:
            raise ProfileError(f"profile {directory.name} was made by an older T-VAD Chat (format {version}; this "
                               f"version finds objects differently and reads format {FORMAT_VERSION}): calibrate it "
                               "again with `tvad calibrate`")
        if meta.get("feature_names") != list(FEATURE_NAMES):
            raise ProfileError(f"profile {directory.name} measures other features; calibrate it again")
        try:
            with np.load(directory / ARRAYS, allow_pickle=False) as arrays:
                normal, place_speed, background = arrays["normal"], arrays["place_speed"], arrays["background"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise ProfileError(f"{directory / ARRAYS} is missing or corrupt ({type(exc).__name__}); "
                               "calibrate the profile again") from None
        try:
            profile = cls(
                name=str(meta["name"]), size=tuple(meta["size"]), work_size=tuple(meta["work_size"]),
                objects=ObjectConfig(**meta["objects"]), scoring=ScoringConfig(**meta["scoring"]),
                perspective=Perspective(**meta["perspective"]), scales=np.asarray(meta["scales"], np.float32),
                normal=normal, place_speed=place_speed, background=background,
                operating_points=[OperatingPoint(**p) for p in meta["operating_points"]],
                default_point=str(meta["default_point"]), reference=dict(meta.get("reference", {})),
                made_from=dict(meta.get("made_from", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"{meta_path} is incomplete ({exc}); calibrate the profile again") from None
        if normal.ndim != 2 or normal.shape[1] != len(FEATURE_NAMES) or len(profile.scales) != normal.shape[1]:
            raise ProfileError(f"profile {directory.name} has inconsistent arrays; calibrate it again")
        if background.shape != (profile.work_size[1], profile.work_size[0]):
            raise ProfileError(f"profile {directory.name}'s background does not match its size; calibrate it again")
        profile.point()  # the default operating point must exist
        return profile
