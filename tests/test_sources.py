"""Dataset readers: one record type for SynthCampus, UCSD Ped2 and CUHK Avenue; labels match the data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shared_data import DATA

from datasets_builder.corpus import item_from_record
from datasets_builder.extract import GTObject
from datasets_builder.sources import (
    VideoRecord,
    mask_boxes,
    read_avenue,
    read_dataset,
    read_ped2,
    read_synthcampus,
)
from datasets_builder.synth.generate import ClipConfig, generate_clip
from datasets_builder.synth.writer import generate_split
from tvad_chat.errors import DataError

PED2 = DATA / "ucsd_ped2"
AVENUE = DATA / "cuhk_avenue"
needs_data = pytest.mark.shared_data("ucsd_ped2", "cuhk_avenue")
CFG = ClipConfig(frames=10, width=160, height=96)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_split(root, "train", 3, seed=2, cfg=CFG, fmt="frames")
    generate_split(root, "val", 1, seed=2, cfg=CFG, fmt="mp4")
    return root


@needs_data
@pytest.mark.parametrize("reader,root", [(read_ped2, PED2), (read_avenue, AVENUE)])
def test_benchmark_readers_agree_with_frame_labels_and_masks(reader, root):
    table = json.loads((root / "testing" / "frame_labels.json").read_text())
    recs = reader(root, "test")
    assert sorted(r.video_id for r in recs) == sorted(table)
    for r in recs:
        assert isinstance(r, VideoRecord) and r.split == "test"
        assert r.frame_labels.dtype == np.int8
        assert r.frame_labels.tolist() == table[r.video_id]
        assert r.num_frames == len(table[r.video_id])
        # labels equal "any mask pixel"; boxes come from the masks' regions and cover their pixels
        for i in range(0, r.num_frames, 7):
            m = r.load_mask(i)
            assert m.shape == (r.size[1], r.size[0])
            assert int(m.any()) == r.frame_labels[i]
            objs = r.objects(i)
            assert all(isinstance(o, GTObject) and o.anomalous and o.track_id is None for o in objs)
            assert bool(objs) == bool(m.sum() >= 20)
            inside = np.zeros_like(m)
            for x1, y1, x2, y2 in r.boxes(i):
                inside[int(y1) : int(y2), int(x1) : int(x2)] = True
            assert not (m & ~inside).any() or m.sum() < 20
        frames = r.load_frames([0, r.num_frames - 1])
        assert frames.shape == (2, r.size[1], r.size[0], 3) and frames.dtype == np.uint8


@needs_data
def test_benchmark_training_splits_are_normal_and_maskless():
    r = read_ped2(PED2, "train")[0]
    assert r.mask_dir is None and r.load_mask(0) is None and r.objects(0) == []
    assert not r.frame_labels.any() and r.num_frames == len(list(r.frames_dir.iterdir()))
    a = read_avenue(AVENUE, "train")[0]
    assert a.video_path.suffix == ".avi" and a.fps == pytest.approx(25.0, abs=0.01)


@needs_data
def test_avenue_frames_decode_to_the_labelled_count():
    r = read_avenue(AVENUE, "test")[0]
    frames = r.load_frames()
    assert len(frames) == r.num_frames == len(r.frame_labels)


def test_synthcampus_reader_matches_what_was_generated(synth_root):
    recs = read_synthcampus(synth_root, "train")
    assert [r.video_id for r in recs] == ["train_000000", "train_000001", "train_000002"]
    for k, r in enumerate(recs):
        clip = generate_clip(2, "train", k, CFG)
        ann = clip.annotation
        assert isinstance(r, VideoRecord) and r.dataset == "synthcampus"
        assert r.frames_dir is not None and r.video_path is None
        assert r.frame_labels.tolist() == ann["frame_labels"] and r.event == ann["event"]
        assert np.array_equal(r.load_frames(range(r.num_frames)), clip.frames)  # PNG is lossless
        for i in (0, r.num_frames - 1):
            assert np.array_equal(r.load_mask(i), clip.masks[i] > 0)
            assert np.array_equal(r.load_ids(i), clip.ids[i])
            objs = {o.track_id: o for o in r.objects(i)}
            assert set(objs) == {o["track_id"] for o in ann["frames"][i]["objects"]}
            for o in ann["frames"][i]["objects"]:
                assert list(objs[o["track_id"]].box) == o["box"]
                assert objs[o["track_id"]].anomalous == o["anomalous"]
                assert objs[o["track_id"]].attributes["action"] == o["action"]
        assert len(r.tracks) == len(ann["objects"]) and len(r.trajectories) == len(ann["objects"])
        for t in r.tracks:
            assert t.anomalous == bool(t.anomalous_frames)
            assert t.anomalous_frames <= set(t.boxes)
    item = item_from_record(recs[0])
    assert item.frame_labels == recs[0].frame_labels.tolist() and item.event == recs[0].event
    assert item.annotations(0) == recs[0].objects(0) and item.read_frames([1]).shape == (1, 96, 160, 3)
    val = read_dataset("synthcampus", synth_root, "val")[0]
    assert val.video_path is not None and val.video_path.suffix == ".mp4"
    assert val.load_frames([0, 9]).shape == (2, 96, 160, 3)


@needs_data
def test_the_three_readers_return_the_same_record_type(synth_root):
    recs = [read_dataset("synth", synth_root, "train")[0], read_dataset("ped2", PED2)[0],
            read_dataset("avenue", AVENUE)[0]]
    assert {type(r) for r in recs} == {VideoRecord}
    assert [(r.dataset, r.size) for r in recs] == [("synthcampus", (160, 96)), ("ped2", (360, 240)),
                                                   ("avenue", (640, 360))]
    assert [r.fps for r in recs] == pytest.approx([10.0, 10.0, 25.0])
    for r in recs:
        assert r.num_frames == len(r.frame_labels)
        assert r.source.exists()


def test_missing_and_malformed_folders_raise_data_error(tmp_path, synth_root):
    with pytest.raises(DataError, match="no SynthCampus"):
        read_synthcampus(tmp_path / "nothing", "train")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no SynthCampus clips"):
        read_synthcampus(tmp_path / "empty", "train")
    bad = tmp_path / "bad" / "train" / "train_000000"
    bad.mkdir(parents=True)
    (bad / "annotation.json").write_text("{not json")
    with pytest.raises(DataError, match="malformed"):
        read_synthcampus(tmp_path / "bad", "train")
    with pytest.raises(DataError, match="UCSD Ped2"):
        read_ped2(tmp_path, "test")
    with pytest.raises(DataError, match="Avenue"):
        read_avenue(tmp_path, "test")
    with pytest.raises(DataError, match="unknown dataset"):
        read_dataset("ubnormal", tmp_path)
    with pytest.raises(DataError, match="out of range"):
        read_synthcampus(synth_root, "train")[0].load_frames([99])


def test_mask_boxes_joins_close_parts_and_drops_specks():
    m = np.zeros((50, 80), bool)
    m[10:30, 10:20] = True  # rider
    m[28:40, 22:34] = True  # bicycle, 2 px away: one object
    m[5:8, 70:72] = True  # a 6-pixel speck
    m[40:48, 60:75] = True
    assert mask_boxes(m) == [(10.0, 10.0, 34.0, 40.0), (60.0, 40.0, 75.0, 48.0)]


def test_folder_reader_takes_video_files_and_frame_folders(tmp_path):
    from media_factory import write_frames, write_video

    write_video(tmp_path / "cam1.mp4", num_frames=20, fps=10)
    write_frames(tmp_path / "cam2", 6)
    (tmp_path / "notes.txt").write_text("not a clip")
    (tmp_path / "empty").mkdir()
    recs = read_dataset("folder", tmp_path, "test")
    assert [(r.video_id, r.dataset, r.num_frames, r.size) for r in recs] == [
        ("cam1", "folder", 20, (160, 96)), ("cam2", "folder", 6, (96, 64))]
    assert recs[0].video_path == tmp_path / "cam1.mp4" and recs[1].frames_dir == tmp_path / "cam2"
    assert recs[0].fps == 10.0 and recs[1].fps == 25.0  # frame folders: the default folder rate
    assert recs[1].frame_labels is None and recs[1].load_mask(0) is None and recs[1].objects(0) == []
    assert recs[0].load_frames([3, 1]).shape == (2, 96, 160, 3)
    with pytest.raises(DataError, match="no video files or frame folders"):
        read_dataset("folder", tmp_path / "empty")
