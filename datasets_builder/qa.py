"""Question-answer generation from timelines: the text side of the corpus.

For every video the builder produces

* the paper's dialogue, in its order: judgement -> appearance (target) ->
  trajectory -> temporal anchors. Sample k holds the first k turns, so each
  SFT sample ends with one answer of its ``kind`` and keeps the earlier turns
  as context;
* mutual-verification items: appearance -> motion ("How does the person in
  the red top move?") and motion -> appearance ("What does the target moving
  from left to right fast look like?"), asked only when the cue names one
  target unambiguously;
* "No" judgement items for normal clips (and items about their normal targets);
* evaluation references (``kind`` target | trajectory | yesno) with every
  phrasing of the answer, for best-match BLEU.

Templates live in prompts/qa_templates.yaml; choices are seeded by the video
id, so a rerun produces byte-identical lines (which the resumable writer relies on).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from datasets_builder.timeline import Timeline, temporal_phrasings
from tvad_chat.errors import DataError
from tvad_chat.motion import Trajectory, motion_summary, trajectory_phrasings

PERSON_CATEGORIES = {"person", "pedestrian", "man", "woman", "child", "runner", "cyclist", "biker",
                     "skateboarder", "skater", "jogger", "walker", "people"}


@lru_cache(maxsize=1)
def load_templates() -> dict[str, Any]:
    """prompts/qa_templates.yaml, checked for the keys the builder uses."""
    text = resources.files("prompts").joinpath("qa_templates.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    needed = {"judgement": ["questions", "yes_answers", "no_answers", "yes_answers_no_target"],
              "target": ["questions", "answers"], "trajectory": ["questions"], "temporal": ["questions"],
              "appearance_to_motion": ["questions"], "motion_to_appearance": ["questions", "answers"]}
    for sec, keys in needed.items():
        for k in keys:
            if not data.get(sec, {}).get(k):
                raise DataError(f"prompts/qa_templates.yaml: missing or empty {sec}.{k}")
    return data


# --------------------------------------------------------------------------- appearance


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _with_article(phrase: str) -> str:
    return f"{_article(phrase)} {phrase}"


# What a rider rides: a rider's "color" (next to its clothes' colours) is this vehicle's.
RIDES = {"cyclist": "bicycle", "biker": "bicycle", "skateboarder": "skateboard", "skater": "skateboard"}
_NO = ("", "no", "none", "nothing", "false")


def _hat(value: str) -> str | None:
    """A hat attribute as a noun phrase: "hat" (or yes/true) -> "hat", "red" -> "red hat", "no" -> None."""
    v = value.strip().lower()
    if v in _NO:
        return None
    if v in ("hat", "yes", "true"):
        return "hat"
    return v if v.split()[-1] in ("hat", "cap", "helmet", "beanie", "hood") else f"{v} hat"


def appearance_phrasings(category: str, attributes: dict[str, str]) -> list[str]:
    """Indefinite noun phrases ("a person in a red top and blue trousers") in three wordings.

    Every wording names the category and every appearance attribute present
    (colours, size, what is carried, a rider's vehicle colour, a hat, the action), and nothing else.
    """
    a = {k: v for k, v in attributes.items() if v}
    size = a.get("size")
    cat = category.strip().lower() or "object"
    person = cat in PERSON_CATEGORIES
    extras_known = {"upper_color", "lower_color", "color", "size", "carrying", "action"}
    if person:
        extras_known.add("hat")
    other = [(k.replace("_", " "), v) for k, v in sorted(a.items()) if k not in extras_known]
    carry = a.get("carrying")
    carry = None if carry in (None, "nothing", "none") else carry
    action = a.get("action")
    out = []
    if person:
        up, low = a.get("upper_color"), a.get("lower_color")
        ride = None
        if not (up or low) and a.get("color"):
            up = a["color"]
        elif a.get("color"):  # next to the clothes' colours, "color" is a rider's vehicle (or the overall look)
            ride = f"{a['color']} {RIDES.get(cat, 'colouring')}"
        hat = _hat(a.get("hat", ""))
        head = f"{size} {cat}" if size else cat
        for v in range(3):
            clothes = []
            if v == 0:
                if up:
                    clothes.append(f"{_with_article(up)} top")
                if low:
                    clothes.append(f"{low} trousers")
                desc = _with_article(head) + (" in " + " and ".join(clothes) if clothes else "")
            elif v == 1:
                if up:
                    clothes.append(f"{_with_article(up)} top")
                if low:
                    clothes.append(f"{low} trousers")
                if hat:
                    clothes.append(_with_article(hat))
                listed = ", ".join(clothes[:-1]) + " and " + clothes[-1] if len(clothes) > 1 else "".join(clothes)
                desc = _with_article(head) + (" wearing " + listed if clothes else "")
            else:
                if up:
                    clothes.append(f"{up} on top")
                if low:
                    clothes.append(f"{low} below")
                desc = _with_article(head) + (" dressed in " + " and ".join(clothes) if clothes else "")
            if hat and v != 1:  # (the second wording lists it with the clothes)
                sep = "," if clothes else ""
                desc += (f"{sep} with {_with_article(hat)}", "", f"{sep} wearing {_with_article(hat)}")[v]
            if ride:
                desc += (f", on {_with_article(ride)}", f", riding {_with_article(ride)}",
                         f", on {_with_article(ride)}")[v] if cat in RIDES else f", with {ride}"
            if carry:
                desc += (f", carrying {_with_article(carry)}", f" with {_with_article(carry)}",
                         f", who carries {_with_article(carry)}")[v]
            if action:
                desc += (f", {action}", f", who is {action}", f" ({action})")[v]
            for k, val in other:
                desc += f", with {k} {val}"
            out.append(desc)
    else:
        color = a.get("color") or a.get("upper_color")
        for v in range(3):
            if v == 0:
                words = " ".join(w for w in (size, color, cat) if w)
                desc = _with_article(words)
            elif v == 1:
                desc = _with_article(" ".join(w for w in (color, cat) if w))
                if size:
                    desc += f" of {size} size"
            else:
                desc = _with_article(cat)
                bits = [f"{color} in colour"] if color else []
                if size:
                    bits.append(f"{size} in size")
                if bits:
                    desc += ", " + " and ".join(bits)
            if carry:
                desc += f", carrying {_with_article(carry)}"
            if action:
                desc += (f", {action}", f", which is {action}", f" ({action})")[v]
            for k, val in other:
                desc += f", with {k} {val}"
            out.append(desc)
    return out


def definite(phrase: str) -> str:
    """'a person in a red top' -> 'the person in a red top'."""
    for art in ("an ", "a "):
        if phrase.startswith(art):
            return "the " + phrase[len(art):]
    return "the " + phrase


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


# --------------------------------------------------------------------------- facts


@dataclass
class TargetFacts:
    """What the QA generator needs about one target."""

    timeline: Timeline
    trajectory: Trajectory
    anomalous: bool
    anomaly_focused: bool = False  # came from the anomaly-focused (mask + blur) pass
    # (first, last) anomalous frame: the "when"; the trajectory describes the whole track, which may be longer
    anomaly_span: tuple[int, int] | None = None

    @property
    def appearance(self) -> list[str]:
        return appearance_phrasings(self.timeline.category, self.timeline.attributes)

    @property
    def has_appearance(self) -> bool:
        """False for mask-only annotations ("object", no attributes): nothing to say about looks."""
        return bool(self.timeline.attributes) or self.timeline.category not in ("object", "")

    @property
    def subject(self) -> str:
        return definite(self.appearance[0].split(",")[0].split(" (")[0])


@dataclass
class VideoFacts:
    video_id: str
    split: str
    video: str  # video file or frame folder
    frame_indices: list[int]  # frames the model sees
    anomalous: bool
    mask_dir: str | None = None
    fps: float = 25.0
    event: str | None = None
    # [(start_frame, end_frame)] of abnormal frames (labels), or None when unlabelled
    anomaly_segments: list[tuple[int, int]] | None = None
    targets: list[TargetFacts] = field(default_factory=list)  # anomalous targets, most salient first
    normal_targets: list[TargetFacts] = field(default_factory=list)
    extra_meta: dict[str, Any] = field(default_factory=dict)


def _rng(*parts: str) -> random.Random:
    seed = int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:8], "big")
    return random.Random(seed)


def _fill(template: str, **kw: str) -> str:
    kw = dict(kw)
    if "appearance" in kw:
        kw["Appearance"] = _cap(kw["appearance"])
    return template.format(**kw)


def _unique_cue(value: str, others: list[str]) -> bool:
    return value not in others


@dataclass
class QAOutput:
    samples: list[dict[str, Any]]
    references: list[dict[str, Any]]


def build_video_qa(facts: VideoFacts, max_normal_targets: int = 3) -> QAOutput:
    """All SFT samples and evaluation references of one video."""
    tpl = load_templates()
    vid = facts.video_id
    samples: list[dict[str, Any]] = []
    refs: list[dict[str, Any]] = []

    def sample(sid: str, kind: str, conv: list[dict[str, str]], focused: bool, qtype: str,
               target: TargetFacts | None = None) -> dict[str, Any]:
        meta = {"kind": kind, "split": facts.split, "anomaly_focused": focused, "question_type": qtype,
                "video_id": vid, "anomalous_video": facts.anomalous}
        if facts.event:
            meta["event"] = facts.event
        if target is not None:
            meta["target_id"] = target.timeline.target_id
            meta["target_anomalous"] = target.anomalous
            meta["trajectory"] = target.trajectory.to_dict()
            meta["category"] = target.timeline.category
            meta["attributes"] = target.timeline.attributes
            tid, share = target.timeline.majority_track_id()
            if tid is not None:  # ground truth: which annotated track this is (lets checks find its geometry)
                meta["track_id"] = tid
                meta["track_purity"] = round(share, 3)
        meta.update(facts.extra_meta)
        return {"id": f"{vid}/{sid}", "video_id": vid, "video": facts.video,
                "frame_indices": list(facts.frame_indices), "fps": facts.fps, "mask_dir": facts.mask_dir,
                "conversation": conv, "meta": meta}

    def turn(q: str, a: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]

    jt = tpl["judgement"]
    main = facts.targets[0] if facts.targets else None
    r = _rng(vid, "dialogue")
    q_j = r.choice([q for q in jt["questions"] if q not in jt.get("inverted_questions", [])])
    if facts.anomalous and main is not None:
        app = main.appearance
        motion = motion_summary(main.trajectory, r.randrange(3))
        a_j = _fill(r.choice(jt["yes_answers"]), appearance=r.choice(app), motion=motion)
    elif facts.anomalous:
        a_j = r.choice(jt["yes_answers_no_target"])
    else:
        a_j = r.choice(jt["no_answers"])
    focused = bool(main and main.anomaly_focused)
    conv = turn(q_j, a_j)
    samples.append(sample("judgement", "judgement", conv, focused, "dialogue", main))
    refs.append({"id": f"{vid}/judgement", "video_id": vid, "kind": "yesno",
                 "references": list(jt["yes_references"] if facts.anomalous else jt["no_references"])})

    if facts.anomalous and main is not None and main.has_appearance:
        # appearance
        app = main.appearance
        target_answers = [_fill(t, appearance=app[i % len(app)]) for i, t in enumerate(tpl["target"]["answers"])]
        a_t = r.choice(target_answers)
        conv = conv + turn(r.choice(tpl["target"]["questions"]), a_t)
        samples.append(sample("target", "target", conv, focused, "dialogue", main))
        refs.append({"id": f"{vid}/target", "video_id": vid, "kind": "target", "references": target_answers})
    if facts.anomalous and main is not None:
        # trajectory: "it" keeps the dialogue coherent; references also name the target
        traj_it = trajectory_phrasings(main.trajectory, "it")
        traj_named = trajectory_phrasings(main.trajectory, main.subject)
        conv = conv + turn(r.choice(tpl["trajectory"]["questions"]), r.choice(traj_it))
        samples.append(sample("trajectory", "trajectory", conv, focused, "dialogue", main))
        refs.append({"id": f"{vid}/trajectory", "video_id": vid, "kind": "trajectory",
                     "references": traj_it + traj_named})
    if facts.anomalous and (facts.anomaly_segments or main is not None):
        segs = facts.anomaly_segments or [main.anomaly_span or (main.trajectory.start_frame,
                                                                main.trajectory.end_frame)]
        temporal = _temporal_answers(segs, facts.fps)
        conv = conv + turn(r.choice(tpl["temporal"]["questions"]), r.choice(temporal))
        samples.append(sample("temporal", "temporal", conv, focused, "dialogue", main))

    # inverted judgement (training variety; not an evaluation item)
    inv_q = jt.get("inverted_questions") or []
    if inv_q:
        ri = _rng(vid, "inverted")
        if facts.anomalous and main is not None:
            ans = _fill(ri.choice(jt["inverted_no_answers"]), appearance=main.appearance[0],
                        motion=motion_summary(main.trajectory, 0))
        elif facts.anomalous:
            ans = "No, there is an anomaly in this video."
        else:
            ans = ri.choice(jt["inverted_yes_answers"])
        samples.append(sample("judgement_inverted", "judgement", turn(ri.choice(inv_q), ans), focused,
                              "inverted_judgement", main))

    # mutual verification, on anomalous targets and a few normal ones
    everyone = facts.targets + facts.normal_targets[:max_normal_targets]
    subjects = [t.subject for t in everyone]
    motions = [motion_summary(t.trajectory, 0) for t in everyone]
    mv = tpl["appearance_to_motion"]["questions"]
    va = tpl["motion_to_appearance"]
    for n, t in enumerate(everyone):
        rt = _rng(vid, "mv", t.timeline.target_id)
        tag = t.timeline.target_id
        others_s = subjects[:n] + subjects[n + 1:]
        others_m = motions[:n] + motions[n + 1:]
        if _unique_cue(subjects[n], others_s):
            q = _fill(rt.choice(mv), subject=subjects[n])
            a = rt.choice(trajectory_phrasings(t.trajectory, "it"))
            samples.append(sample(f"{tag}/appearance_to_motion", "trajectory", turn(q, a),
                                  t.anomaly_focused, "appearance_to_motion", t))
        if _unique_cue(motions[n], others_m) and t.trajectory.direction != "none" and t.has_appearance:
            k = rt.randrange(3)
            m = motion_summary(t.trajectory, k)
            q = _fill(rt.choice(va["questions"]), motion=m)
            a = _fill(rt.choice(va["answers"]), appearance=t.appearance[k], motion=m)
            samples.append(sample(f"{tag}/motion_to_appearance", "target", turn(q, a),
                                  t.anomaly_focused, "motion_to_appearance", t))
    return QAOutput(samples=samples, references=refs)


def _temporal_answers(segments: list[tuple[int, int]], fps: float) -> list[str]:
    fps = fps if fps and fps > 0 else 25.0
    if len(segments) == 1:
        s, e = segments[0]
        return temporal_phrasings(s / fps, e / fps, s, e)
    parts = [f"from {s / fps:.1f} s to {e / fps:.1f} s" for s, e in segments]
    joined = ", ".join(parts[:-1]) + " and " + parts[-1]
    frames = ", ".join(f"{s}-{e}" for s, e in segments)
    return [f"It happens {joined} (frames {frames}).", f"The anomaly occurs {joined}.",
            f"In {len(segments)} intervals: {joined}."]


def label_segments(labels: list[int] | Any) -> list[tuple[int, int]]:
    """Runs of 1s in a per-frame 0/1 list as inclusive (start, end) frame pairs."""
    segs: list[tuple[int, int]] = []
    start = None
    for i, v in enumerate(list(labels) + [0]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            segs.append((start, i - 1))
            start = None
    return segs
