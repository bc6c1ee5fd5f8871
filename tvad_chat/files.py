"""Crash-safe files: JSON Lines and atomic writes (ground floor: imports only tvad_chat.errors).

The corpus builder and the trainers may be killed at any moment (SIGKILL, power loss, Ctrl-C).
Three rules keep a JSONL file usable afterwards:

* a batch of lines is appended with one ``write`` on an ``O_APPEND`` descriptor
  and fsync'd, so it lands whole or (at worst) as a torn tail;
* opening a file for appending first cuts a torn tail (bytes after the last
  newline), so a half-written line never survives into the next run;
* every line carries an ``id`` and the writer refuses ids it already holds, so
  re-processing a video whose lines were written before the crash (but whose
  "done" mark was not) adds nothing twice.

Whole files (summaries, configs, reports, weights, encoded videos) are written through
:func:`atomic_output` (a temporary file beside the target, then ``os.replace``): readers see the old
content or the new, never a mix. :func:`atomic_directory` does the same for a folder written in one go.

:func:`content_digest` names a file's or a folder's content (the same upload under another temporary path
gets the same name), for caches of work done on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tvad_chat.errors import DataError

log = logging.getLogger(__name__)


def read_jsonl_numbered(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSONL file; each object must hold ``required`` keys.

    A missing file, a malformed line or a missing key raises DataError naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such JSONL file; check the path")
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg}); fix or remove the line") from err
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            missing = [key for key in required if key not in obj]
            if missing:
                raise DataError(f"{path}:{lineno}: missing key(s) {missing}")
            yield lineno, obj


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL file (see :func:`read_jsonl_numbered` for the checks)."""
    for _, obj in read_jsonl_numbered(path, required):
        yield obj


def repair_tail(path: str | Path) -> int:
    """Cut bytes after the last newline (a line torn by a crash). Returns how many bytes were cut."""
    path = Path(path)
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as fh:
        # Scan backwards in blocks for the last newline; files can be large.
        block = 1 << 16
        pos = size
        keep = 0
        while pos > 0:
            start = max(0, pos - block)
            fh.seek(start)
            chunk = fh.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                break
            pos = start
        cut = size - keep
        if cut:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
            log.warning("%s: removed a torn last line (%d bytes) left by an interrupted run", path, cut)
    return cut


def dumps_line(record: dict[str, Any]) -> str:
    """One record as one JSONL line (no embedded newlines: json escapes them)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


class JsonlAppender:
    """Append-only JSONL file with id de-duplication and torn-tail repair.

    Use as a context manager. ``append_batch`` writes all given records in one
    system call; records whose ``id`` is already in the file are skipped.
    """

    def __init__(self, path: str | Path, key: str = "id", fsync: bool = True) -> None:
        self.path = Path(path)
        self.key = key
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(self.path)
        self.ids: set[str] = set()
        if self.path.exists():
            for rec in read_jsonl(self.path):
                if key in rec:
                    self.ids.add(str(rec[key]))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __contains__(self, record_id: str) -> bool:
        return record_id in self.ids

    def append_batch(self, records: Iterable[dict[str, Any]]) -> int:
        """Append the records not already present; returns how many were written."""
        lines: list[str] = []
        new_ids: list[str] = []
        batch_ids: set[str] = set()
        for rec in records:
            if self.key not in rec:
                raise DataError(f"{self.path}: record without '{self.key}' cannot be appended")
            rid = str(rec[self.key])
            if rid in self.ids or rid in batch_ids:
                continue
            batch_ids.add(rid)
            new_ids.append(rid)
            lines.append(dumps_line(rec))
        if not lines:
            return 0
        data = "".join(lines).encode("utf-8")
        view = memoryview(data)
        while view:  # os.write may write less than asked (signals, pipes): finish the batch
            n = os.write(self._fd, view)
            view = view[n:]
        if self.fsync:
            os.fsync(self._fd)
        self.ids.update(new_ids)
        return len(lines)


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on success it replaces ``path``, on error it is removed.

    The temporary name keeps the suffix, so writers that choose a format by suffix (PyAV, OpenCV) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}.part{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a whole text file (UTF-8, fsync'd) so that readers see either the old or the new content."""
    with atomic_output(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


@contextmanager
def atomic_directory(directory: str | Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``directory`` to fill; on success it takes ``directory``'s place.

    An existing ``directory`` is moved aside first and deleted only once the new one is in place.
    """
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
    old = directory.with_name(f".{directory.name}.{os.getpid()}.old")
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if directory.exists():
            os.replace(directory, old)
        os.replace(tmp, directory)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def content_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, or of a folder's file names and bytes (sorted; subfolders included)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file != path:
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()
