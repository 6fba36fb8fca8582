"""Import an object named ``"package.module:attribute"`` (the command line's ``MODULE:APP``)."""

from __future__ import annotations

import importlib
import os
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
        raise ConfigurationError(f"expected MODULE:ATTRIBUTE (like 'myapp:app'), got {spec!r}")
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
            raise ConfigurationError(
                f"cannot import module {module_name!r}: no {path}.py (or package {path}/) in"
                " the current folder or on sys.path"
            ) from None
        raise ConfigurationError(_import_failure(module_name, exc)) from exc
    except Exception as exc:
        raise ConfigurationError(_import_failure(module_name, exc)) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(
                f"module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    return obj


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
