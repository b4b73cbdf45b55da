"""The workload: which input each request carries, when it is sent, and from which device.

Built once per scenario from its seed, so every run (edgeflow and each baseline) replays the same requests at
the same offsets from its start. Pure: torch + numpy, no clocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch

from edgeflow.errors import ScenarioError
from edgeflow.scenario.schema import WorkloadSpec

__all__ = ["Inputs", "Workload", "build_workload", "reference_predictions", "take", "count"]

# A batch of model inputs: one tensor, or one tensor per model input (e.g. token ids and attention mask), dim 0 the
# request index in every one.
Inputs = Union[torch.Tensor, tuple[torch.Tensor, ...]]


def take(inputs: Inputs, start: int, stop: int) -> Inputs:
    """Requests ``start..stop-1`` of ``inputs``, contiguous (a tensor stays a tensor, a tuple a tuple)."""
    if isinstance(inputs, tuple):
        return tuple(t[start:stop].contiguous() for t in inputs)
    return inputs[start:stop].contiguous()


def count(inputs: Inputs) -> int:
    """The number of requests in ``inputs``."""
    return int((inputs[0] if isinstance(inputs, tuple) else inputs).shape[0])


@dataclass(frozen=True)
class Workload:
    """Requests of one scenario, indexed 0..R-1.

    Attributes:
        inputs: (R, C, H, W) float32 model inputs, one per request; for a model of several inputs a tuple of them,
            e.g. token ids and attention mask (R, T) int64 each.
        labels: (R,) int64 ground truth, or None for unlabelled (synthetic) data.
        send_s: (R,) open loop: send time of each request after the run starts; None for a closed loop.
        device_of: (R,) index of the device that sends each request.
        sample_index: (R,) index of each input in its data set.
        spec: what it was built from.
    """

    inputs: Inputs
    labels: np.ndarray | None
    send_s: np.ndarray | None
    device_of: np.ndarray
    sample_index: np.ndarray
    spec: WorkloadSpec

    def __len__(self) -> int:
        return count(self.inputs)

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


def build_workload(spec: WorkloadSpec, input_shape: tuple[int, ...], *, artifact: str = "",
                   scenario_dir: Path = Path(".")) -> Workload:
    """Draw the requests of ``spec`` for a model taking ``input_shape`` (batch 1, e.g. (1, 3, 64, 64)).

    A sentence file (``source: FILE.txt``, relative to ``scenario_dir``) is tokenized for the text model
    ``artifact`` (``edgeflow.scenario.text_workload``).

    Raises:
        ScenarioError: the data does not fit the model (a demo-test workload for a model of another size, a
            model that does not take images, a text file for a model that does not take text).
    """
    from edgeflow.scenario.text_workload import is_text_source, tokenize_workload

    if is_text_source(spec.source):
        rng = np.random.default_rng(spec.seed)
        tokens, order = tokenize_workload(spec, artifact, scenario_dir, rng)
        return Workload(tokens, None, _send_times(spec, rng), np.arange(spec.requests) % spec.devices, order, spec)
    if len(input_shape) != 4 or input_shape[1] != 3 or input_shape[2] != input_shape[3]:
        raise ScenarioError(f"workload: the model takes {list(input_shape)}; only square RGB image models are supported")
    rng = np.random.default_rng(spec.seed)
    n = spec.requests
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
def reference_predictions(model: torch.nn.Module, inputs: Inputs, batch_size: int = 128) -> np.ndarray:
    """What ``agreement`` compares against: the unsplit fp32 model's top-1 predictions, (R,) int64; for a model
    of several inputs (a sentence encoder) its outputs themselves, (R, C) float32 (compared by cosine), computed one
    request at a time as the device sends them (a batched matmul may round differently: bit-exact is checked)."""
    if isinstance(inputs, tuple):
        outs = [model(*take(inputs, i, i + 1)) for i in range(count(inputs))]
        return torch.cat(outs).float().numpy() if outs else np.zeros((0, 0), dtype=np.float32)
    out = [model(inputs[i : i + batch_size]).argmax(dim=-1) for i in range(0, len(inputs), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)
