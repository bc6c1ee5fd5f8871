"""`tvad scan`: an archive of SynthCampus clips, a Ped2 frame folder and a broken file is scanned into per-clip
reports, an event index and an HTML summary; reruns resume; a SIGKILLed scan restarts to the same index; a local Ray
cluster gives the same index as local worker processes; a long clip's segments join into the whole clip's events.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from shared_data import DATA

from datasets_builder.sources import VIDEO_EXTENSIONS
from datasets_builder.synth.generate import ClipConfig, generate_clip
from datasets_builder.synth.writer import write_clip
from tvad_chat.cli import main
from tvad_chat.errors import ConfigError
from tvad_chat.executor import LocalExecutor, RayExecutor, TaskFailure, run_tasks
from tvad_chat.scan.discover import discover, wall_clock
from tvad_chat.scan.run import scan
from tvad_chat.scan.work import (
    ScanSettings,
    analyze_segment,
    analyze_whole,
    join_segments,
    plan_segments,
    prepare_profile,
)
from tvad_chat.video import probe

CAMERA = ClipConfig(frames=80, width=320, height=192, fps=10.0, fixed_camera=True)
PED2_FRAMES = 40
FPS = "5"  # analysed frames per second: half of SynthCampus's 10, a fifth of Ped2's 25
CLI = [sys.executable, "-c", "import sys; from tvad_chat.cli import main; sys.exit(main(sys.argv[1:]))"]
needs_ped2 = pytest.mark.shared_data("ucsd_ped2")


def _synth(path: Path, index: int, event: str | None, camera: ClipConfig = CAMERA) -> None:
    folder = path.parent / f".{path.stem}"
    write_clip(generate_clip(7, "train", index, camera, event=event, scene_name="campus_walkway"), folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(folder / "video.mp4", path)
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """gate/ two SynthCampus clips named with their wall-clock start, ped2/01 a frame folder, broken/ a bad file."""
    root = tmp_path_factory.mktemp("archive")
    _synth(root / "gate" / "gate_20240131_142500.mp4", 0, None)
    _synth(root / "gate" / "gate_20240131_143000.mp4", 1, "run")
    frames = root / "ped2" / "01"
    frames.mkdir(parents=True)
    for image in sorted((DATA / "ucsd_ped2" / "testing" / "frames" / "01").iterdir())[:PED2_FRAMES]:
        shutil.copy(image, frames / image.name)
    (root / "broken").mkdir()
    (root / "broken" / "cam9_20240131_150000.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 400)
    return root


@pytest.fixture(scope="module")
def reference(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted scan with two local workers."""
    out = tmp_path_factory.mktemp("scan") / "out"
    assert main(["scan", str(archive), "--out", str(out), "--workers", "2", "--fps", FPS]) == 0
    return out


def _records(out: Path) -> dict[str, dict]:
    return {r["clip"]: r for r in map(json.loads, (out / "done.jsonl").read_text().splitlines())}


# --------------------------------------------------------------------------- the archive


