"""Link emulation: shape the bytes between two edgeflow tiers by a bandwidth trace, delay, loss and outages.

- :mod:`edgeflow.netem.link`: the model (pure): :class:`LinkSpec`, :class:`Outage`, the serialisation clock.
- :mod:`edgeflow.netem.userspace`: :class:`LinkEmulator`, a TCP proxy on 127.0.0.1; no root needed.
- :mod:`edgeflow.netem.kernel`: :class:`KernelLinkEmulator`, the same surface, with the rate shaped by
  ``tc tbf`` on a veth pair between two private network namespaces (root only; delay stays in userspace).
- ``python -m edgeflow.netem``: either one as its own process.

See ``docs/NETEM.md``. Exports are loaded lazily, so ``python -m edgeflow.netem.userspace`` does not import
its own module twice.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["LinkSpec", "Outage", "LinkEmulator", "LinkStats", "KernelLinkEmulator", "kernel_available"]

_WHERE = {
    "LinkSpec": ("edgeflow.netem.link", "LinkSpec"),
    "Outage": ("edgeflow.netem.link", "Outage"),
    "LinkEmulator": ("edgeflow.netem.userspace", "LinkEmulator"),
    "LinkStats": ("edgeflow.netem.userspace", "LinkStats"),
    "KernelLinkEmulator": ("edgeflow.netem.kernel", "KernelLinkEmulator"),
    "kernel_available": ("edgeflow.netem.kernel", "available"),
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'edgeflow.netem' has no attribute {name!r}")
    module, attr = _WHERE[name]
    return getattr(importlib.import_module(module), attr)
