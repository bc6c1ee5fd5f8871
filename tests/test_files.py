"""Crash-safe files (tvad_chat/files.py): atomic whole-file and whole-folder writes, JSONL reading."""

from __future__ import annotations

from pathlib import Path

import pytest

from tvad_chat.errors import DataError
from tvad_chat.files import (
    atomic_directory,
    atomic_output,
    atomic_write_text,
    read_jsonl,
    read_jsonl_numbered,
)


def test_atomic_output_replaces_on_success_and_keeps_the_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "clip.mp4"
    atomic_write_text(target, "old")
    with atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".mp4" and tmp.name.startswith(".clip.")
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing replaced before the block ends
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["clip.mp4"]  # no temporary file left


def test_atomic_directory_swaps_whole_folders(tmp_path: Path) -> None:
    model = tmp_path / "model"
    with atomic_directory(model) as tmp:
        (tmp / "config.json").write_text("1")
    with pytest.raises(RuntimeError), atomic_directory(model) as tmp:
        (tmp / "config.json").write_text("2")
        raise RuntimeError("failed before the folder was complete")
    assert (model / "config.json").read_text() == "1"
    with atomic_directory(model) as tmp:
        (tmp / "weights.bin").write_text("w")
    assert sorted(p.name for p in model.iterdir()) == ["weights.bin"]  # the old folder is gone, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_jsonl_reading_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "refs.jsonl"
    path.write_text('{"id": "a", "kind": "target"}\n\n{"id": "b"}\n', encoding="utf-8")
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b"]
    assert [n for n, _ in read_jsonl_numbered(path)] == [1, 3]
    with pytest.raises(DataError, match=r"refs.jsonl:3: missing key\(s\) \['kind'\]"):
        list(read_jsonl(path, required=("id", "kind")))
    with pytest.raises(DataError, match="no such JSONL file"):
        list(read_jsonl(tmp_path / "missing.jsonl"))
