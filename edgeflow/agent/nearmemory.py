"""Near-duplicate inputs for the result memory: a cheap input embedding, a distance, a calibrated threshold.

The result memory (:mod:`edgeflow.agent.memory`) answers *identical* inputs again. A camera rarely sends the same
bytes twice, but often nearly the same picture (sensor noise, a flicker of light, a pixel of drift). With
``memory.near`` on, an input that misses the exact match may be answered by the remembered answer of its nearest
input under the same model and plan, if their distance is within a threshold calibrated so that such answers agree
with the full model at ``memory.near_agreement`` (default 99.5%).

Embedding: each input image averaged down to an 8x8 grid per channel (``adaptive_avg_pool2d``; 192 numbers for RGB);
distance: the root mean square of the difference. No model compute, ~50 us per input. Inputs that are not one
image (a batch, token ids) get no embedding and are matched exactly only.

Calibration (:func:`calibrate_demo`, on the demo's *training* split, so the held-out splits stay held out): pairs of
an image and a perturbed copy, of the kinds a camera sees between two looks at one scene (noise, brightness, a
shift of a pixel or two, a small occlusion), and of an image with its nearest other training image; for each pair
its distance and whether the full model's top-1 agrees on both. The threshold is the largest distance ``t`` such
that the pairs within ``t`` agree at least at the target rate, counted conservatively: the lower end of a one-sided
95% Wilson interval, so a threshold is never set by a few lucky pairs. Answers from near matches are counted apart
from exact hits (``memory: "near"``).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from edgeflow.errors import ConfigError

__all__ = ["GRID", "NearCalibration", "calibrate_demo", "choose_threshold", "embed", "distances"]

GRID = 8  # the embedding's grid per side
_Z = 1.645  # one-sided 95%
_MIN_PAIRS = 50  # a threshold is set by at least this many pairs within it
_CALIBRATION_IMAGES = 256  # training images used
_CALIBRATIONS: dict[tuple[str, float], "NearCalibration"] = {}  # (fingerprint, target) -> one per process
_LOCK = threading.Lock()


@dataclass(frozen=True)
class NearCalibration:
    """A calibrated threshold.

    Attributes:
        threshold: the largest distance a near match may have (0: near matching found no safe distance).
        target: the agreement rate asked for.
        agreement: the agreement of the calibration pairs within the threshold.
        lower_bound: its one-sided 95% Wilson lower bound (>= target unless threshold is 0).
        pairs_within: calibration pairs within the threshold.
        pairs: calibration pairs in all.
    """

    threshold: float
    target: float
    agreement: float
    lower_bound: float
    pairs_within: int
    pairs: int


def embed(values: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The embedding of model inputs ``values`` (one image, ``(1, C, H, W)`` float), or None (matched exactly only)."""
    if len(values) != 1:
        return None
    x = values[0]
    if x.dim() != 4 or x.shape[0] != 1 or not x.is_floating_point() or x.shape[2] < GRID or x.shape[3] < GRID:
        return None
    with torch.no_grad():
        return F.adaptive_avg_pool2d(x.detach().float().cpu(), GRID).reshape(-1)  # (C * GRID * GRID,)


