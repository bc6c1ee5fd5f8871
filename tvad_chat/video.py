"""Video ingest: open, validate and sample clips from video files and frame folders.

Everything else reads clips through this module. Video files go through PyAV
(anything FFmpeg decodes); folders of numbered images (UCSD Ped2 style) are read
with Pillow. Sampling seeks: each sampled frame costs one seek to the keyframe
before it plus a decode forward to its timestamp, so sampling 16 frames costs
about the same for a 10-second clip as for a 10-hour one.

Frame identity is by presentation timestamp (pts), never by index * fps alone:
for short clips (and every variable-frame-rate clip) the packets are scanned
once, without decoding, to get every frame's pts; long constant-rate clips use
the header's rate, and every decoded frame is checked against that model. If
the model turns out wrong (dropped frames, a duration that lies, a file cut
short) we fall back to the exact scan and plan again.

Frames come out as uint8 RGB, upright (rotation metadata applied), with square
pixels (sample aspect ratio applied), greyscale expanded to 3 channels, and
downscaled when their longer side exceeds `VideoLimits.max_display_side`.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from tvad_chat.errors import ConfigError, DataError, VideoError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
# Anomaly masks are 8-bit images (0 normal, 255 anomalous): a pixel above this value is anomalous.
MASK_THRESHOLD = 127
# Frame folders carry no timing; they are read at this rate unless told otherwise.
DEFAULT_FOLDER_FPS = 25.0
# Below this many frames a packet scan (demux only, no decoding) is cheap and gives
# exact frame counts and timestamps; above it we trust the header and verify as we go.
SCAN_MAX_FRAMES = 3000
# Clips this short are decoded front to back: seeking saves nothing there.
SEQUENTIAL_MAX_FRAMES = 64
STREAM_CHUNK = 32  # frames stream_clip decodes at a time
# Decoder threading ("AUTO": frame and slice threads). Decoding dominates the cost of sampling.
DECODER_THREADS = "AUTO"
# Packets checked for even spacing before trusting a header's constant frame rate.
VFR_CHECK_PACKETS = 120
# Until we have seen two keyframes, assume they are at most this far apart.
DEFAULT_GOP_S = 2.0

# Containers that carry an elementary stream with no index or timing of their own.
_RAW_FORMATS = {"h264", "hevc", "mjpeg", "mpegvideo", "m4v", "rawvideo", "h263", "cavsvideo", "vc1", "ivf"}
# Single images and image sequences opened through FFmpeg: seeking back does not rewind them.
_REOPEN_FORMATS = {"image2", "image2pipe"} | {
    f"{c}_pipe" for c in ("jpeg", "png", "bmp", "tiff", "webp", "gif")
}
# Leading bytes of containers we know: a file that starts like one but will not open is broken, not foreign.
_CONTAINER_MAGIC = {
    b"\x1a\x45\xdf\xa3": "Matroska/WebM",
    b"RIFF": "AVI",
    b"FLV": "FLV",
    b"\x00\x00\x01\xba": "MPEG-PS",
    b"OggS": "Ogg",
    b"\x30\x26\xb2\x75": "ASF/WMV",
}


@dataclass
class VideoLimits:
    """Configurable refusal limits. Frames larger than max_display_side are downscaled, never refused."""

    max_file_bytes: int = 2 * 1024**3
    max_duration_s: float = 3 * 3600
    max_display_side: int = 1280
    # Decoded frames a single load_clip may return (T * H * W * 3 bytes).
    max_clip_bytes: int = 4 * 1024**3


@dataclass
class VideoInfo:
    """What `tvad info` prints: container metadata plus a verified first frame."""

    source: Path
    kind: str  # "video" | "frames"
    num_frames: int
    fps: float
    duration_s: float
    width: int  # display size: after rotation and sample aspect ratio, before any downscaling
    height: int
    rotation: int  # degrees counter-clockwise applied to the coded frames to make them upright
    codec: str | None
    variable_frame_rate: (
        bool | None
    )  # from every timestamp (short clips) or the first VFR_CHECK_PACKETS; None: unknown
    warnings: list[str] = field(default_factory=list)  # where the header and the file disagree (file used)


@dataclass
class Clip:
    """Sampled display frames and where they came from."""

    frames: np.ndarray  # uint8 (T, H, W, 3) RGB, upright; original size unless above max_display_side
    timestamps: np.ndarray  # float64 (T,) seconds from the first frame of the source
    frame_indices: np.ndarray  # int64 (T,) 0-based indices of the sampled frames in the source
    source: Path
    source_fps: float
    source_size: tuple[int, int]  # (width, height) after rotation
    num_source_frames: int
    duration_s: float
    warnings: list[str] = field(default_factory=list)  # where the header and the file disagree (file used)


# --------------------------------------------------------------------------- public API


def probe(
    source: str | Path, limits: VideoLimits | None = None, *, folder_fps: float | None = None
) -> VideoInfo:
    """Read a clip's metadata and decode its first frame (so a clip that probes fine also decodes)."""
    limits = limits or VideoLimits()
    path = _resolve(source)
    if path.is_dir():
        return _FrameFolder(path, limits, folder_fps).info()
    with _VideoFile(path, limits) as video:
        return video.info()


