"""Start-up objects are kept out of the garbage collector's full collections until thawed."""

from __future__ import annotations

import gc

from edgeflow.agent.gcfreeze import freeze_startup_objects, thaw


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_frozen_objects_are_not_walked_until_thawed() -> None:
    kept = [_Cycle() for _ in range(200_000)]  # a heap the size of torch's
    try:
        assert freeze_startup_objects() == gc.get_freeze_count() >= len(kept)
        assert len(gc.get_objects()) < len(kept)  # what a collection walks: not them any more
    finally:
        thaw()
    assert gc.get_freeze_count() == 0
    del kept
    assert gc.collect() >= 200_000  # thawed cycles are collected again once dropped
