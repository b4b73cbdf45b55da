"""Stream workloads: a synthetic moving-object video made from the demo images, and a folder of frames.

Pure: torch + numpy (+ Pillow to read image files), no clocks. Each frame is one model input (3, S, S) in [0, 1].

- :func:`moving_object_video`: a demo test image as the background with another one, shrunk, as an object moving
  over it. ``static``: a fixed camera, the object drifting one pixel every other frame over a small part of the
  scene (a doorway camera: consecutive frames differ only around the object). ``moving``: the camera pans two
  pixels a frame (the whole background shifts) and the object crosses the scene three pixels a frame.
- :func:`folder_frames`: every ``.png``/``.jpg``/``.jpeg`` file of a folder in name order, resized to the model's
  input, cycled to the number of requests.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from edgeflow.errors import ScenarioError

__all__ = ["MOTIONS", "moving_object_video", "folder_frames"]

MOTIONS = ("static", "moving")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_MAX_FILES = 100_000


def moving_object_video(n: int, size: int, motion: str, *, seed: int = 0) -> torch.Tensor:
    """``n`` frames (n, 3, size, size) float32 in [0, 1] of a demo image with a demo object moving over it.

    Raises:
        ScenarioError: an unknown ``motion``.
    """
    if motion not in MOTIONS:
        raise ScenarioError(f"workload.video: unknown motion {motion!r}; known: {', '.join(MOTIONS)}")
    from edgeflow.core.data import load_demo_dataset

    images, _ = load_demo_dataset("test")
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(images), generator=g)[:2]
    background = _resized(images[int(pick[0])], size)  # (3, S, S)
    obj = _resized(images[int(pick[1])], max(4, size // 5))  # (3, s, s)
    s = obj.shape[-1]
    frames = torch.empty(n, 3, size, size)
    for k in range(n):
        if motion == "static":
            scene = background
            span = max(1, size // 4)  # the object drifts back and forth over a quarter of the width
            step = (k // 2) % (2 * span)
            x, y = size // 3 + (step if step < span else 2 * span - step), size // 3
        else:
            scene = torch.roll(background, shifts=2 * k, dims=-1)  # the camera pans
            x, y = (3 * k) % max(1, size - s), (size - s) // 2
        frame = scene.clone()
        frame[:, y : y + s, x : x + s] = obj[:, : size - y, : size - x]
        frames[k] = frame
    return frames.mul_(255).round_().div_(255)  # 8-bit frames, as a camera gives them


def _resized(image: torch.Tensor, size: int) -> torch.Tensor:
    if image.shape[-1] == size and image.shape[-2] == size:
        return image.float()
    return F.interpolate(image[None].float(), size=(size, size), mode="bilinear", align_corners=False)[0].clamp(0, 1)


def folder_frames(folder: Path, n: int, size: int) -> torch.Tensor:
    """The image files of ``folder`` in name order as ``n`` frames (n, 3, size, size), cycled if fewer.

    Raises:
        ScenarioError: the folder is missing, holds no image file, or a file is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    if not folder.is_dir():
        raise ScenarioError(f"workload.frames_dir: {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)[:_MAX_FILES]
    if not files:
        raise ScenarioError(f"workload.frames_dir: {folder} holds no {'/'.join(_IMAGE_SUFFIXES)} file")
    frames = []
    for p in files[:n]:
        try:
            with Image.open(p) as im:
                im.draft("RGB", (size, size))
                rgb = im.convert("RGB").resize((size, size), Image.BILINEAR)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
            raise ScenarioError(f"workload.frames_dir: {p.name} is not a readable image: {e}") from None
        frames.append(torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).view(size, size, 3))
    stacked = torch.stack(frames).permute(0, 3, 1, 2).float().div_(255.0)  # (F, 3, S, S)
    return stacked[torch.arange(n) % len(stacked)].contiguous()
