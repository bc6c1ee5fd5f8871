"""What a scan leaves in its output folder, all of it rebuilt from the per-clip completion records.

    DIR/scan.json               the settings the folder was scanned with
    DIR/done.jsonl              one completion record per finished clip (ok or failed with its reason), appended
                                with fsync once the clip's report and thumbnails are in place
    DIR/clips/<slug>/report.json, event-NN.jpg
    DIR/index.csv, index.jsonl  every event of the archive: clip, camera, profile, start/end in seconds and as
                                wall-clock time when the name carries one, score, why, thumbnail, report
    DIR/index.html              the static summary: totals, a timeline strip per camera, events by score, the
                                clips in which no object was judged (their absence of events says nothing)
"""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

from tvad_chat.files import atomic_write_text, dumps_line

INDEX_COLUMNS = ("clip", "camera", "profile", "start_s", "end_s", "start_wall", "end_wall", "peak_score",
                 "why", "thumbnail", "report")
STRIP_WIDTH = 900  # pixels of a camera's timeline strip
STRIP_HEIGHT = 18


def event_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every event of the finished clips, clip by clip (by id), in time order within a clip."""
    rows = []
    for record in sorted(records, key=lambda r: r["clip"]):
        if record["status"] != "ok":
            continue
        wall = datetime.fromisoformat(record["wall_start"]) if record["wall_start"] else None
        for event in record["events"]:
            rows.append({
                "clip": record["clip"], "camera": record["camera"], "profile": record["profile"] or "uncalibrated",
                "start_s": event["start"], "end_s": event["end"],
                "start_wall": (wall + timedelta(seconds=event["start"])).isoformat(timespec="seconds") if wall else "",
                "end_wall": (wall + timedelta(seconds=event["end"])).isoformat(timespec="seconds") if wall else "",
                "peak_score": event["peak_score"], "why": event["why"], "thumbnail": event["thumbnail"],
                "report": record["report"], "track_ids": event["track_ids"]})
    return rows


def write_index(out: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """index.csv and index.jsonl (atomically); returns the rows."""
    rows = event_rows(records)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=INDEX_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "index.csv", text.getvalue())
    atomic_write_text(out / "index.jsonl", "".join(dumps_line(row) for row in rows))
    return rows


def judged(record: dict[str, Any]) -> bool:
    """Whether a finished clip's objects were judged (records written before the field existed were)."""
    return record.get("judged", True)


def totals(records: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in records if r["status"] == "ok"]
    hours = sum(r["duration_s"] for r in ok) / 3600
    events = sum(len(r["events"]) for r in ok)
    return {"clips": len(ok), "failed": len(records) - len(ok), "hours": hours, "events": events,
            "events_per_hour": events / hours if hours > 0 else 0.0,
            "cameras": len({r["camera"] for r in ok}), "not_judged": sum(1 for r in ok if not judged(r))}


def duration_text(hours: float) -> str:
    """Hours as people read them: "2.35 hours", or "12.5 minutes" below an hour."""
    return f"{hours:.2f} hours" if hours >= 1 else f"{hours * 60:.1f} minutes"


