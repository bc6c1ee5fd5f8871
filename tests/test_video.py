"""Video ingest: formats, seeking accuracy, rotation, VFR, greyscale, odd/huge sizes, broken input, real footage."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from media_factory import frame_image, full_decode, read_barcode, write_frames, write_sparse_avi, write_video
from shared_data import DATA

import tvad_chat.video as video
from tvad_chat.errors import ConfigError, DataError, VideoError
from tvad_chat.video import VideoLimits, load_clip, probe, resize_for_model, sample_indices, stream_clip

PED2 = DATA / "ucsd_ped2" / "testing"
AVENUE = DATA / "cuhk_avenue"

VFR_MS = [0, 40, 80, 200, 210, 220, 500, 540, 1000, 1040, 1080, 1500]

# name -> write_video keyword arguments; (frames, fps) follow from them.
FORMATS = {
    "h264.mp4": dict(codec="libx264", num_frames=120, options={"g": "20"}),
    "h264_bframes.mp4": dict(
        codec="libx264", num_frames=90, options={"g": "30", "preset": "fast", "bf": "3"}
    ),
    "vp9.mkv": dict(codec="libvpx-vp9", num_frames=80, options={"g": "15"}),
    "vp8.webm": dict(codec="libvpx", num_frames=80, fmt="webm", options={"g": "15"}),
    "mjpeg.avi": dict(codec="mjpeg", num_frames=40, pix_fmt="yuvj420p"),
    "mpeg4.mov": dict(codec="mpeg4", num_frames=60, options={"g": "12"}),
    "raw.h264": dict(codec="libx264", num_frames=50, fmt="h264", options={"g": "10"}),
    "live.mkv": dict(codec="libx264", num_frames=50, fmt="matroska", options={"g": "10"}),  # see fixture
}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    for name, kwargs in FORMATS.items():
        if name == "live.mkv":
            _write_live_mkv(root / name, kwargs["num_frames"])
        else:
            write_video(root / name, **kwargs)
    for degrees in (90, -90, 180):
        write_video(root / f"rot{degrees}.mp4", num_frames=6, rotation=degrees)
    write_video(root / "vfr.mp4", pts_ms=VFR_MS)
    write_video(root / "vfr.mkv", codec="libvpx-vp9", pts_ms=VFR_MS)
    write_video(root / "one.mp4", num_frames=1)
    write_video(root / "gray.mkv", codec="ffv1", num_frames=5, pix_fmt="gray")
    write_video(root / "gray_h264.mp4", num_frames=10, gray=True)
    write_video(root / "odd.webm", codec="libvpx-vp9", num_frames=5, width=33, height=17, fmt="webm")
    write_video(root / "4k.mp4", num_frames=3, width=3840, height=2160)
    _write_with_audio(root / "audio_longer.ts", "mpegts", video_frames=50, audio_s=4.0)
    _write_faststart(root / "faststart.mp4", 100)
    return root


def _write_faststart(path: Path, num_frames: int) -> None:
    """MP4 with its index (moov) before the data: a cut copy still opens, with frames missing."""
    _write_h264(path, num_frames, options={"movflags": "+faststart"})


def _write_live_mkv(path: Path, num_frames: int) -> None:
    """A Matroska file written as a live stream: no duration, no cues (like a browser recording)."""
    _write_h264(path, num_frames, format="matroska", options={"live": "1"})


def _write_h264(path: Path, num_frames: int, **open_args: Any) -> None:
    """160x96 H.264 barcode frames at 25 fps, keyframes every 10, muxed with av.open's ``open_args``."""
    with av.open(str(path), "w", **open_args) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "10"}
        for i in range(num_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_image(i, 160, 96), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_with_audio(path: Path, fmt: str, video_frames: int, audio_s: float) -> None:
    """Video plus a longer audio track: the container's duration is not the video's."""
    with av.open(str(path), "w", format=fmt) as container:
        vs = container.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 160, 96, "yuv420p"
        vs.options = {"preset": "ultrafast", "g": "10"}
        audio = container.add_stream("aac", rate=16000)
        for i in range(video_frames):
            for packet in vs.encode(av.VideoFrame.from_ndarray(frame_image(i, 160, 96), format="rgb24")):
                container.mux(packet)
        for packet in vs.encode():
            container.mux(packet)
        for start in range(0, int(audio_s * 16000), 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)


@pytest.fixture
def force_seeking(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make small test clips take the long-clip path: header timing, no packet scan, seek for every frame."""
    monkeypatch.setattr(video, "SCAN_MAX_FRAMES", 0)
    monkeypatch.setattr(video, "SEQUENTIAL_MAX_FRAMES", 0)


def _assert_matches_full_decode(clip: video.Clip, path: Path) -> None:
    ref, _ = full_decode(path)
    assert clip.num_source_frames == len(ref)
    assert len(clip.frames) == len(clip.frame_indices) > 0
    for frame, index in zip(clip.frames, clip.frame_indices):
        assert np.array_equal(frame, ref[index]), f"frame {index} differs from the full decode"


# --------------------------------------------------------------------------- formats and accuracy


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_formats_probe_and_sample_exact_frames(media: Path, name: str) -> None:
    path = media / name
    n = FORMATS[name]["num_frames"]
    info = probe(path)
    assert (info.kind, info.num_frames, info.width, info.height, info.rotation) == ("video", n, 160, 96, 0)
    assert info.fps == pytest.approx(25.0, rel=1e-3)
    assert info.duration_s == pytest.approx(n / 25.0, abs=0.05)
    assert info.variable_frame_rate is False
    clip = load_clip(path, num_frames=7)
    assert clip.frame_indices.tolist() == sample_indices(n, 7).tolist()
    assert [read_barcode(f) for f in clip.frames] == clip.frame_indices.tolist()
    assert clip.frames.dtype == np.uint8 and clip.frames.shape == (7, 96, 160, 3)
    np.testing.assert_allclose(clip.timestamps, clip.frame_indices / 25.0, atol=1e-3)
    assert clip.source_size == (160, 96) and clip.num_source_frames == n
    _assert_matches_full_decode(clip, path)


@pytest.mark.parametrize(
    "name", ["h264.mp4", "h264_bframes.mp4", "vp9.mkv", "vp8.webm", "mjpeg.avi", "mpeg4.mov"]
)
@pytest.mark.parametrize("how", [dict(num_frames=9), dict(num_frames=None, fps=3.0), dict(num_frames=None)])
def test_seeking_path_is_frame_accurate(media: Path, name: str, how: dict, force_seeking: None) -> None:
    path = media / name
    clip = load_clip(path, **how)
    _assert_matches_full_decode(clip, path)
    assert [read_barcode(f) for f in clip.frames] == clip.frame_indices.tolist()
    if how.get("fps"):
        # The frame on screen at t = 0, 1/3, 2/3, ... s of a 25 fps clip.
        expected = sorted(
            {int(np.floor(k / 3.0 * 25 + 1e-6)) for k in range(int(np.ceil(clip.duration_s * 3)))}
        )
        assert clip.frame_indices.tolist() == expected


def _count_decoded(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    counter = {"frames": 0, "seeks": 0}
    next_frame, start = video._Reader._next, video._Reader._start

    def counting_next(self: video._Reader):  # type: ignore[no-untyped-def]
        frame = next_frame(self)
        counter["frames"] += frame is not None
        return frame

    def counting_start(self: video._Reader, seek_to):  # type: ignore[no-untyped-def]
        counter["seeks"] += seek_to is not None
        return start(self, seek_to)

    monkeypatch.setattr(video._Reader, "_next", counting_next)
    monkeypatch.setattr(video._Reader, "_start", counting_start)
    return counter


@pytest.mark.parametrize("scan", [True, False], ids=["scanned", "header"])
def test_sampling_cost_does_not_grow_with_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scan: bool
) -> None:
    """Decoded frames per sample stay within one keyframe interval, whatever the clip's length."""
    if not scan:
        monkeypatch.setattr(video, "SCAN_MAX_FRAMES", 0)
    gop = 25
    short = write_video(tmp_path / "short.mp4", num_frames=200, width=96, height=48, options={"g": str(gop)})
    long = write_video(tmp_path / "long.mp4", num_frames=2000, width=96, height=48, options={"g": str(gop)})
    counter = _count_decoded(monkeypatch)
    costs = {}
    for path in (short, long):
        counter.update(frames=0, seeks=0)
        clip = load_clip(path, num_frames=8)
        assert [read_barcode(f) for f in clip.frames] == clip.frame_indices.tolist()
        costs[path.name] = dict(counter)
    assert costs["long.mp4"]["seeks"] >= 8  # one seek per sample (targets 250 frames apart)
    assert costs["long.mp4"]["frames"] <= 8 * (gop + 1)  # never more than a keyframe interval each
    assert costs["long.mp4"]["frames"] < 0.15 * 2000  # far from a full decode
    assert costs["short.mp4"]["frames"] <= 200


# --------------------------------------------------------------------------- rotation, VFR, odd clips


@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_rotation_metadata_gives_upright_frames(media: Path, degrees: int) -> None:
    import cv2

    path = media / f"rot{degrees}.mp4"
    info = probe(path)
    assert info.rotation == degrees % 360
    assert (info.width, info.height) == ((96, 160) if degrees % 180 else (160, 96))
    clip = load_clip(path, num_frames=None)
    assert clip.frames.shape[1:3] == (info.height, info.width)
    # Independent reference: OpenCV applies the display matrix itself.
    capture = cv2.VideoCapture(str(path))
    for frame in clip.frames:
        ok, bgr = capture.read()
        assert ok
        assert bgr.shape == frame.shape
        assert np.abs(bgr[..., ::-1].astype(int) - frame.astype(int)).mean() < 3.0
    # And the red marker (top-left of the coded picture, under the barcode) is where rotation puts it.
    ref, _ = full_decode(path)
    np.testing.assert_array_equal(clip.frames[0], np.rot90(ref[0], (degrees // 90) % 4))


@pytest.mark.parametrize("name", ["vfr.mp4", "vfr.mkv"])
def test_variable_frame_rate_uses_timestamps(media: Path, name: str, force_seeking: None) -> None:
    path = media / name
    info = probe(path)
    assert info.variable_frame_rate is True
    assert info.num_frames == len(VFR_MS)
    clip = load_clip(path, num_frames=None)
    np.testing.assert_allclose(clip.timestamps, np.array(VFR_MS) / 1000.0, atol=1e-3)
    assert [read_barcode(f) for f in clip.frames] == list(range(len(VFR_MS)))
    # fps sampling picks the frame on screen at each time, computed here from the timestamps directly.
    clip = load_clip(path, num_frames=None, fps=4.0)
    times = np.arange(int(np.ceil(clip.duration_s * 4.0))) / 4.0
    expected = sorted({max(i for i, ms in enumerate(VFR_MS) if ms <= t * 1000 + 1e-6) for t in times})
    assert clip.frame_indices.tolist() == expected
    assert [read_barcode(f) for f in clip.frames] == expected
    _assert_matches_full_decode(clip, path)


def test_one_frame_clip(media: Path) -> None:
    info = probe(media / "one.mp4")
    assert info.num_frames == 1 and info.duration_s == pytest.approx(0.04)
    for kwargs in (dict(num_frames=16), dict(num_frames=None, fps=2.0), dict(num_frames=None)):
        clip = load_clip(media / "one.mp4", **kwargs)
        assert clip.frame_indices.tolist() == [0] and clip.frames.shape == (1, 96, 160, 3)
        assert read_barcode(clip.frames[0]) == 0


def test_single_image_file_is_a_one_frame_clip(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(frame_image(3, 160, 96)).save(tmp_path / "still.jpg", quality=95)
    info = probe(tmp_path / "still.jpg")
    assert (info.num_frames, info.width, info.height) == (1, 160, 96)
    clip = load_clip(tmp_path / "still.jpg", num_frames=8)
    assert clip.frames.shape == (1, 96, 160, 3) and read_barcode(clip.frames[0]) == 3


def test_greyscale_video_becomes_three_equal_channels(media: Path) -> None:
    clip = load_clip(media / "gray.mkv", num_frames=None)  # FFV1 is lossless: exact pixels expected
    assert clip.frames.shape == (5, 96, 160, 3)
    for i, frame in enumerate(clip.frames):
        expected = frame_image(i, 160, 96, gray=True)
        np.testing.assert_array_equal(frame, expected)
    clip = load_clip(media / "gray_h264.mp4", num_frames=3)
    spread = clip.frames.astype(int).max(axis=3) - clip.frames.astype(int).min(axis=3)
    assert spread.max() <= 4  # grey content stays grey through 4:2:0 chroma


def test_odd_size(media: Path) -> None:
    info = probe(media / "odd.webm")
    assert (info.width, info.height) == (33, 17)
    clip = load_clip(media / "odd.webm", num_frames=3)
    assert clip.frames.shape == (3, 17, 33, 3)
    _assert_matches_full_decode(clip, media / "odd.webm")


def test_4k_is_downscaled_for_display_not_refused(media: Path) -> None:
    import cv2

    info = probe(media / "4k.mp4")
    assert (info.width, info.height, info.num_frames) == (3840, 2160, 3)
    clip = load_clip(media / "4k.mp4", num_frames=None)
    assert clip.frames.shape == (3, 720, 1280, 3) and clip.source_size == (3840, 2160)
    ref, _ = full_decode(media / "4k.mp4")
    for frame, index in zip(clip.frames, clip.frame_indices):
        small = cv2.resize(ref[index], (1280, 720), interpolation=cv2.INTER_AREA)
        assert np.abs(small.astype(int) - frame.astype(int)).mean() < 3.0
        assert read_barcode(frame) == index
    big = load_clip(media / "4k.mp4", num_frames=1, limits=VideoLimits(max_display_side=4096))
    assert big.frames.shape == (1, 2160, 3840, 3)


@pytest.mark.parametrize("seeking", [False, True], ids=["scanned", "header"])
def test_missing_or_misleading_duration(media: Path, monkeypatch: pytest.MonkeyPatch, seeking: bool) -> None:
    if seeking:
        monkeypatch.setattr(video, "SCAN_MAX_FRAMES", 0)
        monkeypatch.setattr(video, "SEQUENTIAL_MAX_FRAMES", 0)
    # live.mkv has no duration at all; the .ts container lasts 4 s (audio) but its video 2 s.
    for name in ("live.mkv", "audio_longer.ts", "raw.h264"):
        with av.open(str(media / name)) as container:
            has_duration = bool(container.streams.video[0].duration or container.duration)
        assert has_duration == (name == "audio_longer.ts")
        info = probe(media / name)
        assert info.num_frames == 50 and info.duration_s == pytest.approx(2.0, abs=0.05)
        clip = load_clip(media / name, num_frames=5)
        assert [read_barcode(f) for f in clip.frames] == sample_indices(50, 5).tolist()
        np.testing.assert_allclose(clip.timestamps, clip.frame_indices / 25.0, atol=1e-3)


@pytest.mark.parametrize("claim_ms", [10000.0, 1600.0], ids=["overstated", "understated"])
def test_wrong_header_duration_is_recounted(
    media: Path, force_seeking: None, caplog: pytest.LogCaptureFixture, claim_ms: float
) -> None:
    """A Matroska duration that is wrong (container-level, no track tag): counted, not trusted."""
    caplog.set_level(logging.INFO, logger="tvad_chat.video")
    data = bytearray((media / "vp9.mkv").read_bytes())
    data = data.replace(b"DURATION", b"DURATIOX")  # hide the per-track duration tags
    # Segment Info Duration (EBML id 0x4489, 8-byte float, in ms): claim another length than 3.2 s.
    pos = data.index(b"\x44\x89\x88")
    assert np.frombuffer(bytes(data[pos + 3 : pos + 11]), ">f8")[0] == pytest.approx(3200.0)
    data[pos + 3 : pos + 11] = np.array([claim_ms], ">f8").tobytes()
    path = media / f"claim_{claim_ms:.0f}.mkv"
    path.write_bytes(bytes(data))
    with av.open(str(path)) as container:
        assert container.duration == pytest.approx(claim_ms * 1000, rel=1e-3)  # the lie is in place
    assert probe(path).num_frames == 80
    clip = load_clip(path, num_frames=4)
    assert clip.num_source_frames == 80
    assert [read_barcode(f) for f in clip.frames] == sample_indices(80, 4).tolist()
    assert "scanning the file" in caplog.text


# --------------------------------------------------------------------------- broken input


def _broken(media: Path, tmp_path: Path) -> dict[str, tuple[Path, list[str]]]:
    mp4 = (media / "h264.mp4").read_bytes()
    avi = (media / "mjpeg.avi").read_bytes()
    mkv = (media / "vp9.mkv").read_bytes()
    faststart = (media / "faststart.mp4").read_bytes()
    assert faststart[4:8] == b"ftyp" and b"moov" in faststart[:100]
    files = {
        "truncated.mp4": (mp4[: len(mp4) // 2], ["corrupted or truncated", "copy or export it again"]),
        "truncated.avi": (avi[: len(avi) // 2], ["truncated", "40 frames"]),
        "truncated_faststart.mp4": (faststart[: len(faststart) * 6 // 10], ["truncated", "100 frames"]),
        "truncated.mkv": (mkv[: len(mkv) // 2], ["truncated", "3.2 s"]),
        "random.mp4": (np.random.default_rng(0).bytes(20000), ["not a video", "give a video file"]),
        "notes.mp4": (b"this is a shopping list, not a film\n" * 50, ["text file", "give a video file"]),
        "empty.mp4": (b"", ["empty", "0 bytes"]),
        "codec.avi": (avi.replace(b"MJPG", b"QQQQ"), ["codec", "re-encode"]),
    }
    out = {}
    for name, (data, words) in files.items():
        (tmp_path / name).write_bytes(data)
        out[name] = (tmp_path / name, words)
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "readme.txt").write_text("frames go here")
    out["no_images"] = (tmp_path / "no_images", ["no image frames", ".jpg"])
    out["missing.mp4"] = (tmp_path / "missing.mp4", ["does not exist"])
    with av.open(str(tmp_path / "audio.m4a"), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    out["audio.m4a"] = (tmp_path / "audio.m4a", ["no video stream", "audio"])
    _write_with_audio(tmp_path / "zero_frames.mkv", "matroska", video_frames=0, audio_s=1.0)
    out["zero_frames.mkv"] = (tmp_path / "zero_frames.mkv", ["zero frames"])
    return out


def test_broken_inputs_raise_useful_video_errors(media: Path, tmp_path: Path, force_seeking: None) -> None:
    # force_seeking: the truncated files must be caught on the long-clip path too.
    for name, (path, words) in _broken(media, tmp_path).items():
        for call in (probe, load_clip):
            try:
                call(path)
                raise AssertionError(f"{name}: {call.__name__} accepted a broken input")
            except VideoError as err:
                message = str(err)
                assert path.name in message, f"{name}: message does not name the file: {message}"
                for word in words:
                    assert word in message, f"{name}: {word!r} missing from: {message}"
            except ConfigError:
                pytest.fail(f"{name}: expected VideoError")


def test_truncated_files_refused_on_the_scanned_path_too(media: Path, tmp_path: Path) -> None:
    avi = (media / "mjpeg.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(avi[: len(avi) // 2])
    with pytest.raises(VideoError, match="cut.avi is truncated: its header lists 40 frames"):
        probe(tmp_path / "cut.avi")
    mkv = (media / "vp9.mkv").read_bytes()
    (tmp_path / "cut.mkv").write_bytes(mkv[: len(mkv) // 2])
    with pytest.raises(VideoError, match="cut.mkv is truncated: its video track should last 3.2 s"):
        load_clip(tmp_path / "cut.mkv")


@pytest.mark.parametrize("seeking", [False, True], ids=["scanned", "seeking"])
def test_sparse_avi_like_tree_avi_is_used_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seeking: bool
) -> None:
    """OpenCV's tree.avi: the header lists 444 frames, 68 hold data, their timestamps span them all.

    Every player shows it; we decode what is there and say how it differs from the header."""
    if seeking:
        monkeypatch.setattr(video, "SCAN_MAX_FRAMES", 0)
        monkeypatch.setattr(video, "SEQUENTIAL_MAX_FRAMES", 0)
    kept = sorted({0, *range(3, 440, 7), *range(5, 440, 13), 443})
    path = write_sparse_avi(tmp_path / "tree_like.avi", kept, header_frames=444, fps=15)
    info = probe(path)
    assert info.num_frames == len(kept) == 94
    assert info.warnings == [
        f"tree_like.avi: the header lists 444 frames; {len(kept)} are in the file, spanning 29.6 s: using those"
    ]
    clip = load_clip(path, num_frames=None)
    assert clip.warnings == info.warnings
    assert [read_barcode(f) for f in clip.frames] == kept  # each frame is the one stored, in order
    np.testing.assert_allclose(clip.timestamps, np.asarray(kept) / 15, atol=1e-6)  # at their own times
    sampled = load_clip(path, num_frames=8)
    assert [read_barcode(f) for f in sampled.frames] == [kept[i] for i in sample_indices(len(kept), 8)]
    chunks = list(stream_clip(path, chunk=10))
    np.testing.assert_array_equal(np.concatenate([c.frames for c in chunks]), clip.frames)
    np.testing.assert_array_equal(np.concatenate([c.timestamps for c in chunks]), clip.timestamps)
    # The same file cut short is still refused as truncated.
    data = path.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="cut.avi is truncated: its header lists 444 frames"):
        probe(tmp_path / "cut.avi")


def test_limits_are_configurable(media: Path) -> None:
    path = media / "h264.mp4"
    with pytest.raises(VideoError, match="over the .* limit"):
        probe(path, VideoLimits(max_file_bytes=1000))
    with pytest.raises(VideoError, match=r"lasts .* min, over the 0\.0 min limit"):
        load_clip(path, limits=VideoLimits(max_duration_s=1.0))
    with pytest.raises(VideoError, match="fewer frames"):
        load_clip(path, num_frames=None, limits=VideoLimits(max_clip_bytes=160 * 96 * 3 * 10))
    assert (
        len(load_clip(path, num_frames=10, limits=VideoLimits(max_clip_bytes=160 * 96 * 3 * 10)).frames) == 10
    )


def test_bad_sampling_options(media: Path) -> None:
    with pytest.raises(ConfigError):
        load_clip(media / "h264.mp4", num_frames=0)
    with pytest.raises(ConfigError):
        load_clip(media / "h264.mp4", num_frames=4, fps=2.0)
    with pytest.raises(ConfigError):
        load_clip(media / "h264.mp4", num_frames=None, fps=-1.0)


# --------------------------------------------------------------------------- frame folders


def test_frame_folder_natural_order_and_sampling(tmp_path: Path) -> None:
    folder = write_frames(tmp_path / "clip", 23)  # 0.png ... 22.png: string order would put 10 after 1
    (folder / "notes.txt").write_text("ignored")
    info = probe(folder, folder_fps=10)
    assert (info.kind, info.num_frames, info.fps, info.width, info.height) == ("frames", 23, 10.0, 96, 64)
    assert info.duration_s == pytest.approx(2.3) and info.codec == "png"
    clip = load_clip(folder, num_frames=5, folder_fps=10)
    assert clip.frame_indices.tolist() == sample_indices(23, 5).tolist()
    for frame, index in zip(clip.frames, clip.frame_indices):
        np.testing.assert_array_equal(frame, frame_image(int(index), 96, 64))  # PNG: lossless
    np.testing.assert_allclose(clip.timestamps, clip.frame_indices / 10.0)
    clip = load_clip(folder, num_frames=None, fps=4.0, folder_fps=10)
    assert clip.frame_indices.tolist() == [0, 2, 5, 7, 10, 12, 15, 17, 20, 22]


def test_frame_folder_greyscale_jpeg(tmp_path: Path) -> None:
    folder = write_frames(tmp_path / "grey", 4, ext=".jpg", gray=True)
    clip = load_clip(folder, num_frames=None)
    assert clip.frames.shape == (4, 64, 96, 3)
    assert np.array_equal(clip.frames[..., 0], clip.frames[..., 1])
    assert [read_barcode(f) for f in clip.frames] == [0, 1, 2, 3]


def test_frame_folder_problems(tmp_path: Path) -> None:
    folder = write_frames(tmp_path / "mixed", 3)
    from PIL import Image

    Image.fromarray(frame_image(3, 50, 40)).save(folder / "3.png")
    with pytest.raises(VideoError, match="3.png is 50x40 but the first frame .* is 96x64"):
        load_clip(folder, num_frames=None)
    (folder / "3.png").write_bytes(b"not a png at all")
    with pytest.raises(VideoError, match="3.png .* cannot be read as an image"):
        load_clip(folder, num_frames=None)


def test_frame_folder_large_frames_downscaled(tmp_path: Path) -> None:
    folder = write_frames(tmp_path / "big", 2, width=2000, height=1000)
    clip = load_clip(folder, num_frames=None)
    assert clip.frames.shape == (2, 640, 1280, 3) and clip.source_size == (2000, 1000)
    assert [read_barcode(f) for f in clip.frames] == [0, 1]


# --------------------------------------------------------------------------- real footage


@pytest.mark.shared_data("ucsd_ped2")
@pytest.mark.parametrize("clip_id", ["01", "04"])
def test_ucsd_ped2_frame_folders(clip_id: str) -> None:
    from PIL import Image

    labels = json.loads((PED2 / "frame_labels.json").read_text())
    folder = PED2 / "frames" / clip_id
    info = probe(folder)
    assert (info.num_frames, info.width, info.height) == (len(labels[clip_id]), 360, 240)
    clip = load_clip(folder, num_frames=16)
    for frame, index in zip(clip.frames, clip.frame_indices):
        expected = np.asarray(Image.open(folder / f"{index:03d}.jpg").convert("RGB"))
        np.testing.assert_array_equal(frame, expected)


@pytest.mark.shared_data("cuhk_avenue")
@pytest.mark.parametrize(
    "rel",
    ["testing_videos/08.avi", "testing_videos/21.avi", "training_videos/12.avi", "training_videos/16.avi"],
)
def test_cuhk_avenue_videos(rel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    path = AVENUE / rel
    labels = json.loads((AVENUE / "testing" / "frame_labels.json").read_text())
    info = probe(path)
    if rel.startswith("testing"):
        assert info.num_frames == len(labels[path.stem])
    # Independent count: OpenCV reads every frame.
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.grab():
        count += 1
    assert info.num_frames == count
    assert (info.width, info.height, info.fps) == (640, 360, pytest.approx(25.0))
    clip = load_clip(path, num_frames=8)
    _assert_matches_full_decode(clip, path)
    monkeypatch.setattr(video, "SCAN_MAX_FRAMES", 0)
    monkeypatch.setattr(video, "SEQUENTIAL_MAX_FRAMES", 0)
    seeking = load_clip(path, num_frames=8)
    np.testing.assert_array_equal(seeking.frames, clip.frames)


# --------------------------------------------------------------------------- resize_for_model


def test_sample_indices_are_segment_centres() -> None:
    assert sample_indices(100, 4).tolist() == [12, 37, 62, 87]
    assert sample_indices(3, 16).tolist() == [0, 1, 2]
    assert sample_indices(1000, 16).tolist() == [31, 93, 156, 218, 281, 343, 406, 468, 531, 593, 656, 718, 781,
                                                  843, 906, 968]
    assert sample_indices(160, 16).tolist() == list(range(5, 160, 10))
    assert sample_indices(0, 4).tolist() == []


@pytest.mark.parametrize(
    ("height", "width"), [(240, 360), (1080, 1920), (2160, 3840), (17, 33), (360, 640), (1000, 30), (56, 56)]
)
def test_resize_for_model_budget_multiple_and_aspect(height: int, width: int) -> None:
    frames = np.random.default_rng(1).integers(0, 256, size=(2, height, width, 3), dtype=np.uint8)
    before = frames.copy()
    out = resize_for_model(frames)
    np.testing.assert_array_equal(frames, before)  # inputs untouched
    assert out.dtype == np.uint8 and out.shape[0] == 2 and out.shape[3] == 3
    h, w = out.shape[1:3]
    assert h % 28 == 0 and w % 28 == 0
    assert 56 * 56 <= h * w <= 448 * 448
    if min(height, width) >= 56 and max(height, width) / min(height, width) < 10:
        assert abs(np.log((w / h) / (width / height))) < 0.2  # aspect kept to the 28-pixel grid
    single = resize_for_model(frames[0])
    np.testing.assert_array_equal(single, out[0])


def test_resize_for_model_content_matches_pillow() -> None:
    from PIL import Image

    img = frame_image(5, 640, 360)
    out = resize_for_model(img[None], max_pixels=224 * 224)
    h, w = out.shape[1:3]
    assert (h, w) == (168, 280)
    reference = np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BOX))
    assert np.abs(reference.astype(int) - out[0].astype(int)).mean() < 6.0


def test_resize_for_model_rejects_wrong_input() -> None:
    with pytest.raises(ValueError):
        resize_for_model(np.zeros((2, 10, 10, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        resize_for_model(np.zeros((10, 10), dtype=np.uint8))


# --------------------------------------------------------------------------- explicit frames, masks, rates


def test_explicit_frame_indices_keep_order_and_repeats(media: Path, tmp_path: Path) -> None:
    folder = write_frames(tmp_path / "folder", 12)
    for source in (media / "h264.mp4", folder):
        clip = load_clip(source, num_frames=None, frame_indices=[7, 2, 7, 11])
        assert [read_barcode(f) for f in clip.frames] == [7, 2, 7, 11]
        assert clip.frame_indices.tolist() == [7, 2, 7, 11]
        with pytest.raises(VideoError, match=r"frame indices \[1000\] are out of range"):
            load_clip(source, num_frames=None, frame_indices=[0, 1000])
    folder_clip = load_clip(folder, num_frames=None, folder_fps=10.0, frame_indices=[3, 1])
    assert folder_clip.timestamps.tolist() == [0.3, 0.1]
    with pytest.raises(ConfigError, match="frame_indices alone"):
        load_clip(folder, num_frames=4, frame_indices=[1])


def test_read_mask_thresholds_at_127_and_refuses_0_1_masks(tmp_path: Path) -> None:
    from PIL import Image

    values = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    Image.fromarray(values).save(tmp_path / "mask.png")
    assert video.read_mask(tmp_path / "mask.png").tolist() == [[False, False, True, True]]
    assert video.read_mask(tmp_path / "mask.png", size=(8, 2)).tolist() == [[False] * 4 + [True] * 4] * 2
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "empty.png")
    assert not video.read_mask(tmp_path / "empty.png").any()
    Image.fromarray(np.array([[0, 1]], dtype=np.uint8)).save(tmp_path / "binary.png")
    with pytest.raises(DataError, match="masks must be 8-bit with 255 for anomalous pixels"):
        video.read_mask(tmp_path / "binary.png")


def test_sampled_fps_is_the_median_step() -> None:
    assert video.sampled_fps([0.0, 0.5, 1.0, 1.5, 3.0], 25.0) == 2.0
    assert video.sampled_fps([4.0], 25.0) == 25.0
    assert video.sampled_fps([1.0, 1.0], 7.0) == 7.0


def test_frame_files_natural_order_without_hidden_files(tmp_path: Path) -> None:
    write_frames(tmp_path, 11)
    (tmp_path / ".3.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in video.frame_files(tmp_path)] == [f"{i}.png" for i in range(11)]