@needs_ped2
@pytest.mark.slow
def test_scan_writes_reports_index_and_summary(archive: Path, reference: Path) -> None:
    records = _records(reference)
    assert sorted(records) == ["broken/cam9_20240131_150000.mp4", "gate/gate_20240131_142500.mp4",
                               "gate/gate_20240131_143000.mp4", "ped2/01"]
    broken = records.pop("broken/cam9_20240131_150000.mp4")
    assert broken["status"] == "failed"
    assert broken["reason"].startswith("cam9_20240131_150000.mp4 looks like MP4/MOV but is corrupted")
    for clip, record in records.items():
        assert record["status"] == "ok", record["reason"]
        report = json.loads((reference / record["report"]).read_text())
        assert report["video"] == clip
        assert len(report["frames"]) == record["frames"] > 0
        assert [e["start"] for e in report["events"]] == [e["start"] for e in record["events"]]
    # Ped2 is recognised by its background; the clips analysed at 5 frames per second
    assert records["ped2/01"]["profile"] == "ucsd_ped2"
    assert records["ped2/01"]["frames"] == PED2_FRAMES // 5
    assert records["gate/gate_20240131_143000.mp4"]["frames"] == 40
    assert records["gate/gate_20240131_143000.mp4"]["camera"] == "gate"
    assert math.isclose(records["ped2/01"]["duration_s"], PED2_FRAMES / 25, abs_tol=1e-6)

    rows = list(csv.DictReader((reference / "index.csv").open()))
    lines = [json.loads(line) for line in (reference / "index.jsonl").read_text().splitlines()]
    events = [(clip, e) for clip, r in sorted(records.items()) for e in r["events"]]
    assert len(rows) == len(lines) == len(events) >= 1
    for row, line, (clip, event) in zip(rows, lines, events, strict=True):
        assert row["clip"] == line["clip"] == clip
        assert float(row["start_s"]) == line["start_s"] == event["start"]
        assert float(row["peak_score"]) == line["peak_score"] == event["peak_score"]
        assert (reference / row["thumbnail"]).read_bytes()[:2] == b"\xff\xd8"  # a JPEG
        if clip.startswith("gate/"):  # the name carries the wall-clock start
            start = wall_clock(Path(clip).stem) + timedelta(seconds=event["start"])
            assert datetime.fromisoformat(row["start_wall"]) == start.replace(microsecond=0)
        else:
            assert row["start_wall"] == ""
    html = (reference / "index.html").read_text()
    assert html.count("<svg class='strip'") == 2  # gate and ped2 (the broken camera has no finished clip)
    assert html.count("<tr><td class='score'>") == len(rows)
    assert "Failed clips" in html and "cam9_20240131_150000.mp4" in html
    # the gate camera has no profile and its 8 s clips are too short to be scored against themselves: no object
    # in them was judged, and the summary says so instead of showing them as looked at with nothing found
    assert [records[c]["judged"] for c in sorted(records)] == [False, False, True]
    assert "<b>2</b> not judged" in html and html.count("<tr class='unjudged'>") == 2
    assert html.count("stroke-dasharray") == 2 and "gate_20240131_143000.mp4: not judged" in html
    assert "too short to compare its objects with one another" in html
    assert not list(reference.rglob(".*.part*"))


@needs_ped2
@pytest.mark.slow
def test_rerun_does_no_work(archive: Path, reference: Path, capsys: pytest.CaptureFixture) -> None:
    done = (reference / "done.jsonl").read_bytes()
    reports = {p: p.stat().st_mtime_ns for p in reference.rglob("report.json")}
    started = time.perf_counter()
    assert main(["scan", str(archive), "--out", str(reference), "--workers", "2", "--fps", FPS]) == 0
    assert time.perf_counter() - started < 10
    assert "4 clips found, 4 finished before, 0 done now" in capsys.readouterr().out
    assert (reference / "done.jsonl").read_bytes() == done
    assert {p: p.stat().st_mtime_ns for p in reference.rglob("report.json")} == reports
    with pytest.raises(ConfigError, match="other settings"):  # resuming with other settings would mix results
        scan(archive, reference, ScanSettings(fps=2.0), LocalExecutor(1), VIDEO_EXTENSIONS)


