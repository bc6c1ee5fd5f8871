"""Frame extraction records, the lenient-but-strict answer parser, ground-truth and local backends."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datasets_builder.extract import (
    ExtractionParseError,
    FrameRecord,
    FrameTask,
    GroundTruthBackend,
    GTObject,
    Instance,
    LocalVLMBackend,
    extraction_prompt,
    loads_lenient,
    parse_extraction,
)
from tvad_chat.errors import ConfigError, DataError
from tvad_chat.motion import REGIONS, region_cue

GOOD = {"objects": [{"category": "Person", "attributes": {"upper_color": "Red", "lower_color": "blue",
                                                         "carrying": None, "action": "walking"},
                     "box": [10, 20, 40, 110], "region": "left", "anomalous": False, "confidence": 0.8}]}


@pytest.mark.parametrize("text,repairs", [
    (json.dumps(GOOD), []),
    ("```json\n" + json.dumps(GOOD) + "\n```", ["code_fence"]),
    ("Sure! Here is the JSON:\n" + json.dumps(GOOD) + "\nHope this helps.", ["surrounding_text"]),
    (json.dumps(GOOD)[:-2] + ",],}", ["trailing_comma"]),
    (json.dumps(GOOD).replace('"', "'"), ["single_quotes"]),
    (json.dumps(GOOD).replace("false", "False").replace("null", "None").replace('"', "'"),
     ["single_quotes", "python_literals"]),
])
def test_repairs_simple_faults_and_says_which(text, repairs):
    value, made = loads_lenient(text)
    assert value["objects"][0]["box"] == [10, 20, 40, 110]
    assert value["objects"][0]["category"] == "Person"
    for r in repairs:
        assert r in made
    if not repairs:
        assert made == []


def test_brackets_and_quotes_inside_strings_do_not_confuse_the_span():
    text = 'Answer: {"objects": [{"category": "sign saying \\"}]\\"", "box": [1, 2, 3, 4]}]} trailing'
    value, made = loads_lenient(text)
    assert value["objects"][0]["category"] == 'sign saying "}]"' and made == ["surrounding_text"]


@pytest.mark.parametrize("text,reason", [
    ("", "empty"),
    ("I cannot see anything.", "no complete JSON"),
    ('{"objects": [{"category": "person", "box": [1, 2', "no complete JSON"),
    ("{objects: [{category: person}]}", "could not be repaired"),
    ("x" * 300_000, "too long"),
])
def test_unrepairable_answers_are_rejected_with_a_reason(text, reason):
    with pytest.raises(ExtractionParseError, match=reason):
        loads_lenient(text)


def test_parse_extraction_scales_boxes_from_the_sent_image_and_cleans_fields():
    # the model saw a 320x180 image of a 640x360 frame
    inst, repairs, dropped = parse_extraction(json.dumps(GOOD), 640, 360, sent_size=(320, 180))
    assert len(inst) == 1 and dropped == [] and repairs == []
    i = inst[0]
    assert i.box == (20.0, 40.0, 80.0, 220.0)
    assert i.category == "person" and i.attributes == {"upper_color": "red", "lower_color": "blue",
                                                       "action": "walking"}
    assert i.region == region_cue(i.box, 640, 360) == "left"
    assert i.confidence == 0.8 and i.anomalous is False and i.track_id is None


def test_parse_extraction_normalised_boxes_bare_lists_and_bad_objects():
    answer = json.dumps([
        {"category": "car", "bbox": [0.5, 0.5, 0.75, 1.0], "confidence": 7, "anomalous": "yes"},
        {"category": "person", "box": [1, 2, 3]},
        {"box": [1, 2, 3, 4]},
        {"category": "dog", "box": [900, 900, 950, 950]},
        {"category": "bag", "box": {"x1": 5, "y1": 6, "x2": 30, "y2": 40}},
        "nonsense",
    ])
    inst, repairs, dropped = parse_extraction(answer, 200, 100)
    assert "bare_list" in repairs
    assert [i.category for i in inst] == ["car", "bag"]
    assert inst[0].box == (100.0, 50.0, 150.0, 100.0) and inst[0].confidence == 1.0 and inst[0].anomalous is True
    assert inst[0].region == "bottom"
    assert inst[1].box == (5.0, 6.0, 30.0, 40.0)
    assert len(dropped) == 4
    assert any("four numbers" in d for d in dropped) and any("no category" in d for d in dropped)
    assert any("outside" in d for d in dropped) and any("not a JSON object" in d for d in dropped)


def test_parse_extraction_rejects_wrong_shapes():
    with pytest.raises(ExtractionParseError, match="objects"):
        parse_extraction('{"people": []}', 10, 10)
    with pytest.raises(ExtractionParseError, match="not a list"):
        parse_extraction('{"objects": {"a": 1}}', 10, 10)
    with pytest.raises(ExtractionParseError, match="expected a JSON object"):
        parse_extraction('"just a string"', 10, 10)


def test_region_cue_grid():
    w, h = 300, 90
    for row in range(3):
        for col in range(3):
            cx, cy = 50 + 100 * col, 15 + 30 * row
            assert region_cue((cx - 5, cy - 5, cx + 5, cy + 5), w, h) == REGIONS[row * 3 + col]


def test_prompt_is_read_from_the_prompts_package_and_filled():
    p = extraction_prompt(448, 252)
    assert "448 pixels wide and 252 pixels high" in p
    assert "$" not in p and '"objects"' in p


def test_ground_truth_backend_record_and_round_trip():
    task = FrameTask(video_id="v", frame_index=3, timestamp=0.12, width=100, height=50, annotations=[
        GTObject(track_id="7", category="person", box=(-5, 10, 20, 40), attributes={"upper_color": "red"},
                 anomalous=True),
        GTObject(track_id="8", category="car", box=(200, 10, 220, 40)),  # outside: dropped
    ])
    rec = GroundTruthBackend().extract(task)
    assert rec.ok and len(rec.instances) == 1
    inst = rec.instances[0]
    assert inst.box == (0.0, 10.0, 20.0, 40.0) and inst.track_id == "7" and inst.anomalous is True
    assert inst.region == "left" and inst.attributes == {"upper_color": "red"}
    again = FrameRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert again == rec
    with pytest.raises(DataError, match="needs annotations"):
        GroundTruthBackend().extract(FrameTask("v", 0, 0.0, 10, 10))


def test_local_backend_prompt_and_parse_path_with_a_fake_generate():
    seen = {}

    def fake_generate(image: np.ndarray, prompt: str) -> str:
        seen["shape"], seen["prompt"] = image.shape, prompt
        h, w = image.shape[:2]
        return "```json\n" + json.dumps({"objects": [
            {"category": "cyclist", "box": [w // 4, h // 4, w // 2, h // 2], "anomalous": True,
             "attributes": {"upper_color": "yellow"}, "confidence": 0.9}]}) + "\n```"

    be = LocalVLMBackend(generate_fn=fake_generate, image_max_side=400)
    img = np.zeros((450, 800, 3), np.uint8)
    rec = be.extract(FrameTask("v", 5, 0.2, 800, 450, image=img))
    assert seen["shape"] == (225, 400, 3)  # downscaled to the side limit
    assert "400 pixels wide and 225 pixels high" in seen["prompt"]
    assert rec.ok and rec.repairs == ["code_fence"]
    assert rec.instances[0].box == (200.0, 112.0, 400.0, 224.0)  # scaled back to the 800x450 frame
    assert rec.instances[0].category == "cyclist" and rec.instances[0].anomalous is True
    bad = LocalVLMBackend(generate_fn=lambda im, p: "no idea").extract(FrameTask("v", 6, 0.2, 8, 8, image=img[:8, :8]))
    assert not bad.ok and "unparseable" in bad.error


def test_local_backend_refuses_a_missing_model_dir(tmp_path):
    with pytest.raises(ConfigError, match="local model directory"):
        LocalVLMBackend(model_dir=tmp_path / "absent")


def test_instance_dict_round_trip_keeps_values():
    inst = Instance(category="car", box=(1.234, 2.0, 30.5, 40.0), attributes={"color": "red"}, region="left",
                    confidence=0.5, anomalous=None, track_id=None)
    again = Instance.from_dict(json.loads(json.dumps(inst.to_dict())))
    assert again.box == (1.23, 2.0, 30.5, 40.0) and again.attributes == {"color": "red"}


@pytest.mark.slow
def test_local_backend_runs_a_real_tiny_qwen25vl_from_a_local_dir(tmp_path):
    """The transformers path (AutoProcessor + AutoModelForImageTextToText, chat template, generate).

    The tiny model has random weights, so its answer is noise: the frame must come back rejected
    with the parser's reason, not crash and not invent objects.
    """
    from tvad_chat.tiny import build_tiny

    build_tiny(save_dir=tmp_path / "tiny")
    be = LocalVLMBackend(model_dir=tmp_path / "tiny", max_new_tokens=12, image_max_side=112)
    img = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    rec = be.extract(FrameTask("v", 0, 0.0, 160, 120, image=img))
    assert rec.backend == "local" and rec.instances == []
    assert not rec.ok and rec.error.startswith("unparseable answer:")
    raw = be._hf_generate(img[:84, :112], extraction_prompt(112, 84))
    assert isinstance(raw, str)