def load_clip(
    source: str | Path,
    num_frames: int | None = 16,
    fps: float | None = None,
    limits: VideoLimits | None = None,
    *,
    folder_fps: float | None = None,
    frame_indices: Sequence[int] | None = None,
) -> Clip:
    """Sample frames from a video file or a frame folder.

    num_frames=N: N frames spread uniformly over the clip (the centres of N equal
    segments; all frames when the clip has fewer than N). fps=F: one frame every
    1/F seconds, the frame on screen at that time (F above the source rate gives
    every frame). frame_indices: exactly these 0-based source frames, in the order
    given (num_frames and fps must then be None). All None: every frame. Folders
    are read at `folder_fps` (default DEFAULT_FOLDER_FPS) since images carry no timing.
    """
    if frame_indices is not None and (num_frames is not None or fps is not None):
        raise ConfigError("give frame_indices alone, without num_frames or fps")
    if num_frames is not None and fps is not None:
        raise ConfigError("give either num_frames or fps, not both")
    if num_frames is not None and num_frames < 1:
        raise ConfigError(f"num_frames must be at least 1, got {num_frames}")
    if fps is not None and not (fps > 0 and math.isfinite(fps)):
        raise ConfigError(f"fps must be a positive number, got {fps}")
    limits = limits or VideoLimits()
    path = _resolve(source)
    if path.is_dir():
        reader: _FrameFolder | _VideoFile = _FrameFolder(path, limits, folder_fps)
        return _select(reader.load(num_frames, fps, frame_indices), frame_indices)
    with _VideoFile(path, limits) as video:
        return _select(video.load(num_frames, fps, frame_indices), frame_indices)


def stream_clip(
    source: str | Path,
    fps: float | None = None,
    limits: VideoLimits | None = None,
    *,
    folder_fps: float | None = None,
    chunk: int = STREAM_CHUNK,
) -> Iterator[Clip]:
    """Every frame of a clip (or F per second) as consecutive Clips of at most ``chunk`` frames.

    Memory does not grow with the clip's length: one chunk is decoded at a time (a video by one reader
    that keeps its place in the stream), so the duration limit is the only length limit.
    """
    if fps is not None and not (fps > 0 and math.isfinite(fps)):
        raise ConfigError(f"fps must be a positive number, got {fps}")
    if chunk < 1:
        raise ConfigError(f"chunk must be at least 1 frame, got {chunk}")
    limits = limits or VideoLimits()
    path = _resolve(source)
    if path.is_dir():
        folder = _FrameFolder(path, limits, folder_fps)
        indices = folder.plan(None, fps, None)
        for start in range(0, len(indices), chunk):
            yield folder.clip_of(indices[start:start + chunk])
        return
    with _VideoFile(path, limits) as video:
        yield from video.chunks(fps, chunk)


def frame_files(folder: str | Path) -> list[Path]:
    """The image files of a frame folder in natural order (2.jpg before 10.jpg); hidden files left out."""
    folder = Path(folder)
    files = (
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
    return sorted(files, key=lambda p: natural_key(p.name))


def natural_key(name: str) -> list[Any]:
    """Sort key that orders the numbers in a name by value: "frame2" before "frame10"."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def read_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Boolean anomaly mask (H, W) from an image file: a pixel is anomalous when its value is above
    MASK_THRESHOLD (8-bit masks, 0/255). size=(width, height) resizes it (nearest neighbour) first.

    A mask whose largest value is 1..MASK_THRESHOLD (a 0/1 mask) raises DataError instead of reading as empty.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                img = Image.fromarray((np.asarray(img, dtype=np.uint32) >> 8).astype(np.uint8))
            grey = img.convert("L")
            if size is not None and grey.size != tuple(size):
                grey = grey.resize(tuple(size), Image.Resampling.NEAREST)
            values = np.asarray(grey)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: not a readable mask image ({err})") from err
    if 0 < int(values.max()) <= MASK_THRESHOLD:
        raise DataError(
            f"{path}: mask values go up to {int(values.max())}; masks must be 8-bit with 255 for anomalous "
            "pixels (save 0/1 masks multiplied by 255)"
        )
    return values > MASK_THRESHOLD


def sampled_fps(timestamps: Sequence[float], default: float) -> float:
    """Frames per second of sampled frames (the median step between their timestamps), else ``default``."""
    ts = np.asarray(timestamps, dtype=np.float64)
    if len(ts) >= 2:
        step = float(np.median(np.diff(ts)))
        if step > 0:
            return 1.0 / step
    return default


def sample_indices(num_source_frames: int, num_frames: int) -> np.ndarray:
    """Indices of `num_frames` frames spread uniformly: the centre frame of each of N equal segments."""
    n = int(num_source_frames)
    if n <= num_frames:
        return np.arange(n, dtype=np.int64)
    return np.floor((np.arange(num_frames) + 0.5) * n / num_frames).astype(np.int64)


def resize_for_model(
    frames: np.ndarray, max_pixels: int = 448 * 448, min_pixels: int = 56 * 56, factor: int = 28
) -> np.ndarray:
    """Resize frames for the vision model: aspect ratio kept, both sides multiples of `factor`,
    height * width within [min_pixels, max_pixels]. Returns a new uint8 array; the input is untouched.

    Accepts (T, H, W, 3) or a single (H, W, 3) frame.
    """
    import cv2  # heavy-ish import, only needed here

    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 frames of shape (T, H, W, 3) or (H, W, 3), got {arr.dtype} {arr.shape}"
        )
    if min_pixels > max_pixels or factor < 1:
        raise ValueError(f"bad budget: min_pixels={min_pixels} max_pixels={max_pixels} factor={factor}")
    height, width = arr.shape[-3], arr.shape[-2]
    new_h, new_w = model_size(height, width, max_pixels=max_pixels, min_pixels=min_pixels, factor=factor)
    single = arr.ndim == 3
    batch = arr[None] if single else arr
    out = np.empty((batch.shape[0], new_h, new_w, 3), dtype=np.uint8)
    # INTER_AREA averages when shrinking (no aliasing); cubic when enlarging.
    interp = cv2.INTER_AREA if new_h * new_w <= height * width else cv2.INTER_CUBIC
    for i, frame in enumerate(batch):
        if (new_h, new_w) == (height, width):
            out[i] = frame
        else:
            out[i] = cv2.resize(frame, (new_w, new_h), interpolation=interp)
    return out[0] if single else out


def model_size(height: int, width: int, max_pixels: int, min_pixels: int, factor: int) -> tuple[int, int]:
    """(height, width) for resize_for_model: nearest multiples of factor, then scaled into the pixel budget."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / scale / factor) * factor)
        w = max(factor, math.floor(width / scale / factor) * factor)
    elif h * w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * scale / factor) * factor
        w = math.ceil(width * scale / factor) * factor
    return int(h), int(w)


