"""Find the clips of an archive: video files and frame folders under a root, at any depth.

A clip's id is its path relative to the root (POSIX separators); its camera is the folder it sits in (relative to
the root; a clip at the root is its own camera); its wall-clock start comes from a date and time in its name
(``cam3_20240131_142500.mp4``, ``2024-01-31T14-25-00.mkv``, ``2024-01-31 14.25.00``), None when the name has none.
The fingerprint (size and modification time) tells a rerun whether a finished clip's file has changed since.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tvad_chat.errors import ConfigError
from tvad_chat.video import frame_files

log = logging.getLogger(__name__)

# year month day [T _-] hour minute second; separators optional (20240131_142500) or any of - _ . : h m
_WALL_CLOCK = re.compile(r"(?<!\d)(\d{4})[-_.]?(\d{2})[-_.]?(\d{2})[T _-]?(\d{2})[-_.:h]?(\d{2})[-_.:m]?(\d{2})(?!\d)")


@dataclass(frozen=True)
class ArchiveClip:
    id: str  # path relative to the root, POSIX separators
    path: Path
    kind: str  # "video" | "frames"
    camera: str
    wall_start: datetime | None  # from the name; None when it carries no date and time
    fingerprint: str  # changes when the file (or a frame folder's images) change

    @property
    def slug(self) -> str:
        """A folder name for the clip's outputs: readable, and unique by a short hash of the id."""
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", self.id)[-80:].strip("._") or "clip"
        return f"{readable}-{hashlib.sha1(self.id.encode()).hexdigest()[:8]}"


def wall_clock(name: str) -> datetime | None:
    """The date and time written in a file or folder name, if any (the last one when there are several)."""
    for match in reversed(list(_WALL_CLOCK.finditer(name))):
        try:
            return datetime(*(int(part) for part in match.groups()))
        except ValueError:  # 20241399_... is no date
            continue
    return None


def discover(root: str | Path, video_extensions: Sequence[str], exclude: Sequence[Path] = ()) -> list[ArchiveClip]:
    """Every video file and frame folder under ``root`` (hidden entries and ``exclude`` folders skipped), by id.

    ``root`` may itself be one video file or one frame folder.
    """
    root = Path(root)
    if not root.exists():
        raise ConfigError(f"{root} does not exist: give the folder of the archive to scan")
    extensions = tuple(e.lower() for e in video_extensions)
    skip = {p.resolve() for p in exclude}
    if root.is_file():
        if root.suffix.lower() not in extensions:
            raise ConfigError(f"{root.name} is not a video file ({', '.join(extensions)}) nor a folder to scan")
        return [_clip(root, root.parent, "video")]
    found: list[ArchiveClip] = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() not in skip)
        if frame_files(here):
            found.append(_clip(here, root, "frames"))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in extensions:
                found.append(_clip(here / name, root, "video"))
    return sorted(found, key=lambda c: c.id)


def _clip(path: Path, root: Path, kind: str) -> ArchiveClip:
    relative = path.relative_to(root) if path != root else Path(path.name)
    camera = relative.parent.as_posix() if relative.parent != Path(".") else relative.stem
    return ArchiveClip(id=relative.as_posix(), path=path, kind=kind, camera=camera,
                       wall_start=wall_clock(path.name if kind == "frames" else path.stem),
                       fingerprint=_fingerprint(path, kind))


def _fingerprint(path: Path, kind: str) -> str:
    if kind == "video":
        stat = path.stat()
        return f"{stat.st_size}-{stat.st_mtime_ns}"
    files = frame_files(path)
    return f"{len(files)}-{sum(f.stat().st_size for f in files)}-{max(f.stat().st_mtime_ns for f in files)}"
