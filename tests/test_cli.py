"""The `tvad` command line: `tvad info`, usage help for bad input, our error messages for broken files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from media_factory import write_frames, write_video

from tvad_chat.cli import main
from tvad_chat.video import probe, sample_indices


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("cli") / "walk.mp4", num_frames=60, options={"g": "12"})


def _tvad(*args: str) -> subprocess.CompletedProcess:
    """Run the real entry point in a fresh interpreter, as a user would."""
    return subprocess.run(
        [sys.executable, "-c", "import sys; from tvad_chat.cli import main; sys.exit(main())", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_info_prints_what_the_clip_holds(clip: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["info", str(clip), "--frames", "4"]) == 0
    out = capsys.readouterr().out
    fields = dict(line.split(None, 1) for line in out.strip().splitlines() if line.strip())
    assert fields["frames"] == "60"
    assert fields["fps"].startswith("25.000")
    assert fields["duration"] == "2.400 s"
    assert fields["size"] == "160x96"
    assert fields["rotation"] == "0 deg"
    assert fields["codec"] == "h264"
    assert fields["indices"].split() == [str(i) for i in sample_indices(60, 4)]
    assert fields["sampling"].startswith("4 uniform: 4 frames")


def test_info_json_matches_probe(clip: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["info", str(clip), "--fps", "5", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    info = probe(clip)
    assert record["frames"] == info.num_frames == 60
    assert record["fps"] == pytest.approx(info.fps)
    assert record["duration_s"] == pytest.approx(info.duration_s)
    assert (record["width"], record["height"], record["rotation"]) == (160, 96, 0)
    assert record["variable_frame_rate"] is False
    assert record["sampled_indices"] == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55]
    assert record["sampled_timestamps_s"] == pytest.approx([i / 25 for i in record["sampled_indices"]])
    assert record["sampled_size"] == [160, 96]


def test_info_rotated_and_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rotated = write_video(tmp_path / "phone.mp4", num_frames=5, rotation=90)
    assert main(["info", str(rotated), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["width"], record["height"], record["rotation"]) == (96, 160, 90)
    folder = write_frames(tmp_path / "frames", 12)
    assert main(["info", str(folder), "--folder-fps", "10", "--json", "--frames", "3"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["kind"], record["frames"], record["fps"], record["duration_s"]) == (
        "frames",
        12,
        10.0,
        1.2,
    )
    assert record["sampled_indices"] == [2, 6, 10]


def test_entry_point_end_to_end(clip: Path) -> None:
    done = _tvad("info", str(clip), "--frames", "2")
    assert done.returncode == 0, done.stderr
    assert "frames" in done.stdout and "15 45" in done.stdout


def _bad_argument_matrix(tmp: Path) -> list[tuple[list[str], str]]:
    """Bad arguments to every chat-facing command, with a phrase their one-line message must hold."""
    (tmp / "a_folder").mkdir(exist_ok=True)
    folder, clip = str(tmp / "a_folder"), str(tmp / "clip.mp4")
    return [
        (["bogus"], "invalid choice: 'bogus'"),
        (["info"], "the following arguments are required: VIDEO"),
        (["info", "x.mp4", "--frames", "abc"], "expected a whole number"),
        (["info", "x.mp4", "--frames", "0"], "must be at least 1"),
        (["info", "x.mp4", "--fps", "-2"], "must be a positive number"),
        (["info", "x.mp4", "--frames", "3", "--fps", "2"], "not allowed with argument"),
        (["info", "x.mp4", "--colour"], "unrecognized arguments: --colour"),
        (["ask"], "the following arguments are required: VIDEO"),
        (["ask", clip, "--frames", "1"], "between 2 and 64"),
        (["ask", clip, "--frames", "many"], "expected a whole number"),
        (["ask", clip, "--max-new-tokens", "0"], "must be at least 1"),
        (["ask", clip, "--events", ",".join(f"thing{i}" for i in range(30))], "20 at most"),
        (["analyze", clip], "the following arguments are required: --out"),
        (["analyze", clip, "--out", folder], "is a folder"),
        (["analyze", clip, "--out", "report.txt"], "must end in .json"),
        (["analyze", clip, "--out", "r.json", "--plot", "x.xyz"], "must end in .png"),
        (["analyze", clip, "--out", "r.json", "--plot", folder], "is a folder"),
        (["analyze", clip, "--out", "r.json", "--overlay", folder], "is a folder"),
        (["analyze", clip, "--out", "r.json", "--overlay", "o.avi"], "must end in .mp4"),
        (["app", "--port", "eighty"], "invalid int value"),
        (["eval", "frames", "--scores"], "expected one argument"),
        (["train", "stage9"], "invalid choice"),
    ]


def test_bad_argument_matrix_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for argv, expect in _bad_argument_matrix(tmp_path):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, (argv, err)
        assert "Traceback" not in err, (argv, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], (argv, err)
        assert "--help` lists the arguments" in lines[0]


def test_file_errors_exit_1_in_one_line(tmp_path: Path) -> None:
    """From the shell: files that are missing or not videos exit 1 with one `error:` line, never a traceback."""
    text = tmp_path / "notes.mp4"
    text.write_text("a shopping list\n" * 40)
    for argv in (["info", str(tmp_path / "missing.mp4")], ["ask", str(tmp_path / "missing.mp4")],
                 ["ask", str(text), "--frames", "4"], ["analyze", str(text), "--out", str(tmp_path / "r.json")]):
        done = _tvad(*argv)
        assert done.returncode == 1, (argv, done.stderr)
        assert "Traceback" not in done.stderr, (argv, done.stderr)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and ("does not exist" in errors[0] or "text file" in errors[0]), done.stderr
        assert not (tmp_path / "r.json").exists()


def test_no_command_prints_help(capsys: pytest.CaptureFixture) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "usage: tvad" in err and "info" in err


def test_unknown_command_from_the_shell_has_no_traceback() -> None:
    done = _tvad("frobnicate")
    assert done.returncode == 2
    assert done.stderr.startswith("error: argument COMMAND: invalid choice") and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (b"", "is empty (0 bytes)"),
        (b"just some notes\n" * 40, "is a text file, not a video"),
        (bytes(range(256)) * 40, "not a video FFmpeg can read"),
    ],
    ids=["empty", "text", "binary"],
)
def test_broken_file_gives_our_error_and_exit_1(
    tmp_path: Path, content: bytes, expect: str, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "upload.mp4"
    path.write_bytes(content)
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expect in err and "upload.mp4" in err
    assert "Traceback" not in err


def test_broken_file_from_the_shell(tmp_path: Path) -> None:
    (tmp_path / "empty_dir").mkdir()
    done = _tvad("info", str(tmp_path / "empty_dir"))
    assert done.returncode == 1
    assert "error: folder" in done.stderr and "holds no image frames" in done.stderr
    assert "Traceback" not in done.stderr
    done = _tvad("info", str(tmp_path / "nowhere.mp4"))
    assert done.returncode == 1 and "does not exist" in done.stderr and "Traceback" not in done.stderr
