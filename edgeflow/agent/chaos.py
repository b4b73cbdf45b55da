"""Chaos: an edge or cloud agent that answers a well-formed wrong class for a fraction of its requests.

For exercising the device's check of upstream answers (:mod:`edgeflow.agent.validate`) with real agent processes:
a scenario's ``faults: [{at_s: 0, lie: edge, fraction: 0.2}]`` starts its edge with the node section ``chaos``, and
the edge flips the answers it sends back down. Which requests are lied about is decided by a hash of the request id
and ``seed`` (reproducible whatever the timing); the lie swaps the logits of the honest top class and the told one,
so the reply stays self-consistent: only a check against something the device computes itself can catch it.
``choice``: ``uniform`` (any other class) or ``runner-up`` (the honest logits' second class, the most plausible lie).
:class:`edgeflow.testing.lying.WrongClass` tells the same lies from a relay in front of an honest agent.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["CHOICES", "lies_about", "flip_classes"]

CHOICES = ("uniform", "runner-up")


def _draw(seed: int, what: str, request_id: str) -> float:
    h = hashlib.sha256(f"{seed}|{what}|{request_id}".encode()).digest()
    return int.from_bytes(h[:8], "little") / 2**64


def lies_about(request_id: str, fraction: float, seed: int) -> bool:
    """Whether request ``request_id`` is one of the ``fraction`` lied about (a hash: the same answer every time)."""
    return _draw(seed, "lie", request_id) < fraction


def flip_classes(logits: torch.Tensor, request_id: str, *, seed: int, choice: str = "uniform",
                 careless: bool = False) -> torch.Tensor:  # fmt: skip
    """A copy of ``logits`` (B, C) whose every row's top class is a wrong one (see the module doc); ``careless``
    raises the told class above the rest instead of swapping, so the top probability changes.

    Raises:
        ValueError: ``logits`` is not (B, C) with C >= 2, or an unknown ``choice``.
    """
    if logits.dim() != 2 or logits.shape[1] < 2 or choice not in CHOICES:
        raise ValueError(f"flip_classes: logits {tuple(logits.shape)} must be (B, C >= 2), choice one of {CHOICES}")
    out = logits.detach().clone()
    c = out.shape[1]
    for b in range(out.shape[0]):
        row = out[b]
        honest = int(row.argmax())
        if choice == "runner-up":
            told = int(row.clone().index_fill_(0, torch.tensor([honest]), float("-inf")).argmax())
        else:
            told = (honest + 1 + int(_draw(seed, f"class/{b}", request_id) * (c - 1))) % c
        if careless:
            row[told] = row[honest] + 1.0
        else:
            row[[honest, told]] = row[[told, honest]]
    return out
