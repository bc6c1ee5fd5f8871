"""The density model of tvad_chat.scene.scoring against a brute-force reference (numpy distances, sorted), and
the rule a clip scored against itself follows: an object is compared only with the objects of the clip's other
stretches of time, the rule its thresholds were measured by."""

import numpy as np
import pytest

from tvad_chat.errors import ConfigError
from tvad_chat.scene.scoring import Density


def _brute_force(normal: np.ndarray, scales: np.ndarray, k: int, query: np.ndarray,
                 allowed: np.ndarray | None = None) -> np.ndarray:
    out = []
    for q in query:
        distances = np.sqrt((((normal - q) / scales) ** 2).sum(axis=1))
        if allowed is not None:
            distances = distances[allowed]
        out.append(np.sort(distances)[:k].mean() if len(distances) else 0.0)
    return np.array(out)


def test_scores_are_the_mean_distance_to_the_k_nearest_in_scaled_units() -> None:
    rng = np.random.default_rng(0)
    normal, query = rng.normal(size=(300, 6)), rng.normal(size=(20, 6)) * 2
    scales = rng.uniform(0.5, 3.0, size=6)
    got = Density(normal, scales, 3).score(query)
    np.testing.assert_allclose(got, _brute_force(normal, scales, 3, query), rtol=1e-5)


def test_a_clip_scored_against_itself_uses_only_the_other_stretches() -> None:
    rng = np.random.default_rng(1)
    times = np.sort(rng.uniform(0.0, 8.0, size=200))
    normal = rng.normal(size=(200, 4))
    starts = np.array([2.0, 4.0, 6.0])  # stretches [0, 2), [2, 4), [4, 6), [6, 8]
    density = Density(normal, np.ones(4), 2, times, starts)
    for j in (0, 60, 120, 199):
        time, query = times[j], normal[j][None] + 0.01  # an object next to one of its own stretch
        stretch = np.searchsorted(starts, time, side="right")
        allowed = np.searchsorted(starts, times, side="right") != stretch
        np.testing.assert_allclose(density.score(query, time), _brute_force(normal, np.ones(4), 2, query, allowed),
                                   rtol=1e-5)
        assert density.score(query, time)[0] > density.score(query)[0]  # its own stretch would have matched it


def test_times_and_stretches_go_together() -> None:
    with pytest.raises(ConfigError, match="both"):
        Density(np.zeros((10, 2)), np.ones(2), 2, times=np.arange(10.0))
