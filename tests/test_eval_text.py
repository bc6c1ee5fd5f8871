"""BLEU-4 and Yes/No: hand-computed cases and cross-checks against sacrebleu, nltk and pycocoevalcap."""

from __future__ import annotations

import math
import random

import pytest
import sacrebleu
from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu, sentence_bleu
from pycocoevalcap.bleu.bleu import Bleu

from tvad_chat.errors import ConfigError, DataError
from tvad_chat.eval.text import (
    BleuSettings,
    best_reference_bleu4,
    corpus_bleu4,
    normalize_yes_no,
    sentence_bleu4,
    yes_no_metrics,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # nltk warns on zero n-gram matches

WORDS = "a the person cyclist car walks rides runs from left to right top bottom red blue slowly fast".split()


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def test_identical_sentence_scores_100_and_disjoint_scores_0() -> None:
    assert sentence_bleu4("a cyclist rides from left to right", ["a cyclist rides from left to right"]) == pytest.approx(100.0)
    assert sentence_bleu4("zebra", ["a cyclist rides from left to right"], BleuSettings(smooth="none")) == 0.0


def test_punctuation_only_prediction_scores_zero() -> None:
    assert sentence_bleu4("...", ["a cyclist rides from left to right"]) == pytest.approx(0.0, abs=1e-6)
    assert sentence_bleu4("", ["a cyclist"]) == 0.0


def test_sentence_bleu_matches_sacrebleu_on_random_pairs() -> None:
    rng = random.Random(0)
    for _ in range(200):
        hyp = _sentence(rng, rng.randint(1, 12))
        refs = [_sentence(rng, rng.randint(1, 12)) for _ in range(rng.randint(1, 3))]
        ours = sentence_bleu4(hyp, refs)
        theirs = sacrebleu.sentence_bleu(hyp, refs, lowercase=True).score
        assert ours == pytest.approx(theirs, abs=1e-9)


@pytest.mark.filterwarnings("ignore::UserWarning")  # nltk warns about zero n-gram matches
def test_sentence_bleu_matches_nltk_without_smoothing() -> None:
    rng = random.Random(1)
    settings = BleuSettings(tokenize="whitespace", lowercase=False, smooth="none")
    for _ in range(200):
        hyp = _sentence(rng, rng.randint(4, 12))
        refs = [_sentence(rng, rng.randint(4, 12)) for _ in range(2)]
        nltk_score = 100 * sentence_bleu([r.split() for r in refs], hyp.split(),
                                         smoothing_function=SmoothingFunction().method0)
        assert sentence_bleu4(hyp, refs, settings) == pytest.approx(nltk_score, abs=1e-6)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_corpus_bleu_matches_nltk_sacrebleu_and_coco() -> None:
    rng = random.Random(2)
    refs = [[_sentence(rng, rng.randint(5, 12)) for _ in range(3)] for _ in range(60)]
    # hypotheses share n-grams with their references, so every order has matches
    hyps = [" ".join(rs[0].split()[: rng.randint(3, 8)] + rs[1].split()[:3]) for rs in refs]
    ours = corpus_bleu4(hyps, refs)
    nltk_score = 100 * corpus_bleu([[r.split() for r in rs] for rs in refs], [h.split() for h in hyps])
    sacre = sacrebleu.corpus_bleu(hyps, list(map(list, zip(*refs))), tokenize="none", smooth_method="none").score
    coco, _ = Bleu(4).compute_score({i: rs for i, rs in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)},
                                    verbose=0)
    assert ours == pytest.approx(nltk_score, abs=1e-6)
    assert ours == pytest.approx(sacre, abs=1e-6)
    # pycocoevalcap adds tiny smoothing constants (1e-9 / 1e-15): equal to within 1e-4 BLEU points
    assert ours == pytest.approx(100 * coco[3], abs=1e-4)
    assert 5.0 < ours < 95.0  # a non-trivial score, not 0 = 0


def test_best_reference_macro_over_videos() -> None:
    items = [
        ("v1", "a cyclist rides left to right", ["a cyclist rides left to right", "zzz"]),  # best = 100
        ("v1", "zzz qqq", ["a cyclist rides left to right"]),  # 0
        ("v2", "a red car drives fast", ["a red car drives fast"]),  # 100
    ]
    settings = BleuSettings(smooth="none")
    result = best_reference_bleu4(items, settings)
    # v1 mean = 50, v2 = 100 -> macro 75 (a micro mean over items would give 66.7)
    assert result["bleu4"] == pytest.approx(75.0)
    assert result["videos"] == 2 and result["items"] == 3


def test_empty_references_are_an_error_and_no_items_is_nan() -> None:
    with pytest.raises(DataError):
        best_reference_bleu4([("v", "text", [])])
    with pytest.raises(DataError):
        corpus_bleu4(["text"], [[]])
    assert math.isnan(best_reference_bleu4([])["bleu4"])
    # an empty reference string has no n-gram to match: 0, and the other reference still wins
    assert sentence_bleu4("a cyclist", [""]) == 0.0
    assert best_reference_bleu4([("v", "a red car", ["", "a red car"])])["bleu4"] == pytest.approx(100.0)


