"""Answers composed from a clip's scene analysis: every fact comes from the analysis, never invented.

The analysis (tvad_chat.scene.analyze.SceneAnalysis) is the single source of truth: its events at the active
operating point are what the page plots and what ``tvad analyze`` reports, and this module only words them.
Questions are understood by patterns kept as data (prompts/intents.yaml, small typos corrected against its
vocabulary); phrasings are data too (prompts/answers.yaml), with variants picked by the turn number.

What each answer rests on:
- judgement: are there events at the operating point; the peak score against the threshold; which profile
  decided (or "uncalibrated"); "I can't tell" when no object was judged (a clip scored against itself that
  is too short for that), never a "no" that nothing was weighed for;
- when: the event's start and end (seconds; m:ss from one minute on) and source frames;
- where / how: the event's main track (its highest-scoring object) described with tvad_chat.motion, the one
  motion vocabulary (entry and exit sides, direction, speed class in box heights per second, turns);
- what: size against the people this camera normally sees (the profile's perspective), width against
  height, OpenCV's bundled HOG person detector on the peak frame, and the named colour of the object's own
  pixels, or "the footage is greyscale";
- why: the profile's numbers for that object (its measure against the 99.8th percentile of normal objects).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import cv2
import numpy as np
import yaml

from prompts.loader import read_prompt_file
from tvad_chat.motion import Trajectory, describe_path, movement_phrase
from tvad_chat.scene.analyze import SELF_EXCLUDE_S, Event, FrameBox, SceneAnalysis
from tvad_chat.scene.events import footage_seconds
from tvad_chat.scene.scoring import judging_span

INTENTS_FILE = "intents.yaml"
ANSWERS_FILE = "answers.yaml"
TYPO_CUTOFF = 0.8  # difflib ratio above which a word is read as the vocabulary word it resembles
CLEAR_MARGIN = 1.5  # a peak this many times the threshold is a clear finding, below it a marginal one
LARGER_THAN_PERSON = 1.5  # height or width over the expected person height beyond which it is not one person
HOG_HEIGHT = 160  # pixels: crops are scaled so the object is about this tall for the 64x128 HOG window
# named colours (RGB) for the object's mean colour; the nearest in RGB wins
COLOUR_NAMES = {"black": (30, 30, 30), "dark grey": (80, 80, 80), "grey": (128, 128, 128),
                "light grey": (190, 190, 190), "white": (240, 240, 240), "red": (190, 40, 40),
                "orange": (230, 130, 40), "yellow": (220, 200, 60), "green": (60, 150, 60), "blue": (50, 80, 190),
                "light blue": (130, 170, 220), "purple": (120, 60, 150), "pink": (230, 150, 180),
                "brown": (120, 80, 50), "beige": (200, 180, 140)}


@dataclass
class GroundedAnswer:
    text: str
    intent: str
    event: int | None = None  # 1-based number of the event the answer is about
    show_time: float | None = None  # seconds: where the page moves the overlay ("show me")


@dataclass
class Focus:
    """What the dialogue is about: the event "it" refers to, and the turn count (for phrasing variants)."""

    event: int | None = None
    turns: int = 0


@dataclass
class Question:
    intent: str
    ordinal: int | None  # 1-based event number asked about (-1 = the last one)
    time: float | None  # seconds named in the question


class QuestionReader:
    """Intent, event ordinal and time of a typed question (patterns from prompts/intents.yaml)."""

    def __init__(self) -> None:
        data = yaml.safe_load(read_prompt_file(INTENTS_FILE))
        self.vocabulary = [str(w) for w in data["vocabulary"]]
        self.intents = [(str(i["name"]), [re.compile(p) for p in i["patterns"]]) for i in data["intents"]]
        self.ordinals = {str(k): int(v) for k, v in data["ordinals"].items()}

    def correct(self, text: str) -> str:
        words = re.findall(r"[a-z0-9:.']+|[^a-z0-9:.'\s]", text.lower())
        fixed = []
        for word in words:
            if word.isalpha() and len(word) >= 3 and word not in self.vocabulary:
                # a three-letter word only towards words of its first letter: "wen" is "when", "are" not "wear"
                candidates = self.vocabulary if len(word) > 3 else [w for w in self.vocabulary if w[0] == word[0]]
                close = difflib.get_close_matches(word, candidates, n=1, cutoff=TYPO_CUTOFF)
                word = close[0] if close else word
            fixed.append(word)
        return " ".join(fixed)

    def read(self, question: str) -> Question:
        text = self.correct(question)
        intent = next((name for name, patterns in self.intents if any(p.search(text) for p in patterns)), "unknown")
        ordinal = next((self.ordinals[w] for w in text.split() if w in self.ordinals), None)
        number = re.search(r"\bevent\s+(\d+)\b", text)
        if number:
            ordinal = int(number.group(1))
        return Question(intent, ordinal, _named_time(text))


def _named_time(text: str) -> float | None:
    clock = re.search(r"\b(\d+):(\d{1,2}(?:\.\d+)?)\b", text)
    if clock:
        return int(clock.group(1)) * 60 + float(clock.group(2))
    seconds = re.search(r"\bat\s+(\d+(?:\.\d+)?)\s*(?:s|sec|secs|seconds)?\b", text)
    return float(seconds.group(1)) if seconds else None


def format_time(seconds: float, long_clip: bool) -> str:
    """Seconds as "12.3 s", or "m:ss.s" for clips of a minute or more."""
    if not long_clip:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes)}:{rest:04.1f}"


def colour_name(rgb: tuple[int, int, int]) -> str:
    values = np.array(list(COLOUR_NAMES.values()), float)
    return list(COLOUR_NAMES)[int(np.argmin(np.linalg.norm(values - np.asarray(rgb, float), axis=1)))]


@dataclass
class EventFacts:
    """What the analysis says about one event's main object."""

    event: Event
    track_id: int | None
    boxes: list[FrameBox] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)


