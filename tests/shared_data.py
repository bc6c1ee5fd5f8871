"""Where the real benchmark footage lives: ../shared/data beside the checkout (CI clones anywhere),
or TVAD_SHARED_DATA when set.

A test that reads it is marked ``@pytest.mark.shared_data("ucsd_ped2", ...)`` with the folders it needs
(tests/conftest.py checks them before the test runs). A missing folder skips the test with the reason on a
developer's machine, and fails it when the environment variable CI is set: CI must not pass without the data
these tests exist to check against.
"""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TVAD_SHARED_DATA", ROOT.parent / "shared" / "data"))


def require(*folders: str) -> None:
    """Skip (or, with CI set, fail) the running test when a folder of DATA is missing."""
    missing = [str(DATA / folder) for folder in folders if not (DATA / folder).exists()]
    if not missing:
        return
    reason = (f"shared benchmark data missing: {', '.join(missing)}; put the data at ../shared/data beside the "
              "checkout or point TVAD_SHARED_DATA at it")
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: these tests must run there)", pytrace=False)
    pytest.skip(reason)
