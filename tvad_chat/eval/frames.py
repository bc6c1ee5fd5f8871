"""Frame-level ROC-AUC: micro (all frames pooled) and macro (mean of per-video AUC).

Videos whose frames are all one class have no AUC of their own. Two conventions are offered and
always reported: "skip" leaves them out of the macro mean; "pad" appends one normal frame scored
0 and one abnormal frame scored 1 to every video before its AUC, as UBnormal's evaluation script
does (scores are then expected in [0, 1]). Optional Gaussian smoothing of the scores along time
(sigma in frames, per video, scipy.ndimage.gaussian_filter1d) is applied before both.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d
from sklearn.metrics import roc_auc_score

from tvad_chat.errors import ConfigError, DataError

log = logging.getLogger(__name__)

ONE_CLASS_CONVENTIONS = ("skip", "pad")


def _prepare(scores: Mapping[str, Sequence[float]], labels: Mapping[str, Sequence[int]],
             sigma: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    missing = sorted(set(labels) - set(scores))
    if missing:
        raise DataError(f"no scores for videos {missing[:5]}: every labelled video needs scores")
    extra = sorted(set(scores) - set(labels))
    if extra:
        log.warning("%d video(s) have scores but no labels and are left out, e.g. %s", len(extra), extra[:3])
    prepared = {}
    for video in sorted(labels):
        try:
            s = np.asarray(scores[video], dtype=np.float64)
            y = np.asarray(labels[video], dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise DataError(f"video {video!r}: scores and labels must be lists of numbers ({err})") from err
        if s.shape != y.shape or s.ndim != 1:
            raise DataError(f"video {video!r}: {s.size} scores for {y.size} labelled frames")
        if not np.isfinite(s).all():
            raise DataError(f"video {video!r} has NaN or infinite scores")
        if not np.isin(y, (0, 1)).all():
            raise DataError(f"video {video!r}: frame labels must be 0 or 1")
        if sigma > 0 and s.size > 1:
            s = gaussian_filter1d(s, sigma)
        prepared[video] = (s, y.astype(np.int64))
    return prepared


def frame_auc(scores: Mapping[str, Sequence[float]], labels: Mapping[str, Sequence[int]],
              one_class: str = "skip", sigma: float = 0.0) -> dict[str, float | int | str]:
    """Micro and macro ROC-AUC in percent, with the conventions used."""
    if one_class not in ONE_CLASS_CONVENTIONS:
        raise ConfigError(f"one_class must be one of {ONE_CLASS_CONVENTIONS}, got {one_class!r}")
    if sigma < 0:
        raise ConfigError("sigma must be >= 0")
    videos = _prepare(scores, labels, sigma)
    if not videos:
        raise DataError("no labelled videos to evaluate")
    all_s = np.concatenate([s for s, _ in videos.values()])
    all_y = np.concatenate([y for _, y in videos.values()])
    micro = 100.0 * roc_auc_score(all_y, all_s) if 0 < all_y.sum() < all_y.size else float("nan")
    per_video, skipped = [], 0
    if one_class == "pad" and (all_s.min() < 0 or all_s.max() > 1):
        # the dummy frames score 0 and 1, so they only bracket the video when scores are in [0, 1]
        log.warning("one_class='pad' adds dummy frames scored 0 and 1, but scores span [%g, %g]: "
                    "normalise scores to [0, 1] for the UBnormal convention", all_s.min(), all_s.max())
    for s, y in videos.values():
        if one_class == "pad":
            s, y = np.concatenate([s, [0.0, 1.0]]), np.concatenate([y, [0, 1]])
        if 0 < y.sum() < y.size:
            per_video.append(roc_auc_score(y, s))
        else:
            skipped += 1
    macro = 100.0 * float(np.mean(per_video)) if per_video else float("nan")
    return {"micro_auc": micro, "macro_auc": macro, "videos": len(videos), "frames": int(all_y.size),
            "one_class_videos_skipped": skipped, "one_class": one_class, "sigma": sigma}
