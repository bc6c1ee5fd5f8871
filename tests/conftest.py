"""Shared test setup: the shared_data marker (tests/shared_data.py: a test's benchmark folders are checked before
it runs) and ``bb``, a tiny backbone with large random weights."""

import pytest
from shared_data import require


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "shared_data(*folders): needs these folders of ../shared/data (skipped without them; "
        "a failure when CI is set)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("shared_data"):
        require(*mark.args)


def scramble(model, std: float = 0.15, seed: int = 0) -> None:
    """Large random weights: greedy outputs then depend strongly on every input (a sensitive equality test)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * std)


@pytest.fixture(scope="module")
def bb():
    """The tiny Qwen2.5-VL backbone (seed 0) with scrambled weights, one per test module."""
    from tvad_chat.backbone import Backbone

    b = Backbone.from_tiny(seed=0)
    scramble(b.model)
    return b
