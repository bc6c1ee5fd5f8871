"""The grounded answerer on a hand-made scene analysis: every question kind, worded from the analysis alone.

The scene (360x240, 10 fps, 7 s; thresholds 1.0 / 2.0 / 3.0 for the points 1/min / 0.1/min / 0.01/min):
- a normal walker (track 4) all the time, score 0.1, and a two-frame flicker (track 5);
- event 1, frames 10-19: a red, person-shaped object (track 1) entering from the left edge and moving right at
  10 px a frame (100 px/s, 40 px tall: 2.5 box heights/s), peak score 4.0 at frame 14 (above 3.0 in 13-16);
- event 2, frames 40-49: a blue object twice as wide as tall (track 2) moving right at walking pace
  (0.8 box heights/s) until it touches the right edge, scores up to 2.7 (peak at frame 43);
- frames 60-65: a stationary object (track 3) at score 1.5, an event only at the 1/min point.
"""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from tvad_chat.errors import ProfileError
from tvad_chat.grounded import Focus, GroundedAnswerer, QuestionReader
from tvad_chat.scene.analyze import FrameBox, FrameRecord, SceneAnalysis
from tvad_chat.ui import scene_panel_markdown

DECIDER = "scene profile 'test_cam'"
POINTS = {"1/min": 1.0, "0.1/min": 2.0, "0.01/min": 3.0}
HELP = ("I can answer from this clip's analysis: whether there is an anomaly, when it happens, where it is, what it "
        "looks like, how it moves, why it is unusual, how many objects were tracked, what happens at a given time "
        "(\"what happens at 0:12?\"), and \"show me\". Ask about \"the second event\" when there are several.")
SPEED_NOTE = ("Speed is measured in box heights per second: its own height covered each second (a walker does "
              "about 0.8).")


def make_scene(fps: float = 10.0, greyscale: bool = False, profile: str | None = "test_cam",
               quiet: bool = False) -> SceneAnalysis:
    """The scene of the module docstring (``quiet``: only the walker and the flicker, nothing above 0.2)."""
    frames = 70
    scores = np.full(frames, 0.2)
    if not quiet:
        scores[10:20] = [2.2, 2.6, 3.0, 3.5, 4.0, 3.8, 3.2, 2.8, 2.4, 2.1]
        scores[40:50] = [2.3, 2.4, 2.5, 2.7, 2.6, 2.5, 2.4, 2.3, 2.2, 2.1]
        scores[60:66] = 1.5
    records = []
    for i in range(frames):
        boxes = [FrameBox((300.0 - i, 60.0, 316.0 - i, 92.0), 0.1, 4, (0.3, 1.0, 0.5), (128, 128, 128))]
        if not quiet and 10 <= i < 20:
            x = 10.0 * (i - 10)
            boxes.append(FrameBox((x, 100.0, x + 20.0, 140.0), float(scores[i]), 1, (2.5, 1.0, 0.5), (190, 40, 40)))
        if not quiet and 40 <= i < 50:
            x = 251.2 + 3.2 * (i - 40)
            boxes.append(FrameBox((x, 150.0, x + 80.0, 190.0), float(scores[i]), 2, (0.8, 1.0, 2.8), (50, 80, 190)))
        if not quiet and 60 <= i < 66:
            boxes.append(FrameBox((150.0, 120.0, 170.0, 160.0), 1.5, 3, (0.1, 1.0, 0.5), (30, 30, 30)))
        if i in (30, 31):
            boxes.append(FrameBox((200.0, 200.0, 210.0, 210.0), 0.05, 5, (0.2, 0.3, 0.3), (240, 240, 240)))
        boxes.sort(key=lambda b: -b.score)
        records.append(FrameRecord(i, i / fps, boxes[0].score, boxes))
    return SceneAnalysis(profile, (360, 240), fps, records, scores, dict(POINTS), "0.1/min",
                         reference={"speed": {"50.0": 0.3, "99.8": 0.6}, "height": {"50.0": 1.0, "99.8": 1.7},
                                    "width": {"50.0": 0.5, "99.8": 2.5}},
                         greyscale=greyscale,
                         point_notes={"1/min": "about 1 false alarm per minute",
                                      "0.1/min": "about 1 false alarm per 10 minutes",
                                      "0.01/min": "about 1 false alarm per 100 minutes"})


