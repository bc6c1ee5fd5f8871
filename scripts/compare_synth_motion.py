"""How often the corpus's trajectory facts agree with SynthCampus's own trajectory records.

Usage::

    tvad synth --out DATA --split train --clips 200 --frames 32
    tvad build-corpus --source synth --data DATA --split train --backend gt --out CORPUS --frames 8
    python scripts/compare_synth_motion.py DATA/train CORPUS/videos/train [--details]

For every described target of the corpus (anomaly targets and normal targets of videos/<split>/*.json) it
finds the annotated object with the same track id and compares speed class, direction, entry, exit and
the turns (their senses, in order).
Both sides describe the frames each one covers; the record's ``anomaly_trajectory`` (when present) is the
span the corpus describes for an anomaly target.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

from tvad_chat.motion import MIN_DISPLACEMENT, SPEED_CLASSES


def _near_speed_boundary(a: float, b: float) -> bool:
    """Both speeds within 10 % of one class threshold (either class is then a fair description)."""
    return any(abs(v - lim) <= 0.1 * lim for lim, _ in SPEED_CLASSES[:-1] for v in (a, b)) and any(
        min(a, b) <= lim * 1.1 and max(a, b) >= lim * 0.9 for lim, _ in SPEED_CLASSES[:-1])


def _near_heading_boundary(d: list[float]) -> bool:
    ang = math.degrees(math.atan2(-d[1], d[0])) % 45.0
    return abs(ang - 22.5) <= 4.5


def _near_direction_boundary(mine: dict, rec: dict) -> bool:
    """Two headings either side of a sector edge, or "none" against a net move within 10 % of the threshold."""
    if "none" in (mine["direction"], rec["direction"]):
        limit = MIN_DISPLACEMENT * rec["size_px"]
        net = math.hypot(*rec["displacement_px"])
        return abs(net - limit) <= 0.1 * limit
    return _near_heading_boundary(mine["displacement"]) or _near_heading_boundary(rec["displacement_px"])


def _record_for(obj: dict, anomaly_target: bool) -> dict | None:
    # The corpus describes an anomaly target over its whole track (the anomaly span only answers "when"),
    # so both kinds compare with the whole-track record.
    return obj.get("trajectory")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("synth_split_dir", type=Path, help="DATA/<split>: folders with annotation.json")
    ap.add_argument("corpus_videos_dir", type=Path, help="CORPUS/videos/<split>")
    ap.add_argument("--details", action="store_true", help="print every disagreement")
    args = ap.parse_args()
    fields = ("speed_class", "direction", "entry", "exit", "turns")
    agree: dict[str, Counter] = {"anomaly": Counter(), "normal": Counter()}
    boundary: dict[str, Counter] = {"anomaly": Counter(), "normal": Counter()}
    total: Counter = Counter()
    for dump_path in sorted(args.corpus_videos_dir.glob("*.json")):
        dump = json.loads(dump_path.read_text())
        ann = json.loads((args.synth_split_dir / dump["video_id"] / "annotation.json").read_text())
        objs = {o["track_id"]: o for o in ann["objects"]}
        for kind, key in (("anomaly", "anomaly_targets"), ("normal", "normal_targets")):
            for t in dump[key]:
                ids = Counter(b_tid for b_tid in _track_ids(dump, t["timeline"]))
                tid = ids.most_common(1)[0][0] if ids else None
                if tid not in objs:
                    continue
                rec = _record_for(objs[tid], kind == "anomaly")
                if rec is None:
                    continue
                total[kind] += 1
                mine = t["trajectory"]
                for f in fields:
                    ok = _value(mine, f) == _value(rec, f)
                    agree[kind][f] += ok
                    if not ok and f == "speed_class" and "speed" in rec and _near_speed_boundary(
                            mine["speed"], rec["speed"]):
                        boundary[kind][f] += 1
                    if not ok and f == "direction" and "size_px" in rec and _near_direction_boundary(mine, rec):
                        boundary[kind][f] += 1
                    if not ok and args.details:
                        print(f"{dump['video_id']} {kind} track {tid} ({objs[tid]['behaviour']}): {f} corpus="
                              f"{_value(mine, f)!r} record={_value(rec, f)!r}  corpus speed={mine['speed']} record speed="
                              f"{rec.get('speed', rec.get('speed_mps'))} corpus disp={mine['displacement']} "
                              f"record disp={rec.get('displacement_px')}")
    for kind in ("anomaly", "normal"):
        n = total[kind]
        cells = ", ".join(f"{f} {agree[kind][f]}/{n}" + (f" (+{boundary[kind][f]} at a class boundary)"
                                                         if boundary[kind][f] else "") for f in fields)
        print(f"{kind} targets: {cells}")


def _value(tr: dict, field: str):
    """A compared field; turns as their senses in order ("right", "back", ...)."""
    if field == "turns":
        return [t["sense"] for t in tr["turns"]]
    return tr[field]


def _track_ids(dump: dict, timeline: dict) -> list[str]:
    """Annotated track ids of a timeline's boxes, looked up in the extraction records by frame and box."""
    recs = {r["frame_index"]: r for r in dump["records"] + dump["focus_records"]}
    out = []
    for fi, *box in timeline["boxes"]:
        for inst in recs.get(fi, {}).get("instances", []):
            if [round(v, 1) for v in inst["box"]] == box and inst.get("track_id") is not None:
                out.append(inst["track_id"])
                break
    return out


if __name__ == "__main__":
    main()
