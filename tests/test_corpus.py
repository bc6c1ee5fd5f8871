"""The corpus runner: crash-safe JSONL, resuming, a SIGKILL mid-run, and end-to-end builds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from datasets_builder.corpus import CorpusConfig, VideoItem, build_corpus, sample_indices
from datasets_builder.extract import GroundTruthBackend, GTObject
from datasets_builder.jsonl import JsonlAppender, read_jsonl, repair_tail
from tvad_chat.errors import DataError

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
W, H = 320, 240


def make_item(n_video: int, split: str = "test", frames: int = 40) -> VideoItem:
    """A walker going right; odd videos add a cyclist riding right-to-left from frame 10 (with masks)."""
    vid = f"{n_video:03d}"
    anomalous = n_video % 2 == 1
    speed = 2 + n_video % 3

    def ann(f: int) -> list[GTObject]:
        objs = [GTObject("1", "person", (10 + speed * f, 90, 30 + speed * f, 150),
                         {"upper_color": ["red", "green", "white"][n_video % 3], "lower_color": "blue"}, False)]
        if anomalous and f >= 10:
            x = W - 8 * (f - 10)
            objs.append(GTObject("2", "cyclist", (x - 25, 130, x, 190),
                                 {"upper_color": "yellow", "lower_color": "black"}, True))
        return objs

    def masks(f: int):
        m = np.zeros((H, W), bool)
        for o in ann(f):
            if o.anomalous:
                x1, y1, x2, y2 = (int(max(0, v)) for v in o.box)
                m[y1:y2, x1:x2] = True
        return m

    labels = [int(anomalous and f >= 10) for f in range(frames)]
    return VideoItem(video_id=vid, split=split, video=f"/data/{split}/{vid}", fps=25.0, width=W, height=H,
                     num_frames=frames, annotations=ann, masks=masks, frame_labels=labels,
                     mask_dir=f"/data/{split}/masks/{vid}" if anomalous else None)


class SlowGT(GroundTruthBackend):
    """The ground-truth backend, slowed down so that a kill lands mid-run."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def extract(self, task):
        time.sleep(self.delay)
        return super().extract(task)


def run_builder(out: str, n: int, delay: float) -> None:
    """Entry point of the subprocess the kill test starts."""
    build_corpus([make_item(i) for i in range(n)], SlowGT(delay), CorpusConfig(out_dir=Path(out), progress=False))


# --------------------------------------------------------------------------- JSONL


