"""The demo task: real handwritten digits on real photos, from data shipped inside scikit-learn.

scikit-learn bundles the UCI handwritten digits (1797 images, 8×8, 16 grey levels) and two photos
(china.jpg, flower.jpg, 427×640). Following MNIST-M (Ganin & Lempitsky, 2015, "Unsupervised Domain
Adaptation by Backpropagation", §4.1) each digit is upscaled and blended onto a random crop of a
photo as ``|patch - digit|`` per channel, then quantised to uint8: a colour image a png/jpeg codec
can carry, and a task hard enough that early exits have something to decide.

Everything is computed in memory from the bundled files with fixed seeds; nothing is downloaded or
cached on disk. Every digit has one fixed background (seeded by its index in the bundled set), so a
digit renders identically whichever split it falls in.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "SPLITS",
    "DEMO_ARCH",
    "DEMO_CONFIG",
    "DEMO_IMAGE_SIZE",
    "DEMO_WEIGHTS",
    "load_demo_dataset",
    "demo_example",
    "load_digit_split",
    "render_digits",
    "augment_digits",
    "photo_batch",
]

SPLITS = ("train", "calibration", "test")
_SPLIT_FRACTIONS = (0.6, 0.2, 0.2)  # per class, so every split is stratified
_SPLIT_SEED = 20240601
_RENDER_SEED = 7

# The demo model: ResNet-18 layout at a quarter of the width and 64×64 input, so the whole
# training run (backbone, exits, calibration) fits in ~2 minutes on 2 CPU cores.
DEMO_IMAGE_SIZE = 64
DEMO_ARCH = "resnet18"
DEMO_CONFIG: dict[str, Any] = {"num_classes": 10, "width": 8, "image_size": DEMO_IMAGE_SIZE}
DEMO_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "demo.safetensors"
DEMO_EXAMPLE = DEMO_WEIGHTS.with_name("demo_example.png")  # calibration image 0, see demo_example()


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)  # (N, 8, 8) in [0, 1]
    return images, d.target.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_sample_images

    # (3, 427, 640) float32 in [0, 1] each
    return tuple(
        torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))).float() / 255.0
        for im in load_sample_images().images
    )


@functools.lru_cache(maxsize=1)
def _split_indices() -> dict[str, np.ndarray]:
    _, labels = _digits()
    rng = np.random.default_rng(_SPLIT_SEED)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_train = round(len(idx) * _SPLIT_FRACTIONS[0])
        n_cal = round(len(idx) * _SPLIT_FRACTIONS[1])
        parts["train"].append(idx[:n_train])
        parts["calibration"].append(idx[n_train : n_train + n_cal])
        parts["test"].append(idx[n_train + n_cal :])
    return {s: np.sort(np.concatenate(p)) for s, p in parts.items()}


def load_digit_split(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The raw 8×8 digits of one split.

    Returns:
        (digits float32 (N, 8, 8) in [0, 1], labels int64 (N,), indices int64 (N,) into the bundled set)

    Raises:
        ValueError: unknown split.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    images, labels = _digits()
    idx = _split_indices()[split]
    return images[idx], labels[idx], idx


def _random_patch(rng: np.random.Generator, size: int) -> torch.Tensor:
    """A random square crop of a bundled photo, resized to size×size. (3, size, size)"""
    photo = _photos()[int(rng.integers(2))]
    h, w = photo.shape[1:]
    side = int(rng.integers(min(size, h), min(3 * size, h) + 1))  # varied texture scale
    top = int(rng.integers(h - side + 1))
    left = int(rng.integers(w - side + 1))
    crop = photo[None, :, top : top + side, left : left + side]  # (1, 3, side, side)
    if side != size:
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return crop[0]


def render_digits(
    digits: np.ndarray, size: int, rngs: list[np.random.Generator], shift: int = 0
) -> torch.Tensor:
    """Blend 8×8 digits onto photo crops, MNIST-M style, and quantise to uint8.

    Args:
        digits: float32 (N, 8, 8) in [0, 1].
        size: output side in pixels.
        rngs: one generator per digit (chooses the crop and the shift).
        shift: maximum translation of the digit in pixels (0 = centred, as in the fixed splits).

    Returns:
        uint8 tensor (N, 3, size, size).
    """
    if len(rngs) != len(digits):
        raise ValueError(f"{len(rngs)} generators for {len(digits)} digits")
    up = F.interpolate(torch.from_numpy(digits)[:, None], size=(size, size), mode="bilinear", align_corners=False)
    up = up.clamp(0.0, 1.0)  # (N, 1, size, size)
    out = torch.empty(len(digits), 3, size, size, dtype=torch.uint8)
    for i, rng in enumerate(rngs):
        patch = _random_patch(rng, size)  # (3, size, size)
        digit = up[i]
        if shift:
            dy, dx = (int(v) for v in rng.integers(-shift, shift + 1, size=2))
            digit = torch.roll(digit, shifts=(dy, dx), dims=(1, 2))  # the border is blank: roll is a shift
        out[i] = ((patch - digit).abs() * 255.0).round().clamp(0, 255).to(torch.uint8)
    return out


def load_demo_dataset(split: str, size: int = DEMO_IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """The demo dataset: digits on photo crops, one fixed rendering per digit.

    Splits are stratified 60/20/20 (train 1078, calibration 359, test 360 images) with a fixed seed.

    Args:
        split: "train", "calibration" or "test".
        size: image side in pixels.

    Returns:
        (images float32 (N, 3, size, size) = uint8 / 255, labels int64 (N,))

    Raises:
        ValueError: unknown split.
    """
    digits, labels, idx = load_digit_split(split)
    rngs = [np.random.default_rng([_RENDER_SEED, int(i)]) for i in idx]
    images = render_digits(digits, size, rngs)
    return images.float() / 255.0, torch.from_numpy(labels)


def demo_example(index: int = 0, size: int = DEMO_IMAGE_SIZE) -> torch.Tensor:
    """Image ``index`` of the calibration split, rendered alone: ``load_demo_dataset("calibration")[0][index:index
    + 1]`` without rendering the other 358 (a profiler needs one real image, fast). Image 0 at the demo's size is
    read from its shipped copy (``weights/demo_example.png``; a test checks it is this rendering): importing
    scikit-learn alone takes 0.6-1.6 s, most of a live device's start-up budget.

    Returns:
        float32 (1, 3, size, size) = uint8 / 255
    """
    if index == 0 and size == DEMO_IMAGE_SIZE and DEMO_EXAMPLE.is_file():
        from PIL import Image

        with Image.open(DEMO_EXAMPLE) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    digits, _, idx = load_digit_split("calibration")
    rngs = [np.random.default_rng([_RENDER_SEED, int(idx[index])])]
    return render_digits(digits[index : index + 1], size, rngs).float() / 255.0


def augment_digits(
    digits: np.ndarray, size: int, rng: np.random.Generator, shift: int = 4
) -> torch.Tensor:
    """Fresh renderings of training digits (new crops, small shifts), for augmentation.

    Returns:
        float32 (N, 3, size, size) = uint8 / 255
    """
    seeds = rng.integers(2**63, size=len(digits))
    rngs = [np.random.default_rng(int(s)) for s in seeds]
    return render_digits(digits, size, rngs, shift=shift).float() / 255.0


def photo_batch(batch_size: int, size: int, seed: int = 0) -> torch.Tensor:
    """Real photo crops (from the images bundled with scikit-learn), as a model input batch.

    Profiling codecs on noise would be unfair to png/jpeg and to zstd; these are natural images.

    Returns:
        float32 (batch_size, 3, size, size) = uint8 / 255
    """
    rng = np.random.default_rng(seed)
    crops = torch.stack([_random_patch(rng, size) for _ in range(batch_size)])
    return (crops * 255.0).round().clamp(0, 255) / 255.0