@pytest.mark.parametrize("text,label", [
    ("Yes, a cyclist rides through the crowd.", "yes"), ("No.", "no"), ("no", "no"),
    ("There is no anomaly", "no"), ("Nothing unusual happens.", "no"), ("Everything looks normal.", "no"),
    ("There is an anomaly: a cart crosses.", "yes"), ("An anomalous skateboarder appears", "yes"),
    ("I cannot tell", "unknown"), ("...", "unknown"), ("", "unknown"),
    ("The video does not contain anything abnormal", "no"),
    ("The scene is not normal: a car drives on the walkway.", "yes"), ("I would say yes.", "yes"),
    ("?!", "unknown"), ("No anomaly is present.", "no"), ("There are no abnormal events.", "no"),
    ("A man is walking.", "unknown"),
])
def test_yes_no_normalisation(text: str, label: str) -> None:
    assert normalize_yes_no(text) == label


def test_yes_no_metrics_hand_computed() -> None:
    preds = ["Yes, a bike", "No.", "maybe", "There is no anomaly", "Yes"]
    refs = ["Yes", "Yes", "No", "No", "No"]
    metrics = yes_no_metrics(preds, refs)
    assert metrics["accuracy"] == pytest.approx(40.0)  # items 0 and 3
    # recall yes = 1/2, recall no = 1/3 -> balanced 41.67
    assert metrics["balanced_accuracy"] == pytest.approx(100 * (0.5 + 1 / 3) / 2)
    assert metrics["confusion"]["no->unknown"] == 1 and metrics["confusion"]["yes->no"] == 1
    with pytest.raises(ConfigError):
        yes_no_metrics(["yes"], ["perhaps"])


def test_punctuation_only_prediction_under_every_setting() -> None:
    ref = ["a cyclist rides from left to right"]
    for settings in (BleuSettings(), BleuSettings(tokenize="whitespace", smooth="none"),
                     BleuSettings(smooth="floor", smooth_value=0.1)):
        # tokens "." "." "." (13a) or "..." match nothing: no unigram match gives 0 whatever the smoothing
        assert sentence_bleu4("...", ref, settings) == 0.0
        assert sacrebleu.sentence_bleu("...", ref, smooth_method=settings.smooth,
                                       smooth_value=settings.smooth_value,
                                       tokenize="none" if settings.tokenize == "whitespace" else "13a").score == 0.0
    assert corpus_bleu4(["...", "a cyclist rides from left to right"], [ref, ref]) < 100.0
    assert normalize_yes_no("...") == "unknown"


def test_balanced_accuracy_matches_sklearn() -> None:
    from sklearn.metrics import balanced_accuracy_score

    rng = random.Random(5)
    answers = ["Yes, a car.", "No.", "There is no anomaly", "hmm", "Yes"]
    preds = [rng.choice(answers) for _ in range(50)]
    refs = [rng.choice(["Yes", "No"]) for _ in range(50)]
    ours = yes_no_metrics(preds, refs)
    labels_true = [normalize_yes_no(r) for r in refs]
    labels_pred = [normalize_yes_no(p) for p in preds]
    with pytest.warns(UserWarning):  # sklearn warns that "unknown" is not a reference class
        theirs = balanced_accuracy_score(labels_true, labels_pred)
    assert ours["balanced_accuracy"] == pytest.approx(100 * theirs)
    assert sum(ours["confusion"].values()) == 50


def test_13a_tokeniser_equals_sacrebleus() -> None:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    from tvad_chat.eval.text import tokenize_13a

    reference = Tokenizer13a()
    rng = random.Random(7)
    alphabet = list("abcXYZ019 .,-'\"!?;:()[]{}<>/\\@#$%^&*_+=~`|\n\t") + ["&amp;", "&quot;", "<skipped>", "-\n"]
    for _ in range(3000):
        line = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert tokenize_13a(line) == reference(line), repr(line)
    letters = [c for c in alphabet if not c.isdigit()]  # digit-free lines take a faster path
    for _ in range(2000):
        line = "".join(rng.choice(letters) for _ in range(rng.randint(0, 30)))
        assert tokenize_13a(line) == reference(line), repr(line)
    for line in ("A cyclist, 3.5 m/s, rides left-to-right.", "1,000 people - 2-3 carts", "e.g. (x) & y"):
        assert tokenize_13a(line) == reference(line)


def test_hand_computed_sentence_bleu_with_exp_smoothing() -> None:
    # hyp "the cat sat on the mat" vs ref "the cat sat on a mat" (6 tokens each, brevity penalty 1):
    # 1-grams 5/6 ("the" clipped to 1), 2-grams 3/5, 3-grams 2/4, 4-grams 1/3
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert sentence_bleu4("the cat sat on the mat", ["the cat sat on a mat"]) == pytest.approx(expected)
    # vs "the cat sat near the mat": 5/6 ("on" unmatched), 3/5, 1/4, 0/3 -> exp smoothing: 0/3 becomes 1 / (2 * 3)
    smoothed = 100 * (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25
    assert sentence_bleu4("the cat sat on the mat", ["the cat sat near the mat"]) == pytest.approx(smoothed)
    unsmoothed = BleuSettings(smooth="none")
    assert sentence_bleu4("the cat sat on the mat", ["the cat sat near the mat"], unsmoothed) == 0.0
    # brevity penalty: hyp "the cat" (2) vs ref of 6 -> exp(1 - 6/2); effective order 2: p1 = p2 = 1
    assert sentence_bleu4("the cat", ["the cat sat on a mat"]) == pytest.approx(100 * math.exp(1 - 3))
