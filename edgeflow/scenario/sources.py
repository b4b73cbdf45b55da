"""Workload data from the user's files: a folder of images, a ``.npy`` or ``.safetensors`` tensor file.

``workload.source`` is a path (relative to the scenario file) besides the keywords ``demo-test`` and ``synthetic``
(:mod:`edgeflow.scenario.workload`):

- **a folder of images** (``.png .jpg .jpeg .bmp .webp``, searched recursively, in sorted path order): each image is
  converted to RGB (grey for a one-channel model), scaled so it covers the model's H x W (aspect kept, bilinear)
  and center-cropped to it, then laid out (C, H, W) as float32 in [0, 1] -- what the demo model and
  ``edgeflow infer --input x.png`` take. A model that wants ImageNet-style inputs gets ``workload.normalize:
  {mean: [...], std: [...]}`` ((x - mean) / std per channel). Labels: ``labels: folders`` reads each image's class
  from its first subfolder (names that are all integers are the class indices; otherwise the sorted names are
  0, 1, ..., torchvision's ``ImageFolder`` rule), or ``labels: FILE``, a text file of ``<image path relative to
  the folder> <class index>`` lines (``#`` comments).
- **a ``.npy`` file**: one array, (N, *input shape), read memory-mapped without pickle; ``labels: y.npy`` an (N,)
  integer array.
- **a ``.safetensors`` file**: the input tensor(s), (N, *input shape) each (one tensor, or one per model input named
  as the input), and optionally an (N,) integer tensor named ``labels`` (or ``labels: y.npy``).

Every source is checked against the model's inputs by one function, :func:`check_inputs` (count, dtype, shape;
the message names the field, e.g. ``workload.source: x.npy: shape (10, 3, 32, 32) does not match the model input
(3, 64, 64)``), so a scenario's ``edgeflow run --check`` refuses a file that does not fit before anything starts.

Bounded: a tensor or image file larger than ``workload.max_file_mb`` (default 1024) is refused before it is read;
an image over 64 megapixels is refused before it is decoded; a folder is listed up to 100 000 entries; only the
inputs the requests use are read (at most ``workload.requests`` distinct samples, the rows of a tensor file read
one by one from a memory map or the safetensors file), and the workload's inputs may hold at most 2 GiB
(``requests`` x one input's bytes), checked before any is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from edgeflow.errors import ScenarioError

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_WORKLOAD_BYTES",
    "ExpectedInput",
    "FileSource",
    "check_inputs",
    "open_source",
    "is_file_source",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MAX_WORKLOAD_BYTES = 2 << 30  # the inputs a workload holds in memory: requests x one input's bytes
MAX_LISTED = 100_000  # entries walked in an image folder
MAX_IMAGE_PIXELS = 64_000_000  # refused before decoding (a small file can declare a huge image)
MAX_LABELS_FILE_BYTES = 64 << 20
KEYWORDS = ("demo-test", "synthetic", "video", "frames")
_FIELD = "workload.source"

_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}  # fmt: skip


@dataclass(frozen=True)
class ExpectedInput:
    """One model input a workload must feed: its name, the shape of one sample (no batch dim), its dtype, and an
    example value (batch 1) that synthetic data takes its integer range from.

    (Multi-input models describe their inputs as ``edgeflow.core.inputs.InputSpec``; these are the same fields.)
    """

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    example: torch.Tensor | None = None

    @property
    def sample_nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * torch.empty((), dtype=self.dtype).element_size()


def _shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ")"


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_inputs(what: str, given: Sequence[tuple[str, tuple[int, ...], torch.dtype]], expected: Sequence[ExpectedInput],
                 *, field: str = _FIELD) -> int:  # fmt: skip
    """Check that tensors holding N samples each fit the model's inputs; returns N.

    Args:
        what: the file or folder, as the message shows it (``x.npy``).
        given: ``(name, shape with the sample dim first, dtype)`` of each input tensor the source holds.
        expected: the model's inputs (one sample each).
        field: the scenario field the source comes from.

    Raises:
        ScenarioError: a count, rank, shape or dtype that does not match, or tensors with different sample counts,
            naming ``field`` and ``what``.
    """
    if len(given) != len(expected):
        names = ", ".join(n for n, _, _ in given) or "none"
        want = ", ".join(e.name for e in expected)
        raise ScenarioError(f"{field}: {what}: holds {len(given)} input tensor(s) ({names}); the model takes "
                            f"{len(expected)} ({want})")  # fmt: skip
    by_name = {n: (s, d) for n, s, d in given}
    if len(expected) > 1 and set(by_name) != {e.name for e in expected}:
        raise ScenarioError(f"{field}: {what}: holds tensors {', '.join(sorted(by_name))}; the model's inputs are "
                            f"named {', '.join(e.name for e in expected)}")  # fmt: skip
    counts = set()
    for i, e in enumerate(expected):
        shape, dtype = by_name[e.name] if len(expected) > 1 else given[0][1:]
        label = f"input {e.name!r}: " if len(expected) > 1 else ""
        if len(shape) != len(e.shape) + 1 or tuple(shape[1:]) != tuple(e.shape):
            raise ScenarioError(f"{field}: {what}: {label}shape {_shape(shape)} does not match the model input "
                                f"{_shape(e.shape)} (expected (N, {_shape(e.shape)[1:]})")  # fmt: skip
        if dtype != e.dtype:
            raise ScenarioError(f"{field}: {what}: {label}dtype {_dtype(dtype)} does not match the model input's "
                                f"{_dtype(e.dtype)}")  # fmt: skip
        counts.add(int(shape[0]))
    if len(counts) > 1:
        raise ScenarioError(f"{field}: {what}: the input tensors hold different numbers of samples {sorted(counts)}")
    n = counts.pop()
    if n == 0:
        raise ScenarioError(f"{field}: {what}: holds no samples")
    return n


class FileSource:
    """A workload source read from files; :meth:`load` reads only the samples asked for.

    Attributes:
        what: the path as messages show it.
        count: samples it holds.
        labels: (count,) int64 class indices, or None.
        labels_from: where the labels come from, in words (None without labels).
    """

    what: str
    count: int
    labels: np.ndarray | None = None
    labels_from: str | None = None

    def load(self, index: np.ndarray) -> torch.Tensor:
        """The samples at ``index`` (sorted, distinct), (len(index), *input shape)."""
        raise NotImplementedError

    def describe(self) -> str:
        lab = f"labels from {self.labels_from}" if self.labels_from else "no labels (fidelity: agreement)"
        return f"{self.what}: {self.count} samples, {lab}"


def is_file_source(source: str) -> bool:
    """Whether ``workload.source`` names a file or folder (not one of :data:`KEYWORDS`)."""
    return source not in KEYWORDS


def open_source(spec: Any, expected: Sequence[ExpectedInput], base_dir: Path) -> FileSource:
    """Open ``spec.source`` (a path relative to ``base_dir``) and check it against the model's ``expected`` inputs.

    Args:
        spec: the scenario's ``WorkloadSpec``.
        expected: the model's inputs.
        base_dir: the scenario file's folder.

    Raises:
        ScenarioError: missing, unreadable, too large or of an unknown kind; or not matching the model's inputs
            (see :func:`check_inputs`); or bad labels (naming ``workload.labels``).
    """
    path = _resolve(spec.source, base_dir)
    limit = int(spec.max_file_mb * (1 << 20))
    if path.is_dir():
        src: FileSource = _ImageFolder(path, spec, expected, base_dir, limit)
    elif not path.exists():
        raise ScenarioError(f"{_FIELD}: {spec.source}: no such file or folder (in {base_dir}); a source is "
                            f"{', '.join(KEYWORDS)}, a folder of images, a .npy or a .safetensors file, or a .txt of sentences")  # fmt: skip
    elif path.suffix.lower() == ".npy":
        src = _Npy(path, spec.source, expected, limit)
    elif path.suffix.lower() == ".safetensors":
        src = _Safetensors(path, spec.source, expected, limit)
    else:
        raise ScenarioError(f"{_FIELD}: {spec.source}: unsupported file type {path.suffix!r}; use a folder of "
                            f"images, a .npy or a .safetensors file")  # fmt: skip
    if spec.labels is not None and src.labels is None:
        src.labels, src.labels_from = _npy_labels(_resolve(spec.labels, base_dir), spec.labels, src.count, limit), spec.labels
    return src


def _resolve(name: str, base_dir: Path) -> Path:
    p = Path(name).expanduser()
    return p if p.is_absolute() else base_dir / p


def _check_size(path: Path, what: str, limit: int, field: str = _FIELD) -> None:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ScenarioError(f"{field}: {what}: cannot read: {e.strerror or e}") from None
    if size > limit:
        raise ScenarioError(f"{field}: {what}: {size / (1 << 20):.1f} MiB is larger than the {limit / (1 << 20):g} MiB "
                            f"limit (workload.max_file_mb)")  # fmt: skip


def _npy_labels(path: Path, what: str, count: int, limit: int) -> np.ndarray:
    if path.suffix.lower() != ".npy":
        raise ScenarioError(f"workload.labels: {what}: for a tensor file, labels are a .npy file of (N,) class indices")
    _check_size(path, what, limit, field="workload.labels")
    try:
        y = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ScenarioError(f"workload.labels: {what}: cannot load: {e}") from None
    return _check_labels(y, what, count)


def _check_labels(y: Any, what: str, count: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (count,) or not np.issubdtype(y.dtype, np.integer):
        raise ScenarioError(f"workload.labels: {what}: labels must be ({count},) integers, one per sample; got "
                            f"{_shape(y.shape)} {y.dtype}")  # fmt: skip
    if count and int(y.min()) < 0:
        raise ScenarioError(f"workload.labels: {what}: class indices must be >= 0 (found {int(y.min())})")
    return y.astype(np.int64)


class _Npy(FileSource):
    def __init__(self, path: Path, what: str, expected: Sequence[ExpectedInput], limit: int):
        self.what = what
        _check_size(path, what, limit)
        try:
            self._arr = np.load(path, mmap_mode="r", allow_pickle=False)  # rows read on demand
            dtype = torch.from_numpy(np.zeros(0, dtype=self._arr.dtype)).dtype
        except (OSError, ValueError, TypeError) as e:
            raise ScenarioError(f"{_FIELD}: {what}: cannot load as a numeric array: {e}") from None
        self.count = check_inputs(what, [(expected[0].name if len(expected) == 1 else path.stem, self._arr.shape, dtype)],
                                  expected)  # fmt: skip

    def load(self, index: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self._arr[index]))


class _Safetensors(FileSource):
    def __init__(self, path: Path, what: str, expected: Sequence[ExpectedInput], limit: int):
        from safetensors import safe_open

        self.what, self._path = what, path
        _check_size(path, what, limit)
        try:
            with safe_open(str(path), framework="pt") as f:
                heads = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
        except Exception as e:  # safetensors raises its own SafetensorError (and OSError) on a bad header
            raise ScenarioError(f"{_FIELD}: {what}: not a readable safetensors file: {e}") from None
        unknown = {k: d for k, (_, d) in heads.items() if d not in _SAFETENSORS_DTYPES}
        if unknown:
            raise ScenarioError(f"{_FIELD}: {what}: unsupported dtype(s) {unknown}")
        label = heads.pop("labels", None)
        given = [(k, s, _SAFETENSORS_DTYPES[d]) for k, (s, d) in sorted(heads.items())]
        self.count = check_inputs(what, given, expected)
        self._names = [e.name if len(expected) > 1 else given[0][0] for e in expected]
        if label is not None:
            with safe_open(str(path), framework="pt") as f:
                self.labels = _check_labels(f.get_tensor("labels").numpy(), f"{what}: labels", self.count)
            self.labels_from = f"the 'labels' tensor of {what}"

    def load(self, index: np.ndarray) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self._path), framework="pt") as f:
            rows = f.get_slice(self._names[0])
            return torch.cat([rows[int(i) : int(i) + 1] for i in index]) if len(index) else torch.zeros(0)


class _ImageFolder(FileSource):
    def __init__(self, path: Path, spec: Any, expected: Sequence[ExpectedInput], base_dir: Path, limit: int):
        self.what, self._root, self._limit = spec.source, path, limit
        e = expected[0]
        if len(expected) != 1 or len(e.shape) != 3 or e.shape[0] not in (1, 3) or not e.dtype.is_floating_point:
            want = ", ".join(f"{x.name} {_shape(x.shape)} {_dtype(x.dtype)}" for x in expected)
            raise ScenarioError(f"{_FIELD}: {self.what}: a folder of images feeds a model taking one (C, H, W) float "
                                f"image with C 1 or 3; the model takes {want}")  # fmt: skip
        self._channels, self._size, self._dtype = e.shape[0], (e.shape[1], e.shape[2]), e.dtype
        self._norm = None
        if spec.normalize is not None:
            mean, std = list(spec.normalize.mean), list(spec.normalize.std)
            if len(mean) != self._channels or len(std) != self._channels:
                raise ScenarioError(f"workload.normalize: mean and std need {self._channels} values (one per channel), "
                                    f"got {len(mean)} and {len(std)}")  # fmt: skip
            self._norm = (torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1))
        self._files = _list_images(path, self.what)
        self.count = check_inputs(self.what, [(e.name, (len(self._files), *e.shape), e.dtype)], expected)
        if spec.labels == "folders":
            self.labels, self.labels_from = _folder_labels(self._files, self.what)
        elif spec.labels is not None:
            self.labels = _file_labels(_resolve(spec.labels, base_dir), spec.labels, self._files)
            self.labels_from = spec.labels

    def load(self, index: np.ndarray) -> torch.Tensor:
        out = torch.empty((len(index), self._channels, *self._size), dtype=self._dtype)
        for k, i in enumerate(index):
            out[k] = self._image(self._files[int(i)])
        return out

    def _image(self, rel: str) -> torch.Tensor:
        from PIL import Image

        what = f"{self.what}/{rel}"
        path = self._root / rel
        _check_size(path, what, self._limit)
        h, w = self._size
        try:
            with Image.open(path) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise ScenarioError(f"{_FIELD}: {what}: {im.width}x{im.height} pixels is over the "
                                        f"{MAX_IMAGE_PIXELS // 1_000_000} megapixel limit")  # fmt: skip
                scale = max(h / im.height, w / im.width)  # cover H x W, keep the aspect, then center-crop
                im.draft(None, (max(w, round(im.width * scale)), max(h, round(im.height * scale))))  # JPEG: decode smaller
                im = im.convert("RGB" if self._channels == 3 else "L")
                scale = max(h / im.height, w / im.width)
                size = (max(w, round(im.width * scale)), max(h, round(im.height * scale)))
                if size != im.size:
                    im = im.resize(size, Image.BILINEAR)
                left, top = (im.width - w) // 2, (im.height - h) // 2
                arr = np.asarray(im.crop((left, top, left + w, top + h)), dtype=np.float32) / 255.0
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise ScenarioError(f"{_FIELD}: {what}: cannot read as an image: {e}") from None
        x = torch.from_numpy(arr.reshape(h, w, self._channels)).permute(2, 0, 1)  # (C, H, W) in [0, 1]
        if self._norm is not None:
            x = (x - self._norm[0]) / self._norm[1]
        return x.to(self._dtype)


def _list_images(root: Path, what: str) -> list[str]:
    """Image files under ``root`` (relative, POSIX, sorted), at most :data:`MAX_LISTED` entries walked."""
    found: list[str] = []
    seen = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        seen += len(dirs) + len(files)
        if seen > MAX_LISTED:
            raise ScenarioError(f"{_FIELD}: {what}: more than {MAX_LISTED} entries; use a smaller folder")
        rel = Path(folder).relative_to(root)
        found += [(rel / f).as_posix() for f in files if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)]
    if not found:
        raise ScenarioError(f"{_FIELD}: {what}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    return sorted(found)


def _folder_labels(files: Sequence[str], what: str) -> tuple[np.ndarray, str]:
    tops = [f.split("/", 1)[0] if "/" in f else None for f in files]
    loose = [f for f, t in zip(files, tops) if t is None]
    if loose:
        raise ScenarioError(f"workload.labels: folders: {what}/{loose[0]} is not inside a class subfolder")
    names = sorted(set(t for t in tops if t is not None))
    if all(n.isdigit() for n in names):
        index = {n: int(n) for n in names}
        how = "subfolder names (class indices)"
    else:
        index = {n: i for i, n in enumerate(names)}
        shown = ", ".join(f"{n}={i}" for n, i in list(index.items())[:10]) + (", ..." if len(names) > 10 else "")
        how = f"subfolder names, sorted ({shown})"
    return np.array([index[t] for t in tops if t is not None], dtype=np.int64), how


def _file_labels(path: Path, what: str, files: Sequence[str]) -> np.ndarray:
    _check_size(path, what, MAX_LABELS_FILE_BYTES, field="workload.labels")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(f"workload.labels: {what}: cannot read: {e}") from None
    table: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or not parts[1].isdigit():
            raise ScenarioError(f"workload.labels: {what}: line {n}: expected '<image path> <class index>', got {line!r}")
        table[Path(parts[0]).as_posix()] = int(parts[1])
    missing = [f for f in files if f not in table]
    if missing:
        raise ScenarioError(f"workload.labels: {what}: no label for {missing[0]} ({len(missing)} images without one)")
    return np.array([table[f] for f in files], dtype=np.int64)
