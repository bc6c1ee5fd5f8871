"""QA generation: appearance wording, dialogue order, mutual verification, references."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from datasets_builder.qa import (
    PERSON_CATEGORIES,
    TargetFacts,
    VideoFacts,
    appearance_phrasings,
    build_video_qa,
    definite,
    label_segments,
    load_templates,
)
from datasets_builder.timeline import Observation, Timeline, describe_trajectory
from tvad_chat.motion import DIRECTION_WORDS

COLOURS = ["red", "blue", "green", "yellow", "black", "white", "grey", "orange", "purple", "brown", "pink"]
W, H, FPS = 640, 360, 25.0


@settings(max_examples=80, deadline=None)
@given(cat=st.sampled_from(["person", "cyclist", "car", "cart", "skateboarder", "truck"]),
       up=st.one_of(st.none(), st.sampled_from(COLOURS)), low=st.one_of(st.none(), st.sampled_from(COLOURS)),
       size=st.one_of(st.none(), st.sampled_from(["small", "large"])),
       carry=st.one_of(st.none(), st.sampled_from(["backpack", "umbrella", "nothing"])))
def test_appearance_names_every_attribute_and_no_other_colour(cat, up, low, size, carry):
    attrs = {k: v for k, v in {"upper_color": up, "lower_color": low, "size": size, "carrying": carry}.items() if v}
    if cat not in PERSON_CATEGORIES:
        attrs = {k: v for k, v in {"color": up, "size": size}.items() if v}
    phr = appearance_phrasings(cat, attrs)
    assert len(phr) == 3
    for p in phr:
        words = set(p.replace(",", " ").replace("(", " ").replace(")", " ").split())
        assert cat in words
        for k, v in attrs.items():
            if k == "carrying" and v == "nothing":
                assert "nothing" not in words
            else:
                assert v in words, (k, v, p)
        assert {c for c in COLOURS if c in words} == {v for k, v in attrs.items() if "color" in k}
        assert p.startswith(("a ", "an "))
    if up and cat in PERSON_CATEGORIES:
        assert f"{up} top" in phr[0] or f"{up} on top" in phr[0]
    if low and cat in PERSON_CATEGORIES:
        assert f"{low} trousers" in phr[1]


def test_a_riders_vehicle_colour_and_a_hat_are_named():
    attrs = {"upper_color": "red", "lower_color": "blue", "color": "green", "hat": "hat", "carrying": "backpack"}
    phr = appearance_phrasings("cyclist", attrs)
    assert phr == ["a cyclist in a red top and blue trousers, with a hat, on a green bicycle, carrying a backpack",
                   "a cyclist wearing a red top, blue trousers and a hat, riding a green bicycle with a backpack",
                   "a cyclist dressed in red on top and blue below, wearing a hat, on a green bicycle, "
                   "who carries a backpack"]
    assert "hat hat" not in " ".join(phr)
    assert appearance_phrasings("skateboarder", {"upper_color": "black", "color": "orange"})[0] == (
        "a skateboarder in a black top, on an orange skateboard")
    assert appearance_phrasings("person", {"hat": "red cap"})[1] == "a person wearing a red cap"
    assert appearance_phrasings("person", {"hat": "yellow", "lower_color": "grey"})[0] == (
        "a person in grey trousers, with a yellow hat")
    assert appearance_phrasings("person", {"upper_color": "white", "hat": "no"})[0] == "a person in a white top"
    assert appearance_phrasings("cyclist", {"color": "green"})[0] == "a cyclist in a green top"  # no clothes given
    # the subject (what appearance->motion questions name) stops before the extras
    t = TargetFacts(timeline=Timeline("a0", "cyclist", attrs, [Observation(0, 0.0, (0, 0, 10, 30))]),
                    trajectory=None, anomalous=True)  # type: ignore[arg-type]
    assert t.subject == "the cyclist in a red top and blue trousers"


def test_articles_and_definite():
    assert appearance_phrasings("person", {"upper_color": "orange"})[0] == "a person in an orange top"
    assert appearance_phrasings("car", {"color": "white", "size": "large"})[0] == "a large white car"
    assert definite("an orange car") == "the orange car"


def _target(tid: str, xs, y=150.0, start=0, cat="person", attrs=None, anomalous=False, focused=False):
    obs = [Observation(frame_index=start + i, timestamp=(start + i) / FPS, box=(x - 15, y - 40, x + 15, y + 40),
                       category=cat) for i, x in enumerate(xs)]
    tl = Timeline(target_id=tid, category=cat, attributes=attrs or {}, observations=obs)
    tr = describe_trajectory(tl, W, H, clip_start_frame=0, clip_end_frame=199)
    return TargetFacts(timeline=tl, trajectory=tr, anomalous=anomalous, anomaly_focused=focused)


def _facts(anomalous=True, **kw) -> VideoFacts:
    cyc = _target("a0", [620 - 12 * i for i in range(50)], start=40, cat="cyclist",
                  attrs={"upper_color": "yellow", "lower_color": "black"}, anomalous=True, focused=True)
    walker = _target("t0", [50 + 2 * i for i in range(150)], y=250, attrs={"upper_color": "red"})
    stander = _target("t1", [300.0] * 100, y=100, attrs={"upper_color": "blue"})
    base = dict(video_id="test/07", split="test", video="/d/07", frame_indices=list(range(0, 200, 13)),
                anomalous=anomalous, mask_dir="/m/07", fps=FPS, event="cycling",
                anomaly_segments=[(40, 89)] if anomalous else None, targets=[cyc] if anomalous else [],
                normal_targets=[walker, stander])
    base.update(kw)
    return VideoFacts(**base)


def test_dialogue_order_prefixes_and_references():
    qa = build_video_qa(_facts())
    by_id = {s["id"]: s for s in qa.samples}
    order = ["judgement", "target", "trajectory", "temporal"]
    convs = [by_id[f"test/07/{k}"]["conversation"] for k in order]
    for k, conv in enumerate(convs):
        assert len(conv) == 2 * (k + 1)
        assert [t["role"] for t in conv] == ["user", "assistant"] * (k + 1)
        if k:
            assert conv[:-2] == convs[k - 1]  # each sample extends the previous one
        assert by_id[f"test/07/{order[k]}"]["meta"]["kind"] == order[k]
    tpl = load_templates()
    assert convs[0][0]["content"] in tpl["judgement"]["questions"]
    assert convs[0][1]["content"].startswith("Yes")
    assert "cyclist" in convs[1][-1]["content"] and "yellow" in convs[1][-1]["content"]
    traj = convs[2][-1]["content"]
    assert any(w in traj for w in DIRECTION_WORDS["left"]) and "1.6 s" in traj  # enters 40/25 = 1.6 s
    assert "1.6 s" in convs[3][-1]["content"] and "3.6 s" in convs[3][-1]["content"]  # frames 40..89
    refs = {r["id"]: r for r in qa.references}
    assert refs["test/07/judgement"]["kind"] == "yesno" and refs["test/07/judgement"]["references"][0] == "Yes"
    assert refs["test/07/target"]["kind"] == "target" and len(refs["test/07/target"]["references"]) >= 3
    assert convs[1][-1]["content"] in refs["test/07/target"]["references"]
    assert convs[2][-1]["content"] in refs["test/07/trajectory"]["references"]
    assert len(refs["test/07/trajectory"]["references"]) >= 3
    for s in qa.samples:  # the format of DESIGN.md section 4
        assert {"id", "video", "frame_indices", "mask_dir", "conversation", "meta"} <= set(s)
        assert s["meta"]["split"] == "test" and isinstance(s["meta"]["anomaly_focused"], bool)
        assert s["meta"]["kind"] in ("judgement", "target", "trajectory", "temporal")
    assert by_id["test/07/target"]["meta"]["anomaly_focused"] is True
    assert len(by_id) == len(qa.samples)  # ids are unique


def test_mutual_verification_both_ways_and_only_when_unambiguous():
    qa = build_video_qa(_facts())
    ids = {s["id"] for s in qa.samples}
    for tid in ("a0", "t0", "t1"):
        assert f"test/07/{tid}/appearance_to_motion" in ids
    assert "test/07/a0/motion_to_appearance" in ids and "test/07/t0/motion_to_appearance" in ids
    assert "test/07/t1/motion_to_appearance" not in ids  # standing still: no motion cue to ask by
    m2a = next(s for s in qa.samples if s["id"] == "test/07/a0/motion_to_appearance")
    q, a = m2a["conversation"][0]["content"], m2a["conversation"][1]["content"]
    assert any(w in q for w in DIRECTION_WORDS["left"]) and "yellow" in a and "cyclist" in a
    a2m = next(s for s in qa.samples if s["id"] == "test/07/t0/appearance_to_motion")
    assert "red" in a2m["conversation"][0]["content"]
    assert any(w in a2m["conversation"][1]["content"] for w in DIRECTION_WORDS["right"])
    assert a2m["meta"]["anomaly_focused"] is False and a2m["meta"]["kind"] == "trajectory"
    # two targets that look alike: appearance cannot single one out, so no appearance->motion question
    twin = _target("t2", [600 - 2 * i for i in range(150)], y=300, attrs={"upper_color": "red"})
    qa2 = build_video_qa(_facts(normal_targets=[_facts().normal_targets[0], twin]))
    ids2 = {s["id"] for s in qa2.samples}
    assert "test/07/t0/appearance_to_motion" not in ids2 and "test/07/t2/appearance_to_motion" not in ids2
    assert "test/07/t2/motion_to_appearance" in ids2  # but their motions differ


def test_normal_clip_gives_no_items_and_no_anomaly_questions():
    qa = build_video_qa(_facts(anomalous=False))
    by_id = {s["id"]: s for s in qa.samples}
    j = by_id["test/07/judgement"]
    assert j["conversation"][1]["content"].startswith("No")
    assert not any(k in by_id for k in ("test/07/target", "test/07/trajectory", "test/07/temporal"))
    assert [r["kind"] for r in qa.references] == ["yesno"]
    assert qa.references[0]["references"][0] == "No"
    inv = by_id["test/07/judgement_inverted"]
    assert inv["conversation"][1]["content"].startswith("Yes")  # "is everything normal?" -> yes
    assert all(not s["meta"]["anomaly_focused"] for s in qa.samples)


def test_anomalous_clip_without_a_target_still_answers_yes_and_when():
    qa = build_video_qa(_facts(targets=[]))
    by_id = {s["id"]: s for s in qa.samples}
    assert by_id["test/07/judgement"]["conversation"][1]["content"].startswith("Yes")
    assert "test/07/target" not in by_id and "test/07/temporal" in by_id
    assert "1.6 s" in by_id["test/07/temporal"]["conversation"][-1]["content"]


def test_unlabelled_clip_asks_when_over_the_targets_anomaly_span_not_its_whole_track():
    facts = _facts(anomaly_segments=None)
    facts.targets[0].anomaly_span = (50, 70)  # in view from frame 40, anomalous from 50 to 70
    when = {s["id"]: s for s in build_video_qa(facts).samples}["test/07/temporal"]["conversation"][-1]["content"]
    assert "2.0 s" in when and "2.8 s" in when and "1.6 s" not in when
    facts.targets[0].anomaly_span = None  # no span known: the described track is the best guess
    when = {s["id"]: s for s in build_video_qa(facts).samples}["test/07/temporal"]["conversation"][-1]["content"]
    assert "1.6 s" in when and "3.6 s" in when


def test_generation_is_deterministic_per_video_and_varies_across_videos():
    a = build_video_qa(_facts())
    b = build_video_qa(_facts())
    assert json.dumps(a.samples) == json.dumps(b.samples)
    questions = {build_video_qa(_facts(video_id=f"test/{i}")).samples[0]["conversation"][0]["content"]
                 for i in range(30)}
    assert len(questions) >= 2


def test_label_segments():
    assert label_segments([0, 1, 1, 0, 0, 1]) == [(1, 2), (5, 5)]
    assert label_segments([0, 0]) == [] and label_segments([1]) == [(0, 0)]
