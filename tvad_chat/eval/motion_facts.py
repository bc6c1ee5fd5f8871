"""The direction a trajectory answer states, read with the motion vocabulary's own phrasing.

BLEU-4 rewards the shared template of trajectory answers ("It is already in view at the start, ... moves
from right to left ..."): a model that gives every clip the same answer scored 57 on SynthCampus test while
stating the right direction for 26 % of the clips. Reading the stated direction of the first movement from
prediction and reference checks the content. Only answers worded as tvad_chat.motion words motion (our
corpus, models trained on it, the page's evidence) are read; anything else is "unknown".
"""

from __future__ import annotations

from collections.abc import Sequence

from tvad_chat.motion import DIRECTION_WORDS, STILL_WORDS

STILL = "none"  # the target stays in place
# (phrase, direction) pairs, longest first, so "up and to the right" wins over "to the right"
_PHRASES = sorted([(p, d) for d, variants in DIRECTION_WORDS.items() for p in variants]
                  + [(p, STILL) for p in STILL_WORDS], key=lambda pd: -len(pd[0]))


def stated_direction(text: str) -> str | None:
    """The direction of the first movement an answer states (one of DIRECTIONS or "none"), or None if unread."""
    low = " ".join(text.lower().split())
    best: tuple[int, int, str] | None = None  # (start, -length, direction)
    for phrase, direction in _PHRASES:
        at = low.find(phrase)
        if at >= 0 and (best is None or (at, -len(phrase)) < best[:2]):
            best = (at, -len(phrase), direction)
    return best[2] if best else None


def direction_accuracy(items: Sequence[tuple[str, Sequence[str]]]) -> dict[str, float | int]:
    """Share (percent) of (prediction, references) whose stated direction equals the references'.

    Items whose references state no readable direction are left out (``count`` says how many were scored);
    a prediction that states none counts as wrong.
    """
    hits = scored = 0
    for prediction, references in items:
        truth = next((d for d in map(stated_direction, references) if d is not None), None)
        if truth is None:
            continue
        scored += 1
        hits += stated_direction(prediction) == truth
    return {"accuracy": 100.0 * hits / scored if scored else float("nan"), "count": scored}


def distinct_share(answers: Sequence[str]) -> float:
    """Percent of answers that differ from one another (100: every clip got its own answer)."""
    if not answers:
        return float("nan")
    return 100.0 * len({" ".join(a.lower().split()) for a in answers}) / len(answers)
