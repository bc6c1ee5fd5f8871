"""The density model of tvad_chat.scene.scoring against a brute-force reference (numpy distances, sorted), and
the rule a clip scored against itself follows: an object is compared only with the clip's objects at least
``exclude_s`` away in time; objects seen over less than twice that are not judged (score 0)."""

import numpy as np

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


def test_a_clip_scored_against_itself_skips_objects_near_in_time() -> None:
    rng = np.random.default_rng(1)
    times = np.sort(rng.uniform(0.0, 12.0, size=200))
    normal = rng.normal(size=(200, 4))
    density = Density(normal, np.ones(4), 2, times, exclude_s=5.0)
    for j in (0, 60, 120, 199):
        time, query = times[j], normal[j][None] + 0.01  # an object next to one seen at the same moment
        allowed = np.abs(times - time) >= 5.0
        np.testing.assert_allclose(density.score(query, time), _brute_force(normal, np.ones(4), 2, query, allowed),
                                   rtol=1e-5)
        assert density.score(query, time)[0] > density.score(query)[0]  # itself would have matched it


def test_objects_seen_over_less_than_twice_the_exclusion_are_not_judged() -> None:
    rng = np.random.default_rng(2)
    normal, query = rng.normal(size=(100, 3)), rng.normal(size=(5, 3)) * 3
    short = Density(normal, np.ones(3), 2, np.linspace(0.0, 9.9, 100), exclude_s=5.0)
    assert not short.judges and np.array_equal(short.score(query, 0.0), np.zeros(5, np.float32))
    long = Density(normal, np.ones(3), 2, np.linspace(0.0, 10.0, 100), exclude_s=5.0)
    assert long.judges and (long.score(query, 0.0) > 0).all()
    assert (long.score(query, 5.0) > 0).all()  # the middle: neighbours 5 s away on both sides
