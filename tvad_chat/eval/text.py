"""Text metrics: BLEU-4 in the T-VAD and captioning conventions, and Yes/No accuracy.

T-VAD convention (``best_reference_bleu4``): each prediction is scored against each of its
references alone with sentence BLEU-4; the best-matching reference counts; scores are averaged
per video, then over videos (macro). Captioning convention (``corpus_bleu4``): whitespace tokens,
n-gram counts clipped by the maximum over all references, one brevity penalty for the corpus
with the closest reference length. N-gram statistics are counted here (fast, vectorisable over
samples); the BLEU formula and smoothing are sacrebleu's (``BLEU.compute_bleu``) and the 13a
tokenisation follows sacrebleu's rules; tests cross-check all of it against sacrebleu, nltk and
pycocoevalcap.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain

from sacrebleu.metrics import BLEU

from tvad_chat.errors import ConfigError, DataError

MAX_ORDER = 4  # _ngrams spells out orders 1-4
SMOOTH_METHODS = ("none", "floor", "add-k", "exp")


@dataclass(frozen=True)
class BleuSettings:
    tokenize: str = "13a"  # "13a" (sacrebleu's default, splits punctuation) or "whitespace"
    lowercase: bool = True
    smooth: str = "exp"  # sacrebleu's sentence-BLEU default
    smooth_value: float | None = None

    def __post_init__(self) -> None:
        if self.tokenize not in ("13a", "whitespace"):
            raise ConfigError(f"tokenize must be '13a' or 'whitespace', got {self.tokenize!r}")
        if self.smooth not in SMOOTH_METHODS:
            raise ConfigError(f"smooth must be one of {SMOOTH_METHODS}, got {self.smooth!r}")

    def describe(self) -> str:
        value = "" if self.smooth_value is None else f"({self.smooth_value})"
        return f"tokenize={self.tokenize} lowercase={self.lowercase} smooth={self.smooth}{value} max_order={MAX_ORDER}"


# sacrebleu's 13a tokeniser, same rules, faster: its first rule (pad every symbol in the class
# [{-~ [-` space-& (-+ :-@ /] with spaces) is one str.translate instead of a Python call per match
# (every space matches it); the period/comma/dash rules are sacrebleu's regexes, applied only
# when the line has such a character. tests/test_eval_text.py checks it against Tokenizer13a.
_PAD_SYMBOLS = str.maketrans({c: f" {c} " for c in
                              [chr(i) for i in range(ord("{"), ord("~") + 1)]
                              + [chr(i) for i in range(ord("["), ord("`") + 1)]
                              + [chr(i) for i in range(ord(" "), ord("&") + 1)]
                              + [chr(i) for i in range(ord("("), ord("+") + 1)]
                              + [chr(i) for i in range(ord(":"), ord("@") + 1)] + ["/"]})
_PERIOD_COMMA = ((re.compile(r"([^0-9])([\.,])"), r"\1 \2 "), (re.compile(r"([\.,])([^0-9])"), r" \1 \2"))
_DIGIT_DASH = re.compile(r"([0-9])(-)")
_DIGIT = re.compile(r"[0-9]")
_PAD_PERIOD_COMMA = str.maketrans({".": " . ", ",": " , "})


def tokenize_13a(line: str) -> str:
    """sacrebleu's ``Tokenizer13a`` (mteval-v13a), returning the same string."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} ".translate(_PAD_SYMBOLS)
    if "." in line or "," in line:
        if _DIGIT.search(line):  # the digit-context rules need the regexes
            for pattern, replacement in _PERIOD_COMMA:
                line = pattern.sub(replacement, line)
        else:  # no digit anywhere: every period and comma becomes its own token
            line = line.translate(_PAD_PERIOD_COMMA)
    if "-" in line:
        line = _DIGIT_DASH.sub(r"\1 \2 ", line)
    return " ".join(line.split())


@lru_cache(maxsize=200_000)
def _tokens(text: str, tokenize: str, lowercase: bool) -> tuple[str, ...]:
    if lowercase:
        text = text.lower()
    if tokenize == "13a":
        text = tokenize_13a(text)
    return tuple(text.split())