@pytest.fixture(scope="module")
def reader() -> QuestionReader:
    return QuestionReader()


@pytest.fixture
def answerer(reader: QuestionReader) -> GroundedAnswerer:
    return GroundedAnswerer(make_scene(), DECIDER, reader=reader)


def ask(answerer: GroundedAnswerer, question: str, focus: Focus | None = None):
    return answerer.answer(question, focus if focus is not None else Focus())


# ------------------------------------------------------------------ judgement
def test_judgement_yes_lists_the_events_and_who_decided(answerer: GroundedAnswerer) -> None:
    got = ask(answerer, "Is there an anomaly in this video?")
    assert got.text == ("Yes. 2 unusual events: (1) 1.0 s to 1.9 s; (2) 4.0 s to 4.9 s. Decided by the scene profile "
                        "'test_cam' at sensitivity 0.1/min (clear: peak score 4.00, threshold 2.00).")
    assert (got.intent, got.event, got.show_time) == ("judgement", 1, pytest.approx(1.4))


def test_judgement_no_states_the_peak_against_the_threshold(reader: QuestionReader) -> None:
    quiet = GroundedAnswerer(make_scene(quiet=True), DECIDER, reader=reader)
    got = ask(quiet, "Anything unusual?")
    assert got.text == ("No. Nothing in this clip is unusual for scene profile 'test_cam' at this sensitivity: the "
                        "highest score was 0.20 against a threshold of 2.00.")
    assert (got.intent, got.event, got.show_time) == ("judgement", None, None)
    assert ask(quiet, "When does it happen?").text == ("I found no unusual event in this clip at this sensitivity, so "
                                                      "there is nothing to time.")
    assert quiet.summary()["judgement"] == "no" and quiet.summary()["events"] == []


def test_the_next_turn_uses_the_next_phrasing_with_the_same_facts(answerer: GroundedAnswerer) -> None:
    focus = Focus()
    first, second = ask(answerer, "Is there an anomaly?", focus), ask(answerer, "Is there an anomaly?", focus)
    assert first.text.startswith("Yes. 2 unusual events: (1) 1.0 s to 1.9 s; (2) 4.0 s to 4.9 s.")
    assert second.text.startswith("Yes, there is something unusual. 2 unusual events: (1) 1.0 s to 1.9 s; "
                                  "(2) 4.0 s to 4.9 s.")
    assert focus.turns == 2


def test_an_uncalibrated_analysis_says_so(reader: QuestionReader) -> None:
    loose = GroundedAnswerer(make_scene(profile=None), "uncalibrated analysis", reader=reader)
    note = ("(Uncalibrated: no scene profile of this camera, so objects were compared with the rest of this clip; "
            "lower confidence.)")
    assert ask(loose, "Is there an anomaly?").text.endswith(note)
    assert ask(loose, "Why is it unusual?").text.endswith(note)
    assert not ask(loose, "When does it happen?").text.endswith(note)
    assert loose.summary()["calibrated"] is False
    quiet = GroundedAnswerer(make_scene(profile=None, quiet=True), "uncalibrated: no scene profile matches this "
                             "camera (the closest, 'ucsd_ped2', has similarity 0.41); lower confidence", reader=reader)
    assert ask(quiet, "Is there an anomaly?").text == (
        "No. Compared with the rest of this clip, nothing in it is unusual at this sensitivity: the highest score was "
        f"0.20 against a threshold of 2.00. {note}")  # the long note once, not quoted inside the verdict


