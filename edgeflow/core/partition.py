"""Cut any PyTorch model into runnable slices.

The model is traced once (``torch.fx.symbolic_trace``; ``torch.export`` when fx cannot trace it, or when the
fx graph does not reproduce the model on the example input). The traced graph's compute nodes, in topological
order, define *positions*: position ``k`` is the boundary after the first ``k`` nodes, ``0`` is the model input
and ``N`` its output. Every value defined before ``k`` and used at or after ``k`` is *live* at ``k`` and crosses
a cut there — so a skip connection crosses as an extra tensor, and a model input used late is passed through
the earlier slices.

Any range ``[a:b]`` can be turned into a module at any time (an agent re-planned to another range needs no
redeploy): the slice takes the live values at ``a`` as positional arguments and returns the live values at
``b`` — one tensor bare, several as a tuple — and the last slice returns exactly what the model returns.
Slices share parameters with the model (nothing is copied), and running them in order executes the same ops
in the same order as the model, so the composition is bit-exact.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.fx as fx
from torch import nn

from edgeflow.errors import PartitionError

__all__ = ["TensorInfo", "CutInfo", "Partition", "partition"]


@dataclass(frozen=True)
class TensorInfo:
    """One value crossing a position, as seen on the example input.

    Attributes:
        name: graph node name that produced it (stable across processes for the same model).
        shape: shape on the example input; dim 0 is the batch dim when the model is batched.
        dtype: torch dtype name, e.g. ``"float32"``.
        nbytes: bytes of the dense tensor on the example input.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "nbytes": self.nbytes}


@dataclass(frozen=True)
class CutInfo:
    """What crosses one position.

    Attributes:
        position: the position (cut id).
        tensors: live values at the position, in the order a slice starting here takes them.
        primary: index into ``tensors`` of the main feature map: the most recently computed value
            (where an early-exit head attaches).
        valid: whether every live value is a dense tensor (only then is the position a candidate cut).
        reason: why the position is not a candidate cut, or ``""``.
    """

    position: int
    tensors: tuple[TensorInfo, ...]
    primary: int
    valid: bool = True
    reason: str = ""

    @property
    def nbytes(self) -> int:
        """Total fp32-equivalent bytes of the crossing tensors as stored (their own dtypes)."""
        return sum(t.nbytes for t in self.tensors)

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "nbytes": self.nbytes,
            "primary": self.primary,
            "tensors": [t.to_json() for t in self.tensors],
        }


class _Recorder(fx.Interpreter):
    """Runs the graph once and keeps every node's output (shape propagation with real values)."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm, garbage_collect_values=False)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n] = out
        return out


def _trace_fx(model: nn.Module) -> fx.GraphModule:
    return fx.symbolic_trace(model)


def _trace_export(model: nn.Module, args: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    ep = torch.export.export(model, args)
    gm = ep.module()
    # The export module checks input shapes in a `_guards_fn` call; slices take other inputs, drop it.
    for n in list(gm.graph.nodes):
        if n.op == "call_module" and str(n.target).startswith("_guards_fn") and not n.users:
            gm.graph.erase_node(n)
    gm.recompile()
    return gm


def _same(a: Any, b: Any) -> bool:
    """Bit-exact structural equality of model outputs."""
    if isinstance(a, torch.Tensor):
        return (
            isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and torch.equal(torch.nan_to_num(a), torch.nan_to_num(b))
            and torch.equal(torch.isnan(a), torch.isnan(b))
        )
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


class _Unflatten(nn.Module):
    """Last slice of an exported graph: restores the model's output structure from the flat outputs."""

    def __init__(self, gm: fx.GraphModule, out_spec: Any):
        super().__init__()
        self.gm = gm
        self._out_spec = out_spec

    def forward(self, *args: Any) -> Any:
        flat = self.gm(*args)
        return torch.utils._pytree.tree_unflatten(list(flat), self._out_spec)


