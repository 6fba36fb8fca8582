"""Dedup: what one effect is (:mod:`~mpsflow.dedup.effects`), the claim/complete protocol
around a handler run (:class:`Idempotency`, :class:`DedupMiddleware`) and the stores that
remember it (:mod:`mpsflow.dedup.stores`)."""

from mpsflow.dedup.idempotency import Idempotency
from mpsflow.dedup.middleware import DedupMiddleware

__all__ = ["DedupMiddleware", "Idempotency"]