def test_an_analysis_that_judged_no_object_says_it_cannot_tell(reader: QuestionReader) -> None:
    """A clip scored against itself that is too short for it: every box scores 0, nothing was compared, so the
    answer is "I can't tell", never a "no" (and not "objects were compared with the rest of this clip")."""
    scene = make_scene(profile=None, quiet=True)
    for record in scene.frames:
        record.boxes = [dataclasses.replace(b, score=0.0) for b in record.boxes]
    scene.scores[:] = 0.0
    scene.judged = False
    unjudged = GroundedAnswerer(scene, "uncalibrated analysis", reader=reader)
    got = ask(unjudged, "Is there an anomaly?")
    assert got.text == ("I can't tell. Without a scene profile of this camera its objects can only be compared with "
                        "one another, and at 7.0 s this clip is too short for that (they must be seen over 10 s), so "
                        "no object was judged. Calibrate a profile of this camera on its normal footage (`tvad "
                        "calibrate`), or give a longer clip.")
    assert (got.intent, got.event) == ("judgement", None)
    assert ask(unjudged, "Why is it unusual?").text == got.text  # not "there is nothing to explain"
    assert ask(unjudged, "What happens at 3.0 s?").text == (
        "At 3.0 s: no object in this clip was judged, so I can't say whether that is unusual. 2 moving objects in "
        "view, none of them judged.")  # the walker and the flicker
    assert unjudged.summary()["judgement"] == "not judged"
    assert unjudged.check_judgement("Is there an anomaly?", "No, nothing.") is None  # nothing weighed to disagree
    panel = scene_panel_markdown(SimpleNamespace(answerer=unjudged, scene_note=""))
    assert panel.startswith("Scene judgement: **not judged (no object was compared)**")
    assert "No unusual event" not in panel


# ------------------------------------------------------------------ when
def test_when_gives_the_exact_interval_and_frames(answerer: GroundedAnswerer) -> None:
    got = ask(answerer, "When does it happen?")
    assert got.text == "Event 1 of 2 happens from 1.0 s to 1.9 s (frames 10 to 19)."
    assert (got.intent, got.event, got.show_time) == ("when", 1, pytest.approx(1.4))
    summary = answerer.summary()["events"]
    assert [(e["start"], e["end"], e["first_index"], e["last_index"]) for e in summary] == [
        (1.0, 1.9, 10, 19), (4.0, 4.9, 40, 49)]


def test_when_in_a_clip_of_a_minute_or_more_uses_minutes(reader: QuestionReader) -> None:
    long = GroundedAnswerer(make_scene(fps=1.0), DECIDER, reader=reader)  # 70 frames at 1 fps: 0-69 s
    assert ask(long, "When does it happen?").text == "Event 1 of 2 happens from 0:10.0 to 0:19.0 (frames 10 to 19)."
    assert ask(long, "Is there an anomaly?").text.startswith(
        "Yes. 2 unusual events: (1) 0:10.0 to 0:19.0; (2) 0:40.0 to 0:49.0.")


def test_a_typed_question_with_typos_is_understood(answerer: GroundedAnswerer) -> None:
    got = ask(answerer, "wen does it hapen")
    assert got.intent == "when"
    assert got.text == "Event 1 of 2 happens from 1.0 s to 1.9 s (frames 10 to 19)."


def test_short_words_are_not_read_as_other_vocabulary_words(reader: QuestionReader) -> None:
    assert reader.read("are there people?").intent == "judgement"  # "are" is not "wear" (a what question)
    assert reader.read("wat is it").intent == "what"
    assert reader.read("whn did it start").intent == "when"


# ------------------------------------------------------------------ where, how, what, why
def test_where_names_the_entry_and_exit_sides_and_regions(answerer: GroundedAnswerer) -> None:
    focus = Focus()
    assert ask(answerer, "Where is it?", focus).text == (
        "The object of event 1 is first seen entering from the left (left of the frame) and last seen inside the "
        "frame (left).")
    got = ask(answerer, "Where is the second one?", focus)
    assert got.text == ("The object of event 2 is first seen inside the frame (bottom-right of the frame) and last "
                        "seen leaving on the right (bottom-right).")
    assert (got.intent, got.event, got.show_time) == ("where", 2, pytest.approx(4.3))


def test_how_uses_the_motion_vocabulary_with_its_unit(answerer: GroundedAnswerer) -> None:
    assert ask(answerer, "How does it move?").text == (
        f"The object of event 1 moves from left to right fast (2.5 box heights/s). {SPEED_NOTE}")
    assert ask(answerer, "How fast is the second one going?").text == (
        f"The object of event 2 moves from left to right at walking pace (0.8 box heights/s). {SPEED_NOTE}")