class Partition:
    """A traced model with its candidate cuts. Build it with :func:`partition`.

    Attributes:
        model: the original module (slices share its parameters).
        gm: the traced graph module.
        tracer: ``"fx"`` or ``"export"``.
        num_positions: N, the number of compute nodes; positions run 0..N.
        cuts: candidate cut positions (interior positions where only tensors cross), increasing.
    """

    def __init__(self, model: nn.Module, gm: fx.GraphModule, tracer: str, values: dict[fx.Node, Any]):
        self.model = model
        self.gm = gm
        self.tracer = tracer
        graph_nodes = list(gm.graph.nodes)
        self._placeholders = [n for n in graph_nodes if n.op == "placeholder"]
        self._output = next(n for n in graph_nodes if n.op == "output")
        self._nodes = [n for n in graph_nodes if n.op in ("call_function", "call_method", "call_module")]
        self.num_positions = len(self._nodes)
        self._index = {n: i for i, n in enumerate(self._nodes)}
        self._out_spec = getattr(gm, "_out_spec", None) if tracer == "export" else None
        self._live = self._live_sets()
        self._infos = [self._make_info(k, values) for k in range(self.num_positions + 1)]
        self.cuts = [k for k in range(1, self.num_positions) if self._infos[k].valid]
        self._slices: dict[tuple[int, int], nn.Module] = {}

    # ---------------------------------------------------------------- analysis
    def _live_sets(self) -> list[list[fx.Node]]:
        """live[k]: values defined before position k and used at or after it, in definition order."""
        n_pos = self.num_positions
        last_use: dict[fx.Node, int] = {}
        def_pos: dict[fx.Node, int] = {}
        for p in self._placeholders:
            def_pos[p] = 0
        for i, n in enumerate(self._nodes):
            def_pos[n] = i + 1
        for v in def_pos:
            uses = [n_pos if u.op == "output" else self._index[u] for u in v.users if u.op != "get_attr"]
            uses = [u for u in uses if u is not None]
            if uses:
                last_use[v] = max(uses)
        live: list[list[fx.Node]] = [[] for _ in range(n_pos + 1)]
        for v, d in def_pos.items():  # dict order == definition order
            for k in range(d, last_use.get(v, -1) + 1):
                live[k].append(v)
        live[0] = list(self._placeholders)  # slice 0 takes exactly the model's inputs
        return live

    def _make_info(self, k: int, values: dict[fx.Node, Any]) -> CutInfo:
        tensors: list[TensorInfo] = []
        reason = ""
        for v in self._live[k]:
            val = values.get(v)
            if isinstance(val, torch.Tensor) and val.layout == torch.strided and not val.is_quantized:
                nbytes = val.numel() * val.element_size()
                tensors.append(TensorInfo(v.name, tuple(val.shape), str(val.dtype).removeprefix("torch."), nbytes))
            elif not reason:
                reason = f"value {v.name!r} crossing position {k} is {type(val).__name__}, not a dense tensor"
        primary = len(tensors) - 1 if tensors else 0  # live values are in definition order
        return CutInfo(position=k, tensors=tuple(tensors), primary=primary, valid=not reason, reason=reason)

    # ---------------------------------------------------------------- queries
    @property
    def signature(self) -> str:
        """Hash of the traced graph's structure: tiers agree on positions iff their signatures match."""
        h = hashlib.sha256(self.tracer.encode())
        for n in self._placeholders + self._nodes:
            h.update(f"{n.op}|{n.name}|{getattr(n.target, '__name__', n.target)}\n".encode())
        return h.hexdigest()

    def node_name(self, i: int) -> str:
        """Name of compute node ``i`` (the one run between positions ``i`` and ``i+1``)."""
        return self._nodes[i].name

    def node_label(self, i: int) -> str:
        """A short human label of compute node ``i``: module path for modules, op name otherwise."""
        n = self._nodes[i]
        if n.op == "call_module":
            return str(n.target)
        return getattr(n.target, "__name__", str(n.target))

    def cut_info(self, position: int) -> CutInfo:
        """What crosses ``position`` (0..N; 0 = model inputs, N = model outputs).

        Raises:
            PartitionError: position out of range.
        """
        self._check_position(position)
        return self._infos[position]

    def _check_position(self, position: int) -> None:
        if not isinstance(position, int) or isinstance(position, bool):
            raise PartitionError(f"position must be an int, got {type(position).__name__} {position!r}")
        if not 0 <= position <= self.num_positions:
            raise PartitionError(f"position {position} out of range 0..{self.num_positions}")

    def _check_cut(self, cut: int) -> None:
        self._check_position(cut)
        if cut in (0, self.num_positions):
            raise PartitionError(f"cut {cut} out of range 1..{self.num_positions - 1} (0 and N are the model's ends)")
        info = self._infos[cut]
        if not info.valid:
            raise PartitionError(f"cut {cut} is not a candidate cut: {info.reason}")

    # ---------------------------------------------------------------- slicing
    def range_module(self, start: int, stop: int) -> nn.Module:
        """The module that runs positions ``[start:stop]``.

        It takes the live values at ``start`` as positional arguments and returns the live values at ``stop``
        (one tensor bare, several as a tuple); with ``stop == N`` it returns exactly what the model returns.

        Raises:
            PartitionError: positions out of range, not increasing, or not candidate cuts.
        """
        for p in (start, stop):
            self._check_position(p)
            if p not in (0, self.num_positions):
                self._check_cut(p)
        if start >= stop:
            raise PartitionError(f"range [{start}:{stop}] is empty: start must be < stop")
        return self._range_module(start, stop)

    def _range_module(self, start: int, stop: int) -> nn.Module:
        key = (start, stop)
        if key not in self._slices:
            self._slices[key] = self._build_range(start, stop)
        return self._slices[key]

    def _build_range(self, start: int, stop: int) -> nn.Module:
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        for v in self._live[start]:
            ph = graph.placeholder(v.name, type_expr=v.type)
            if v.op == "placeholder" and v.args:
                ph.args = v.args  # keep default values of optional model inputs
            ph.meta = dict(v.meta)
            env[v] = ph

        def lookup(a: fx.Node) -> fx.Node:
            if a not in env:  # a parameter/buffer fetched by this slice
                if a.op != "get_attr":
                    raise AssertionError(f"node {a.name} used before it is defined in [{start}:{stop}]")
                env[a] = graph.node_copy(a, lookup)
            return env[a]

        for n in self._nodes[start:stop]:
            env[n] = graph.node_copy(n, lookup)
        final = stop == self.num_positions
        if final:
            graph.output(fx.map_arg(self._output.args[0], lookup))
        else:
            outs = [lookup(v) for v in self._live[stop]]
            graph.output(outs[0] if len(outs) == 1 else tuple(outs))
        graph.lint()
        gm = fx.GraphModule(self.gm, graph, class_name=f"Slice_{start}_{stop}")
        if final and self._out_spec is not None:
            return _Unflatten(gm, self._out_spec)
        return gm

    def split(self, cuts: Sequence[int]) -> list[nn.Module]:
        """Cut the model at ``cuts`` into ``len(cuts) + 1`` slices.

        Args:
            cuts: strictly increasing positions taken from :attr:`cuts`.

        Returns:
            Modules to call in order; each takes the previous one's output (a tuple unpacked as positional
            arguments), the first takes the model's inputs, the last returns the model's output.

        Raises:
            PartitionError: a cut out of range, not a candidate, or cuts not strictly increasing.
        """
        cuts = list(cuts)
        for c in cuts:
            self._check_cut(c)
        if any(b <= a for a, b in zip(cuts, cuts[1:])):
            raise PartitionError(f"cuts must be strictly increasing, got {cuts}")
        bounds = [0, *cuts, self.num_positions]
        return [self._range_module(a, b) for a, b in zip(bounds, bounds[1:])]

    def run_range(self, start: int, stop: int, *values: Any) -> Any:
        """Run positions ``[start:stop]`` on the live values at ``start``; see :meth:`range_module`."""
        return self.range_module(start, stop)(*values)

    def activations(self, *inputs: Any, positions: Sequence[int] | None = None) -> dict[int, list[Any]]:
        """The values crossing each position on ``inputs``, from one run of the whole graph.

        Args:
            inputs: model inputs.
            positions: positions to return (default: 0, every candidate cut, and N).

        Returns:
            position -> live values in the order a slice starting there takes them.
        """
        wanted = [0, *self.cuts, self.num_positions] if positions is None else list(positions)
        for k in wanted:
            self._check_position(k)
        rec = _Recorder(self.gm)
        with torch.no_grad():
            rec.run(*inputs)
        env: dict[fx.Node, Any] = dict(rec.values)
        for ph, x in zip(self._placeholders, inputs):
            env[ph] = x
        return {k: [env[v] for v in self._live[k]] for k in wanted}

    def __repr__(self) -> str:
        return f"Partition({type(self.model).__name__}, tracer={self.tracer}, N={self.num_positions}, cuts={len(self.cuts)})"


