"""Readers of the evaluation inputs. Every malformed line raises DataError naming the file and line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tvad_chat.errors import DataError
from tvad_chat.eval.objects import Detections, Regions
from tvad_chat.files import read_jsonl_numbered
from tvad_chat.video import IMAGE_EXTENSIONS, read_mask

log = logging.getLogger(__name__)



def read_text_items(pred_path: str | Path, ref_path: str | Path) -> list[dict[str, Any]]:
    """Join predictions {"id", "prediction"} with references {"id", "video_id", "kind", "references"}."""
    predictions: dict[str, str] = {}
    for number, record in read_jsonl_numbered(pred_path, ("id", "prediction")):
        key = str(record["id"])
        if key in predictions:
            raise DataError(f"{pred_path}:{number}: duplicate id {key!r}")
        if not isinstance(record["prediction"], str):
            raise DataError(f"{pred_path}:{number}: prediction must be a string")
        predictions[key] = record["prediction"]
    items, seen = [], set()
    for number, record in read_jsonl_numbered(ref_path, ("id", "video_id", "kind", "references")):
        key = str(record["id"])
        if key in seen:
            raise DataError(f"{ref_path}:{number}: duplicate id {key!r}")
        seen.add(key)
        kind = record["kind"]
        if kind not in ("target", "trajectory", "yesno"):
            raise DataError(f"{ref_path}:{number}: kind must be target, trajectory or yesno, got {kind!r}")
        refs = record["references"]
        if isinstance(refs, str):
            refs = [refs]
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs) or not refs:
            raise DataError(f"{ref_path}:{number}: references must be a non-empty list of strings")
        if key not in predictions:
            raise DataError(f"{ref_path}:{number}: no prediction with id {key!r} in {pred_path}")
        items.append({"id": key, "video_id": str(record["video_id"]), "kind": kind, "references": refs,
                      "prediction": predictions[key]})
    unused = len(predictions) - len(items)
    if unused:
        log.warning("%d prediction(s) in %s have no reference in %s and are not scored", unused, pred_path, ref_path)
    return items


def read_json_series(path: str | Path) -> dict[str, list[float]]:
    """{video_id: [per-frame values]} from a JSON file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise DataError(f"{path} does not exist") from err
    except ValueError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise DataError(f"{path}: expected {{video_id: [per-frame values]}}")
    return {str(k): v for k, v in data.items()}


def _read_rows(path: Path, width: int) -> Iterator[tuple[int, list[float]]]:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.replace(",", " ").split()
        if len(parts) != width:
            raise DataError(f"{path}:{number}: expected {width} numbers, got {len(parts)}")
        try:
            yield number, [float(p) for p in parts]
        except ValueError as err:
            raise DataError(f"{path}:{number}: not a number ({err})") from err


def _check_box(where: str, frame: float, x1: float, y1: float, x2: float, y2: float) -> None:
    if frame != int(frame) or frame < 0:
        raise DataError(f"{where}: frame must be a non-negative integer, got {frame:g}")
    if x2 < x1 or y2 < y1:
        raise DataError(f"{where}: box has x2 < x1 or y2 < y1 (expected x1, y1, x2, y2)")


def read_object_files(gt_dir: str | Path, det_dir: str | Path) -> tuple[Regions, Detections, list[str]]:
    """Per-video text files, same file name in both folders: tracks `track_id, frame, x1, y1, x2, y2`,
    detections `frame, x1, y1, x2, y2, score`. A video without a detection file has no detections."""
    gt_dir, det_dir = Path(gt_dir), Path(det_dir)
    for folder in (gt_dir, det_dir):
        if not folder.is_dir():
            raise DataError(f"{folder} is not a folder")
    videos = sorted(p.name for p in gt_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    if not videos:
        raise DataError(f"{gt_dir} holds no ground-truth track files")
    unknown = sorted({p.name for p in det_dir.iterdir() if p.is_file()} - set(videos))
    if unknown:
        raise DataError(f"{det_dir} has detection files without ground truth: {unknown[:5]}")
    reg_rows, det_rows = [], []
    track_keys: dict[tuple[int, float], int] = {}
    for v, name in enumerate(videos):
        seen: set[tuple[float, float]] = set()
        for number, (track, frame, x1, y1, x2, y2) in _read_rows(gt_dir / name, 6):
            where = f"{gt_dir / name}:{number}"
            _check_box(where, frame, x1, y1, x2, y2)
            if (track, frame) in seen:
                raise DataError(f"{where}: track {track:g} has a second region on frame {frame:g}")
            seen.add((track, frame))
            gid = track_keys.setdefault((v, track), len(track_keys))
            reg_rows.append((v, int(frame), gid, x1, y1, x2, y2))
        det_file = det_dir / name
        if det_file.is_file():
            for number, (frame, x1, y1, x2, y2, score) in _read_rows(det_file, 6):
                _check_box(f"{det_file}:{number}", frame, x1, y1, x2, y2)
                if not np.isfinite(score):
                    raise DataError(f"{det_file}:{number}: score must be a finite number")
                det_rows.append((v, int(frame), x1, y1, x2, y2, score))
    reg = np.array(reg_rows, dtype=np.float64).reshape(-1, 7)
    det = np.array(det_rows, dtype=np.float64).reshape(-1, 7)
    regions = Regions(reg[:, 0].astype(np.int64), reg[:, 1].astype(np.int64), reg[:, 2].astype(np.int64), reg[:, 3:7])
    detections = Detections(det[:, 0].astype(np.int64), det[:, 1].astype(np.int64), det[:, 2:6], det[:, 6])
    return regions, detections, videos


def read_map(path: Path) -> np.ndarray:
    """A score map (.npy float/uint8, or an 8/16-bit image) or a mask image."""
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: not a readable .npy array ({err})") from err
    else:
        import cv2

        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if array is None:
            raise DataError(f"{path}: not a readable image")
        if array.ndim == 3:
            array = array[..., 0]
    if array.ndim != 2:
        raise DataError(f"{path}: expected a 2-D map, got shape {array.shape}")
    return array


def list_frame_files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Relative path without suffix -> file, recursively (videos as sub-folders)."""
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder")
    return {str(p.relative_to(folder).with_suffix("")): p for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix.lower() in suffixes}


class MapFrames(Sequence):
    """Frames read from disk on access (maps are not all held in memory): masks PNGs under ``gt``,
    score maps with the same relative name under ``pred`` (PNG or .npy); a mask without a map is a
    frame the method predicted nothing for."""

    def __init__(self, pred_dir: str | Path, gt_dir: str | Path) -> None:
        self.pred_dir, self.gt_dir = Path(pred_dir), Path(gt_dir)
        self.masks = list_frame_files(self.gt_dir, IMAGE_EXTENSIONS)
        self.preds = list_frame_files(self.pred_dir, IMAGE_EXTENSIONS + (".npy",))
        if not self.masks:
            raise DataError(f"{self.gt_dir} holds no mask images")
        extra = sorted(set(self.preds) - set(self.masks))
        if extra:
            raise DataError(f"{self.pred_dir} has maps without masks, e.g. {extra[:3]}: check the folder layout")
        self.keys = sorted(self.masks)
        self.missing = sum(key not in self.preds for key in self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index):  # type: ignore[override]
        from tvad_chat.eval.pixels import PixelFrame

        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        key = self.keys[index]
        mask = read_mask(self.masks[key])
        score = read_map(self.preds[key]) if key in self.preds else None
        name = str(self.preds.get(key, self.masks[key]))
        return PixelFrame(score, mask, name)