def test_torn_tail_is_cut_and_ids_are_not_duplicated(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"id": "a", "v": 1}\n{"id": "b", "v": 2}\n{"id": "c", "v"')
    assert repair_tail(p) == len(b'{"id": "c", "v"')
    with JsonlAppender(p) as w:
        assert w.append_batch([{"id": "b", "v": 99}, {"id": "c", "v": 3}, {"id": "c", "v": 4}]) == 1
    assert [r["id"] for r in read_jsonl(p)] == ["a", "b", "c"]
    assert [r["v"] for r in read_jsonl(p)] == [1, 2, 3]
    p.write_bytes(b'{"id": "only torn')
    with JsonlAppender(p) as w:
        w.append_batch([{"id": "z"}])
    assert p.read_text() == '{"id":"z"}\n'


def test_malformed_line_error_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": 1}\n\n[1, 2]\n')
    with pytest.raises(DataError, match=r"bad.jsonl:3: expected a JSON object"):
        list(read_jsonl(p))
    p.write_text('{"id": 1}\n{oops}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        list(read_jsonl(p))


def test_sample_indices_uniform():
    assert sample_indices(160, 16) == list(range(5, 160, 10))
    assert sample_indices(5, 16) == [0, 1, 2, 3, 4]
    assert sample_indices(0, 4) == []


# --------------------------------------------------------------------------- runs and resumes


def _lines(out: Path, name: str) -> list[str]:
    p = out / name
    return p.read_text().splitlines() if p.exists() else []


def test_build_rerun_and_resume_after_lost_done_marks(tmp_path):
    items = [make_item(i) for i in range(6)]
    out = tmp_path / "out"
    s = build_corpus(items, GroundTruthBackend(), CorpusConfig(out_dir=out, progress=False))
    assert s.videos_done_now == 6 and s.videos_failed == 0 and s.anomalous_videos == 3
    assert s.references["yesno"] == 6 and s.references["target"] == 3 and s.references["trajectory"] == 3
    assert s.samples["judgement"] == 12 and s.samples["temporal"] == 3
    sft = _lines(out, "sft.jsonl")
    ids = [json.loads(line)["id"] for line in sft]
    assert len(ids) == len(set(ids)) == sum(s.samples.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == s.samples
    dump = json.loads((out / "videos" / "test" / "001.json").read_text())
    assert dump["anomalous"] and dump["anomaly_targets"][0]["trajectory"]["direction"] == "left"
    assert len(dump["records"]) == 40 and dump["anomaly_segments"] == [[10, 39]]
    # a rerun does nothing
    s2 = build_corpus(items, GroundTruthBackend(), CorpusConfig(out_dir=out, progress=False))
    assert s2.videos_skipped == 6 and s2.videos_done_now == 0 and _lines(out, "sft.jsonl") == sft
    # a crash after a video's lines were written but before its done mark: no duplicates on resume
    done = _lines(out, "done.jsonl")
    (out / "done.jsonl").write_text("\n".join(done[:3]) + "\n")
    with (out / "sft.jsonl").open("a") as fh:
        fh.write(sft[-1][: len(sft[-1]) // 2])  # and a torn line at the end
    s3 = build_corpus(items, GroundTruthBackend(), CorpusConfig(out_dir=out, progress=False))
    assert s3.videos_done_now == 3
    assert _lines(out, "sft.jsonl") == sft and len(_lines(out, "done.jsonl")) == 6


def test_limit_and_failures_are_recorded_then_retried(tmp_path):
    items = [make_item(i) for i in range(4)]
    broken = VideoItem(video_id="broken", split="test", video="/nope", fps=25.0, width=W, height=H,
                       num_frames=10)  # no annotations: the gt backend refuses it
    out = tmp_path / "out"
    s = build_corpus(items[:2] + [broken] + items[2:], GroundTruthBackend(),
                     CorpusConfig(out_dir=out, progress=False, limit=3))
    assert s.videos_done_now == 2 and s.videos_failed == 1
    fail = [json.loads(x) for x in _lines(out, "failures.jsonl")]
    assert fail[0]["video_id"] == "test/broken" and "needs annotations" in fail[0]["reason"]
    s = build_corpus(items, GroundTruthBackend(), CorpusConfig(out_dir=out, progress=False))
    assert s.videos_done_now == 2 and s.videos_in_corpus == 4


@pytest.mark.slow
def test_sigkill_mid_run_then_restart_loses_and_duplicates_nothing(tmp_path):
    n = 10
    ref = tmp_path / "ref"
    build_corpus([make_item(i) for i in range(n)], GroundTruthBackend(), CorpusConfig(out_dir=ref, progress=False))
    out = tmp_path / "out"
    code = f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_corpus as t; t.run_builder({str(out)!r}, {n}, 0.004)"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    kills = 0
    for _ in range(4):  # kill it a few times at different points, then let it finish
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)
        done_before = len(_lines(out, "done.jsonl"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if len(_lines(out, "done.jsonl")) >= done_before + 2:
                break
            time.sleep(0.02)
        time.sleep(0.05 * kills)  # land the kill at varying points of a video
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
        else:
            break
    assert kills >= 1
    assert len(_lines(out, "done.jsonl")) < n  # it really was interrupted
    run_builder(str(out), n, 0.0)
    for name in ("sft.jsonl", "eval_refs.jsonl"):
        got, want = _lines(out, name), _lines(ref, name)
        assert len(got) == len(set(got)), f"duplicated lines in {name}"
        assert sorted(got) == sorted(want), f"{name} differs from an uninterrupted run"
    assert sorted(json.loads(x)["id"] for x in _lines(out, "done.jsonl")) == [f"test/{i:03d}" for i in range(n)]
    for p in (ref / "videos" / "test").iterdir():
        assert (out / "videos" / "test" / p.name).read_text() == p.read_text()