# --------------------------------------------------------------------------- helpers


def _resolve(source: str | Path) -> Path:
    path = Path(source).expanduser()
    if not path.exists():
        raise VideoError(f"{path} does not exist; check the path (and that the file finished copying)")
    if not (path.is_file() or path.is_dir()):
        raise VideoError(f"{path} is neither a file nor a folder; give a video file or a folder of frames")
    return path


def _display_size(width: int, height: int, sar: Fraction | None, rotation: int) -> tuple[int, int]:
    """Display (width, height): square pixels, then rotated."""
    if sar is not None and sar > 0 and sar != 1:
        width = max(1, round(width * sar))
    if rotation % 180 != 0:
        width, height = height, width
    return width, height


def _fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Scale (width, height) down so the longer side is at most max_side (aspect kept)."""
    longest = max(width, height)
    if max_side <= 0 or longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _fps_times(duration_s: float, fps: float) -> np.ndarray:
    """Sampling times 0, 1/F, 2/F, ... strictly inside the clip."""
    count = max(1, math.ceil(duration_s * fps - 1e-9))
    return np.arange(count, dtype=np.float64) / fps


def _check_clip_bytes(count: int, width: int, height: int, limits: VideoLimits, path: Path) -> None:
    need = count * width * height * 3
    if need > limits.max_clip_bytes:
        raise VideoError(
            f"sampling {count} frames of {width}x{height} from {path.name} needs {need / 1024**3:.1f} GiB, "
            f"over the {limits.max_clip_bytes / 1024**3:.1f} GiB limit; ask for fewer frames "
            "(num_frames / --frames) or a lower rate (fps / --fps)"
        )


def _check_duration(duration_s: float, limits: VideoLimits, path: Path) -> None:
    if duration_s > limits.max_duration_s:
        raise VideoError(
            f"{path.name} lasts {duration_s / 60:.1f} min, over the {limits.max_duration_s / 60:.1f} min limit; "
            "cut out the part you need and use that"
        )


def _plan_indices(frame_indices: Sequence[int], count: int, path: Path) -> np.ndarray:
    """Sorted unique indices to decode for an explicit list of frames (checked against the clip's length)."""
    wanted = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
    bad = wanted[(wanted < 0) | (wanted >= count)]
    if len(bad):
        raise VideoError(
            f"{path.name} has {count} frames (0..{count - 1}); frame indices {bad[:3].tolist()} are out of range"
        )
    return np.unique(wanted)


def _select(clip: Clip, frame_indices: Sequence[int] | None) -> Clip:
    """The clip's frames in the order (and with the repeats) of `frame_indices`; the clip itself when None."""
    if frame_indices is None:
        return clip
    pos = np.searchsorted(clip.frame_indices, np.asarray(frame_indices, dtype=np.int64).reshape(-1))
    if np.array_equal(pos, np.arange(len(clip.frame_indices))):
        return clip
    return replace(clip, frames=clip.frames[pos], timestamps=clip.timestamps[pos], frame_indices=clip.frame_indices[pos])


# --------------------------------------------------------------------------- frame folders


class _FrameFolder:
    """A folder of numbered images, read in natural order (2.jpg before 10.jpg)."""

    def __init__(self, path: Path, limits: VideoLimits, folder_fps: float | None) -> None:
        self.path = path
        self.limits = limits
        self.fps = float(folder_fps or DEFAULT_FOLDER_FPS)
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ConfigError(f"folder_fps must be a positive number, got {folder_fps}")
        self.files = frame_files(path)
        if not self.files:
            raise VideoError(
                f"folder {path} holds no image frames ({', '.join(IMAGE_EXTENSIONS)}); "
                "give a folder of numbered frames or a video file"
            )
        self.duration_s = len(self.files) / self.fps
        _check_duration(self.duration_s, limits, path)
        first = self._read(0)
        self.size = (first.shape[1], first.shape[0])
        self.codec = self._format(self.files[0])

    def _format(self, file: Path) -> str | None:
        from PIL import Image

        with Image.open(file) as img:
            return img.format.lower() if img.format else None

    def _read(
        self, index: int, expect: tuple[int, int] | None = None, out_size: tuple[int, int] | None = None
    ) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        file = self.files[index]
        try:
            with Image.open(file) as img:
                img.load()
                if expect is not None and img.size != expect:
                    raise VideoError(
                        f"frame {file.name} is {img.size[0]}x{img.size[1]} but the first frame of {self.path} is "
                        f"{expect[0]}x{expect[1]}; all frames in a folder must share one size"
                    )
                # Greyscale, palette, 16-bit and RGBA all become 8-bit RGB.
                if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                    arr16 = np.asarray(img, dtype=np.float64)
                    peak = 65535.0 if arr16.max() > 255 else 255.0
                    img = Image.fromarray(np.clip(arr16 / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
                rgb = img.convert("RGB")
                if out_size is not None and rgb.size != out_size:
                    rgb = rgb.resize(out_size, Image.Resampling.BOX)
                return np.asarray(rgb, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise VideoError(
                f"frame {file.name} in {self.path} cannot be read as an image ({err}); "
                "replace or remove the broken file"
            ) from err

    def info(self) -> VideoInfo:
        return VideoInfo(
            source=self.path,
            kind="frames",
            num_frames=len(self.files),
            fps=self.fps,
            duration_s=self.duration_s,
            width=self.size[0],
            height=self.size[1],
            rotation=0,
            codec=self.codec,
            variable_frame_rate=False,
        )

    def load(self, num_frames: int | None, fps: float | None, frame_indices: Sequence[int] | None) -> Clip:
        return self.clip_of(self.plan(num_frames, fps, frame_indices))

    def plan(self, num_frames: int | None, fps: float | None, frame_indices: Sequence[int] | None) -> np.ndarray:
        n = len(self.files)
        if frame_indices is not None:
            indices = _plan_indices(frame_indices, n, self.path)
        elif num_frames is not None:
            indices = sample_indices(n, num_frames)
        elif fps is not None:
            indices = np.unique(
                np.minimum(np.floor(_fps_times(self.duration_s, fps) * self.fps + 1e-6), n - 1)
            ).astype(np.int64)
        else:
            indices = np.arange(n, dtype=np.int64)
        return indices

    def clip_of(self, indices: np.ndarray) -> Clip:
        n = len(self.files)
        out_w, out_h = _fit(*self.size, self.limits.max_display_side)
        _check_clip_bytes(len(indices), out_w, out_h, self.limits, self.path)
        frames = np.empty((len(indices), out_h, out_w, 3), dtype=np.uint8)
        for i, index in enumerate(indices):
            frames[i] = self._read(int(index), expect=self.size, out_size=(out_w, out_h))
        return Clip(
            frames=frames,
            timestamps=indices.astype(np.float64) / self.fps,
            frame_indices=indices,
            source=self.path,
            source_fps=self.fps,
            source_size=self.size,
            num_source_frames=n,
            duration_s=self.duration_s,
        )


# --------------------------------------------------------------------------- video files


@dataclass
class _Timeline:
    """Where the frames of a stream lie, in stream time_base units.

    exact: `pts` holds every frame's timestamp (from a packet scan).
    model: frames at start + i * step (constant rate from the header), verified while decoding.
    """

    start: int
    step: float  # nominal frame duration in pts units
    count: int
    pts: np.ndarray | None = None  # sorted int64, exact
    keyframes: np.ndarray | None = None  # sorted int64 pts of keyframes, when known

    @property
    def exact(self) -> bool:
        return self.pts is not None

    def pts_of(self, index: int) -> int:
        if self.pts is not None:
            return int(self.pts[index])
        return self.start + round(index * self.step)

    def index_of(self, pts: int) -> int:
        if self.pts is not None:
            return int(np.clip(np.searchsorted(self.pts, pts, side="right") - 1, 0, self.count - 1))
        return max(0, round((pts - self.start) / self.step))

    def index_at(self, pts: float) -> int:
        """Index of the frame on screen at time `pts` (last frame starting at or before it)."""
        if self.pts is not None:
            return int(np.clip(np.searchsorted(self.pts, pts, side="right") - 1, 0, self.count - 1))
        return int(min(self.count - 1, max(0, math.floor((pts - self.start) / self.step + 1e-6))))


class _ModelBroken(Exception):
    """The constant-rate model disagrees with what decodes: rescan exactly and plan again."""


class _VideoFile:
    """One open video file. Use as a context manager."""

    def __init__(self, path: Path, limits: VideoLimits) -> None:
        self.path = path
        self.limits = limits
        self.warnings: list[str] = []
        size = path.stat().st_size
        if size == 0:
            raise VideoError(f"{path.name} is empty (0 bytes); the upload or copy did not finish, try again")
        if size > limits.max_file_bytes:
            raise VideoError(
                f"{path.name} is {size / 1024**3:.2f} GiB, over the {limits.max_file_bytes / 1024**3:.2f} GiB limit; "
                "cut out the part you need, or re-encode it smaller"
            )
        self.container = self._open()
        try:
            self._inspect()
        except BaseException:
            self.container.close()
            raise

    def __enter__(self) -> _VideoFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.container.close()

    # ---- opening and metadata

    def _open(self) -> Any:
        import av

        try:
            return av.open(str(self.path), mode="r", metadata_errors="replace")
        except av.error.FFmpegError as err:
            raise self._unreadable(err) from err

    def _unreadable(self, err: Exception) -> VideoError:
        log.debug("%s: FFmpeg cannot open it: %s", self.path, err)  # FFmpeg's text names the server's path
        with open(self.path, "rb") as fh:
            head = fh.read(64)
        kind = None
        if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free"):
            kind = "MP4/MOV"
        for magic, name in _CONTAINER_MAGIC.items():
            if head.startswith(magic):
                kind = name
        if kind is not None:
            return VideoError(
                f"{self.path.name} looks like {kind} but is corrupted or truncated; "
                "the file was probably cut short while copying or recording, copy or export it again"
            )
        textual = head and all(32 <= b < 127 or b in (9, 10, 13) for b in head)
        what = "a text file, not a video" if textual else "not a video FFmpeg can read"
        return VideoError(
            f"{self.path.name} is {what}; "
            "give a video file (mp4, mkv, avi, webm, mov, ...) or a folder of frames"
        )

    def _inspect(self) -> None:
        container = self.container
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["nothing"]
            raise VideoError(
                f"{self.path.name} has no video stream (it holds {', '.join(kinds)}); give a file with video in it"
            )
        # The default stream is usually the first; cover art (attached pictures) is not the video.
        streams = [
            s
            for s in container.streams.video
            if not (s.disposition and "attached_pic" in str(s.disposition).lower())
        ]
        self.stream = streams[0] if streams else container.streams.video[0]
        ctx = self.stream.codec_context
        codec_name = getattr(getattr(ctx, "codec", None), "name", None) if ctx is not None else None
        if ctx is None or not codec_name or codec_name == "none":
            raise VideoError(
                f"{self.path.name} uses a video codec this build of FFmpeg cannot decode; "
                "re-encode it to H.264 (e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`)"
            )
        self.codec = codec_name
        ctx.thread_type = DECODER_THREADS
        self.time_base = self.stream.time_base or Fraction(1, 90000)
        rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        self.header_fps = float(rate) if rate else None
        # Raw elementary streams have no index, and AVFMT_NOTIMESTAMPS formats no timestamps: decode in order.
        self.seekable = container.format.name not in _RAW_FORMATS and not container.format.flags & 0x0080

        # First frame: proves the stream decodes, and gives rotation and the true coded size.
        first = self._first_frame()
        self.rotation = self._rotation(first)
        sar = self.stream.sample_aspect_ratio
        self.size = _display_size(first.width, first.height, sar, self.rotation)
        self.first_pts = first.pts

        # Frame rate variability as the header tells it; the scan tells exactly.
        base, avg = self.stream.base_rate, self.stream.average_rate
        self.vfr_hint: bool | None = None
        if base and avg:
            self.vfr_hint = abs(float(base) - float(avg)) > 0.01 * float(avg)
        self.timeline = self._build_timeline()
        _check_duration(self.duration_s, self.limits, self.path)

    def _first_frame(self) -> Any:
        import av

        try:
            for frame in self.container.decode(self.stream):
                return frame
        except av.error.FFmpegError as err:
            log.debug("%s: the first frame does not decode: %s", self.path, err)
            raise VideoError(
                f"{self.path.name} is corrupted: its first frame does not decode; export or copy it again"
            ) from err
        finally:
            self._rewind()
        raise VideoError(
            f"{self.path.name} holds no decodable video frames (zero frames); check the recording"
        )

    def _rewind(self) -> None:
        import av

        # Image demuxers accept a seek to 0 but do not go back: reopen those, and whatever refuses.
        if self.container.format.name not in _REOPEN_FORMATS:
            try:
                self.container.seek(0, backward=True, any_frame=False)
                self.stream.codec_context.flush_buffers()
                return
            except av.error.FFmpegError:
                pass  # cannot seek back (raw streams and pipes): reopen
        index = self.stream.index
        self.container.close()
        self.container = self._open()
        self.stream = next(s for s in self.container.streams if s.index == index)
        self.stream.codec_context.thread_type = DECODER_THREADS

    def _rotation(self, frame: Any) -> int:
        rotation = 0
        try:
            rotation = int(round(frame.rotation))  # display matrix side data (counter-clockwise degrees)
        except (AttributeError, TypeError, ValueError):
            rotation = 0
        if rotation == 0:
            tag = (self.stream.metadata or {}).get("rotate")  # old-style tag: clockwise degrees
            if tag:
                try:
                    rotation = -int(float(tag))
                except ValueError:
                    log.warning("%s: ignoring unreadable rotate tag %r", self.path.name, tag)
        rotation = ((rotation + 45) // 90 * 90) % 360
        return rotation

    def _stream_duration(self) -> float | None:
        """The video stream's own duration (not the container's, which covers audio too), if recorded."""
        if self.stream.duration and self.stream.duration > 0:
            return float(self.stream.duration * self.time_base)
        tag = (self.stream.metadata or {}).get("DURATION")  # Matroska writes one per track
        if tag:
            match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", tag.strip())
            if match:
                h, m, sec = match.groups()
                return int(h) * 3600 + int(m) * 60 + float(sec)
        return None

    def _header_count(self) -> tuple[int | None, float | None]:
        """(frame count, duration in seconds) from the header; None where absent."""
        stream, container = self.stream, self.container
        count = int(stream.frames) if stream.frames and stream.frames > 0 else None
        duration = self._stream_duration()
        if duration is not None:
            pass
        elif container.duration and container.duration > 0 and container.format.name not in _RAW_FORMATS:
            duration = container.duration / 1_000_000
        if count is None and duration is not None and self.header_fps:
            count = max(1, round(duration * self.header_fps))
        self.header_duration = duration
        return count, duration

    def _build_timeline(self, force_scan: bool = False) -> _Timeline:
        count, duration = self._header_count()
        fps = self.header_fps
        needs_scan = (
            force_scan
            or count is None
            or fps is None
            or not self.seekable
            or self.vfr_hint is not False
            or count <= SCAN_MAX_FRAMES
        )
        start = self.stream.start_time if self.stream.start_time is not None else (self.first_pts or 0)
        if not needs_scan:
            assert count is not None and fps is not None
            step = 1.0 / (fps * float(self.time_base))
            timeline = _Timeline(start=int(start), step=step, count=count)
            problem = self._check_header_timeline(timeline)
            if problem is None:
                self.fps = fps
                self.duration_s = duration if duration is not None else count / fps
                self.vfr: bool | None = False
                return timeline
            log.info("%s: %s; scanning the file for exact timestamps", self.path.name, problem)
        return self._scan()

    def _check_header_timeline(self, tl: _Timeline) -> str | None:
        """Cheap checks of a constant-rate timeline from the header (demuxing only, constant cost).

        The first packets must be evenly spaced (else the rate varies), and the packets after
        the last keyframe must end at the header's last frame (else the count or duration is wrong,
        or the file was cut short). Returns what is wrong, or None.
        """
        import av

        try:
            self._rewind()
            head = []
            for packet in self.container.demux(self.stream):
                if packet.pts is not None:
                    head.append(packet.pts)
                if len(head) >= VFR_CHECK_PACKETS:
                    break
            diffs = np.diff(np.unique(np.asarray(head, dtype=np.int64)))
            if len(diffs) and (np.abs(diffs - tl.step) > max(1.0, 0.02 * tl.step)).any():
                return "frame timestamps are not evenly spaced (variable frame rate)"
            last = tl.pts_of(tl.count - 1)
            self.container.seek(int(last), stream=self.stream, backward=True, any_frame=False)
            tail = [p.pts for p in self.container.demux(self.stream) if p.pts is not None]
            if not tail:
                return "no packets at the end the header gives"
            if tl.index_of(max(tail)) != tl.count - 1:
                return (
                    f"the header gives {tl.count} frames but the last one is frame {tl.index_of(max(tail))}"
                )
            return None
        except av.error.FFmpegError as err:
            return f"the end of the stream cannot be read ({err})"
        finally:
            self._rewind()

    def _scan(self) -> _Timeline:
        """Demux every packet of the stream (no decoding) for exact frame timestamps and keyframes."""
        import av

        pts_list: list[int] = []
        keys: list[int] = []
        missing_pts = 0
        self._rewind()
        try:
            for packet in self.container.demux(self.stream):
                if packet.size == 0 and packet.pts is None:
                    continue  # the flush packet at the end
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None:
                    missing_pts += 1
                    continue
                pts_list.append(int(ts))
                if packet.is_keyframe:
                    keys.append(int(ts))
        except av.error.FFmpegError as err:
            log.warning(
                "%s: demuxing stopped early (%s); using the %d frames before it",
                self.path.name,
                err,
                len(pts_list),
            )
        finally:
            self._rewind()
        if missing_pts and not pts_list:
            # No timestamps at all (raw streams): number frames by decode order at the header rate.
            pts_list, keys = self._decode_count()
        if not pts_list:
            raise VideoError(f"{self.path.name} holds zero video frames; check the recording")
        header_frames = int(self.stream.frames or 0)
        sparse = header_frames and header_frames - len(pts_list) > max(2, 0.01 * header_frames)
        if sparse and not self._frames_reach_header_end(pts_list, header_frames):
            # A frame count in the header comes from the container's sample index, which is exact:
            # frames missing from the end of the data mean the file was cut short. (Durations are only hints.)
            raise VideoError(
                f"{self.path.name} is truncated: its header lists {header_frames} frames but only "
                f"{len(pts_list)} are in the file; it was probably cut short while copying or recording, "
                "copy or export it again"
            )
        pts = np.unique(
            np.asarray(pts_list, dtype=np.int64)
        )  # presentation order; drops duplicate timestamps
        count = len(pts)
        diffs = np.diff(pts)
        tb = float(self.time_base)
        if count > 1:
            step = float(np.median(diffs))
            self.vfr = bool(diffs.max() - diffs.min() > max(0.02 * step, 1.0))
            span = float(pts[-1] - pts[0]) * tb
            self.fps = (count - 1) / span if span > 0 else (self.header_fps or DEFAULT_FOLDER_FPS)
            self.duration_s = span + step * tb
        else:
            self.fps = self.header_fps or DEFAULT_FOLDER_FPS
            step = 1.0 / (self.fps * tb)
            self.vfr = False
            self.duration_s = 1.0 / self.fps
        stream_dur = self._stream_duration()
        if stream_dur is not None and stream_dur - self.duration_s > max(1.0, 0.1 * stream_dur):
            # The video stream's own duration is written by the muxer when it closes the file.
            raise VideoError(
                f"{self.path.name} is truncated: its video track should last {stream_dur:.1f} s but only "
                f"{self.duration_s:.1f} s of frames are in the file; it was probably cut short while copying "
                "or recording, copy or export it again"
            )
        if sparse:
            # Frames left out along the way (players repeat the previous one), not cut off: use those there,
            # the last one shown for one frame of the header's rate.
            self.duration_s = float(pts[-1] - pts[0]) * tb + 1.0 / float(self.header_fps)
            message = (f"{self.path.name}: the header lists {header_frames} frames; {count} are in the file, "
                       f"spanning {self.duration_s:.1f} s: using those")
            if message not in self.warnings:  # a rescan finds the same
                self.warnings.append(message)
                log.debug("%s", message)  # callers show Clip.warnings / VideoInfo.warnings
        if self.header_duration is not None and abs(self.header_duration - self.duration_s) > max(
            0.5, 0.05 * self.duration_s
        ):
            log.info(
                "%s: the header says %.2f s but the video frames span %.2f s; using the frames",
                self.path.name,
                self.header_duration,
                self.duration_s,
            )
        keyframes = np.unique(np.asarray(keys, dtype=np.int64)) if keys else None
        return _Timeline(start=int(pts[0]), step=step, count=count, pts=pts, keyframes=keyframes)

    def _frames_reach_header_end(self, pts_list: list[int], header_frames: int) -> bool:
        """Whether the last frame in the file sits where the header's last frame should (a sparse file, as
        AVIs with dropped frames are, rather than one cut short)."""
        if not self.header_fps:
            return False
        start = min(pts_list)
        last_index = (max(pts_list) - start) * float(self.time_base) * self.header_fps
        return last_index >= header_frames - 1 - max(2, 0.01 * header_frames)

    def _decode_count(self) -> tuple[list[int], list[int]]:
        """Last resort for streams without timestamps: decode everything, number frames in order."""
        import av

        fps = self.header_fps or DEFAULT_FOLDER_FPS
        step = 1.0 / (fps * float(self.time_base))
        pts_list, keys = [], []
        try:
            for i, frame in enumerate(self.container.decode(self.stream)):
                pts_list.append(round(i * step))
                if frame.key_frame:
                    keys.append(pts_list[-1])
        except av.error.FFmpegError as err:
            log.warning("%s: decoding stopped early (%s)", self.path.name, err)
        finally:
            self._rewind()
        self.seekable = False  # no timestamps: seeking cannot land anywhere we could name
        return pts_list, keys

    def info(self) -> VideoInfo:
        return VideoInfo(
            source=self.path,
            kind="video",
            num_frames=self.timeline.count,
            fps=float(self.fps),
            duration_s=float(self.duration_s),
            width=self.size[0],
            height=self.size[1],
            rotation=self.rotation,
            codec=self.codec,
            variable_frame_rate=self.vfr,
            warnings=list(self.warnings),
        )

    # ---- sampling

    def _plan(self, num_frames: int | None, fps: float | None, frame_indices: Sequence[int] | None) -> np.ndarray:
        tl = self.timeline
        if frame_indices is not None:
            return _plan_indices(frame_indices, tl.count, self.path)
        if num_frames is not None:
            return sample_indices(tl.count, num_frames)
        if fps is not None:
            if fps >= self.fps * 0.999 and not self.vfr:
                return np.arange(tl.count, dtype=np.int64)
            per_pts = 1.0 / float(self.time_base)
            times = _fps_times(self.duration_s, fps)
            return np.unique([tl.index_at(tl.start + t * per_pts) for t in times]).astype(np.int64)
        return np.arange(tl.count, dtype=np.int64)

    def load(self, num_frames: int | None, fps: float | None, frame_indices: Sequence[int] | None) -> Clip:
        out_w, out_h = _fit(*self.size, self.limits.max_display_side)
        for attempt in range(2):
            indices = self._plan(num_frames, fps, frame_indices)
            _check_clip_bytes(len(indices), out_w, out_h, self.limits, self.path)
            try:
                frames, pts = self._decode_indices(indices, (out_w, out_h))
                break
            except _ModelBroken as why:
                if attempt == 1 or self.timeline.exact:
                    raise VideoError(
                        f"{self.path.name} is corrupted or truncated: {why}; export or copy it again"
                    ) from None
                log.warning(
                    "%s: header timing is wrong (%s); scanning the file for exact timestamps",
                    self.path.name,
                    why,
                )
                self.timeline = self._scan()
                _check_duration(self.duration_s, self.limits, self.path)
        return self._clip(frames, pts, indices)

    def _clip(self, frames: np.ndarray, pts: np.ndarray, indices: np.ndarray) -> Clip:
        return Clip(
            frames=frames,
            timestamps=(pts - self.timeline.start).astype(np.float64) * float(self.time_base),
            frame_indices=indices,
            source=self.path,
            source_fps=float(self.fps),
            source_size=self.size,
            num_source_frames=self.timeline.count,
            duration_s=float(self.duration_s),
            warnings=list(self.warnings),
        )

    def chunks(self, fps: float | None, chunk: int) -> Iterator[Clip]:
        """Every frame (or F per second) in Clips of at most ``chunk`` frames, decoded by one reader."""
        out_size = _fit(*self.size, self.limits.max_display_side)
        indices = self._plan(None, fps, None)
        reader = self._reader()
        for start in range(0, len(indices), chunk):
            part = indices[start:start + chunk]
            try:
                frames, pts = self._decode_indices(part, out_size, reader)
            except _ModelBroken as why:
                if start or self.timeline.exact:
                    raise VideoError(f"{self.path.name} is corrupted or truncated: {why}; export or copy it again"
                                     ) from None
                log.warning("%s: header timing is wrong (%s); scanning the file for exact timestamps",
                            self.path.name, why)
                self.timeline = self._scan()
                _check_duration(self.duration_s, self.limits, self.path)
                yield from self.chunks(fps, chunk)
                return
            yield self._clip(frames, pts, part)

    def _reader(self) -> _Reader:
        reader = _Reader(self, self.timeline)
        if self.timeline.count <= SEQUENTIAL_MAX_FRAMES:
            reader.allow_seek = False  # tiny clip: one pass front to back is cheapest
        return reader

    def _decode_indices(
        self, indices: np.ndarray, out_size: tuple[int, int], reader: _Reader | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decode the frames at `indices` (sorted, unique): seek when that skips work, else decode on."""
        tl = self.timeline
        reader = reader or self._reader()
        out_w, out_h = out_size
        frames = np.empty((len(indices), out_h, out_w, 3), dtype=np.uint8)
        pts_out = np.empty(len(indices), dtype=np.int64)
        for i, index in enumerate(indices):
            target = tl.pts_of(int(index))
            frame = reader.get(target)
            got = tl.index_of(frame.pts)
            if got != index:
                raise _ModelBroken(
                    f"frame {index} was expected at pts {target} but the decoder gave pts {frame.pts}"
                )
            frames[i] = self._to_rgb(frame, out_w, out_h)
            pts_out[i] = frame.pts
        return frames, pts_out

    def _to_rgb(self, frame: Any, out_w: int, out_h: int) -> np.ndarray:
        # Scale in the coded orientation, then rotate (np.rot90 turns counter-clockwise like `rotation`).
        k = (self.rotation // 90) % 4
        coded_w, coded_h = (out_h, out_w) if k % 2 else (out_w, out_h)
        if (coded_w, coded_h) == (frame.width, frame.height):
            rgb = frame.to_ndarray(format="rgb24")
        else:
            shrink = coded_w * coded_h < frame.width * frame.height
            rgb = frame.reformat(
                width=coded_w, height=coded_h, format="rgb24", interpolation="AREA" if shrink else "BICUBIC"
            ).to_ndarray()
        return np.rot90(rgb, k) if k else rgb


class _Reader:
    """Decodes forward through a stream, seeking to the keyframe before a target when that skips work."""

    def __init__(self, video: _VideoFile, timeline: _Timeline) -> None:
        self.video = video
        self.tl = timeline
        self.container = video.container
        self.stream = video.stream
        self.frames: Any = None  # the current decode iterator
        self.last_pts: int | None = None  # pts of the last frame decoded
        self.last_key: int | None = None  # pts of the last keyframe decoded
        self.gop = DEFAULT_GOP_S / float(video.time_base)  # keyframe interval in pts, learnt as we go
        self.pending: Any = None  # a frame decoded past a target, kept for the next one
        # Exact timelines match pts exactly; header rates are rounded, so allow half a frame there.
        self.tolerance = 0 if timeline.exact else max(0, math.ceil(timeline.step / 2) - 1)
        self.counter = 0  # frames decoded since the last (re)start, to number timestamp-less frames
        self.allow_seek = True

    def _start(self, seek_to: int | None) -> None:
        import av

        if seek_to is not None:
            try:
                self.container.seek(int(seek_to), stream=self.stream, backward=True, any_frame=False)
            except av.error.FFmpegError as err:
                log.info("%s: seek failed (%s)", self.video.path.name, err)
                self.frames = None
                return
        if seek_to is None:
            self.video._rewind()
            self.stream = self.video.stream
            self.container = self.video.container
        self.frames = self.container.decode(self.stream)
        self.last_pts = None
        self.pending = None
        self.counter = 0

    def _next(self) -> Any:
        import av

        if self.pending is not None:
            frame, self.pending = self.pending, None
            return frame
        while True:
            try:
                frame = next(self.frames, None)
            except av.error.EOFError:
                frame = None
            except av.error.FFmpegError as err:
                log.debug("%s: decoding failed after pts %s: %s", self.video.path, self.last_pts, err)
                raise VideoError(
                    f"{self.video.path.name} is corrupted: decoding failed after pts {self.last_pts}; "
                    "export or copy the file again"
                ) from err
            if frame is None:
                return None
            if frame.pts is None:
                if self.video.seekable:
                    continue  # a stray frame without timestamp in a timed stream: cannot be placed
                frame.pts = round(self.counter * self.tl.step)  # timestamp-less stream read in order
            self.counter += 1
            if frame.key_frame:
                if self.last_key is not None and frame.pts > self.last_key:
                    self.gop = max(frame.pts - self.last_key, self.tl.step)
                self.last_key = frame.pts
            self.last_pts = frame.pts
            return frame

    def _should_seek(self, target: int) -> bool:
        if self.frames is None:
            return True
        if self.last_pts is None or target <= self.last_pts - self.tolerance:
            return True  # target is behind us (or we know nothing): only a seek goes back
        key = self._keyframe_before(target)
        if key is not None:
            # Seek only if a keyframe lies between here and the target: decoding on is never worse otherwise.
            return key > self.last_pts
        return target - self.last_pts > self.gop

    def _keyframe_before(self, target: int) -> int | None:
        """Timestamp of the last keyframe at or before `target`, when an index tells it."""
        kf = self.tl.keyframes
        if kf is not None and len(kf):
            j = int(np.searchsorted(kf, target + self.tolerance, side="right")) - 1
            return int(kf[j]) if j >= 0 else None
        entries = self.stream.index_entries
        # A full sample index (MP4, AVI): one entry per frame, keyframes flagged. Its timestamps
        # are decode times, a frame or two before presentation with B-frames: close enough here.
        # Partial indexes (Matroska cues load lazily) would hide keyframes, so they are not used.
        if self.video.stream.frames and len(entries) >= self.video.stream.frames:
            j = entries.search_timestamp(target + self.tolerance, backward=True, any_frame=False)
            return int(entries[j].timestamp) if j >= 0 else None
        return None

    def _seek_and_land(self, target: int) -> Any:
        """Seek to the keyframe before `target`; the first frame decoded there, or None if seeking fails.

        Indexes can be inexact (landing after the target) or missing (landing nowhere): step
        further back a couple of times before giving up on seeking.
        """
        for back in (0, 1, 4):
            self._start(max(self.tl.start, int(target - back * self.gop)))
            if self.frames is None:
                return None
            landed = self._next()
            if landed is not None and landed.pts <= target + self.tolerance:
                return landed
        return None

    def get(self, target: int) -> Any:
        """The frame whose pts is `target` (within half a frame for header-rate timelines)."""
        if self.allow_seek and self.video.seekable and self._should_seek(target):
            landed = self._seek_and_land(target)
            if landed is None:
                log.info("%s: seeking does not work here; decoding from the start", self.video.path.name)
                self.video.seekable = False
                self._start(None)
            else:
                self.pending = landed
        elif self.frames is None or (self.last_pts is not None and target < self.last_pts - self.tolerance):
            self._start(None)  # no seeking: (re)start from the beginning
        while True:
            frame = self._next()
            if frame is None:
                raise _ModelBroken(f"the stream ends before pts {target} (last frame at pts {self.last_pts})")
            if frame.pts >= target - self.tolerance:
                if frame.pts > target + self.tolerance:
                    raise _ModelBroken(f"no frame at pts {target}; the next one is at pts {frame.pts}")
                return frame
