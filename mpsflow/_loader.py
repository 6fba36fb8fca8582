"""Import an object named ``"package.module:attribute"`` (the command line's ``MODULE:APP``)."""

from __future__ import annotations

import importlib

from mpsflow.errors import ConfigurationError

__all__ = ["load_object"]


def load_object(spec: str) -> object:
    """Import ``module`` and return ``attribute`` (dotted attributes allowed: ``m:a.b``).

    Raises ``ConfigurationError`` with a message that says what is missing, so the command
    line can print it instead of a traceback. An ``ImportError`` raised *inside* the module
    (a missing dependency of the app) is re-raised as is, so its traceback is not lost.
    """
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise ConfigurationError(f"expected MODULE:ATTRIBUTE (like 'myapp:app'), got {spec!r}")
    try:
        obj: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise ConfigurationError(f"cannot import module {module_name!r}") from None
        raise
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(
                f"module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    return obj
