"""A tiny hand-made profile whose costs can be worked out on paper."""

from __future__ import annotations

import pytest

from edgeflow.core.profile import CodecCost, ModelProfile, PositionProfile


def tiny_profile() -> ModelProfile:
    """Positions 0..3; host compute 10, 20, 30 ms per node; cuts at 1 and 2; output 40 bytes.

    At the cuts: int8 1000 B (encode 1 ms, decode 2 ms), lossless 4000 B (0.5 ms, 0.5 ms).
    At the input: lossless 8000 B (1 ms, 1 ms), jpeg 2000 B (2 ms, 1 ms).
    """
    cut = {"int8": CodecCost(1000, 1e-3, 2e-3), "lossless": CodecCost(4000, 5e-4, 5e-4)}
    inp = {"lossless": CodecCost(8000, 1e-3, 1e-3), "jpeg": CodecCost(2000, 2e-3, 1e-3)}
    positions = [
        PositionProfile(0, "input", 0.00, 0, 12288, False, [], dict(inp)),
        PositionProfile(1, "a", 0.01, 10, 16000, True, [], dict(cut)),
        PositionProfile(2, "b", 0.03, 20, 8000, True, [], dict(cut)),
        PositionProfile(3, "c", 0.06, 30, 40, False, [], {}),
    ]
    return ModelProfile("tiny", 3, "tiny-graph", [1, 3, 32, 32], 1, 1, 0.06, positions)


@pytest.fixture
def tiny() -> ModelProfile:
    return tiny_profile()