@lru_cache(maxsize=200_000)
def _ngrams(tokens: tuple[str, ...]) -> dict[tuple[str, ...], int]:
    """All 1..4-gram counts of a token tuple (cached: texts repeat; callers never mutate it)."""
    t = tokens  # zip builds the n-gram tuples in C (1-tuples for unigrams)
    return dict(Counter(chain(zip(t), zip(t, t[1:]), zip(t, t[1:], t[2:]), zip(t, t[1:], t[2:], t[3:]))))


@dataclass
class BleuStats:
    """Sufficient statistics of BLEU: clipped matches and totals per order, lengths."""

    correct: list[int] = field(default_factory=lambda: [0] * MAX_ORDER)
    total: list[int] = field(default_factory=lambda: [0] * MAX_ORDER)
    hyp_len: int = 0
    ref_len: int = 0

    def add(self, other: BleuStats) -> None:
        for n in range(MAX_ORDER):
            self.correct[n] += other.correct[n]
            self.total[n] += other.total[n]
        self.hyp_len += other.hyp_len
        self.ref_len += other.ref_len

    def score(self, smooth: str = "none", smooth_value: float | None = None, effective_order: bool = False) -> float:
        """BLEU in 0-100 through sacrebleu's formula."""
        if self.hyp_len == 0:
            return 0.0
        result = BLEU.compute_bleu(self.correct, self.total, self.hyp_len, self.ref_len, smooth_method=smooth,
                                   smooth_value=smooth_value, effective_order=effective_order)
        return float(result.score)


def bleu_stats(hypothesis: Sequence[str], references: Sequence[Sequence[str]]) -> BleuStats:
    """Stats of one tokenised hypothesis against tokenised references (multi-reference clipping,
    closest reference length with ties to the shorter, as sacrebleu, nltk and coco do)."""
    hyp = tuple(hypothesis)
    hyp_counts = _ngrams(hyp)
    ref_counts = [_ngrams(tuple(r)) for r in references]
    size = len(hyp)
    stats = BleuStats(total=[max(size - n, 0) for n in range(MAX_ORDER)], hyp_len=size)
    correct = stats.correct
    shared = hyp_counts.keys() & ref_counts[0].keys() if len(ref_counts) == 1 else \
        hyp_counts.keys() & set().union(*(r.keys() for r in ref_counts)) if ref_counts else set()
    if len(ref_counts) == 1:
        only = ref_counts[0]
        for gram in shared:  # only n-grams that occur in a reference can match
            count, clip = hyp_counts[gram], only[gram]
            correct[len(gram) - 1] += count if count < clip else clip
    else:
        for gram in shared:
            count = hyp_counts[gram]
            clip = max(r.get(gram, 0) for r in ref_counts)  # multi-reference clipping: the largest count
            correct[len(gram) - 1] += count if count < clip else clip
    if references:
        stats.ref_len = min((abs(len(r) - size), len(r)) for r in references)[1]
    return stats


def sentence_bleu4(prediction: str, references: Sequence[str], settings: BleuSettings = BleuSettings()) -> float:
    """Sentence BLEU-4 (0-100) of one prediction against one or more references."""
    hyp = _tokens(prediction, settings.tokenize, settings.lowercase)
    refs = [_tokens(r, settings.tokenize, settings.lowercase) for r in references]
    return bleu_stats(hyp, refs).score(settings.smooth, settings.smooth_value, effective_order=True)


def best_reference_bleu4(items: Iterable[tuple[str, str, Sequence[str]]],
                         settings: BleuSettings = BleuSettings()) -> dict[str, float | int]:
    """T-VAD BLEU-4. items: (video_id, prediction, references). Best reference per item, mean per
    video, mean over videos. An item without references is an error (nothing to compare with)."""
    per_video: dict[str, list[float]] = defaultdict(list)
    for video_id, prediction, references in items:
        if not references:
            raise DataError(f"video {video_id!r} has an item with no references: add at least one")
        per_video[video_id].append(max(sentence_bleu4(prediction, [ref], settings) for ref in references))
    if not per_video:
        return {"bleu4": float("nan"), "videos": 0, "items": 0}
    video_means = [sum(v) / len(v) for v in per_video.values()]
    return {"bleu4": sum(video_means) / len(video_means), "videos": len(per_video),
            "items": sum(len(v) for v in per_video.values())}


