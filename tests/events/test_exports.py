"""Every module's ``__all__`` is its complete public contract, and the generated code is fresh."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

import mpsflow.events
from mpsflow.events import _generated

_ROOT = Path(__file__).resolve().parents[2]
_MODULES = sorted(
    ".".join(path.relative_to(_ROOT).with_suffix("").parts).removesuffix(".__init__")
    for path in (_ROOT / "mpsflow").rglob("*.py")
    if path.name != "__main__.py"
)
"""Every module of the package (not only the events): each one's ``__all__`` is checked."""


def _public_top_level(module_name: str) -> set[str]:
    module = importlib.import_module(module_name)
    tree = ast.parse(Path(str(module.__file__)).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_")}


@pytest.mark.parametrize("module_name", _MODULES)
def test_all_lists_every_public_name(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), "duplicates in __all__"
    assert _public_top_level(module_name) <= set(exported)
    for name in exported:
        assert hasattr(module, name), name


def test_events_package_exports_every_struct() -> None:
    exported = set(mpsflow.events.__all__)
    assert set(_generated.__all__) <= exported
    structs = {
        name
        for name in dir(_generated)
        if isinstance(getattr(_generated, name), type)
        and issubclass(getattr(_generated, name), msgspec.Struct)
        and getattr(_generated, name).__module__ == _generated.__name__
    }
    assert structs == set(_generated.__all__)
    assert len(structs) > 300
    for name in ("Notification", "LiveStreamNotification", "Subtask", "SUBTASK_KEYS"):
        assert name in exported


@pytest.mark.parametrize(
    "script",
    [
        "gen_events.py",  # mpsflow/events/_generated.py: the event structs
        "gen_typed_on.py",  # mpsflow/_typed_on.py: the typed overloads of ``on``
    ],
)
def test_generated_module_is_up_to_date(script: str) -> None:
    """The generated module matches its sources (regenerate it with the script)."""
    result = subprocess.run(
        [sys.executable, str(_ROOT / "scripts" / script), "--check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=_ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
