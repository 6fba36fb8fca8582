"""The README's editable install (``pip install -e .``) is visible to mypy in a user's project.

setuptools' editable install is an import hook, which mypy cannot follow ("Cannot find
implementation or library stub for module named 'mpsflow'"); the build backend (hatchling)
writes a plain ``.pth`` path entry instead. This test installs the checkout into a fresh venv
as the README does (without the dependencies, to stay fast: mypy needs only mpsflow's own
types) and type-checks a user module against it from outside the checkout.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

USER_MODULE = """
from mpsflow import App, Context
from mpsflow.events import MediaProcessTaskTranscodeResult

app = App()


@app.on("Transcode", status="SUCCESS")
async def catalogue(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
    print(result.output)


@app.on("Transcode", status="SUCESS")
async def misspelt(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
    print(result.output)
"""
"""A user's module: one handler right, one with a misspelt status (the one error)."""


@pytest.mark.slow
def test_mypy_sees_the_editable_install(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(python), "install"),
            *("--quiet", "--disable-pip-version-check", "--no-deps", "--editable", str(ROOT)),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr

    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    assert site != Path(sysconfig.get_path("purelib"))
    entries = [
        line for pth in site.glob("*.pth") for line in pth.read_text().splitlines() if line.strip()
    ]
    assert entries, "the editable install wrote no .pth file"
    assert not any(line.startswith("import") for line in entries), entries  # no import hook
    assert any((Path(line) / "mpsflow" / "py.typed").is_file() for line in entries), entries

    project = tmp_path / "project"
    project.mkdir()
    (project / "handlers.py").write_text(textwrap.dedent(USER_MODULE))
    (project / "mypy.ini").write_text("[mypy]\n")
    checked = subprocess.run(
        [
            *(sys.executable, "-m", "mypy", "--strict", "--no-incremental"),
            *("--python-executable", str(python), "handlers.py"),
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = checked.stdout + checked.stderr
    assert "Cannot find implementation or library stub" not in out, out
    errors = [line for line in out.splitlines() if ": error:" in line]
    # mpsflow's own types are seen (its dependencies are not installed there, so the msgspec
    # Structs are Any to mypy; the status Literals are mpsflow's alone)
    assert len(errors) == 1, out
    assert "handlers.py:13: error:" in errors[0], out
    assert "StatusOrWhenDoesNotFitKey" in errors[0], out