@needs_ped2
@pytest.mark.slow
def test_killed_scan_resumes_to_the_same_index(archive: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = CLI + ["scan", str(archive), "--out", str(out), "--workers", "1", "--fps", FPS]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(out.rglob("report.json")):
            time.sleep(0.05)
        time.sleep(0.5)  # into the next clip
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finished = _records(out)
    assert 1 <= sum(r["status"] == "ok" for r in finished.values()) < 3, "killed before or after the clips"
    assert not (out / "index.csv").exists()
    for report in out.rglob("report.json"):  # whatever is visible is whole
        json.loads(report.read_text())
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    assert (out / "index.csv").read_bytes() == (reference / "index.csv").read_bytes()
    assert (out / "index.jsonl").read_bytes() == (reference / "index.jsonl").read_bytes()
    assert len(_records(out)) == 4 and not list(out.rglob(".*.part*"))
    for clip, record in finished.items():  # finished clips were not redone
        assert _records(out)[clip] == record


@needs_ped2
@pytest.mark.slow
def test_ray_cluster_gives_the_same_index(archive: Path, reference: Path, tmp_path: Path) -> None:
    """A local Ray instance started here on 127.0.0.1 (2 CPUs, no dashboard); `tvad scan --ray 127.0.0.1:PORT`
    joins it as another driver."""
    # Ray's sockets live under its temp dir and a socket path may not exceed 107 bytes: tmp_path is often too deep
    temp = Path(tempfile.mkdtemp(prefix="tvad-ray-"))
    executor = RayExecutor(None, num_cpus=2, _temp_dir=str(temp))
    try:
        import ray

        address = ray.get_runtime_context().gcs_address
        assert address.startswith("127.0.0.1:")
        out = tmp_path / "out"
        subprocess.run(CLI + ["scan", str(archive), "--out", str(out), "--ray", address, "--fps", FPS],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    finally:
        executor.close()
        shutil.rmtree(temp, ignore_errors=True)
    assert (out / "index.csv").read_bytes() == (reference / "index.csv").read_bytes()
    assert (out / "index.jsonl").read_bytes() == (reference / "index.jsonl").read_bytes()
    for clip, record in _records(reference).items():
        assert _records(out)[clip]["events"] == record["events"]


# --------------------------------------------------------------------------- long clips and the parts


@pytest.mark.slow
def test_segments_join_into_the_whole_clips_events(tmp_path: Path) -> None:
    """A clip cut into two overlapping segments has the events of the clip analysed whole: the run across the cut
    is one event, with the same start and end, and every frame is kept once."""
    path = tmp_path / "run.mp4"
    _synth(path, 2, "run", dataclasses.replace(CAMERA, frames=110))  # 11 s: a clip scored against itself needs 10
    whole = ScanSettings(fps=5.0)
    cut = ScanSettings(fps=5.0, segment_s=6.0, overlap_s=2.0)
    info = probe(path)
    segments = plan_segments(info.num_frames, info.fps, cut)
    assert [len(s) for s in segments] == [30, 35]  # 11 s at 5 frames/s: 0-6 s and 4-11 s
    prepared = prepare_profile(path, cut, 1)
    joined = join_segments([analyze_segment(path, prepared, s, cut, 1) for s in segments])
    expected = analyze_whole(path, whole, 1).analysis
    assert [r.index for r in joined.frames] == [r.index for r in expected.frames]
    spans = [(e.start_s, e.end_s) for e in joined.events()]
    assert spans == [(e.start_s, e.end_s) for e in expected.events()]
    assert any(s < 5.0 < e for s, e in spans), "no event spans the cut (at 5 s, the middle of the overlap)"
    # the scores agree within 1 % except where the first segment's smoothing ends (it reaches a little past 6 s)
    far = np.abs(joined.times - 5.0) > 1.0
    np.testing.assert_allclose(joined.scores[far], expected.scores[far], rtol=0.01)
    np.testing.assert_allclose(joined.scores, expected.scores, atol=0.25)


def test_wall_clock_from_names() -> None:
    assert wall_clock("cam3_20240131_142500") == datetime(2024, 1, 31, 14, 25)
    assert wall_clock("2024-01-31T14-25-07") == datetime(2024, 1, 31, 14, 25, 7)
    assert wall_clock("lobby 2024-01-31 14.25.07") == datetime(2024, 1, 31, 14, 25, 7)
    assert wall_clock("video") is None
    assert wall_clock("20241399_250000") is None  # no such date


def test_discover_finds_videos_and_frame_folders(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.MP4").write_bytes(b"1")
    (tmp_path / "a" / "notes.txt").write_text("not a clip")
    (tmp_path / "frames").mkdir()
    for k in range(3):
        (tmp_path / "frames" / f"{k}.png").write_bytes(b"1")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "y.mp4").write_bytes(b"1")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "z.mp4").write_bytes(b"1")
    clips = discover(tmp_path, VIDEO_EXTENSIONS, exclude=[tmp_path / "out"])
    assert [(c.id, c.kind, c.camera) for c in clips] == [("a/b/x.MP4", "video", "a/b"), ("frames", "frames", "frames")]
    assert len({c.slug for c in clips}) == 2
    with pytest.raises(ConfigError, match="does not exist"):
        discover(tmp_path / "missing", VIDEO_EXTENSIONS)


def test_run_tasks_reports_a_failed_task_and_goes_on() -> None:
    executor = LocalExecutor(2)
    try:
        results = dict(run_tasks(math.sqrt, [4.0, -1.0, 9.0, 16.0, 25.0], executor))
    finally:
        executor.close()
    assert results[4.0] == 2.0 and results[25.0] == 5.0
    assert results[-1.0] == TaskFailure("math domain error")
