"""Run a call on a thread and collect what it returned or raised (tests that block on a queue or a lock)."""

from __future__ import annotations

import threading
from typing import Any, Callable

__all__ = ["in_thread"]


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start ``fn`` on a new thread; the list receives its return value, or the exception it raised."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except Exception as e:  # handed to the caller
            out.append(e)

    t = threading.Thread(target=run)
    t.start()
    return t, out
