"""Generate ``mpsflow/_typed_on.py``: ``Router.on`` overloads, one per result type.

Each routing key (``mpsflow.events`` EVENT_KEYS / SUBTASK_KEYS / LIVE_KEYS) gets a ``Literal``
overload whose decorator only accepts handlers taking that key's result type, so
``@app.on("Transcode")`` on a handler of the wrong type is a mypy error.

Run: ``python scripts/gen_typed_on.py`` (after regenerating the events); ``--check`` only
verifies that the committed module is current (a test runs it).
"""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mpsflow.events import EVENT_KEYS, LIVE_KEYS, SUBTASK_KEYS  # noqa: E402

TARGET = ROOT / "mpsflow" / "_typed_on.py"

HEADER = '''"""Typed ``on``: one overload per routing key's result type (GENERATED, do not edit).

Regenerate with ``python scripts/gen_typed_on.py``. A handler registered for a key must accept
that key's result type as its first parameter and a ``Context`` as its second; anything else
is a type error. A non-literal ``str`` key falls back to an untyped handler (still checked at
registration time).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from mpsflow.context import Context
from mpsflow.events import (
{imports}
)
from mpsflow.middleware.base import Middleware
from mpsflow.retry import RetryPolicy
from mpsflow.routing import HandlerFunc

__all__ = ["Handler", "TypedOn"]

_T = TypeVar("_T")

Handler = Callable[[_T, Context], Awaitable[object]]
"""An async handler of one result type: ``async def h(result: T, ctx: Context) -> None``."""


class TypedOn:
    """Mixin giving routers the typed ``on`` decorator."""

    if TYPE_CHECKING:

        def _register(
            self,
            key: str,
            *,
            status: str | Collection[str] | None = None,
            failed: bool | None = None,
            ok: bool | None = None,
            when: Callable[[Any], bool] | None = None,
            name: str | None = None,
            retry: RetryPolicy | None = None,
            timeout: float | None = None,
            max_concurrency: int | None = None,
            middleware: Iterable[Middleware] = (),
            emits: Iterable[str] = (),
        ) -> Callable[[HandlerFunc], HandlerFunc]: ...
'''

OVERLOAD = """
    @overload
    def on(
        self,
        key: Literal[{keys}],
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[{t}], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Handler[{t}]], Handler[{t}]]: ...
"""

FALLBACK = '''
    @overload
    def on(
        self,
        key: str,
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[Any], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[HandlerFunc], HandlerFunc]: ...

    def on(
        self,
        key: str,
        *,
        status: str | Collection[str] | None = None,
        failed: bool | None = None,
        ok: bool | None = None,
        when: Callable[[Any], bool] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        middleware: Iterable[Middleware] = (),
        emits: Iterable[str] = (),
    ) -> Callable[[Any], Any]:
        """Register the decorated ``async def handler(result, ctx)`` for ``key``.

        ``key`` is an ``EventType`` (``"WorkflowTask"``), a subtask key (``"Transcode"``,
        ``"AiContentReview.Porn"``, …) or a live ``NotificationType``; unknown keys raise
        ``ConfigurationError`` at once. Filters: ``status`` (one or several), ``failed``,
        ``ok`` and a ``when`` predicate on the result. Per-handler policies: ``retry``,
        ``timeout`` (seconds), ``max_concurrency``, ``middleware`` and the sink names it
        ``emits`` to (checked at startup).
        """
        return self._register(
            key,
            status=status,
            failed=failed,
            ok=ok,
            when=when,
            name=name,
            retry=retry,
            timeout=timeout,
            max_concurrency=max_concurrency,
            middleware=middleware,
            emits=emits,
        )
'''


def render() -> str:
    """The module's source, imports sorted and formatted as ruff does it."""
    by_type: dict[type, list[str]] = defaultdict(list)
    for registry in (EVENT_KEYS, SUBTASK_KEYS, LIVE_KEYS):
        for key, cls in registry.items():
            by_type[cls].append(key)
    names = sorted({cls.__name__ for cls in by_type})
    parts = [HEADER.format(imports="\n".join(f"    {n}," for n in names))]
    for cls in sorted(by_type, key=lambda c: c.__name__):
        keys = ", ".join(f'"{k}"' for k in sorted(by_type[cls]))
        parts.append(OVERLOAD.format(keys=keys, t=cls.__name__))
    parts.append(FALLBACK)
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
