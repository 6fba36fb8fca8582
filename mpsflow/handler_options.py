"""The keyword options of ``@app.on(key, ...)``, defined once.

``scripts/gen_typed_on.py`` writes every ``on`` signature of ``mpsflow/_typed_on.py`` from
``ON_OPTIONS``: the typed overload of each result type, the untyped fallback, the runtime
implementation (so Python itself rejects an unknown option, as before) and the ``OnOptions``
dict that hands the values to ``Router._register``. A new option is one row here; then
regenerate and give it a meaning in ``Router._register``.

This module is plain data (no imports of the package), so the generator can read it anywhere.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["ON_OPTIONS", "RESULT", "STATUS", "OnOption"]

RESULT = "{result}"
"""Placeholder in an annotation for the routing key's result type (``Any`` when untyped)."""

STATUS = "{status}"
"""Placeholder in an annotation for the ``Literal`` of the statuses the routing key's results
can have (``mpsflow.events.statuses``; ``str`` when untyped)."""


class OnOption(NamedTuple):
    """One keyword option of ``on``: its name, annotation (source text) and default."""

    name: str
    annotation: str
    """The annotation as written in the signatures; ``RESULT`` stands for the result type,
    ``STATUS`` for the status ``Literal``."""
    default: object
    """The default value; its ``repr`` is written into the signatures."""
    doc: str
    """What the option does (one line of the ``on`` docstring)."""
    imports: tuple[str, ...] = ()
    """Dotted ``module.Name`` of every name the annotation uses."""


ON_OPTIONS: tuple[OnOption, ...] = (
    OnOption(
        "status",
        f"{STATUS} | Collection[{STATUS}] | None",
        None,
        "only results whose ``Status`` is this one (or one of these the key can have)",
        ("collections.abc.Collection",),
    ),
    OnOption("failed", "bool | None", None, "only failed results (``False``: only not failed)"),
    OnOption("ok", "bool | None", None, "only successful results (``False``: only not ok)"),
    OnOption(
        "when",
        f"Callable[[{RESULT}], bool] | None",
        None,
        "only results this predicate accepts",
        ("collections.abc.Callable",),
    ),
    OnOption(
        "name",
        "str | None",
        None,
        "the handler's name (it keys the dedup records); default ``module.qualname``",
    ),
    OnOption(
        "retry",
        "RetryPolicy | None",
        None,
        "retry policy (default: the nearest router's)",
        ("mpsflow.retry.RetryPolicy",),
    ),
    OnOption(
        "timeout", "float | None", None, "seconds one call may take (default: the nearest router's)"
    ),
    OnOption("max_concurrency", "int | None", None, "how many calls may run at once"),
    OnOption(
        "middleware",
        "Iterable[Middleware]",
        (),
        "middleware around this handler only (inside the routers')",
        ("collections.abc.Iterable", "mpsflow.middleware.base.Middleware"),
    ),
    OnOption(
        "emits",
        "Iterable[str]",
        (),
        "names of the sinks it emits to (checked at startup)",
        ("collections.abc.Iterable",),
    ),
)
"""Every option of ``on``, in signature order."""
