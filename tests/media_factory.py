"""Small test videos and frame folders, written with PyAV / Pillow in temporary folders.

Every frame carries its own index as a barcode (a row of black/white blocks),
so a test can tell which source frame it got without trusting the reader
under test.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tvad_chat.render import write_video as write_mp4
from tvad_chat.video import load_clip

BARCODE_BITS = 12  # frame indices up to 4095


def frame_image(index: int, width: int, height: int, gray: bool = False) -> np.ndarray:
    """A frame that differs from its neighbours everywhere and shows its index as a barcode."""
    ys, xs = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[..., 0] = (xs * 255 // max(width - 1, 1) + index * 7) % 256
    img[..., 1] = (ys * 255 // max(height - 1, 1) + index * 13) % 256
    img[..., 2] = ((xs + ys + index * 5) * 3) % 256
    # Barcode: top band of big blocks, white = 1, bit 0 leftmost.
    band = max(2, height // 5)
    block = width // BARCODE_BITS
    if block >= 2:
        for bit in range(BARCODE_BITS):
            img[:band, bit * block : (bit + 1) * block] = 255 if (index >> bit) & 1 else 0
    # A red marker in the top-left of the lower part: shows orientation after rotation.
    img[band : band + max(1, height // 4), : max(1, width // 4)] = (255, 0, 0)
    if gray:
        g = img.mean(axis=2).astype(np.uint8)
        img = np.stack([g, g, g], axis=2)
    return img


def read_barcode(img: np.ndarray) -> int:
    """The frame index written by frame_image (on an upright, unscaled or uniformly scaled frame)."""
    height, width = img.shape[:2]
    band = max(2, height // 5)
    block = width // BARCODE_BITS
    value = 0
    for bit in range(BARCODE_BITS):
        patch = img[band // 4 : band * 3 // 4, bit * block + block // 4 : (bit + 1) * block - block // 4]
        if patch.mean() > 127:
            value |= 1 << bit
    return value


def write_video(
    path: Path,
    codec: str = "libx264",
    num_frames: int = 30,
    width: int = 160,
    height: int = 96,
    fps: int = 25,
    pix_fmt: str = "yuv420p",
    fmt: str | None = None,
    options: dict[str, str] | None = None,
    rotation: int | None = None,
    pts_ms: list[int] | None = None,
    gray: bool = False,
) -> Path:
    """Encode frame_image(0..n-1). pts_ms gives each frame's timestamp (variable frame rate)."""
    path = Path(path)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", **(options or {})}
        elif codec.startswith("libvpx"):
            stream.options = {"deadline": "realtime", "cpu-used": "8", **(options or {})}
        elif options:
            stream.options = options
        if pts_ms is not None:
            stream.time_base = Fraction(1, 1000)
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        count = len(pts_ms) if pts_ms is not None else num_frames
        for i in range(count):
            src_fmt = "gray" if pix_fmt == "gray" else "rgb24"
            img = frame_image(i, width, height, gray=gray or pix_fmt == "gray")
            frame = av.VideoFrame.from_ndarray(img[..., 0] if src_fmt == "gray" else img, format=src_fmt)
            if pts_ms is not None:
                frame.pts = pts_ms[i]
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frames(
    folder: Path, num_frames: int, width: int = 96, height: int = 64, ext: str = ".png", gray: bool = False
) -> Path:
    """A frame folder named 0.png, 1.png, ... 10.png (natural order differs from string order)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(num_frames):
        img = frame_image(i, width, height, gray=gray)
        pil = Image.fromarray(img[..., 0], mode="L") if gray else Image.fromarray(img)
        pil.save(folder / f"{i}{ext}", quality=95) if ext in (".jpg", ".jpeg") else pil.save(
            folder / f"{i}{ext}"
        )
    return folder


def full_decode(path: Path) -> tuple[list[np.ndarray], list[int]]:
    """Reference: every frame of the first video stream, decoded in order by plain PyAV (coded orientation)."""
    frames, pts = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            pts.append(frame.pts)
    return frames, pts


def write_sparse_avi(path: Path, kept: list[int], header_frames: int, fps: int = 15, width: int = 160,
                     height: int = 96) -> Path:
    """An AVI like OpenCV's tree.avi: the header lists ``header_frames`` frames but only the frames ``kept``
    (source indices, the last one ``header_frames - 1``) hold data; the muxer writes empty chunks for the rest,
    which players show as repeats of the previous frame."""
    path = Path(path)
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mjpeg", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
        for i in kept:
            frame = av.VideoFrame.from_ndarray(frame_image(i, width, height), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == header_frames, "the AVI muxer no longer pads dropped frames"
    return path


def first_frames(path: Path, count: int, out: Path) -> Path:
    """The clip at ``path`` cut to its first ``count`` frames, written as an mp4 at ``out`` (its own fps)."""
    clip = load_clip(path, num_frames=None, frame_indices=range(count))
    return write_mp4(clip.frames, out, fps=clip.source_fps)
