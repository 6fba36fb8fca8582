"""Generate ``mpsflow/_typed_on.py``: ``Router.on`` overloads, one per result type.

Each routing key (``mpsflow.events`` EVENT_KEYS / SUBTASK_KEYS / LIVE_KEYS) gets a ``Literal``
overload whose decorator only accepts handlers taking that key's result type, and whose
``status`` only takes the statuses that key's results can have
(``mpsflow.events.statuses.STATUS_TYPES``), so ``@app.on("Transcode")`` on a handler of the
wrong type, or ``status="SUCESS"``, is a mypy error. A known key whose call fits none of those
overloads (a status or ``when`` that does not fit it) ends on an overload whose decorator takes
only a ``StatusOrWhenDoesNotFitKey``, so decorating a handler with it is an error naming the
problem, instead of falling back to the untyped ``str`` overload. (That overload returns a
callable like the others, so calls whose arguments are ``Any``, e.g. a ``when=`` lambda, resolve
as they did before it.) Every keyword option, in every signature, comes from
``mpsflow.handler_options.ON_OPTIONS``.

Run: ``python scripts/gen_typed_on.py`` (after regenerating the events or changing the
options); ``--check`` only verifies that the committed module is current (a test runs it).
"""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mpsflow.events import EVENT_KEYS, LIVE_KEYS, SUBTASK_KEYS  # noqa: E402
from mpsflow.events.statuses import STATUS_TYPES  # noqa: E402
from mpsflow.handler_options import ON_OPTIONS, RESULT, STATUS  # noqa: E402

TARGET = ROOT / "mpsflow" / "_typed_on.py"

# Names the module uses besides those of the options' annotations (dotted module.Name).
BASE_IMPORTS = (
    "collections.abc.Awaitable",
    "collections.abc.Callable",
    "typing.TYPE_CHECKING",
    "typing.Any",
    "typing.Literal",
    "typing.TypedDict",
    "typing.TypeVar",
    "typing.overload",
    "mpsflow.context.Context",
    "mpsflow.routing.HandlerFunc",
)

HEADER = '''"""Typed ``on``: one overload per routing key's result type (GENERATED, do not edit).

Regenerate with ``python scripts/gen_typed_on.py``; the keyword options come from
``mpsflow.handler_options.ON_OPTIONS``. A handler registered for a key must accept that key's
result type as its first parameter and a ``Context`` as its second, and ``status=`` must name
statuses that key's results can have (``mpsflow.events.statuses``); anything else is a type
error. A non-literal ``str`` key falls back to an untyped handler (still checked at
registration time).
"""

from __future__ import annotations

{imports}

__all__ = ["Handler", "OnOptions", "StatusOrWhenDoesNotFitKey", "TypedOn"]

_T = TypeVar("_T")

Handler = Callable[[_T, Context], Awaitable[object]]
"""An async handler of one result type: ``async def h(result: T, ctx: Context) -> None``."""


class StatusOrWhenDoesNotFitKey:
    """The only thing ``on`` takes, for mypy, when its ``status`` or ``when`` does not fit the key.

    Decorating a handler is then a type error that names this class: a ``status`` the key's
    results never have (``status="SUCESS"``, or any status for a key without one) or a
    ``when`` that does not take the key's result type. At runtime ``on`` raises
    ``ConfigurationError`` for the status, with the statuses the key has.
    """


class OnOptions(TypedDict):
    """The keyword options of one ``on`` call, as ``Router._register`` receives them."""

{fields}


class TypedOn:
    """Mixin giving routers the typed ``on`` decorator."""

    if TYPE_CHECKING:

        def _register(
            self, key: str, options: OnOptions
        ) -> Callable[[HandlerFunc], HandlerFunc]: ...
'''

SIGNATURE = """
    def on(
        self,
        key: {key},
        *,
{params}
    ) -> {returns}:"""

DOC = '''
        """Register the decorated ``async def handler(result, ctx)`` for ``key``.

        ``key`` is an ``EventType`` (``"WorkflowTask"``), a subtask key (``"Transcode"``,
        ``"AiContentReview.Porn"``, …) or a live ``NotificationType``; unknown keys raise
        ``ConfigurationError`` at once. The options filter results or set per-handler
        policies:

{options}
        """
        return self._register(key, OnOptions({forward}))
'''


