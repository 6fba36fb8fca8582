"""Import a Python file as a fresh module, and run child Pythons that must succeed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

__all__ = ["imported", "run_ok"]


@contextmanager
def imported(name: str, path: Path) -> Iterator[ModuleType]:
    """``path`` executed as the module ``name``, in ``sys.modules`` until the block ends."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[name]


def run_ok(
    argv: Sequence[str], cwd: Path | None, env: Mapping[str, str], *, timeout: float
) -> subprocess.CompletedProcess[str]:
    """``argv`` run to completion, its output captured; it must exit with status 0."""
    result = subprocess.run(
        list(argv),
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result
