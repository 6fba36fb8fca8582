"""Import an object named ``"package.module:attribute"`` (the command line's ``MODULE:APP``)."""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
import sys
import sysconfig
import traceback

from mpsflow.errors import ConfigurationError

__all__ = ["load_object"]


def load_object(spec: str) -> object:
    """Import ``module`` and return ``attribute`` (dotted attributes allowed: ``m:a.b``).

    Raises ``ConfigurationError`` with a message that says what is missing, so the command
    line can print it instead of a traceback. An exception raised *inside* the module (a
    missing dependency of the app, a syntax error, a bug) becomes one too, naming the
    exception, where it was raised, and how to see the whole traceback.
    """
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        meant = _app_spec(module_name)
        hint = f"; did you mean {meant}?" if meant else ""
        raise ConfigurationError(
            f"expected MODULE:ATTRIBUTE (like 'myapp:app'), got {spec!r}{hint}"
        )
    if "/" in module_name or os.sep in module_name or module_name.startswith("."):
        raise ConfigurationError(_path_given(module_name, attr_path))
    if module_name.endswith(".py"):
        raise ConfigurationError(
            f"name the module without .py: {module_name.removesuffix('.py')}:{attr_path}"
        )
    try:
        obj: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            path = module_name.replace(".", "/")
            close = _closest_module(missing)
            hint = f"; did you mean {close}{module_name[len(missing) :]}:{attr_path}?"
            raise ConfigurationError(
                f"cannot import module {module_name!r}: no {path}.py (or package {path}/) in"
                f" the current folder or on sys.path{hint if close else ''}"
            ) from None
        raise ConfigurationError(_import_failure(module_name, exc)) from exc
    except Exception as exc:
        raise ConfigurationError(_import_failure(module_name, exc)) from exc
    parts = attr_path.split(".")
    for index, part in enumerate(parts):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            close = _closest_attribute(obj, part)
            fixed = ".".join([*parts[:index], close or part, *parts[index + 1 :]])
            hint = f"; did you mean {module_name}:{fixed}?"
            raise ConfigurationError(
                f"module {module_name!r} has no attribute {attr_path!r}{hint if close else ''}"
            ) from None
    return obj


def _path_given(path: str, attr_path: str) -> str:
    """What to run instead of a file path (``qs/myapp.py:app``): the module, from its folder."""
    folder, file = os.path.split(path.replace(os.sep, "/").rstrip("/"))
    module = file.removesuffix(".py")
    here = os.path.normpath(folder or ".") == "."
    message = f"name a module, not a file: {module}:{attr_path}"
    if here:
        return message
    message += f", run from {folder} (cd {folder})"
    parts = os.path.normpath(folder).replace(os.sep, "/").split("/")
    if not os.path.isabs(folder) and all(part.isidentifier() for part in parts):
        message += f", or {'.'.join([*parts, module])}:{attr_path} if {folder} is a package"
    return message


def _closest_module(missing: str) -> str | None:
    """The module name most like ``missing`` (a typo): a sibling in its package, or for a
    top-level name, a module in the user's own folders on ``sys.path`` (not the standard
    library's or installed packages', which would only make wild guesses)."""
    parent, _, name = missing.rpartition(".")
    if parent:
        try:
            folders = getattr(importlib.import_module(parent), "__path__", None)
        except Exception:
            return None
        if folders is None:
            return None
    else:
        folders = _own_folders()
    names = [module.name for module in pkgutil.iter_modules(list(folders))]
    match = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if not match:
        return None
    return f"{parent}.{match[0]}" if parent else match[0]


def _own_folders() -> list[str]:
    """The folders on ``sys.path`` that hold the user's code (the current folder first)."""
    installed = {
        os.path.realpath(folder)
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if (folder := sysconfig.get_paths().get(key))
    }
    folders: list[str] = []
    for entry in sys.path:
        folder = os.path.realpath(entry or os.curdir)
        inside = any(folder == top or folder.startswith(top + os.sep) for top in installed)
        if not inside and os.path.isdir(folder) and folder not in folders:
            folders.append(folder)
    return folders


def _app_spec(module_name: str) -> str | None:
    """The ``MODULE:ATTRIBUTE`` that ``module_name``, given without ``:ATTRIBUTE``, most likely
    meant: its ``App`` named ``app``, or its only ``App``. None when it has no such one, or does
    not import (a file path, a missing module, an error inside it).

    The module is imported here as ``MODULE:ATTRIBUTE`` would import it, once: the command
    line stops with the error, and a later ``load_object`` in this process finds it imported.
    """
    module_name = module_name.removesuffix(".py")  # `run app.py` meant app:app too
    if not all(part.isidentifier() for part in module_name.split(".")):
        return None  # a file path in a folder, or nothing
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit):  # a script that exits at import too: keep the one line
        return None
    apps = _apps(module)
    if "app" in apps:
        return f"{module_name}:app"
    return f"{module_name}:{apps[0]}" if len(apps) == 1 else None


def _apps(obj: object) -> list[str]:
    """The public attributes of ``obj`` that are an :class:`~mpsflow.app.App`."""
    from mpsflow.app import App

    public = [attribute for attribute in dir(obj) if not attribute.startswith("_")]
    return [attribute for attribute in public if isinstance(getattr(obj, attribute, None), App)]


def _closest_attribute(obj: object, name: str) -> str | None:
    """The attribute of ``obj`` that ``name`` most likely meant: an ``App`` of the module if
    one is close to it, or is the module's only one; else the closest public attribute."""
    public = [attribute for attribute in dir(obj) if not attribute.startswith("_")]
    apps = _apps(obj)
    match = difflib.get_close_matches(name, apps, n=1, cutoff=0.6)
    if match:
        return match[0]
    if len(apps) == 1:
        return apps[0]
    match = difflib.get_close_matches(name, public, n=1, cutoff=0.6)
    return match[0] if match else None


def _import_failure(module_name: str, exc: Exception) -> str:
    """``importing 'm' failed: KeyError: 'x' (m.py:3; python -c 'import m' shows the …)``."""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f"{exc.filename}:{exc.lineno}"
        message = exc.msg
    else:
        package = os.path.dirname(os.path.abspath(__file__))
        frames = [
            frame
            for frame in traceback.extract_tb(exc.__traceback__)
            if "importlib" not in frame.filename and not frame.filename.startswith("<frozen")
        ]
        # The app's own line (``from mpsflow… import RedisStore``), not mpsflow's inside it.
        frames = [f for f in frames if not f.filename.startswith(package + os.sep)] or frames
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        message = str(exc)
    described = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return (
        f"importing {module_name!r} failed: {described} ({where + '; ' if where else ''}"
        f"python -c 'import {module_name}' shows the traceback)"
    )
