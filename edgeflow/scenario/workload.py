"""The workload: which input each request carries, when it is sent, and from which device.

Built once per scenario from its seed, so every run (edgeflow and each baseline) replays the same requests at
the same offsets from its start. Pure: torch + numpy, no clocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch

from edgeflow.errors import ScenarioError
from edgeflow.scenario.schema import WorkloadSpec
from edgeflow.scenario.sources import MAX_WORKLOAD_BYTES, ExpectedInput, open_source

__all__ = ["Inputs", "Workload", "ExpectedInput", "expected_inputs", "check_workload", "build_workload",
           "reference_predictions", "take", "count"]

# A batch of model inputs: one tensor, or one tensor per model input (e.g. token ids and attention mask), dim 0 the
# request index in every one.
# A list of sentences stands for a text model's token inputs where the device tokenizes them (Workload.texts).
Inputs = Union[torch.Tensor, tuple[torch.Tensor, ...], list[str]]


def take(inputs: Inputs, start: int, stop: int) -> Inputs:
    """Requests ``start..stop-1`` of ``inputs``, contiguous (a tensor stays a tensor, a tuple a tuple, sentences a
    list)."""
    if isinstance(inputs, list):  # sentences, sent as text to a device agent process
        return inputs[start:stop]
    if isinstance(inputs, tuple):
        return tuple(t[start:stop].contiguous() for t in inputs)
    return inputs[start:stop].contiguous()


def count(inputs: Inputs) -> int:
    """The number of requests in ``inputs``."""
    if isinstance(inputs, list):
        return len(inputs)
    return int((inputs[0] if isinstance(inputs, tuple) else inputs).shape[0])


@dataclass(frozen=True)
class Workload:
    """Requests of one scenario, indexed 0..R-1.

    Attributes:
        inputs: (R, *input shape) model inputs, one per request (e.g. (R, C, H, W) float32 images); for a model of
            several inputs a tuple of them, e.g. token ids and attention mask (R, T) int64 each.
        labels: (R,) int64 ground truth, or None for unlabelled data (the report then gives agreement only).
        send_s: (R,) open loop: send time of each request after the run starts; None for a closed loop.
        device_of: (R,) index of the device that sends each request.
        sample_index: (R,) index of each input in its data set.
        spec: what it was built from.
        labels_from: where the labels come from, in words; None without labels.
        texts: (R,) a sentence workload's sentences (``inputs`` are their tokens), else None.
    """

    inputs: Inputs
    labels: np.ndarray | None
    send_s: np.ndarray | None
    device_of: np.ndarray
    sample_index: np.ndarray
    spec: WorkloadSpec
    labels_from: str | None = None
    texts: list[str] | None = None

    def __len__(self) -> int:
        return count(self.inputs)

    @property
    def duration_s(self) -> float | None:
        """Open loop: the last send time; None for a closed loop."""
        return None if self.send_s is None else float(self.send_s[-1]) if len(self.send_s) else 0.0


def expected_inputs(runtime: Any) -> list[ExpectedInput]:
    """The model inputs a workload must feed: what crosses position 0 of ``runtime`` (a ``ModelRuntime``), one
    sample each (the example input's batch dim dropped)."""
    infos = runtime.cut_info(0).tensors
    examples = runtime.example_input
    return [ExpectedInput(t.name, tuple(t.shape[1:]), getattr(torch, t.dtype), ex[:1])
            for t, ex in zip(infos, examples)]  # fmt: skip


def _as_expected(inputs: tuple[int, ...] | Sequence[ExpectedInput]) -> list[ExpectedInput]:
    if all(isinstance(d, int) for d in inputs):  # a batch-1 float image shape, e.g. (1, 3, 64, 64)
        return [ExpectedInput("input", tuple(int(d) for d in inputs[1:]), torch.float32)]  # type: ignore[arg-type]
    return list(inputs)  # type: ignore[arg-type]


def _check_workload_size(spec: WorkloadSpec, expected: Sequence[ExpectedInput]) -> None:
    per = sum(e.sample_nbytes for e in expected)
    if spec.requests * per > MAX_WORKLOAD_BYTES:
        raise ScenarioError(f"workload.requests: {spec.requests} requests x {per / 1e3:.1f} kB per input = "
                            f"{spec.requests * per / 1e9:.2f} GB of inputs, over the {MAX_WORKLOAD_BYTES >> 30} GiB a "
                            f"workload may hold; lower workload.requests")  # fmt: skip


def check_workload(spec: WorkloadSpec, inputs: tuple[int, ...] | Sequence[ExpectedInput], *,
                   base_dir: Path | None = None) -> str:  # fmt: skip
    """Check, without reading the samples, that ``spec`` can feed a model taking ``inputs`` (``edgeflow run
    --check``); returns a one-line description of the data.

    Raises:
        ScenarioError: the data does not fit the model, or cannot be read (naming the field).
    """
    from edgeflow.scenario.text_workload import is_text_source

    if is_text_source(spec.source):  # read and checked against the text model by read_text_source
        return f"{spec.source}: sentences, tokenized on the device (no labels: cosine vs the unsplit model)"
    expected = _as_expected(inputs)
    _check_workload_size(spec, expected)
    if spec.source == "demo-test":
        from edgeflow.core.data import DEMO_IMAGE_SIZE

        _check_demo(expected, DEMO_IMAGE_SIZE)
        return "demo-test: the demo's labelled test split"
    if spec.source == "synthetic":
        _synthetic_kind(expected)
        return "synthetic: " + ", ".join(f"{e.name} {tuple(e.shape)} {str(e.dtype).removeprefix('torch.')}"
                                         for e in expected) + " (no labels: fidelity is agreement)"  # fmt: skip
    if spec.source in ("video", "frames"):
        size = _frame_size(spec, expected)
        if spec.source == "video":
            return f"video: a synthetic {spec.motion} camera, {size}x{size} frames of one stream per device (no labels)"
        folder = Path(spec.frames_dir or "")
        folder = folder if folder.is_absolute() or base_dir is None else base_dir / folder
        if not folder.is_dir():
            raise ScenarioError(f"workload.frames_dir: {spec.frames_dir}: no such folder")
        return f"frames: the images of {spec.frames_dir}, {size}x{size}, one stream per device (no labels)"
    return open_source(spec, expected, base_dir or Path.cwd()).describe()


def _check_demo(expected: Sequence[ExpectedInput], size: int) -> None:
    e = expected[0]
    if len(expected) != 1 or e.shape != (3, size, size) or e.dtype != torch.float32:
        want = ", ".join(f"{x.name} {tuple(x.shape)} {str(x.dtype).removeprefix('torch.')}" for x in expected)
        raise ScenarioError(f"workload.source: demo-test images are (3, {size}, {size}) float32, the model takes {want}; "
                            "use source: synthetic")  # fmt: skip


def _demo_test(expected: Sequence[ExpectedInput]) -> tuple[torch.Tensor, torch.Tensor]:
    from edgeflow.core.data import DEMO_IMAGE_SIZE, load_demo_dataset

    _check_demo(expected, DEMO_IMAGE_SIZE)
    return load_demo_dataset("test")


def _order(spec: WorkloadSpec, rng: np.random.Generator, count: int) -> np.ndarray:
    """Which sample each request carries: shuffled passes over the data (or draws from ``distinct`` of them)."""
    n = spec.requests
    if spec.distinct is not None:
        pool = rng.permutation(count)[: spec.distinct]
        return pool[rng.integers(0, len(pool), n)]
    return np.concatenate([rng.permutation(count) for _ in range(-(-n // count))])[:n]


def _synthetic_kind(expected: Sequence[ExpectedInput]) -> str:
    if len(expected) != 1:
        raise ScenarioError(f"workload: the model takes {len(expected)} inputs; workloads feed one-input models so far")
    e = expected[0]
    if e.dtype.is_floating_point and len(e.shape) == 3 and e.shape[0] in (1, 3):
        return "photo"
    if e.dtype.is_floating_point or e.dtype == torch.bool or not e.dtype.is_complex:
        return "random"
    raise ScenarioError(f"workload.source: synthetic: cannot generate {e.dtype} inputs")


def _synthetic(expected: Sequence[ExpectedInput], count: int, seed: int) -> torch.Tensor:
    """``count`` inputs matching the model's (one input): photo crops for a (C, H, W) float image (C 1 or 3),
    standard normal values for other float inputs, and for integer inputs uniform integers over the example
    input's range (token ids, masks: values the model has seen)."""
    e = expected[0]
    if _synthetic_kind(expected) == "photo":
        from edgeflow.core.data import photo_batch

        c, h, w = e.shape
        x = photo_batch(count, max(h, w), seed=seed)[:, :, :h, :w]  # (R, 3, H, W) in [0, 1]
        return (x.mean(dim=1, keepdim=True) if c == 1 else x).to(e.dtype).contiguous()
    g = torch.Generator().manual_seed(seed)
    if e.dtype.is_floating_point:
        return torch.randn((count, *e.shape), generator=g).to(e.dtype)
    if e.dtype == torch.bool:
        return torch.rand((count, *e.shape), generator=g) < 0.5
    lo, hi = (int(e.example.min()), int(e.example.max())) if e.example is not None and e.example.numel() else (0, 1)
    return torch.randint(lo, hi + 1, (count, *e.shape), generator=g).to(e.dtype)


def build_workload(spec: WorkloadSpec, inputs: tuple[int, ...] | Sequence[ExpectedInput], *,
                   base_dir: Path | None = None, artifact: str = "") -> Workload:  # fmt: skip
    """Draw the requests of ``spec`` for a model taking ``inputs``: its :func:`expected_inputs`, or the batch-1
    shape of a float image model (e.g. (1, 3, 64, 64)).

    Args:
        spec: the scenario's workload.
        inputs: the model's inputs.
        base_dir: the scenario file's folder (a file or folder source is relative to it; default: the current one).
        artifact: the scenario's ``model.artifact``: a sentence file (``source: FILE.txt``) is tokenized for this
            text model (``edgeflow.scenario.text_workload``).

    Raises:
        ScenarioError: the data does not fit the model (naming the field), cannot be read, or would hold more than
            :data:`~edgeflow.scenario.sources.MAX_WORKLOAD_BYTES` of inputs.
    """
    from edgeflow.scenario.text_workload import is_text_source, tokenize_workload

    if is_text_source(spec.source):
        rng = np.random.default_rng(spec.seed)
        tokens, order, texts = tokenize_workload(spec, artifact, base_dir or Path.cwd(), rng)
        return Workload(tokens, None, _send_times(spec, rng), np.arange(spec.requests) % spec.devices, order, spec,
                        texts=texts)  # fmt: skip
    expected = _as_expected(inputs)
    _check_workload_size(spec, expected)
    rng = np.random.default_rng(spec.seed)
    n = spec.requests
    labels_from: str | None = None
    if spec.source in ("video", "frames"):  # a stream: frames in order, never shuffled
        return Workload(_frames(spec, expected, base_dir), None, _send_times(spec, rng), np.arange(n) % spec.devices,
                        np.arange(n), spec)  # fmt: skip
    if spec.source == "demo-test":
        images, labels = _demo_test(expected)
        order = _order(spec, rng, len(images))
        inputs_t = images[torch.from_numpy(order)].contiguous()  # (R, 3, S, S)
        y: np.ndarray | None = labels.numpy()[order]
        labels_from = "the demo's test split"
    elif spec.source == "synthetic":
        if spec.distinct is not None:
            d = min(spec.distinct, n)
            order = rng.integers(0, d, n)
            inputs_t = _synthetic(expected, d, spec.seed)[torch.from_numpy(order)].contiguous()
        else:
            order = np.arange(n)
            inputs_t = _synthetic(expected, n, spec.seed)
        y = None
    else:
        src = open_source(spec, expected, base_dir or Path.cwd())
        if len(expected) != 1:
            raise ScenarioError(f"workload: the model takes {len(expected)} inputs; workloads feed one-input models so far")
        order = _order(spec, rng, src.count)
        used, back = np.unique(order, return_inverse=True)  # at most `requests` distinct samples are read
        inputs_t = src.load(used)[torch.from_numpy(back.reshape(-1))].contiguous()
        y = None if src.labels is None else src.labels[order]
        labels_from = src.labels_from
    send_s = _send_times(spec, rng)
    device_of = np.arange(n) % spec.devices
    return Workload(inputs_t, y, send_s, device_of, order, spec, labels_from)


def _frame_size(spec: WorkloadSpec, expected: Sequence[ExpectedInput]) -> int:
    """The side of the square RGB float images a stream source makes for this model (else a ScenarioError)."""
    e = expected[0]
    if len(expected) != 1 or len(e.shape) != 3 or e.shape[0] != 3 or e.shape[1] != e.shape[2] or not e.dtype.is_floating_point:
        want = ", ".join(f"{x.name} {tuple(x.shape)} {str(x.dtype).removeprefix('torch.')}" for x in expected)
        raise ScenarioError(f"workload.source: {spec.source} makes square RGB frames, the model takes {want}")
    return int(e.shape[1])


def _frames(spec: WorkloadSpec, expected: Sequence[ExpectedInput], base_dir: Path | None) -> torch.Tensor:
    """A stream's frames (``video`` or ``frames``) for a square RGB float image model."""
    from edgeflow.scenario.frames import folder_frames, moving_object_video

    n, size = spec.requests, _frame_size(spec, expected)
    if spec.source == "video":
        return moving_object_video(n, size, spec.motion, seed=spec.seed)
    folder = Path(spec.frames_dir or "")
    return folder_frames(folder if folder.is_absolute() or base_dir is None else base_dir / folder, n, size)


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
    request at a time as the device sends them (a batched matmul may round differently: bit-exact is checked).
    A model of several outputs (a Hugging Face encoder: hidden states, pooled) is compared on its first, as the
    senders answer with it, flattened per request, (R, T*C)."""
    if isinstance(inputs, tuple):
        outs = [model(*take(inputs, i, i + 1)) for i in range(count(inputs))]
        outs = [(o[0] if isinstance(o, (tuple, list)) else o).reshape(1, -1) for o in outs]
        return torch.cat(outs).float().numpy() if outs else np.zeros((0, 0), dtype=np.float32)
    out = [model(inputs[i : i + batch_size]).argmax(dim=-1) for i in range(0, len(inputs), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)