def test_what_says_size_shape_and_named_colour(answerer: GroundedAnswerer) -> None:
    assert ask(answerer, "What does it look like?").text == (
        "The object of event 1: about a person's shape (I did not check the pixels). It is about 1.0x as tall and "
        "0.5x as wide as a person usually is at that spot. Its pixels are mostly red.")
    assert ask(answerer, "What does the second one look like?").text == (
        "The object of event 2: wider than a single walking person: a vehicle, a cart, a bicycle seen side-on or "
        "people moving together; the footage does not tell which. It is about 1.0x as tall and 2.8x as wide as a "
        "person usually is at that spot. Its pixels are mostly blue.")


def test_what_on_greyscale_footage_names_no_colour_and_reports_the_person_check(reader: QuestionReader) -> None:
    blank = np.zeros((240, 360, 3), np.uint8)  # no person for the HOG detector to find
    grey = GroundedAnswerer(make_scene(greyscale=True), DECIDER, read_frame=lambda index: blank, reader=reader)
    assert ask(grey, "What colour is it?").text == (
        "The object of event 1: about a person's shape, but the person detector does not confirm a person. It is "
        "about 1.0x as tall and 0.5x as wide as a person usually is at that spot. The footage is greyscale, so I "
        "can't tell its colours.")


def test_why_quotes_the_profile_numbers(answerer: GroundedAnswerer) -> None:
    assert ask(answerer, "Why is it unusual?").text == (
        "The object of event 1 is unusual for this camera: speed 2.5 box heights/s; 99.8th percentile of the "
        "reference: 0.6.")
    assert ask(answerer, "Explain event 2").text == (
        "The object of event 2 is unusual for this camera: speed 0.8 box heights/s; 99.8th percentile of the "
        "reference: 0.6; width 2.8 x the usual person height there; 99.8th percentile of the reference: 2.5.")


def test_list_of_events_says_why_for_each(answerer: GroundedAnswerer) -> None:
    got = ask(answerer, "list the events")
    assert got.intent == "events"
    assert got.text.startswith("2 unusual events: (1) 1.0 s-1.9 s: speed 2.5 box heights/s; 99.8th percentile of the "
                               "reference: 0.6. (2) 4.0 s-4.9 s: speed 0.8 box heights/s;")


# ------------------------------------------------------------------ several events, count, time, show
def test_the_second_one_selects_event_2_and_it_follows_the_dialogue(answerer: GroundedAnswerer) -> None:
    focus = Focus()
    got = ask(answerer, "When does the second one happen?", focus)
    assert got.text == "Event 2 of 2 happens from 4.0 s to 4.9 s (frames 40 to 49)."
    assert (got.event, focus.event) == (2, 2)
    assert ask(answerer, "why is it unusual?", focus).text.startswith("The object of event 2 is unusual")
    assert ask(answerer, "when does the last one happen?", Focus()).event == 2
    third = ask(answerer, "When does the third one happen?", Focus())
    assert third.text == "There are only 2 unusual events in this clip."
    assert third.event is None


def test_count_counts_steady_tracks_not_flicker(answerer: GroundedAnswerer) -> None:
    got = ask(answerer, "How many people are there?")
    assert got.intent == "count"
    assert got.text == ("4 moving objects were tracked in this clip (2 of them unusual). People walking close together "
                        "merge into one object, so this counts groups, not heads.")


def test_what_happens_at_a_time(reader: QuestionReader, answerer: GroundedAnswerer) -> None:
    long = GroundedAnswerer(make_scene(fps=1.0), DECIDER, reader=reader)
    got = ask(long, "What happens at 0:42?")
    assert got.text == ("At 0:42.0: that is during unusual event 2. 2 moving objects in view, the most unusual scoring "
                        "2.50 (threshold 2.00).")
    assert (got.intent, got.event, got.show_time) == ("at_time", 2, 42.0)
    assert ask(long, "what happens at 0:25?").text == (
        "At 0:25.0: nothing unusual is happening then. 1 moving object in view, the most unusual scoring 0.10 "
        "(threshold 2.00).")
    past = ask(answerer, "What happens at 0:42?")  # the short clip has no such moment
    assert past.text == "The clip is only 7.0 s long, so there is nothing at 42.0 s."
    assert past.show_time is None


def test_show_me_moves_the_overlay(answerer: GroundedAnswerer) -> None:
    got = ask(answerer, "show me")
    assert got.text == "Showing event 1 at 1.4 s."
    assert (got.intent, got.event, got.show_time) == ("show", 1, pytest.approx(1.4))
    second = ask(answerer, "Show me the second one")
    assert second.text == "Showing event 2 at 4.3 s."
    assert second.show_time == pytest.approx(4.3)
    assert ask(answerer, "show me 0:03").show_time == 3.0