def corpus_bleu4(predictions: Sequence[str], references: Sequence[Sequence[str]], lowercase: bool = False,
                 tokenize: str = "whitespace") -> float:
    """Captioning-convention corpus BLEU-4 (0-100): summed clipped counts, one brevity penalty, no smoothing."""
    if len(predictions) != len(references):
        raise ConfigError(f"{len(predictions)} predictions but {len(references)} reference lists")
    total = BleuStats()
    for prediction, refs in zip(predictions, references):
        if not refs:
            raise DataError(f"prediction {prediction!r} has no references: add at least one")
        total.add(bleu_stats(_tokens(prediction, tokenize, lowercase), [_tokens(r, tokenize, lowercase) for r in refs]))
    return total.score("none")


# ---------------------------------------------------------------- Yes / No
YES, NO, UNKNOWN = "yes", "no", "unknown"
_NEGATIVE = re.compile(
    r"\b(no|not|nothing|none|never|without)\b[^.]*\b(anomal\w*|unusual|abnormal|strange|suspicious|wrong|odd)\b"
    r"|\b(nothing|no)\b\s+(unusual|abnormal|strange|suspicious|odd|wrong)"
    r"|\b(everything|all|scene|video|clip|it)\b[^.]*\b(is|looks|seems|appears)\s+(normal|fine|ordinary)\b"
    r"|^\s*normal\b"
)
_NOT_NORMAL = re.compile(r"\b(not|isn't|is not)\s+(normal|ordinary|usual|typical)\b")
_POSITIVE = re.compile(r"\b(anomal\w*|abnormal|unusual|suspicious)\b")


def normalize_yes_no(text: str) -> str:
    """Map a free-text judgement to yes / no / unknown ("Yes, a cyclist ..." -> yes; "There is no anomaly" -> no)."""
    lowered = " ".join(str(text).lower().split())
    words = re.findall(r"[a-z']+", lowered)
    if not words:
        return UNKNOWN
    if words[0] in ("yes", "yeah", "yep", "correct", "true"):
        return YES
    if words[0] in ("no", "nope", "false"):
        return NO
    if _NOT_NORMAL.search(lowered):
        return YES
    if _NEGATIVE.search(lowered):
        return NO
    if _POSITIVE.search(lowered) or re.search(r"\bthere (is|are) an?\b", lowered):
        return YES
    # a bare yes or no later in the sentence ("I would say yes."), when only one of them occurs
    has_yes, has_no = "yes" in words, "no" in words
    if has_yes != has_no:
        return YES if has_yes else NO
    return UNKNOWN


def yes_no_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float | dict]:
    """Accuracy and balanced accuracy (mean recall of the reference classes present); unknown is wrong."""
    if len(predictions) != len(references):
        raise ConfigError(f"{len(predictions)} predictions but {len(references)} references")
    refs = [normalize_yes_no(r) for r in references]
    if UNKNOWN in refs:
        bad = references[refs.index(UNKNOWN)]
        raise ConfigError(f"reference {bad!r} is neither yes nor no: fix the reference file")
    preds = [normalize_yes_no(p) for p in predictions]
    confusion = {f"{r}->{p}": 0 for r in (YES, NO) for p in (YES, NO, UNKNOWN)}
    for r, p in zip(refs, preds):
        confusion[f"{r}->{p}"] += 1
    if not refs:
        return {"accuracy": float("nan"), "balanced_accuracy": float("nan"), "confusion": confusion, "count": 0}
    correct = sum(r == p for r, p in zip(refs, preds))
    recalls = []
    for cls in (YES, NO):
        n = sum(r == cls for r in refs)
        if n:
            recalls.append(confusion[f"{cls}->{cls}"] / n)
    return {"accuracy": 100.0 * correct / len(refs), "balanced_accuracy": 100.0 * sum(recalls) / len(recalls),
            "confusion": confusion, "count": len(refs)}