def write_summary(out: Path, root: Path, records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> Path:
    """index.html: totals, one timeline strip per camera, every event by score with its thumbnail, failures."""
    sums = totals(records)
    page = [
        "<!doctype html><html><head><meta charset='utf-8'><title>tvad scan</title><style>",
        "body{font:14px sans-serif;margin:24px;color:#222}h1{font-size:20px}table{border-collapse:collapse}",
        "td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}",
        ".totals span{display:inline-block;margin-right:24px}.totals b{font-size:18px}",
        ".strip{margin:2px 0 10px}.cam{font-weight:bold;margin-top:8px}img{display:block}",
        ".score{font-weight:bold}.failed td{color:#a00}</style></head><body>",
        f"<h1>Scan of {escape(str(root))}</h1><p class='totals'>",
        f"<span><b>{duration_text(sums['hours'])}</b> scanned</span><span><b>{sums['clips']}</b> clips</span>",
        f"<span><b>{sums['cameras']}</b> cameras</span><span><b>{sums['events']}</b> events</span>",
        f"<span><b>{sums['events_per_hour']:.1f}</b> events per hour</span>",
        f"<span><b>{sums['not_judged']}</b> not judged</span><span><b>{sums['failed']}</b> failed</span></p>",
        "<h2>Timeline per camera</h2>",
    ]
    page += _strips(records)
    page.append("<h2>Events by score</h2><table><tr><th>score</th><th>thumbnail</th><th>camera / clip</th>"
                "<th>when</th><th>why</th></tr>")
    for row in sorted(rows, key=lambda r: (-r["peak_score"], r["clip"], r["start_s"])):
        source = os.path.relpath(root / row["clip"], out)
        when = f"{row['start_s']:.1f}-{row['end_s']:.1f} s"
        if row["start_wall"]:
            when += f"<br>{escape(row['start_wall'].replace('T', ' '))}"
        page.append(
            f"<tr><td class='score'>{row['peak_score']:.2f}</td>"
            f"<td><a href='{escape(row['thumbnail'])}'><img src='{escape(row['thumbnail'])}' width='160'></a></td>"
            f"<td>{escape(row['camera'])} <small>({escape(row['profile'])})</small><br>"
            f"<a href='{escape(source)}'>{escape(row['clip'])}</a> "
            f"(<a href='{escape(row['report'])}'>report</a>)</td><td>{when}</td><td>{escape(row['why'])}</td></tr>")
    page.append("</table>")
    unjudged = [r for r in records if r["status"] == "ok" and not judged(r)]
    if unjudged:
        page.append("<h2>Clips not judged</h2><p>No object in these clips was compared with anything, so they have "
                    "no events whatever happens in them.</p><table>")
        page += [f"<tr class='unjudged'><td>{escape(r['clip'])}</td><td>{escape(r['profile_note'])}</td></tr>"
                 for r in sorted(unjudged, key=lambda r: r["clip"])]
        page.append("</table>")
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        page.append("<h2>Failed clips</h2><table>")
        page += [f"<tr class='failed'><td>{escape(r['clip'])}</td><td>{escape(r['reason'])}</td></tr>"
                 for r in sorted(failed, key=lambda r: r["clip"])]
        page.append("</table>")
    page.append("</body></html>")
    path = out / "index.html"
    atomic_write_text(path, "\n".join(page))
    return path


def _strips(records: list[dict[str, Any]]) -> list[str]:
    """An SVG strip per camera: its clips as grey bars over its span of wall-clock time (or, when a clip's name
    carries no time, its clips end to end), each event as a red mark whose shade is its score; a clip in which no
    object was judged is an outlined white bar, not a grey one (grey reads as "looked at, nothing found")."""
    cameras: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record["status"] == "ok":
            cameras.setdefault(record["camera"], []).append(record)
    out = []
    for camera, clips in sorted(cameras.items()):
        clips.sort(key=lambda r: (r["wall_start"] or "", r["clip"]))
        timed = all(r["wall_start"] for r in clips)
        starts, cursor = [], 0.0
        origin = datetime.fromisoformat(clips[0]["wall_start"]) if timed else None
        for r in clips:
            if origin is not None:
                starts.append((datetime.fromisoformat(r["wall_start"]) - origin).total_seconds())
            else:
                starts.append(cursor)
                cursor += r["duration_s"]
        span = max(s + r["duration_s"] for s, r in zip(starts, clips, strict=True)) or 1.0
        scale = STRIP_WIDTH / span
        shapes = []
        for start, r in zip(starts, clips, strict=True):
            look = "fill='#ccc'" if judged(r) else "fill='#fff' stroke='#888' stroke-dasharray='3 2'"
            title = escape(r["clip"]) + ("" if judged(r) else ": not judged")
            shapes.append(f"<rect x='{start * scale:.1f}' y='3' width='{max(1.0, r['duration_s'] * scale):.1f}' "
                          f"height='{STRIP_HEIGHT - 6}' {look}><title>{title}</title></rect>")
            for e in r["events"]:
                shade = min(1.0, max(0.25, e["peak_score"] / (e["peak_score"] + 1.0) * 1.5))
                shapes.append(f"<rect x='{(start + e['start']) * scale:.1f}' y='0' "
                              f"width='{max(2.0, (e['end'] - e['start']) * scale):.1f}' height='{STRIP_HEIGHT}' "
                              f"fill='rgb(220,0,0)' fill-opacity='{shade:.2f}'><title>{escape(r['clip'])} "
                              f"{e['start']:.1f}-{e['end']:.1f} s: {escape(e['why'])}</title></rect>")
        first = clips[0]["wall_start"].replace("T", " ") if timed else "0 s"
        last = ((origin + timedelta(seconds=span)).isoformat(sep=" ", timespec="seconds") if origin is not None
                else f"{span / 60:.1f} min")
        unjudged = sum(1 for r in clips if not judged(r))
        out.append(f"<div class='cam'>{escape(camera)} <small>({len(clips)} clips, "
                   f"{sum(len(r['events']) for r in clips)} events" + (f", {unjudged} not judged" if unjudged else "")
                   + f"; {escape(first)} to {escape(last)})</small></div>"
                   f"<svg class='strip' width='{STRIP_WIDTH}' height='{STRIP_HEIGHT}'>"
                   f"<rect width='{STRIP_WIDTH}' height='{STRIP_HEIGHT}' fill='#f4f4f4'/>{''.join(shapes)}</svg>")
    return out


def read_settings(out: Path) -> dict[str, Any] | None:
    path = out / "scan.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
