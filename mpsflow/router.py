"""Routers: groups of handlers with shared middleware and policies, for large apps."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from mpsflow._typed_on import TypedOn
from mpsflow.errors import ConfigurationError
from mpsflow.middleware.base import Middleware
from mpsflow.retry import RetryPolicy
from mpsflow.routing import HandlerFunc, HandlerSpec, check_status, key_kind, normalise_status

if TYPE_CHECKING:  # annotations only: the generator can then rewrite a stale _typed_on.py
    from mpsflow._typed_on import OnOptions

__all__ = ["Router"]


class Router(TypedOn):
    """Collects ``@router.on(...)`` handlers; ``app.include_router(router)`` adds them.

    ``middleware`` wraps every handler of this router (handler scope, outside each handler's
    own middleware); ``retry``/``timeout`` are defaults for handlers that set none.
    """

    def __init__(
        self,
        *,
        middleware: Sequence[Middleware] = (),
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        name_prefix: str = "",
    ) -> None:
        self._specs: list[HandlerSpec] = []
        self._children: list[Router] = []
        self._middleware: list[Middleware] = list(middleware)
        self._retry = retry
        self._timeout = timeout
        self._name_prefix = name_prefix

    @property
    def handlers(self) -> tuple[HandlerSpec, ...]:
        """Every handler here and in included routers, in registration order.

        Each spec's ``middleware`` is resolved: the routers' middleware (outermost first)
        followed by the handler's own; ``retry``/``timeout`` fall back to the nearest
        router default.
        """
        specs = list(self._resolve((), None, None))
        seen: set[str] = set()
        for spec in specs:
            if spec.name in seen:
                raise _duplicate_name(spec.name)
            seen.add(spec.name)
        return tuple(specs)

    def add_middleware(self, middleware: Middleware) -> None:
        """Wrap every handler of this router in ``middleware`` (handler scope).

        Middleware added first is outermost.
        """
        self._middleware.append(middleware)

    def include_router(self, router: Router) -> None:
        """Add ``router``'s handlers; this router's middleware and defaults wrap them."""
        if router is self or self in router._descendants():
            raise ConfigurationError("including this router would make a cycle")
        self._children.append(router)

    def _descendants(self) -> Iterable[Router]:
        for child in self._children:
            yield child
            yield from child._descendants()

    def _resolve(
        self,
        outer: tuple[Middleware, ...],
        retry: RetryPolicy | None,
        timeout: float | None,
    ) -> Iterable[HandlerSpec]:
        mw = (*outer, *self._middleware)
        retry = self._retry if self._retry is not None else retry
        timeout = self._timeout if self._timeout is not None else timeout
        for spec in self._specs:
            yield replace(
                spec,
                middleware=(*mw, *spec.middleware),
                retry=spec.retry if spec.retry is not None else retry,
                timeout=spec.timeout if spec.timeout is not None else timeout,
            )
        for child in self._children:
            yield from child._resolve(mw, retry, timeout)

    def _register(self, key: str, options: OnOptions) -> Callable[[HandlerFunc], HandlerFunc]:
        """``on``'s work: check ``key`` and the options now, add the handler when decorated."""
        kind = key_kind(key)
        failed, ok = options["failed"], options["ok"]
        if failed is not None and ok is not None and failed == ok:
            raise ConfigurationError(f"on({key!r}): failed={failed} and ok={ok} never match")
        statuses = normalise_status(options["status"])
        check_status(key, statuses)
        handler_mw = tuple(options["middleware"])

        def decorator(func: HandlerFunc) -> HandlerFunc:
            if not callable(func):
                raise ConfigurationError(f"on({key!r}) decorates a callable")
            _check_handler(func)
            spec = HandlerSpec(
                func=func,
                key=key,
                kind=kind,
                name=self._name_prefix + (options["name"] or _qualified_name(func)),
                status=statuses,
                failed=failed,
                ok=ok,
                when=options["when"],
                retry=options["retry"],
                timeout=options["timeout"],
                max_concurrency=options["max_concurrency"],
                middleware=handler_mw,
                emits=frozenset(options["emits"]),
            )
            if any(existing.name == spec.name for existing in self._specs):
                raise _duplicate_name(spec.name)
            self._specs.append(spec)
            return func

        return decorator


def _duplicate_name(name: str) -> ConfigurationError:
    """Two handlers may not share a name: names key the dedup records."""
    return ConfigurationError(
        f"two handlers are named {name!r}; pass name= to tell them apart "
        "(names key the dedup records)"
    )


def _check_handler(func: Callable[..., object]) -> None:
    """ConfigurationError unless ``func`` can be called as ``await func(result, ctx)``.

    It must be a coroutine function (an ``async def``, a ``functools.partial`` of one, an
    object with ``async def __call__``, or a wrapper whose ``__wrapped__`` is one) taking two
    positional arguments (``*args`` will do); parameters beyond those need defaults.
    Signatures ``inspect`` cannot read are let through.
    """
    want = _wanted(func)
    if not _is_async(func):
        if _is_instance(func):
            raise ConfigurationError(f"{want}: its __call__ is a plain def")
        if getattr(func, "__name__", None) == "<lambda>":
            raise ConfigurationError(f"{want}: it is a lambda, which cannot be async")
        raise ConfigurationError(f"{want}: it is a plain def")
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return
    kind = inspect.Parameter
    positional = [p for p in params if p.kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2 and not any(p.kind is kind.VAR_POSITIONAL for p in params):
        n = len(positional)
        raise ConfigurationError(
            f"{want}: it takes {n} parameter{'' if n == 1 else 's'}, needs 2 (result, ctx)"
        )
    extra = [p.name for p in positional[2:] if p.default is kind.empty]
    extra += [p.name for p in params if p.kind is kind.KEYWORD_ONLY and p.default is kind.empty]
    if extra:
        raise ConfigurationError(
            f"{want}: it also requires {', '.join(extra)}; give extra parameters defaults"
        )


def _is_instance(func: object) -> bool:
    """True for a callable object (not a function, method, partial or class)."""
    return not (inspect.isroutine(func) or isinstance(func, (functools.partial, type)))


def _is_async(func: object) -> bool:
    """Whether calling ``func`` gives an awaitable, as far as its definition says."""
    target: Any = func
    for _ in range(100):  # a bound on __wrapped__ chains (inspect.unwrap has one too)
        if inspect.iscoroutinefunction(target):
            return True
        if isinstance(target, functools.partial):
            target = target.func
        elif _is_instance(target):
            call = getattr(type(target), "__call__", None)  # noqa: B004 (the method itself)
            return call is not None and inspect.iscoroutinefunction(call)
        elif hasattr(target, "__wrapped__"):
            target = target.__wrapped__
        else:
            return False
    return False


def _wanted(func: object) -> str:
    """``handler NAME must be 'async def NAME(result, ctx)'``: the start of each message."""
    target = func
    while isinstance(target, functools.partial):
        target = target.func
    if _is_instance(target):
        cls = type(target).__name__
        return f"handler {cls}() must have 'async def __call__(self, result, ctx)'"
    name = getattr(target, "__name__", None)
    name = name if isinstance(name, str) else repr(target)
    sig = name if name.isidentifier() else "handler"
    return f"handler {name} must be 'async def {sig}(result, ctx)'"


def _qualified_name(func: Callable[..., object]) -> str:
    module = getattr(func, "__module__", None) or ""
    qual = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    return f"{module}.{qual}" if module else qual
