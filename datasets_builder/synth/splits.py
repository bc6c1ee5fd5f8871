"""SynthCampus splits (open set: no anomaly type is shared between train, val and test).

| split        | anomalous clips | anomaly types                                                   |
|--------------|-----------------|-----------------------------------------------------------------|
| normal_train | none            | -                                                               |
| train        | 70 %            | run, cycle, fall, fight, loiter, throw, jaywalk, cart           |
| val          | 70 %            | skate, jump, abandon_bag                                        |
| test         | 70 %            | drive, wrong_way, chase                                         |

The remaining 30 % of clips in train/val/test are normal, so frame-level metrics have negatives.
Scenes are shared by all splits (a fixed-camera benchmark: the same places, unseen anomalies).
"""

from __future__ import annotations

from tvad_chat.errors import ConfigError

SPLITS: dict[str, tuple[str, ...]] = {
    "normal_train": (),
    "train": ("run", "cycle", "fall", "fight", "loiter", "throw", "jaywalk", "cart"),
    "val": ("skate", "jump", "abandon_bag"),
    "test": ("drive", "wrong_way", "chase"),
}
ANOMALOUS_FRACTION = {"normal_train": 0.0, "train": 0.7, "val": 0.7, "test": 0.7}
SPLIT_CODES = {name: i for i, name in enumerate(SPLITS)}  # stable integers for seeding


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ConfigError(f"unknown SynthCampus split {split!r}; choose one of {', '.join(SPLITS)}")
    return split
