"""The shared_data marker (tests/shared_data.py): a test's benchmark folders are checked before it runs."""

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
