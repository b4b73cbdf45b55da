"""Keep the cyclic garbage collector's full collections out of requests.

After start-up an agent process holds 250–430k Python objects (torch itself ~165k; then the model, its partition,
the ~170 ranges a live device builds, the planner's tables), and CPython's full (generation 2) collection walks all
of them: 130 ms at 250k objects, and 150–200 ms pauses measured inside a live device's first 60 requests, one of
which tripped the stall rule on the very first request and marked a healthy edge down. The objects alive at the end
of start-up live as long as the agent does, so :func:`freeze_startup_objects` collects once and moves them to the
permanent generation (``gc.freeze``): later collections walk only what requests create. Like the agent's other
start-up settings (:func:`edgeflow.transport.alloc.keep_freed_buffers`) it is process-wide; :func:`thaw` hands the
objects back to the collector, so what was frozen can be collected once dropped: a device client thaws on close,
the scenario runner after each run (it freezes before each, where a pause inside a device's measured compute
would be multiplied by the emulated slowdown).
"""

from __future__ import annotations

import gc
import logging
import time

__all__ = ["freeze_startup_objects", "thaw"]

_log = logging.getLogger(__name__)


def freeze_startup_objects(*, collect: bool = True) -> int:
    """Collect once, then exempt every object alive now from later collections. Returns how many were frozen.

    ``collect=False`` skips the collection: for objects made while the agent already serves (the live planner's
    tables, built in the background), where a full collection would be the very pause this avoids.
    """
    t0 = time.perf_counter()
    if collect:
        gc.collect()
    gc.freeze()
    n = gc.get_freeze_count()
    _log.debug("gc: %d start-up objects frozen after a %.0f ms full collection", n, (time.perf_counter() - t0) * 1e3)
    return n


def thaw() -> None:
    """Give the frozen objects back to the collector (the next full collection walks them again)."""
    gc.unfreeze()
