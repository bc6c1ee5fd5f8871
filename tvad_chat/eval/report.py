"""Evaluation reports: a JSON file (metrics in percent, 0-100) and a readable table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tvad_chat.files import atomic_write_text


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """Write atomically; NaN (undefined metric) becomes null."""
    path = Path(path)
    atomic_write_text(path, json.dumps(_clean(report), indent=2, sort_keys=False) + "\n")
    return path


def format_table(title: str, metrics: dict[str, Any], notes: list[str] | None = None) -> str:
    """Metric | value rows (floats with 2 decimals, "n/a" when undefined; nested dicts one row per
    entry), then the convention notes."""
    rows = []
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        if key == "settings":  # shown as notes by the caller
            continue
        if isinstance(value, dict):  # e.g. the yes/no confusion counts, one row each
            flat.update({f"{key}.{k}": v for k, v in value.items() if not isinstance(v, dict)})
        else:
            flat[key] = value
    for key, value in flat.items():
        if isinstance(value, float):
            shown = "n/a" if math.isnan(value) else f"{value:.2f}"
        else:
            shown = str(value)
        rows.append((key, shown))
    width = max([len(k) for k, _ in rows] + [6])
    lines = [title, "-" * len(title)] + [f"{k:<{width}}  {v}" for k, v in rows]
    lines += [f"note: {n}" for n in notes or []]
    return "\n".join(lines)