def compose(slices: Sequence[Callable[..., Any]], *inputs: Any) -> Any:
    """Run ``slices`` in order on ``inputs``, unpacking tuples between slices (the split contract)."""
    out: Any = inputs
    for s in slices:
        out = s(*out) if isinstance(out, tuple) else s(out)
    return out


def partition(model: nn.Module, example_input: torch.Tensor | tuple[Any, ...]) -> Partition:
    """Trace ``model`` on ``example_input`` and find its candidate cuts.

    Tries ``torch.fx.symbolic_trace`` first, and ``torch.export`` when fx cannot trace the model or its graph
    does not reproduce ``model(example_input)`` bit-exactly (e.g. Python control flow fx baked in).

    Args:
        model: any ``nn.Module``; put it in eval mode first if it has batch norm or dropout.
        example_input: a tensor, or a tuple of tensors for several inputs.

    Returns:
        The :class:`Partition`.

    Raises:
        PartitionError: neither tracer can capture the model; the message gives both causes.
    """
    if not isinstance(model, nn.Module):
        raise PartitionError(f"model must be an nn.Module, got {type(model).__name__}")
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    with torch.no_grad():
        try:
            expected = model(*args)
        except Exception as e:  # the user's model failing on its own example is a partition error
            raise PartitionError(f"model fails on the example input: {type(e).__name__}: {e}") from e
        causes = []
        for name, trace in (("fx", _trace_fx), ("export", lambda m: _trace_export(m, args))):
            try:
                gm = trace(model)
                rec = _Recorder(gm)
                got = rec.run(*args)
            except Exception as e:  # tracers raise many types; report and try the next one
                causes.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                continue
            if not _same(expected, got):
                causes.append(f"{name}: traced graph does not reproduce the model's output on the example input")
                continue
            return Partition(model, gm, name, rec.values)
    raise PartitionError(f"cannot trace {type(model).__name__}: " + "; ".join(causes))
