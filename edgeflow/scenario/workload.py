"""The workload: which input each request carries, when it is sent, and from which device.

Built once per scenario from its seed, so every run (edgeflow and each baseline) replays the same requests at
the same offsets from its start. Pure: torch + numpy, no clocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgeflow.errors import ScenarioError
from edgeflow.scenario.schema import WorkloadSpec

__all__ = ["Workload", "build_workload", "reference_predictions"]


@dataclass(frozen=True)
class Workload:
    """Requests of one scenario, indexed 0..R-1.

    Attributes:
        inputs: (R, C, H, W) float32 model inputs, one per request.
        labels: (R,) int64 ground truth, or None for unlabelled (synthetic) data.
        send_s: (R,) open loop: send time of each request after the run starts; None for a closed loop.
        device_of: (R,) index of the device that sends each request.
        sample_index: (R,) index of each input in its data set.
        spec: what it was built from.
    """

    inputs: torch.Tensor
    labels: np.ndarray | None
    send_s: np.ndarray | None
    device_of: np.ndarray
    sample_index: np.ndarray
    spec: WorkloadSpec

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def duration_s(self) -> float | None:
        """Open loop: the last send time; None for a closed loop."""
        return None if self.send_s is None else float(self.send_s[-1]) if len(self.send_s) else 0.0


def _demo_test(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from edgeflow.core.data import DEMO_IMAGE_SIZE, load_demo_dataset

    if image_size != DEMO_IMAGE_SIZE:
        raise ScenarioError(
            f"workload.source: demo-test images are {DEMO_IMAGE_SIZE}x{DEMO_IMAGE_SIZE}, the model takes {image_size}; "
            "use source: synthetic"
        )
    return load_demo_dataset("test")


def build_workload(spec: WorkloadSpec, input_shape: tuple[int, ...], base_dir: Path | None = None) -> Workload:
    """Draw the requests of ``spec`` for a model taking ``input_shape`` (batch 1, e.g. (1, 3, 64, 64)).

    Raises:
        ScenarioError: the data does not fit the model (a demo-test workload for a model of another size, or a
            model that does not take images).
    """
    if len(input_shape) != 4 or input_shape[1] != 3 or input_shape[2] != input_shape[3]:
        raise ScenarioError(f"workload: the model takes {list(input_shape)}; only square RGB image models are supported")
    rng = np.random.default_rng(spec.seed)
    n = spec.requests
    if spec.source in ("video", "frames"):  # a stream: frames in order, never shuffled
        from edgeflow.scenario.frames import folder_frames, moving_object_video

        if spec.source == "video":
            inputs = moving_object_video(n, input_shape[2], spec.motion, seed=spec.seed)
        else:
            folder = Path(spec.frames_dir or "")
            inputs = folder_frames(folder if folder.is_absolute() or base_dir is None else base_dir / folder, n,
                                   input_shape[2])  # fmt: skip
        return Workload(inputs, None, _send_times(spec, rng), np.arange(n) % spec.devices, np.arange(n), spec)
    if spec.source == "demo-test":
        images, labels = _demo_test(input_shape[2])
        if spec.distinct is not None:
            pool = rng.permutation(len(images))[: spec.distinct]
            order = pool[rng.integers(0, len(pool), n)]
        else:
            order = np.concatenate([rng.permutation(len(images)) for _ in range(-(-n // len(images)))])[:n]
        inputs = images[torch.from_numpy(order)].contiguous()  # (R, 3, S, S)
        y: np.ndarray | None = labels.numpy()[order]
    else:
        from edgeflow.core.data import photo_batch

        if spec.distinct is not None:
            d = min(spec.distinct, n)
            order = rng.integers(0, d, n)
            inputs = photo_batch(d, input_shape[2], seed=spec.seed)[torch.from_numpy(order)].contiguous()
        else:
            order = np.arange(n)
            inputs = photo_batch(n, input_shape[2], seed=spec.seed)
        y = None
    send_s = _send_times(spec, rng)
    device_of = np.arange(n) % spec.devices
    return Workload(inputs, y, send_s, device_of, order, spec)


def _send_times(spec: WorkloadSpec, rng: np.random.Generator) -> np.ndarray | None:
    n = spec.requests
    if spec.arrival == "closed":
        return None
    if spec.arrival == "fixed":
        return np.arange(n, dtype=np.float64) / spec.rate_hz
    gaps = rng.exponential(1.0 / spec.rate_hz, size=n)  # Poisson arrivals: exponential gaps
    gaps[0] = 0.0
    return np.cumsum(gaps)


@torch.inference_mode()
def reference_predictions(model: torch.nn.Module, inputs: torch.Tensor, batch_size: int = 128) -> np.ndarray:
    """Top-1 predictions of the unsplit fp32 model, (R,) int64: what ``agreement`` compares against."""
    out = [model(inputs[i : i + batch_size]).argmax(dim=-1) for i in range(0, len(inputs), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)
