"""`tvad ask --json`, the CLI text and the page's panel say the same thing for every window of the evaluation.

Every window scripts/eval_windows.py measures (its defaults: 3.5 s windows every 1 s of Ped2 test 01/04 and Avenue
test 08/21, plus one normal window per training clip; the ambiguous ones left out, as there) is cut from
../shared/data and analysed three times, with ``--profile auto`` and the default sensitivity: by the JSON
command, by the text command and by the chat engine the page runs. For each window:

- the JSON's judgement, decider, operating point, peak score and events equal the engine's, and the decider is
  the window's own camera's profile;
- the text command prints the JSON's dialogue, and its judgement answer lists exactly the events' intervals;
- the page's panel (scene_panel_markdown) states the same judgement and the same event rows, and its score plot
  shades exactly those intervals (each widened by half a frame, as the plot draws them).

Windows that disagree are all listed in one failure.
"""

import json
import re
import sys
from pathlib import Path

import pytest
from matplotlib.patches import Rectangle

from tvad_chat.chat import JUDGEMENT_QUESTION, ChatEngine, EngineConfig
from tvad_chat.cli import main
from tvad_chat.grounded import format_time
from tvad_chat.render import scene_score_figure
from tvad_chat.ui import scene_panel_markdown

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from eval_windows import PED2_FPS, PROFILE_OF, Window, cut, windows  # noqa: E402
from shared_data import DATA  # noqa: E402

WHEN = "When does it happen?"
INTERVAL = re.compile(r"(\d+(?:\.\d+)?) s to (\d+(?:\.\d+)?) s")
PANEL_ROW = re.compile(r"^\| (\d+) \| (\d+\.\d) \| (\d+\.\d) \| .* \|$", flags=re.MULTILINE)
NO_EVENT_WHEN = "I found no unusual event in this clip at this sensitivity, so there is nothing to time."


def _ask(capsys: pytest.CaptureFixture, clip: Path, *extra: str) -> str:
    code = main(["ask", str(clip), "--follow-up", WHEN, "--profile", "auto", "--folder-fps", str(PED2_FPS), *extra])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def _disagreements(window: Window, facts: dict, text: str, engine: ChatEngine, clip: Path) -> list[str]:
    """What the three views of one window say differently ([] when they agree)."""
    found: list[str] = []
    session = engine.new_session()
    try:
        engine.load_video(session, clip)
        summary = session.answerer.summary()

        # the same analysis, decided the same way, by the window's own camera's profile
        if not facts["decided_by"].startswith(f"scene profile '{PROFILE_OF[window.dataset]}' (matched by background"):
            found.append(f"decided by {facts['decided_by']!r}")
        found += [f"JSON {key} {facts[key]!r} != engine {summary[key]!r}"
                  for key in ("judgement", "decided_by", "operating_point", "peak_score", "events")
                  if facts[key] != summary[key]]

        # the text command prints the JSON's dialogue; its judgement lists exactly the events' intervals
        answers = re.findall(r"^A: (.*)$", text, flags=re.MULTILINE)
        if re.findall(r"^Q: (.*)$", text, flags=re.MULTILINE) != [JUDGEMENT_QUESTION, WHEN]:
            found.append("the text command asked other questions")
        if answers != [turn["answer"] for turn in facts["dialogue"]]:
            found.append(f"text answers {answers!r} != JSON dialogue")
            return found
        if answers[0].split(".")[0].split(",")[0].lower() != facts["judgement"]:
            found.append(f"judgement answer {answers[0]!r} != {facts['judgement']!r}")
        intervals = [(format_time(e["start"], False), format_time(e["end"], False)) for e in facts["events"]]
        if [(f"{a} s", f"{b} s") for a, b in INTERVAL.findall(answers[0])] != intervals:
            found.append(f"judgement answer {answers[0]!r} lists other intervals than {intervals}")
        if intervals and f"{intervals[0][0]} to {intervals[0][1]}" not in answers[1]:
            found.append(f"'when' answer {answers[1]!r} does not give {intervals[0]}")
        if not intervals and answers[1] != NO_EVENT_WHEN:
            found.append(f"'when' answer {answers[1]!r} with no event")
        if engine.ask(session, JUDGEMENT_QUESTION) != answers[0]:
            found.append("the engine answers the judgement differently")

        # the page's panel and plot
        panel = scene_panel_markdown(session)
        verdict = "anomaly" if facts["judgement"] == "yes" else "no anomaly"
        if not panel.startswith(f"Scene judgement: **{verdict}**"):
            found.append(f"panel says {panel.splitlines()[0]!r}")
        rows = [(int(n), a, b) for n, a, b in PANEL_ROW.findall(panel)]
        expected_rows = [(e["number"], f"{e['start']:.1f}", f"{e['end']:.1f}") for e in facts["events"]]
        if rows != expected_rows:
            found.append(f"panel rows {rows} != events {expected_rows}")
        figure = scene_score_figure(session.scene, session.answerer.point)
        half_frame = 0.5 / session.scene.fps
        shaded = [(p.get_x() + half_frame, p.get_x() + p.get_width() - half_frame)
                  for p in figure.axes[0].patches if isinstance(p, Rectangle)]
        events = [(e["start"], e["end"]) for e in facts["events"]]
        if len(shaded) != len(events) or any(abs(a - c) > 1e-3 or abs(b - d) > 1e-3
                                             for (a, b), (c, d) in zip(shaded, events, strict=False)):
            found.append(f"plot shades {shaded} != events {events}")
        if session.scene.times[-1] >= 60.0:
            found.append("a window longer than a minute: its times would be m:ss")
    finally:
        engine.close_session(session.id)
    return found


@pytest.mark.slow
@pytest.mark.shared_data("ucsd_ped2", "cuhk_avenue")
def test_json_text_and_page_agree_on_every_window(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    every = [w for w in windows(DATA, seconds=3.5, stride=1.0, per_clip=1) if w.kind != "ambiguous"]
    kinds = {w.kind for w in every}
    assert len(every) >= 40 and kinds == {"anomalous", "normal"}, (len(every), kinds)
    engine = ChatEngine(EngineConfig(answers="grounded", profile="auto", folder_fps=PED2_FPS))
    judgements: set[str] = set()
    failures: list[str] = []
    for window in every:
        clip = cut(window, tmp_path)
        facts = json.loads(_ask(capsys, clip, "--json"))
        text = _ask(capsys, clip)
        failures += [f"{window.name}: {problem}" for problem in _disagreements(window, facts, text, engine, clip)]
        judgements.add(facts["judgement"])
    assert not failures, "\n".join(failures)
    assert judgements == {"yes", "no"}  # both verdicts were compared, not one