def distances(query: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """RMS distance from ``query`` (D,) to each row of ``stored`` (N, D): (N,)."""
    return ((stored - query).pow(2).mean(dim=1)).sqrt()


def _wilson_lower(agree: int, n: int) -> float:
    if n == 0:
        return 0.0
    p = agree / n
    denom = 1 + _Z**2 / n
    centre = p + _Z**2 / (2 * n)
    margin = _Z * math.sqrt(p * (1 - p) / n + _Z**2 / (4 * n * n))
    return (centre - margin) / denom


def choose_threshold(dist: np.ndarray, agree: np.ndarray, target: float) -> NearCalibration:
    """The largest distance whose pairs within agree at ``target`` or more (Wilson lower bound; see the module doc).

    Args:
        dist: (P,) pair distances.
        agree: (P,) whether the full model's top-1 agrees on the pair.
        target: the agreement rate asked for, in (0, 1).
    """
    order = np.argsort(dist, kind="stable")
    d, a = np.asarray(dist, dtype=np.float64)[order], np.asarray(agree, dtype=bool)[order]
    agreed = np.cumsum(a)
    best = NearCalibration(0.0, target, 1.0, 0.0, 0, len(d))
    for i in range(len(d)):
        n = i + 1
        if i + 1 < len(d) and d[i + 1] == d[i]:
            continue  # a threshold takes every pair at its distance
        low = _wilson_lower(int(agreed[i]), n)
        if n >= _MIN_PAIRS and low >= target:
            best = NearCalibration(float(d[i]), target, float(agreed[i]) / n, low, n, len(d))
    return best


def _perturbed(images: torch.Tensor, rng: np.random.Generator) -> list[torch.Tensor]:
    """Copies of ``images`` (N, 3, H, W) in [0, 1] as a camera may see the same scene again (8-bit)."""
    out = []
    for sigma in (1, 2, 4, 8):  # sensor noise, in grey levels
        noise = torch.from_numpy(rng.normal(0, sigma / 255, images.shape).astype(np.float32))
        out.append(images + noise)
    for gain in (0.97, 1.03, 0.9, 1.1):  # light
        out.append(images * gain)
    for dx in (1, 2):  # drift
        out.append(torch.roll(images, shifts=dx, dims=3))
    for side in (4, 8, 12):  # something small passes in front
        occluded = images.clone()
        for k in range(len(images)):
            y, x = rng.integers(0, images.shape[2] - side, size=2)
            occluded[k, :, y : y + side, x : x + side] = float(rng.random())
        out.append(occluded)
    return [((p.clamp(0, 1) * 255).round() / 255) for p in out]


def calibrate_demo(runtime: Any, target: float) -> NearCalibration:
    """Calibrate the near-match threshold for ``runtime``'s model on the demo's training split (cached per model and
    target; a second or so on one host core for the demo model).

    Raises:
        ConfigError: the model does not take the demo's images.
    """
    infos = runtime.cut_info(0).tensors
    shape = tuple(infos[0].shape)
    if len(infos) != 1 or len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3] or shape[2] < GRID:
        raise ConfigError(f"memory.near: the demo's training images do not fit the model's input {list(shape)}")
    with _LOCK:
        got = _CALIBRATIONS.get((runtime.fingerprint, target))
        if got is not None:
            return got
        from edgeflow.core.data import load_demo_dataset

        images, _ = load_demo_dataset("train", size=int(shape[2]))
        rng = np.random.default_rng(0)
        images = images[torch.from_numpy(rng.permutation(len(images))[:_CALIBRATION_IMAGES])]
        n = runtime.num_positions

        def top1(x: torch.Tensor) -> torch.Tensor:
            out = [runtime.run(0, n, [x[i : i + 64]]).values[0].argmax(dim=-1) for i in range(0, len(x), 64)]
            return torch.cat(out)

        base = top1(images)
        emb = F.adaptive_avg_pool2d(images, GRID).reshape(len(images), -1)
        dist, agree = [], []
        for p in _perturbed(images, rng):
            dist.append(((F.adaptive_avg_pool2d(p, GRID).reshape(len(p), -1) - emb).pow(2).mean(dim=1)).sqrt())
            agree.append(top1(p) == base)
        # each image with its nearest other image: what a near match risks when the scene really changed
        d_all = torch.cdist(emb, emb) / math.sqrt(emb.shape[1])
        d_all.fill_diagonal_(float("inf"))
        nearest = d_all.argmin(dim=1)
        dist.append(d_all[torch.arange(len(emb)), nearest])
        agree.append(base[nearest] == base)
        got = choose_threshold(torch.cat(dist).numpy(), torch.cat(agree).numpy(), target)
        _CALIBRATIONS[(runtime.fingerprint, target)] = got
        return got
