"""What ``mpsflow run`` does to its process's heap once the app is loaded, before serving."""

from __future__ import annotations

import gc

__all__ = ["YOUNG_COLLECTION_THRESHOLD", "prepare_heap_for_serving"]

YOUNG_COLLECTION_THRESHOLD = 20_000
"""Net allocations of container objects between two collections of the youngest generation
(CPython's default is 700)."""


def prepare_heap_for_serving() -> None:
    """Freeze the loaded heap, and collect the young generation less often.

    * **Freeze:** collect, then move every object alive now (modules, the app, its types and
      routes) to the collector's permanent generation, so that a full collection while serving
      walks only what serving made. Unfrozen, each walked the whole loaded heap: about 80 ms
      per full collection, a pause every request in flight waits out, several times a minute
      under load. Before ``--workers`` forks, it also keeps the collector from touching the
      shared pages.
    * **Threshold:** each delivery waiting on a store or a sink is a chain of suspended
      coroutines; at CPython's default threshold a young collection ran every few dozen
      deliveries and walked all of those chains, then moved them to the next generation to
      walk again. With :data:`YOUNG_COLLECTION_THRESHOLD` the collector took about 90% less
      time under ``benchmarks/peers.py``'s load (6-10% of the CPU per request), for a young
      generation of a few MB at most.
    """
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    if 0 < young < YOUNG_COLLECTION_THRESHOLD:  # 0: the app turned automatic collection off
        gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)
