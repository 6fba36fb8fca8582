"""``mpsflow decode`` and the command line's shape (help, exit codes), through ``python -m``."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mpsflow._loader import load_object
from mpsflow.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]


def _python(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` with this checkout importable."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mpsflow ARGS`` as a user would."""
    return _python("-m", "mpsflow", *args, stdin=stdin)


def test_decode_prints_a_summary_of_the_seed(samples_dir: Path) -> None:
    result = cli("decode", str(samples_dir / "01_workflow_task_seed_verbatim.json"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "event:   WorkflowTask" in out
    assert "task:    245****654-WorkflowTask-f46dac7fe2436c47******d71946986t0" in out
    assert "status:  FINISH" in out
    assert "input:   COS macgzptest-125****654/dianping2.mp4 (ap-guangzhou)" in out
    lines = out.splitlines()
    transcode = next(line for line in lines if line.strip().startswith("Transcode "))
    assert "SUCCESS" in transcode
    failed = next(line for line in lines if line.strip().startswith("AnimatedGraphics "))
    assert "FAIL" in failed
    assert "error=30010" in failed
    assert "      -> COS:gztest-125****654 /dasda/dianping2_transcode_10.mp4" in lines


def test_decode_a_bad_file_prints_the_error_and_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"EventType": "WorkflowTask", "WorkflowTaskEvent": {"TaskId": 5}}')
    result = cli("decode", str(bad))
    assert result.returncode == 2
    assert result.stderr.startswith(f"mpsflow decode: error: {bad} is not a valid MPS notification")
    assert "path: $.WorkflowTaskEvent.TaskId" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_decode_reads_standard_input_and_prints_json(seed_sample: bytes) -> None:
    result = cli("decode", "-", "--json", stdin=seed_sample)
    assert result.returncode == 0, result.stderr
    decoded = json.loads(result.stdout)
    assert (
        decoded["WorkflowTaskEvent"]["TaskId"]
        == json.loads(seed_sample)["WorkflowTaskEvent"]["TaskId"]
    )


def test_help_and_usage_errors_through_the_module() -> None:
    result = cli("--help")
    assert result.returncode == 0
    assert all(name in result.stdout for name in COMMANDS)
    assert cli().returncode == 2  # no command
    no_module = cli("run", "no_such_module_here:app", "--no-dedup")
    assert no_module.returncode == 2
    assert "cannot import module 'no_such_module_here'" in no_module.stderr
    assert "Traceback" not in no_module.stderr


# In-process: the same entry point, for the cases not worth a process each.


def test_decode_live_notification(
    live_sample_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["decode", str(live_sample_path)]) == 0
    out = capsys.readouterr().out
    notification_type = json.loads(live_sample_path.read_bytes())["NotificationType"]
    assert f"live:    {notification_type}" in out
    assert f"  {notification_type}" in out


def test_decode_every_task_sample(sample_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", str(sample_path)]) == 0
    out = capsys.readouterr().out
    assert f"event:   {json.loads(sample_path.read_bytes())['EventType']}" in out
    assert "subtasks (" in out


def test_decode_invalid_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.json"
    broken.write_bytes(b'{"EventType": ')
    assert main(["decode", str(broken)]) == 2
    assert "path: $" in capsys.readouterr().err


def test_decode_a_folder_says_to_give_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["decode", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"mpsflow decode: error: {tmp_path} is a folder: give one notification file\n"
    )


def test_decode_a_missing_file_is_a_wrong_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo.json"
    assert main(["decode", str(missing)]) == 2
    assert capsys.readouterr().err == f"mpsflow decode: error: no such file or folder: {missing}\n"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert f"usage: mpsflow {command}" in capsys.readouterr().out


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["decode"])  # missing FILE
    assert exited.value.code == 2
    assert main(["decode", str(tmp_path / "nope.json")]) != 0
    assert "nope.json" in capsys.readouterr().err
    assert main(["run", "mpsflow.cli:main", "--no-dedup"]) == 2
    assert "not an mpsflow App" in capsys.readouterr().err
    assert main(["run", "mpsflow.cli", "--no-dedup"]) == 2
    assert "expected MODULE:ATTRIBUTE" in capsys.readouterr().err
    assert main(["run", "mpsflow.cli:nothing_here", "--no-dedup"]) == 2
    assert "has no attribute 'nothing_here'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "x:app", "--http", "localhost:http"])
    assert "expected HOST:PORT" in capsys.readouterr().err


def test_run_rejects_workers_with_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", "examples.app:app", "--files", str(tmp_path), "--workers", "2", "--no-dedup"]
    assert main(args) == 2
    assert "--workers applies to --http only, not --files" in capsys.readouterr().err


def closed_pipe(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m mpsflow ARGS`` writing to a pipe whose reader has gone, as ``… | head`` leaves
    it: the reader's end is closed before the command starts, so its first write fails."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "mpsflow", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)


@pytest.mark.parametrize(
    "args",
    [
        ["decode", "{seed}"],
        ["decode", "--json", "{seed}"],
        ["--help"],
        ["run", "--help"],
        ["cmq-server", "--help"],
    ],
)
def test_a_reader_that_goes_away_ends_the_command_quietly(
    samples_dir: Path, args: list[str]
) -> None:
    seed = str(samples_dir / "01_workflow_task_seed_verbatim.json")
    result = closed_pipe(*(a.format(seed=seed) for a in args))
    assert (result.returncode, result.stderr) == (0, "")


def test_a_misspelt_option_gets_the_commands_usage_and_a_guess(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "myapp:app", "--htp", "127.0.0.1:8080"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: mpsflow run ")
    assert err.splitlines()[-1] == (
        "mpsflow run: error: unrecognized arguments: --htp (did you mean --http?) 127.0.0.1:8080"
    )


def test_the_command_line_imports_none_of_the_framework_before_main_runs() -> None:
    """A Ctrl-C while a command starts lands in ``main``'s handling, not in an import."""
    result = _python(
        "-c",
        "import json, sys, mpsflow, mpsflow.cli, mpsflow.__main__\n"
        "print(json.dumps([m for m in sys.modules if m.startswith('mpsflow')]))",
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert loaded <= {
        "mpsflow",
        "mpsflow.__main__",
        "mpsflow._loader",
        "mpsflow.cli",
        "mpsflow.cli.common",
        "mpsflow.errors",
    }


def test_ctrl_c_while_the_command_line_is_imported_exits_130_quietly() -> None:
    result = _python(
        "-c",
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'mpsflow.cli':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "from mpsflow.__main__ import main\n"
        "sys.exit(main())\n",
    )
    assert (result.returncode, result.stderr) == (130, "")


def test_the_package_loads_its_public_names_on_first_use() -> None:
    import mpsflow

    assert mpsflow.App is importlib.import_module("mpsflow.app").App
    assert mpsflow.decode is importlib.import_module("mpsflow.codec").decode
    assert mpsflow.events is importlib.import_module("mpsflow.events")
    assert set(mpsflow.__all__) <= set(dir(mpsflow))
    for missing in ("no_such_name", "_private"):
        with pytest.raises(AttributeError, match=missing):
            getattr(mpsflow, missing)


def test_ctrl_c_while_the_commands_load_waits_for_them_then_exits_130(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A KeyboardInterrupt raised inside an extension's import can crash the interpreter: the
    commands load whole, and the interrupt is honoured after."""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    loaded: list[str] = []

    def interrupted_while_loading(spec: str) -> object:
        signal.raise_signal(signal.SIGINT)  # Ctrl-C, now
        loaded.append(spec)
        return load_object(spec)

    monkeypatch.setattr("mpsflow.cli.load_object", interrupted_while_loading)
    assert main(["decode", "--help"]) == 130
    assert loaded == [entry for entry in COMMANDS.values() if isinstance(entry, str)]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
