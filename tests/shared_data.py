"""Where the real benchmark footage lives: ../shared/data beside the checkout (CI clones anywhere),
or TVAD_SHARED_DATA when set."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TVAD_SHARED_DATA", ROOT.parent / "shared" / "data"))
