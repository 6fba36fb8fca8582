"""Logging middleware: one structured line per delivery, and per handler run at DEBUG."""

from __future__ import annotations

import logging
import time

from mpsflow.delivery import Outcome, Settlement
from mpsflow.middleware.base import Call, CallNext

__all__ = ["LoggingMiddleware"]


class LoggingMiddleware:
    """Logs what happened, never the payload (it may carry S3 keys echoed back by MPS).

    At delivery scope: source, delivery id, attempt, settlement, cause, reason (with the JSON
    path of a malformed body) and duration (INFO for acks, WARNING otherwise). At handler
    scope: handler and key with duration at DEBUG, and failures at WARNING.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("mpsflow.access")

    async def __call__(self, call: Call, call_next: CallNext) -> Outcome:
        started = time.perf_counter()
        if call.scope == "handler" and call.handler is not None:
            try:
                outcome = await call_next(call)
            except Exception as exc:
                self.logger.warning(
                    "handler %s (%s) raised %s after %.1f ms",
                    call.handler.name,
                    call.handler.key,
                    type(exc).__name__,
                    (time.perf_counter() - started) * 1000,
                )
                raise
            self.logger.debug(
                "handler %s (%s) %s in %.1f ms",
                call.handler.name,
                call.handler.key,
                outcome.settlement.value,
                (time.perf_counter() - started) * 1000,
            )
            return outcome
        outcome = await call_next(call)
        delivery = call.delivery
        level = logging.INFO if outcome.settlement is Settlement.ACK else logging.WARNING
        self.logger.log(
            level,
            "delivery %s from %s attempt %d: %s (%s) %s in %.1f ms",
            delivery.id or "-",
            delivery.source,
            delivery.attempt,
            outcome.settlement.value,
            outcome.cause.value,
            outcome.describe(),
            (time.perf_counter() - started) * 1000,
        )
        return outcome
