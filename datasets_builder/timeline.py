"""From per-frame records to per-target timelines and their trajectories.

1. :func:`associate` links instances of consecutive extracted frames into
   timelines with the one tracker (:mod:`tvad_chat.tracking`: Hungarian
   assignment against a constant-velocity prediction), scoring pairs by box
   overlap and appearance similarity (attribute agreement), with hard limits:
   same category, and a centre shift no larger than a few box sizes per step.
   Instances that carry annotated track ids are grouped by them instead.
2. :func:`describe_trajectory` measures a timeline's geometry (entry and exit
   sides, direction, legs and turns, speed class, times) with
   :func:`tvad_chat.motion.describe_path`, the rules SynthCampus's records and
   the page's evidence use; :mod:`tvad_chat.motion` also words it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datasets_builder.extract import Box, FrameRecord
from tvad_chat.motion import Trajectory, TrajectoryConfig, describe_path, fmt_time
from tvad_chat.tracking import Track, TrackerConfig, track_boxes

# --------------------------------------------------------------------------- association


@dataclass
class AssociationConfig:
    iou_weight: float = 0.6
    appearance_weight: float = 0.4
    min_score: float = 0.15  # a pair scoring below this is not linked
    max_center_shift: float = 2.0  # max centre move per extracted step, in sizes of the target's box
    max_gap_steps: int = 4  # a timeline unseen for more extracted steps than this ends
    same_category: bool = True
    min_length: int = 1  # timelines with fewer observations are dropped
    # When every instance carries an annotated track id (ground truth), group by it instead of matching.
    use_track_ids: bool = True


@dataclass
class Observation:
    frame_index: int
    timestamp: float
    box: Box
    confidence: float = 1.0
    anomalous: bool | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    category: str = ""
    track_id: str | None = None  # the annotated id, when the backend had one


@dataclass
class Timeline:
    """One target followed through the clip."""

    target_id: str
    category: str
    attributes: dict[str, str]
    observations: list[Observation]

    @property
    def start_frame(self) -> int:
        return self.observations[0].frame_index

    @property
    def end_frame(self) -> int:
        return self.observations[-1].frame_index

    @property
    def start_time(self) -> float:
        return self.observations[0].timestamp

    @property
    def end_time(self) -> float:
        return self.observations[-1].timestamp

    @property
    def anomaly_rate(self) -> float:
        """Share of observations flagged anomalous (those with a flag)."""
        flags = [o.anomalous for o in self.observations if o.anomalous is not None]
        return float(np.mean(flags)) if flags else 0.0

    @property
    def anomalous(self) -> bool:
        return self.anomaly_rate >= 0.5

    @property
    def confidence(self) -> float:
        return float(np.mean([o.confidence for o in self.observations]))

    def majority_track_id(self) -> tuple[str | None, float]:
        """The annotated id seen most often and its share (1.0 = a pure timeline)."""
        ids = Counter(o.track_id for o in self.observations)
        tid, n = ids.most_common(1)[0]
        return tid, n / len(self.observations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_id": self.target_id, "category": self.category, "attributes": self.attributes,
            "start_frame": self.start_frame, "end_frame": self.end_frame,
            "start_time": round(self.start_time, 3), "end_time": round(self.end_time, 3),
            "anomalous": self.anomalous, "anomaly_rate": round(self.anomaly_rate, 3),
            "confidence": round(self.confidence, 3),
            "boxes": [[o.frame_index] + [round(v, 1) for v in o.box] for o in self.observations],
        }


def appearance_similarity(a: dict[str, str], b: dict[str, str]) -> float:
    """Agreement of appearance attributes in [0, 1]; 0.5 when there is nothing to compare.

    'action' is left out: it describes motion and may change along a timeline.
    Values are compared as word sets (Jaccard), so "dark blue" vs "blue" scores 0.5.
    """
    keys = [k for k in set(a) & set(b) if k != "action"]
    if not keys:
        return 0.5
    sims = []
    for k in keys:
        wa, wb = set(str(a[k]).lower().split()), set(str(b[k]).lower().split())
        sims.append(len(wa & wb) / len(wa | wb) if wa | wb else 1.0)
    return float(np.mean(sims))


def _vote_attributes(obs: Sequence[Observation]) -> dict[str, str]:
    votes: dict[str, Counter] = {}
    for o in obs:
        for k, v in o.attributes.items():
            votes.setdefault(k, Counter())[v] += 1
    return {k: c.most_common(1)[0][0] for k, c in sorted(votes.items())}


def associate(records: Sequence[FrameRecord], config: AssociationConfig | None = None,
              prefix: str = "t") -> list[Timeline]:
    """Link the instances of frame records (any order; sorted by frame) into timelines ``{prefix}0, ...``.

    A pair's score is ``iou_weight * IoU + appearance_weight * appearance_similarity``; pairs scoring under
    ``min_score`` are not linked (in the tracker's cost, ``iou_weight + appearance_weight - score``).
    """
    cfg = config or AssociationConfig()
    recs = sorted((r for r in records if r.ok), key=lambda r: r.frame_index)
    observations = [_observations(rec) for rec in recs]
    if cfg.use_track_ids and any(observations) and all(o.track_id is not None for step in observations
                                                          for o in step):
        return _timelines(_group_by_track_id(observations), cfg, prefix)

    def affinity(track: Track, obs: Observation) -> float | None:
        if cfg.same_category and obs.category != track.payloads[-1].category:
            return None
        return appearance_similarity(_vote_attributes(track.payloads[-5:]), obs.attributes)

    tracker = TrackerConfig(max_gap=cfg.max_gap_steps, max_jump=cfg.max_center_shift,
                            max_cost=cfg.iou_weight + cfg.appearance_weight - cfg.min_score, iou_weight=cfg.iou_weight,
                            distance_weight=0.0, affinity_weight=cfg.appearance_weight)
    tracks = track_boxes([[o.box for o in step] for step in observations], tracker, observations, affinity)
    return _timelines([t.payloads for t in tracks], cfg, prefix)


def _group_by_track_id(observations: list[list[Observation]]) -> list[list[Observation]]:
    groups: dict[str, list[Observation]] = {}
    for step in observations:
        for o in step:
            groups.setdefault(str(o.track_id), []).append(o)
    return list(groups.values())


def _observations(rec: FrameRecord) -> list[Observation]:
    return [Observation(frame_index=rec.frame_index, timestamp=rec.timestamp, box=tuple(i.box),
                        confidence=i.confidence, anomalous=i.anomalous, attributes=dict(i.attributes),
                        category=i.category, track_id=i.track_id) for i in rec.instances]


def _timelines(tracks: list[list[Observation]], cfg: AssociationConfig, prefix: str) -> list[Timeline]:
    """Timelines ``{prefix}0, ...`` of the tracks long enough, by first frame and then left edge."""
    kept = sorted((obs for obs in tracks if len(obs) >= cfg.min_length),
                  key=lambda obs: (obs[0].frame_index, obs[0].box[0]))
    return [Timeline(target_id=f"{prefix}{n}", category=Counter(o.category for o in obs).most_common(1)[0][0],
                     attributes=_vote_attributes(obs), observations=obs) for n, obs in enumerate(kept)]


# --------------------------------------------------------------------------- trajectory description


def describe_trajectory(
    timeline: Timeline, width: int, height: int, clip_start_frame: int = 0, clip_end_frame: int | None = None,
    config: TrajectoryConfig | None = None,
) -> Trajectory:
    """Entry/exit sides, direction, turns, speed class and times of a timeline (tvad_chat.motion's rules)."""
    obs = timeline.observations
    return describe_path([o.box for o in obs], [o.timestamp for o in obs], [o.frame_index for o in obs], width,
                         height, starts_with_clip=obs[0].frame_index <= clip_start_frame,
                         ends_with_clip=clip_end_frame is not None and obs[-1].frame_index >= clip_end_frame,
                         category=timeline.category, config=config)


def temporal_phrasings(start_time: float, end_time: float, start_frame: int, end_frame: int) -> list[str]:
    """When something happens, in several phrasings."""
    a, b = fmt_time(start_time), fmt_time(end_time)
    return [
        f"It happens from {a} to {b} (frames {start_frame} to {end_frame}).",
        f"The anomaly starts at {a} and ends at {b}.",
        f"Between {a} and {b}, that is frames {start_frame} to {end_frame}.",
    ]