def test_an_unanswerable_question_gets_the_help_text(answerer: GroundedAnswerer) -> None:
    got = ask(answerer, "Tell me a joke")
    assert (got.intent, got.text, got.event, got.show_time) == ("unknown", HELP, None, None)


# ------------------------------------------------------------------ sensitivity, model check
def test_set_point_re_decides_events_without_re_analysis(answerer: GroundedAnswerer) -> None:
    scene = answerer.analysis
    frames, scores = scene.frames, scene.scores.copy()
    answerer.set_point("0.01/min")
    assert ask(answerer, "Is there an anomaly?").text == (
        "Yes. 1 unusual event: 1.1 s to 1.7 s. Decided by the scene profile 'test_cam' at sensitivity 0.01/min "
        "(marginal: peak score 4.00, threshold 3.00).")
    summary = answerer.summary()
    assert summary["operating_point"] == {"name": "0.01/min", "threshold": 3.0,
                                          "false_alarms": "about 1 false alarm per 100 minutes"}
    # above 3.0 from 1.3 s to 1.6 s, widened while above 0.8 x 3.0 (scene.analyze.EVENT_EXTEND)
    assert [(e["start"], e["end"]) for e in summary["events"]] == [(1.1, 1.7)]
    assert ask(answerer, "When does it happen?").text == "It happens from 1.1 s to 1.7 s (frames 11 to 17)."
    answerer.set_point("1/min")
    assert [(e["start"], e["end"]) for e in answerer.summary()["events"]] == [(1.0, 1.9), (4.0, 4.9), (6.0, 6.5)]
    assert ask(answerer, "When does the third one happen?").text == (
        "Event 3 of 3 happens from 6.0 s to 6.5 s (frames 60 to 65).")
    assert answerer.analysis is scene and scene.frames is frames and np.array_equal(scene.scores, scores)
    with pytest.raises(ProfileError, match="no operating point 'loud'"):
        answerer.set_point("loud")
    assert answerer.point == "1/min"


def test_check_judgement_flags_a_model_yes_against_a_scene_no(reader: QuestionReader,
                                                              answerer: GroundedAnswerer) -> None:
    quiet = GroundedAnswerer(make_scene(quiet=True), DECIDER, reader=reader)
    assert quiet.check_judgement("Is there an anomaly?", "Yes, a person is fighting.") == (
        "Note: the model says 'yes' but the scene analysis says 'no' (scene profile 'test_cam', sensitivity "
        "0.1/min). The two verdicts disagree; the panel shows the scene analysis.")
    assert quiet.check_judgement("Is there an anomaly?", "No, everyone walks.") is None
    assert quiet.check_judgement("What does it look like?", "Yes, a red coat.") is None  # not a yes/no question
    assert quiet.check_judgement("Is there an anomaly?", "There might be.") is None  # no yes/no to compare
    assert answerer.check_judgement("Is there an anomaly?", "No.") == (
        "Note: the model says 'no' but the scene analysis says 'yes' (scene profile 'test_cam', sensitivity "
        "0.1/min). The two verdicts disagree; the panel shows the scene analysis.")


def test_what_names_the_categoriser_s_ranking_only_when_there_is_one(reader: QuestionReader) -> None:
    scene = make_scene()
    asked = []

    def looks_like(event) -> str:
        asked.append(event.first_index)
        return "a cyclist (0.62) or a skateboarder (0.21)" if event.first_index == 10 else ""

    answerer = GroundedAnswerer(scene, DECIDER, "1/min", reader=reader, looks_like=looks_like)
    first = ask(answerer, "What does it look like?").text
    assert first.endswith("It looks most like a cyclist (0.62) or a skateboarder (0.21).")
    second = ask(answerer, "What is the second one?", Focus()).text
    assert "looks most like" not in second and asked == [10, 40]
    plain = ask(GroundedAnswerer(scene, DECIDER, "1/min", reader=reader), "What does it look like?").text
    assert plain == first.removesuffix(" It looks most like a cyclist (0.62) or a skateboarder (0.21).")