UNTYPED_STATUS = "str"
"""The status type of a key without a status ``Literal`` (and of the untyped overloads)."""

MARKER = "StatusOrWhenDoesNotFitKey"

OVERLAP = "  # type: ignore[overload-overlap]"
"""Each typed overload overlaps the marker overload, and that one the ``str`` fallback, with
a return type they do not share: on purpose, the first that fits wins."""


def annotation(text: str, result: str, status: str = UNTYPED_STATUS) -> str:
    """An option's annotation with ``RESULT``/``STATUS`` replaced by ``result``/``status``."""
    return text.replace(RESULT, result).replace(STATUS, status)


def signature(key: str, result: str, returns: str, status: str = UNTYPED_STATUS) -> str:
    """``def on(self, key, *, <every option>) -> returns:`` for handlers of ``result``."""
    params = "\n".join(
        f"        {o.name}: {annotation(o.annotation, result, status)} = {o.default!r},"
        for o in ON_OPTIONS
    )
    return SIGNATURE.format(key=key, params=params, returns=returns)


def overload(key: str, result: str, returns: str, status: str = UNTYPED_STATUS) -> str:
    """One ``@overload`` stub of ``on``; the typed ones carry the overlap ``ignore``."""
    text = signature(key, result, returns, status)
    if returns != "Callable[[HandlerFunc], HandlerFunc]":
        text = text.replace("def on(", "def on(" + OVERLAP, 1)
    return f"\n    @overload{text} ...\n"


def literal(keys: list[str]) -> str:
    """``Literal["a", "b"]`` of ``keys``, sorted."""
    return "Literal[" + ", ".join(f'"{k}"' for k in sorted(keys)) + "]"


def imports() -> str:
    """``from module import names`` for the module's own names and the options' annotations."""
    by_module: dict[str, set[str]] = defaultdict(set)
    for dotted in (*BASE_IMPORTS, *(d for o in ON_OPTIONS for d in o.imports)):
        module, name = dotted.rsplit(".", 1)
        by_module[module].add(name)
    return "\n".join(f"from {m} import {', '.join(sorted(n))}" for m, n in by_module.items())


def render() -> str:
    """The module's source, imports sorted and formatted as ruff does it."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for registry in (EVENT_KEYS, SUBTASK_KEYS, LIVE_KEYS):
        for key, cls in registry.items():
            name = STATUS_TYPES.get(key)
            status = f"statuses.{name}" if name else UNTYPED_STATUS
            groups[cls.__name__, status].append(key)
    fields = "\n".join(f"    {o.name}: {annotation(o.annotation, 'Any')}" for o in ON_OPTIONS)
    module_imports = f"{imports()}\nfrom mpsflow import events\nfrom mpsflow.events import statuses"
    parts = [HEADER.format(imports=module_imports, fields=fields)]
    for cls_name, status in sorted(groups):
        t = f"events.{cls_name}"
        returns = f"Callable[[Handler[{t}]], Handler[{t}]]"
        parts.append(overload(literal(groups[cls_name, status]), t, returns, status))
    every_key = [key for keys in groups.values() for key in keys]
    parts.append(overload(literal(every_key), "Any", f"Callable[[{MARKER}], {MARKER}]"))
    parts.append(overload("str", "Any", "Callable[[HandlerFunc], HandlerFunc]"))
    options = "\n".join(f"        * ``{o.name}``: {o.doc}." for o in ON_OPTIONS)
    forward = ", ".join(f"{o.name}={o.name}" for o in ON_OPTIONS)
    parts.append(signature("str", "Any", "Any"))
    parts.append(DOC.format(options=options, forward=forward))
    text = "".join(parts)
    for command in (["check", "--select", "I", "--fix", "--quiet"], ["format"]):
        text = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "--stdin-filename", str(TARGET), "-"],
            input=text,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout
    return text


def main() -> None:
    """Write the module, or with ``--check`` exit 1 when it is out of date."""
    text = render()
    if "--check" in sys.argv[1:]:
        if TARGET.read_text() != text:
            print(f"{TARGET.relative_to(ROOT)} is out of date: run scripts/gen_typed_on.py")
            raise SystemExit(1)
        print(f"{TARGET.relative_to(ROOT)} is up to date")
        return
    TARGET.write_text(text)
    print(f"wrote {TARGET.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