class GroundedAnswerer:
    """Answers questions about one analysed clip at one operating point (change it with ``set_point``)."""

    def __init__(self, analysis: SceneAnalysis, decider: str, point: str | None = None,
                 read_frame: Callable[[int], np.ndarray] | None = None, reader: QuestionReader | None = None,
                 looks_like: Callable[[Event], str] | None = None) -> None:
        self.analysis = analysis
        # event -> its ranked categories in words ("a cyclist (0.62) or a skateboarder (0.21)"; "" when none):
        # the optional CLIP stage (tvad_chat.stages), the only source of a category name
        self.looks_like = looks_like
        self.decider = decider  # e.g. "scene profile 'ucsd_ped2'" or "uncalibrated: ..."
        self.point = point or analysis.default_point
        self.read_frame = read_frame  # source index -> RGB frame, for the person check
        self.reader = reader or QuestionReader()
        self.phrasings = yaml.safe_load(read_prompt_file(ANSWERS_FILE))
        self._events = analysis.events(self.point)
        self.long_clip = bool(len(analysis.frames)) and analysis.frames[-1].time >= 60.0

    def set_point(self, point: str) -> None:
        """Re-decide the events at another operating point (no re-analysis)."""
        self.analysis.threshold(point)
        self.point = point
        self._events = self.analysis.events(point)
        self.__dict__.pop("_facts", None)

    @property
    def events(self) -> list[Event]:
        return list(self._events)

    def summary(self) -> dict[str, object]:
        """The facts every view shows (JSON, CLI text, page panel): judgement, events, operating point."""
        threshold = self.analysis.threshold(self.point)
        return {
            "judgement": self._verdict(),
            "decided_by": self.decider,
            "calibrated": self.analysis.profile_name is not None,
            "operating_point": {"name": self.point, "threshold": round(threshold, 4),
                                "false_alarms": self.analysis.point_notes.get(self.point, "")},
            "peak_score": round(float(self.analysis.scores.max()) if len(self.analysis.scores) else 0.0, 4),
            "events": [{"number": n, "start": round(e.start_s, 3), "end": round(e.end_s, 3),
                        "first_index": e.first_index, "last_index": e.last_index, "peak_time": round(e.peak_time, 3),
                        "track_ids": e.track_ids, "why": e.why} for n, e in enumerate(self._events, start=1)],
        }

    def evidence_text(self) -> str:
        """The evidence in one paragraph, for a language model to read beside its own view of the clip."""
        verdict = self._answer_judgement(Question("judgement", None, None), None, 0).text
        reasons = " ".join(f"Event {n}: {e.why}." for n, e in enumerate(self._events, start=1))
        return f"{verdict} {reasons}".strip()

    def check_judgement(self, question: str, model_answer: str) -> str | None:
        """When a yes/no question gets the model's yes/no against the scene judgement, the sentence that says so."""
        if self.reader.read(question).intent != "judgement":
            return None
        said = re.match(r"\s*(yes|no)\b", model_answer.lower())
        if said is None:
            return None
        scene = self._verdict()
        if said.group(1) == scene or scene == "not judged":  # the scene analysis weighed nothing to disagree with
            return None
        return (f"Note: the model says {said.group(1)!r} but the scene analysis says {scene!r} ({self.decider}, "
                f"sensitivity {self.point}). The two verdicts disagree; the panel shows the scene analysis.")

    # ------------------------------------------------------------------ answering
    def answer(self, question: str, focus: Focus | None = None) -> GroundedAnswer:
        focus = focus if focus is not None else Focus()
        asked = self.reader.read(question)
        chosen = self._choose_event(asked, focus)
        handler = getattr(self, f"_answer_{asked.intent}", self._answer_unknown)
        result: GroundedAnswer = handler(asked, chosen, focus.turns)
        if self.analysis.profile_name is None and self.analysis.judged and asked.intent in ("judgement", "why",
                                                                                            "events"):
            result.text = f"{result.text} {self._say('uncalibrated', focus.turns)}"
        if result.event is not None:
            focus.event = result.event
        focus.turns += 1
        return result

    def _choose_event(self, asked: Question, focus: Focus) -> int | None:
        if not self._events:
            return None
        if asked.ordinal is not None:
            number = len(self._events) if asked.ordinal == -1 else asked.ordinal
            return number if 1 <= number <= len(self._events) else None
        if focus.event is not None and focus.event <= len(self._events):
            return focus.event
        return 1

    def _say(self, key: str, turn: int, **fields: object) -> str:
        variants = self.phrasings[key]
        return variants[turn % len(variants)].format(**fields)

    def _t(self, seconds: float) -> str:
        return format_time(seconds, self.long_clip)

    def _subject(self, number: int) -> str:
        return "The unusual object" if len(self._events) == 1 else f"The object of event {number}"

    def _verdict(self) -> str:
        """The scene judgement in one word: "yes", "no" or "not judged"."""
        return "yes" if self._events else "no" if self.analysis.judged else "not judged"

    def _not_judged(self, turn: int) -> str:
        return self._say("judgement_not_judged", turn, seconds=f"{footage_seconds(self.analysis.times):.1f}",
                         needed=f"{judging_span(SELF_EXCLUDE_S):.0f}")

    def _missing(self, asked: Question, number: int | None, turn: int, what: str) -> GroundedAnswer | None:
        if number is not None:
            return None
        if not self.analysis.judged:
            return GroundedAnswer(self._not_judged(turn), asked.intent)
        if self._events and asked.ordinal is not None:
            return GroundedAnswer(f"There {'is' if len(self._events) == 1 else 'are'} only {len(self._events)} "
                                  f"unusual event{'s' if len(self._events) != 1 else ''} in this clip.", asked.intent)
        return GroundedAnswer(self._say("no_event", turn, what=what), asked.intent)

    def _events_text(self) -> str:
        count = len(self._events)
        listing = "; ".join(f"{'(' + str(n) + ') ' if count > 1 else ''}{self._t(e.start_s)} to {self._t(e.end_s)}"
                            for n, e in enumerate(self._events, start=1))
        return f"{count} unusual event{'s' if count != 1 else ''}: {listing}."

    def _answer_judgement(self, asked: Question, number: int | None, turn: int) -> GroundedAnswer:
        if not self.analysis.judged:
            return GroundedAnswer(self._not_judged(turn), "judgement")
        threshold = self.analysis.threshold(self.point)
        peak = float(self.analysis.scores.max()) if len(self.analysis.scores) else 0.0
        if not self._events:  # uncalibrated: the decider is the long note of why no profile matched, and the
            # "(Uncalibrated: ...)" sentence that follows every judgement already says what decided
            key = "judgement_no" if self.analysis.profile_name else "judgement_no_uncalibrated"
            return GroundedAnswer(self._say(key, turn, decider=self.decider, peak=f"{peak:.2f}",
                                            threshold=f"{threshold:.2f}"), "judgement")
        strength = "clear" if peak >= CLEAR_MARGIN * threshold else "marginal"
        who = f"the {self.decider}" if self.analysis.profile_name else "comparing the clip with itself"
        decider = (f"Decided by {who} at sensitivity {self.point} ({strength}: peak score "
                   f"{peak:.2f}, threshold {threshold:.2f}).")
        return GroundedAnswer(self._say("judgement_yes", turn, events_text=self._events_text(), decider_text=decider),
                              "judgement", event=1, show_time=self._events[0].peak_time)

    def _answer_events(self, asked: Question, number: int | None, turn: int) -> GroundedAnswer:
        if not self._events:
            return self._answer_judgement(asked, number, turn)
        listing = " ".join(f"({n}) {self._t(e.start_s)}-{self._t(e.end_s)}: {e.why}."
                           for n, e in enumerate(self._events, start=1))
        count = len(self._events)
        return GroundedAnswer(self._say("events", turn, count_text=f"{count} unusual event{'s' if count != 1 else ''}",
                                        listing=listing), "events", event=1)

    def _answer_when(self, asked: Question, number: int | None, turn: int) -> GroundedAnswer:
        missing = self._missing(asked, number, turn, "time")
        if missing:
            return missing
        event = self._events[number - 1]
        subject = "It happens" if len(self._events) == 1 else f"Event {number} of {len(self._events)} happens"
        frames = f" (frames {event.first_index} to {event.last_index})"
        return GroundedAnswer(self._say("when", turn, subject=subject, start=self._t(event.start_s),
                                        end=self._t(event.end_s), frames=frames), "when", number, event.peak_time)

    def _tracked(self, asked: Question, number: int | None, turn: int, what: str) -> Trajectory | GroundedAnswer:
        """The event's main object's path, or the answer that says why there is none."""
        missing = self._missing(asked, number, turn, "describe")
        if missing:
            return missing
        path = self._path(number)
        if path is None:
            return GroundedAnswer(f"I can't tell {what}: the event's object was not tracked long enough.",
                                  asked.intent, number)
        return path

    def _answer_where(self, asked: Question, number: int | None, turn: int) -> GroundedAnswer:
        path = self._tracked(asked, number, turn, "where it is")
        if isinstance(path, GroundedAnswer):
            return path
        entry = {"start": "already in view when the clip starts", "inside": "inside the frame"}.get(
            path.entry, f"entering from the {path.entry}")
        exit_ = {"end": "still in view when the clip ends", "inside": "inside the frame"}.get(
            path.exit, f"leaving on the {path.exit}")
        return GroundedAnswer(self._say("where", turn, subject=self._subject(number), entry=entry,
                                        entry_region=path.entry_region, exit=exit_, exit_region=path.exit_region),
                              "where", number, self._events[number - 1].peak_time)

    def _answer_how(self, asked: Question, number: int | None, turn: int) -> GroundedAnswer:
        path = self._tracked(asked, number, turn, "how it moves")
        if isinstance(path, GroundedAnswer):
            return path
        motion = f"{movement_phrase(path)} ({path.speed:.1f} box heights/s)"
        return GroundedAnswer(self._say("how", turn, subject=self._subject(number), motion=motion), "how", number,
                              self._events[number - 1].peak_time)

    def _answer_what(self, asked: Question, number: int | None, turn: int) -> GroundedAnswer:
        missing = self._missing(asked, number, turn, "describe")
        if missing:
            return missing
        facts = self._facts[number - 1]
        if not facts.boxes:
            return GroundedAnswer("I can't tell from this footage what it is.", "what", number)
        speed, height, width = (float(np.median([b.measures[i] for b in facts.boxes])) for i in range(3))
        box_w = np.median([b.xyxy[2] - b.xyxy[0] for b in facts.boxes])
        box_h = np.median([b.xyxy[3] - b.xyxy[1] for b in facts.boxes])
        kind = self._kind(facts, box_w / max(box_h, 1.0), height, width)
        size = f"It is about {height:.1f}x as tall and {width:.1f}x as wide as a person usually is at that spot."
        if self.analysis.greyscale:
            colour = "The footage is greyscale, so I can't tell its colours."
        else:
            rgb = tuple(int(np.median([b.colour[c] for b in facts.boxes])) for c in range(3))
            colour = f"Its pixels are mostly {colour_name(rgb)}."
        text = self._say("what", turn, subject=self._subject(number), kind=kind, size=size, colour=colour)
        looks = self.looks_like(self._events[number - 1]) if self.looks_like is not None else ""
        if looks:
            text = f"{text} It looks most like {looks}."
        return GroundedAnswer(text, "what", number, self._events[number - 1].peak_time)

    def _answer_why(self, asked: Question, number: int | None, turn: int) -> GroundedAnswer:
        missing = self._missing(asked, number, turn, "explain")
        if missing:
            return missing
        event = self._events[number - 1]
        return GroundedAnswer(self._say("why", turn, subject=self._subject(number), why=event.why), "why", number,
                              event.peak_time)

    def _answer_count(self, asked: Question, number: int | None, turn: int) -> GroundedAnswer:
        lengths: dict[int, int] = {}
        for frame in self.analysis.frames:
            for box in frame.boxes:
                lengths[box.track_id] = lengths.get(box.track_id, 0) + 1
        steady = sum(1 for n in lengths.values() if n >= 5)  # a track of a few frames is flicker, not an object
        return GroundedAnswer(self._say("count", turn, count=steady, events=len(self._events)), "count")

    def _answer_at_time(self, asked: Question, number: int | None, turn: int) -> GroundedAnswer:
        if asked.time is None:
            return self._answer_unknown(asked, number, turn)
        end = self.analysis.frames[-1].time + 1.0 / self.analysis.fps
        if asked.time > end:  # not the last frame's state in its place: the clip has no such moment
            return GroundedAnswer(f"The clip is only {self._t(end)} long, so there is nothing at "
                                  f"{self._t(asked.time)}.", "at_time")
        times = self.analysis.times
        position = int(np.argmin(np.abs(times - asked.time)))
        frame = self.analysis.frames[position]
        inside = next((n for n, e in enumerate(self._events, start=1) if e.start_s <= frame.time <= e.end_s), None)
        if inside:
            state = (f"that is during unusual event {inside}" if len(self._events) > 1
                     else "that is during the unusual event")
        elif self.analysis.judged:
            state = "nothing unusual is happening then"
        else:
            state = "no object in this clip was judged, so I can't say whether that is unusual"
        moving = [b for b in frame.boxes if b.score > 0]
        if not self.analysis.judged:  # every box scores 0: none was compared with anything
            count = len(frame.boxes)
            objects = f"{count} moving object{'s' if count != 1 else ''} in view, none of them judged"
        elif moving:
            objects = (f"{len(moving)} moving object{'s' if len(moving) != 1 else ''} in view, the most unusual "
                       f"scoring {moving[0].score:.2f} (threshold {self.analysis.threshold(self.point):.2f})")
        else:
            objects = "No moving object in view"
        return GroundedAnswer(self._say("at_time", turn, time=self._t(frame.time), inside=state, objects=objects) + ".",
                              "at_time", inside, frame.time)

    def _answer_show(self, asked: Question, number: int | None, turn: int) -> GroundedAnswer:
        if asked.time is not None:
            return GroundedAnswer(f"Showing {self._t(asked.time)}.", "show", None, asked.time)
        missing = self._missing(asked, number, turn, "show")
        if missing:
            return missing
        event = self._events[number - 1]
        subject = "the unusual event" if len(self._events) == 1 else f"event {number}"
        return GroundedAnswer(self._say("show", turn, subject=subject, time=self._t(event.peak_time)), "show", number,
                              event.peak_time)

    def _answer_unknown(self, asked: Question, number: int | None, turn: int) -> GroundedAnswer:
        return GroundedAnswer(self._say("unknown", turn), "unknown")

    # ------------------------------------------------------------------ facts
    @cached_property
    def _facts(self) -> list[EventFacts]:
        """Per event, its object: the highest-scoring box of each frame of the event. Followed box by box, not
        by one track id, because a track breaks where the object merges with people beside it or splits."""
        out = []
        for event in self._events:
            inside = [f for f in self.analysis.frames if event.start_s <= f.time <= event.end_s]
            top = max((b for f in inside for b in f.boxes), key=lambda b: b.score, default=None)
            facts = EventFacts(event, top.track_id if top else None)
            for frame in inside:
                box = max(frame.boxes, key=lambda b: b.score, default=None)
                if box is not None and box.score > 0:
                    facts.boxes.append(box)
                    facts.times.append(frame.time)
                    facts.indices.append(frame.index)
            out.append(facts)
        return out

    def _path(self, number: int) -> Trajectory | None:
        facts = self._facts[number - 1]
        if len(facts.boxes) < 2:
            return None
        frames = self.analysis.frames
        return describe_path([b.xyxy for b in facts.boxes], facts.times, facts.indices, self.analysis.size[0],
                             self.analysis.size[1], starts_with_clip=facts.indices[0] == frames[0].index,
                             ends_with_clip=facts.indices[-1] == frames[-1].index)

    def _kind(self, facts: EventFacts, aspect: float, height: float, width: float) -> str:
        """Person or not, from what was measured: the HOG detector, the box's shape and its size against the
        people this camera normally sees."""
        person = self._hog_person(facts)
        wide = aspect > 1.1 or width > LARGER_THAN_PERSON
        tall = " and taller than the people usually seen there" if height > LARGER_THAN_PERSON else ""
        if person is True:
            found = "a person (OpenCV's person detector finds one there)"
            return f"{found}, with something wider than one person around them" if wide else found
        if wide:
            return ("wider than a single walking person: a vehicle, a cart, a bicycle seen side-on or people moving "
                    "together; the footage does not tell which")
        if person is False:
            return f"about a person's shape{tall}, but the person detector does not confirm a person"
        return f"about a person's shape{tall} (I did not check the pixels)"

    def _hog_person(self, facts: EventFacts) -> bool | None:
        if self.read_frame is None or not facts.boxes:
            return None
        best = max(range(len(facts.boxes)), key=lambda i: facts.boxes[i].score)
        frame = self.read_frame(facts.indices[best])
        x1, y1, x2, y2 = (int(round(v)) for v in facts.boxes[best].xyxy)
        pad_x, pad_y = int(0.3 * (x2 - x1)) + 8, int(0.2 * (y2 - y1)) + 8
        crop = frame[max(0, y1 - pad_y):y2 + pad_y, max(0, x1 - pad_x):x2 + pad_x]
        if crop.size == 0:
            return None
        scale = HOG_HEIGHT / max(y2 - y1, 1)
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        if crop.shape[0] < 128 or crop.shape[1] < 64:
            return None
        found, _ = _hog().detectMultiScale(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), winStride=(8, 8))
        return len(found) > 0


_HOG: cv2.HOGDescriptor | None = None


def _hog() -> cv2.HOGDescriptor:
    global _HOG
    if _HOG is None:
        _HOG = cv2.HOGDescriptor()
        _HOG.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    return _HOG
