"""``MODULE:APP`` loading: every way the import can fail is one ConfigurationError line (the
command line prints it and exits 2) that names the failure, where it was raised, and how to
see the traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpsflow._loader import load_object
from mpsflow.errors import ConfigurationError


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith("loadme_")]:
        del sys.modules[name]


def failure(spec: str) -> str:
    with pytest.raises(ConfigurationError) as raised:
        load_object(spec)
    return str(raised.value)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import loadme_nothing_like_it\n", "ModuleNotFoundError: No module named"),
        ("x = (\n", "SyntaxError: '(' was never closed"),
        ("def f():\n    raise KeyError('boom')\n\nf()\n", "KeyError: 'boom'"),
    ],
)
def test_an_exception_inside_the_module_is_one_line_with_where(
    folder: Path, source: str, expected: str
) -> None:
    (folder / "loadme_app.py").write_text(source)
    message = failure("loadme_app:app")
    assert message.startswith(f"importing 'loadme_app' failed: {expected}")
    line = 2 if "KeyError" in expected else 1
    assert f"{folder / 'loadme_app.py'}:{line}; " in message
    assert message.endswith("python -c 'import loadme_app' shows the traceback)")


def test_a_failure_inside_mpsflow_points_at_the_apps_line(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (folder / "loadme_uses.py").write_text("\nfrom mpsflow.dedup.stores.redis import RedisStore\n")
    monkeypatch.delitem(sys.modules, "mpsflow.dedup.stores.redis", raising=False)
    for name in ["redis", *(n for n in sys.modules if n.startswith("redis."))]:
        monkeypatch.setitem(sys.modules, name, None)  # as if the redis extra were missing
    message = failure("loadme_uses:app")
    assert message.startswith(
        "importing 'loadme_uses' failed: ModuleNotFoundError: RedisStore needs the redis extra:"
        " pip install 'mpsflow[redis]' ("
    )
    assert f"{folder / 'loadme_uses.py'}:2; " in message  # the app's line, not mpsflow's


def test_a_missing_module_says_where_it_was_looked_for(folder: Path) -> None:
    assert failure("loadme_missing:app") == (
        "cannot import module 'loadme_missing': no loadme_missing.py (or package"
        " loadme_missing/) in the current folder or on sys.path"
    )


def test_a_file_name_is_not_a_module_name(folder: Path) -> None:
    assert failure("loadme_app.py:app") == "name the module without .py: loadme_app:app"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("./myapp.py:app", "name a module, not a file: myapp:app"),
        (
            "qs/myapp.py:app",
            "name a module, not a file: myapp:app, run from qs (cd qs), or qs.myapp:app if qs"
            " is a package",
        ),
        ("/srv/my-apps/myapp.py:app", "name a module, not a file: myapp:app, run from"),
    ],
)
def test_a_file_path_says_which_module_to_run_from_where(spec: str, message: str) -> None:
    assert failure(spec).startswith(message)
    assert "qs.myapp" in failure("qs/myapp:app")


def test_a_missing_attribute_names_it_and_the_closest_one(folder: Path) -> None:
    (folder / "loadme_attr.py").write_text("app = 1\n")
    assert failure("loadme_attr:ap") == (
        "module 'loadme_attr' has no attribute 'ap'; did you mean loadme_attr:app?"
    )
    assert failure("loadme_attr:zzz") == "module 'loadme_attr' has no attribute 'zzz'"


def test_a_missing_attribute_points_at_the_modules_one_app(folder: Path) -> None:
    (folder / "loadme_one_app.py").write_text(
        "from mpsflow import App\n\napplication = App()\nsettings = {}\n"
    )
    assert failure("loadme_one_app:app").endswith("; did you mean loadme_one_app:application?")


@pytest.mark.parametrize(
    ("source", "meant"),
    [
        ("application = App()\nsettings = {}\n", "application"),
        ("app = App()\nadmin = App()\n", "app"),
        ("public = App()\nadmin = App()\n", None),
        ("settings = {}\n", None),
        ("raise KeyError('boom')\n", None),
        ("raise SystemExit(3)\n", None),
    ],
    ids=["its one app", "the one named app", "two apps", "no app", "raises", "exits"],
)
def test_a_module_without_its_attribute_points_at_its_app(
    folder: Path, source: str, meant: str | None
) -> None:
    """``MODULE`` alone: the module's ``App`` named ``app`` or its only one is suggested."""
    (folder / "loadme_bare.py").write_text(f"from mpsflow import App\n\n{source}")
    expected = "expected MODULE:ATTRIBUTE (like 'myapp:app'), got {!r}"
    hint = f"; did you mean loadme_bare:{meant}?" if meant else ""
    assert failure("loadme_bare") == expected.format("loadme_bare") + hint
    assert failure("loadme_bare:") == expected.format("loadme_bare:") + hint
    assert failure("loadme_bare.py") == expected.format("loadme_bare.py") + hint


def test_a_module_without_its_attribute_is_imported_once(folder: Path) -> None:
    """The suggestion imports the module as the spec it suggests would: once for both."""
    imports = folder / "imports.txt"
    (folder / "loadme_counted.py").write_text(
        f"from mpsflow import App\n\nwith open({str(imports)!r}, 'a') as f:\n"
        "    f.write('imported\\n')\n\napp = App()\n"
    )
    assert failure("loadme_counted").endswith("; did you mean loadme_counted:app?")
    assert load_object("loadme_counted:app") is not None
    assert imports.read_text() == "imported\n"


def test_a_misspelt_module_gets_the_closest_name(folder: Path) -> None:
    (folder / "loadme_billing.py").write_text("app = 1\n")
    (folder / "loadme_pkg").mkdir()
    (folder / "loadme_pkg" / "__init__.py").write_text("")
    (folder / "loadme_pkg" / "callbacks.py").write_text("app = 1\n")
    assert failure("loadme_biling:app").endswith("; did you mean loadme_billing:app?")
    assert failure("loadme_pgk.callbacks:app").endswith("; did you mean loadme_pkg.callbacks:app?")
    assert failure("loadme_pkg.calbacks:app").endswith("; did you mean loadme_pkg.callbacks:app?")


def test_installed_modules_are_not_guessed(folder: Path) -> None:
    """A name close to a standard or installed module only (``jsn``) gets no guess."""
    assert "did you mean" not in failure("jsn:app")
