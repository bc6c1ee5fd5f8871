"""`tvad ask --json`, the CLI text and the engine's answerer say the same thing for the same real clip.

Three windows cut by scripts/eval_windows.py from ../shared/data (a Ped2 anomalous one, a Ped2 normal one, Avenue
test clip 21 whole): each is analysed three times (the JSON command, the text command, the chat engine directly,
all with ``--profile auto``), and the judgement, the events and the intervals the judgement answer lists agree,
times formatted as the answers format them.
"""

import json
import re
import sys
from pathlib import Path

import pytest

from tvad_chat.chat import JUDGEMENT_QUESTION, ChatEngine, EngineConfig
from tvad_chat.cli import main
from tvad_chat.grounded import format_time

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from eval_windows import PED2_FPS, Window, cut  # noqa: E402
from shared_data import DATA  # noqa: E402

WHEN = "When does it happen?"
INTERVAL = re.compile(r"(\d+(?:\.\d+)?) s to (\d+(?:\.\d+)?) s")


def _ped2_window(first: int, last: int) -> Window:
    labels = json.loads((DATA / "ucsd_ped2" / "testing" / "frame_labels.json").read_text())["01"]
    return Window("ucsd_ped2", "testing", "01", str(DATA / "ucsd_ped2" / "testing" / "frames" / "01"), PED2_FPS,
                  first, last, labels[first:last + 1], False)


def _avenue_clip_21() -> Window:
    labels = json.loads((DATA / "cuhk_avenue" / "testing" / "frame_labels.json").read_text())["21"]
    return Window("cuhk_avenue", "testing", "21", str(DATA / "cuhk_avenue" / "testing_videos" / "21.avi"), 25.0,
                  0, len(labels) - 1, labels, True)


# (window, its profile, the judgement that keeps the interval comparison from being empty)
CASES = {
    "ped2-anomalous": (lambda: _ped2_window(60, 94), "ucsd_ped2", "yes"),  # the bicycle in view throughout
    "ped2-normal": (lambda: _ped2_window(0, 34), "ucsd_ped2", "no"),  # before the bicycle comes
    "avenue-anomalous": (_avenue_clip_21, "cuhk_avenue", "yes"),
}


def _ask(capsys: pytest.CaptureFixture, clip: Path, *extra: str) -> str:
    code = main(["ask", str(clip), "--follow-up", WHEN, "--profile", "auto", "--folder-fps", str(PED2_FPS), *extra])
    out = capsys.readouterr().out
    assert code == 0
    return out


@pytest.mark.slow
@pytest.mark.shared_data("ucsd_ped2", "cuhk_avenue")
@pytest.mark.parametrize("case", list(CASES))
def test_json_text_and_engine_agree_on_judgement_and_intervals(case: str, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    make, profile, expected = CASES[case]
    window = make()
    assert window.kind == ("anomalous" if expected == "yes" else "normal")
    clip = cut(window, tmp_path)

    report = json.loads(_ask(capsys, clip, "--json"))
    text = _ask(capsys, clip)
    engine = ChatEngine(EngineConfig(answers="grounded", profile="auto", folder_fps=PED2_FPS))
    session = engine.new_session()
    engine.load_video(session, clip)
    summary = session.answerer.summary()

    # the same analysis, decided the same way
    assert report["decided_by"].startswith(f"scene profile '{profile}' (matched by background")
    for key in ("judgement", "decided_by", "operating_point", "peak_score", "events"):
        assert report[key] == summary[key], key
    assert report["judgement"] == expected
    assert session.scene.times[-1] < 60.0  # times are "1.2 s", not m:ss

    # the text command prints the same dialogue the JSON holds
    answers = re.findall(r"^A: (.*)$", text, flags=re.MULTILINE)
    assert re.findall(r"^Q: (.*)$", text, flags=re.MULTILINE) == [JUDGEMENT_QUESTION, WHEN]
    assert answers == [turn["answer"] for turn in report["dialogue"]]
    assert answers[0].split(".")[0].split(",")[0].lower() == report["judgement"]

    # the judgement answer lists exactly the events' intervals, formatted as the answers format times
    intervals = [(format_time(e["start"], False), format_time(e["end"], False)) for e in report["events"]]
    assert [(f"{a} s", f"{b} s") for a, b in INTERVAL.findall(answers[0])] == intervals
    assert engine.ask(session, JUDGEMENT_QUESTION) == answers[0]
    if intervals:
        assert f"{intervals[0][0]} to {intervals[0][1]}" in answers[1]
    else:
        assert answers[1] == ("I found no unusual event in this clip at this sensitivity, so there is nothing to "
                              "time.")
