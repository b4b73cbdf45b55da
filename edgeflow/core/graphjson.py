"""An exported model's graph as JSON: a list of ATen op calls, rebuilt without the model's Python code.

Why not ``torch.export.save``/``load``: its ``.pt2`` archive (torch 2.13, ``torch/export/pt2_archive/_package.py``)
flags each weight or constant with ``use_pickle`` and loads the flagged ones through Python's unpickler with
``weights_only=False`` -- a crafted archive runs code. edgeflow's artifacts are never unpickled, so the
graph travels as the JSON below and the weights as safetensors tensors beside it.

Format (``to_json``): ``{"nodes": [...], "params": {target: "parameter" | "buffer"}}``; a node is
``{"name", "op", "target", "args", "kwargs"}`` with ``op`` one of ``placeholder``, ``get_attr``,
``call_function``, ``output``. Arguments are JSON values with tags for what JSON lacks: ``{"node": NAME}``
(an earlier node's value), ``{"tuple": [...]}``, ``{"list": [...]}``, ``{"float": HEX}`` (exact, inf and nan
too), ``{"dtype": NAME}``, ``{"device": NAME}``, ``{"layout": NAME}``, ``{"memory_format": NAME}``.

Rebuilding (``from_json``) is a whitelist: a call target is an ATen op overload (``aten.conv2d.default``),
except ops that take a file name (``aten.from_file``), or one of the few Python operators exported graphs use
on symbolic sizes (``operator.mul`` ...). Anything else — a custom op, a higher-order op, a Python function —
is refused, naming the node. The file is untrusted: sizes are bounded and every failure is a ``ValueError``
naming the node (the caller turns it into an :class:`~edgeflow.errors.ArtifactError`).
"""

from __future__ import annotations

import operator
from typing import Any, Mapping

import torch
import torch.fx as fx
from torch import nn

__all__ = ["MAX_NODES", "graph_to_json", "graph_from_json", "check_target", "retarget_devices", "target_name"]

MAX_NODES = 200_000
MAX_ARGS_DEPTH = 8
MAX_ARGS_ITEMS = 100_000

# Python operators torch.export emits on symbolic sizes (batch dim arithmetic); nothing else from Python.
_OPERATORS: dict[str, Any] = {
    f"operator.{name}": getattr(operator, name)
    for name in ("getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pow", "eq", "ne",
                 "lt", "le", "gt", "ge")
}
# Graph nodes that only check things about the example the graph was traced on; dropped when exporting
# (``_assert_tensor_metadata`` pins the device the model was exported on).
DROPPED_TARGETS = frozenset({"aten._assert_tensor_metadata.default"})

_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
    torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128)}
_LAYOUTS = {"strided": torch.strided, "sparse_coo": torch.sparse_coo}
_MEMORY_FORMATS = {str(m).removeprefix("torch."): m for m in (
    torch.contiguous_format, torch.channels_last, torch.preserve_format, torch.channels_last_3d)}


def target_name(target: Any) -> str:
    """``aten.conv2d.default`` for an ATen overload, ``operator.mul`` for a whitelisted operator, else a repr."""
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._opname}.{target._overloadname}"
    for name, fn in _OPERATORS.items():
        if target is fn:
            return name
    mod = getattr(target, "__module__", None) or type(target).__module__
    return f"{mod}.{getattr(target, '__qualname__', getattr(target, '__name__', repr(target)))}"


def check_target(name: str) -> Any:
    """Resolve a serialized call target through the whitelist.

    Raises:
        ValueError: not an ATen op overload or a whitelisted operator, or an op that reads files.
    """
    if name in _OPERATORS:
        return _OPERATORS[name]
    parts = name.split(".")
    if len(parts) != 3 or parts[0] != "aten" or not all(p.isidentifier() for p in parts[1:]):
        raise ValueError(f"target {name[:80]!r} is not an ATen op (namespace aten) or a whitelisted operator")
    try:
        op = getattr(getattr(torch.ops.aten, parts[1]), parts[2])
    except (AttributeError, RuntimeError):
        raise ValueError(f"target {name!r}: no such ATen op in torch {torch.__version__}") from None
    if not isinstance(op, torch._ops.OpOverload):
        raise ValueError(f"target {name!r} is not an ATen op overload")
    if any(a.name == "filename" for a in op._schema.arguments):
        raise ValueError(f"target {name!r} reads files; not allowed in an artifact")
    return op


# ---------------------------------------------------------------------------------------------- writing
def _enc(a: Any, depth: int = 0) -> Any:
    if depth > MAX_ARGS_DEPTH:
        raise ValueError("arguments nested too deeply")
    if isinstance(a, fx.Node):
        return {"node": a.name}
    if a is None or isinstance(a, (bool, int, str)):
        return a
    if isinstance(a, float):
        return {"float": a.hex()}
    if isinstance(a, (list, tuple)):
        return {"tuple" if isinstance(a, tuple) else "list": [_enc(x, depth + 1) for x in a]}
    if isinstance(a, torch.dtype):
        return {"dtype": str(a).removeprefix("torch.")}
    if isinstance(a, torch.device):
        return {"device": str(a)}
    if isinstance(a, torch.layout):
        return {"layout": str(a).removeprefix("torch.")}
    if isinstance(a, torch.memory_format):
        return {"memory_format": str(a).removeprefix("torch.")}
    raise ValueError(f"argument of type {type(a).__name__} ({str(a)[:60]}) cannot be stored")


def graph_to_json(gm: fx.GraphModule) -> dict[str, Any]:
    """Serialize an exported (``ExportedProgram.module()``) graph module.

    Raises:
        ValueError: a node that cannot be stored: a call to anything but an ATen op or whitelisted operator,
            a submodule call, or an argument of another type; the message names the node.
    """
    nodes: list[dict[str, Any]] = []
    params: dict[str, str] = {}
    named_params = dict(gm.named_parameters())
    # Calls first: a higher-order op (cond, map...) is the node to name, not the subgraph attribute it reads.
    for n in gm.graph.nodes:
        if n.op == "call_function":
            try:
                check_target(target_name(n.target))
            except ValueError as e:
                raise ValueError(f"node {n.name!r} ({target_name(n.target)}): {e}") from None
    for n in gm.graph.nodes:
        where = f"node {n.name!r} ({n.op} {target_name(n.target) if n.op == 'call_function' else n.target})"
        if n.op == "call_module":
            raise ValueError(f"{where}: calls a submodule; edgeflow stores only graphs of ATen ops")
        if n.op == "call_method":
            raise ValueError(f"{where}: calls a tensor method; edgeflow stores only graphs of ATen ops")
        target = n.target
        if n.op == "call_function":
            target = target_name(n.target)
            try:
                check_target(target)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
        elif n.op == "get_attr":
            value = _attr(gm, str(n.target))
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{where}: is a {type(value).__name__}, not a tensor (e.g. a higher-order op's subgraph)")
            params[str(n.target)] = "parameter" if str(n.target) in named_params else "buffer"
        try:
            args, kwargs = _enc(list(n.args)), _enc(list(n.kwargs.items()))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        nodes.append({"name": n.name, "op": n.op, "target": str(target), "args": args, "kwargs": kwargs})
    return {"nodes": nodes, "params": params}


def _attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


# ---------------------------------------------------------------------------------------------- reading
class _Decoder:
    def __init__(self, env: Mapping[str, fx.Node]):
        self.env = env
        self.items = 0

    def __call__(self, a: Any, depth: int = 0) -> Any:
        self.items += 1
        if self.items > MAX_ARGS_ITEMS or depth > MAX_ARGS_DEPTH:
            raise ValueError("arguments too large or nested too deeply")
        if a is None or isinstance(a, (bool, int, str)):
            return a
        if isinstance(a, dict) and len(a) == 1:
            (tag, v), = a.items()
            if tag == "node":
                if not isinstance(v, str) or v not in self.env:
                    raise ValueError(f"argument refers to {str(v)[:60]!r}, not an earlier node")
                return self.env[v]
            if tag in ("list", "tuple") and isinstance(v, list):
                items = [self(x, depth + 1) for x in v]
                return tuple(items) if tag == "tuple" else items
            if tag == "float" and isinstance(v, str):
                return float.fromhex(v)
            for name, table in (("dtype", _DTYPES), ("layout", _LAYOUTS), ("memory_format", _MEMORY_FORMATS)):
                if tag == name:
                    if v not in table:
                        raise ValueError(f"unknown {name} {str(v)[:40]!r}")
                    return table[v]
            if tag == "device" and isinstance(v, str) and v.split(":")[0] in ("cpu", "cuda", "meta"):
                return torch.device(v)
        raise ValueError(f"argument {str(a)[:60]!r} is not a stored value")


def graph_from_json(data: Any, weights: Mapping[str, torch.Tensor]) -> tuple[fx.GraphModule, list[str]]:
    """Rebuild the graph module from :func:`graph_to_json`'s output and its weights.

    Args:
        data: the decoded JSON.
        weights: target -> tensor for every ``get_attr`` node (exactly those).

    Returns:
        The graph module (eval mode) and its placeholder names in order.

    Raises:
        ValueError: malformed data, a target outside the whitelist, an unknown or missing weight; the
            message names the node.
    """
    if not isinstance(data, dict) or set(data) != {"nodes", "params"}:
        raise ValueError("graph must be an object with 'nodes' and 'params'")
    nodes, kinds = data["nodes"], data["params"]
    if not isinstance(nodes, list) or not 2 <= len(nodes) <= MAX_NODES:
        raise ValueError(f"graph must have 2..{MAX_NODES} nodes")
    if not isinstance(kinds, dict) or set(kinds) != set(weights) or not all(k in ("parameter", "buffer") for k in kinds.values()):
        extra, missing = sorted(set(weights) - set(kinds))[:8], sorted(set(kinds) - set(weights))[:8]
        raise ValueError(f"graph weights do not match the file's tensors: missing {missing}, unexpected {extra}")
    root = nn.Module()
    for target, kind in kinds.items():
        try:
            _install(root, target, weights[target], kind == "parameter")
        except (KeyError, TypeError, AttributeError) as e:  # nn.Module refuses names like "forward"
            raise ValueError(f"weight name {target[:80]!r} cannot be a module attribute: {e}") from None
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    placeholders: list[str] = []
    seen_output = False
    for i, d in enumerate(nodes):
        if not isinstance(d, dict) or set(d) != {"name", "op", "target", "args", "kwargs"}:
            raise ValueError(f"node {i} must be an object with name, op, target, args, kwargs")
        name, op, target = d["name"], d["op"], d["target"]
        where = f"node {str(name)[:60]!r}"
        if not isinstance(name, str) or not name.isidentifier() or name in env or not isinstance(target, str):
            raise ValueError(f"{where}: a node needs a new identifier name and a string target")
        if seen_output:
            raise ValueError(f"{where}: comes after the output node")
        decode = _Decoder(env)
        try:
            args, kwargs = decode(d["args"]), decode(d["kwargs"])
            if not isinstance(args, list) or not isinstance(kwargs, list):
                raise ValueError("args and kwargs must be lists")
            if not all(isinstance(kv, tuple) and len(kv) == 2 and isinstance(kv[0], str) for kv in kwargs):
                raise ValueError("kwargs must be [name, value] pairs")
            if op == "placeholder":
                if args or kwargs:
                    raise ValueError("a placeholder takes no arguments")
                node = graph.create_node("placeholder", name, name=name)
                placeholders.append(node.name)
            elif op == "get_attr":
                if target not in kinds:
                    raise ValueError(f"reads {target[:80]!r}, which the file has no tensor for")
                node = graph.create_node("get_attr", target, name=name)
            elif op == "call_function":
                node = graph.create_node("call_function", check_target(target), tuple(args), dict(kwargs), name=name)
            elif op == "output":
                if len(args) != 1:
                    raise ValueError("the output node takes one argument")
                node = graph.output(args[0])
                seen_output = True
            else:
                raise ValueError(f"op {str(op)[:40]!r} is not placeholder, get_attr, call_function or output")
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        env[name] = node  # arguments refer to the stored name, even where fx chose another for the code
    if not seen_output:
        raise ValueError("graph has no output node")
    try:
        graph.lint()
        gm = fx.GraphModule(root, graph)
    except Exception as e:  # lint/codegen refuse graphs that are inconsistent in ways the checks above missed
        raise ValueError(f"graph does not build: {type(e).__name__}: {str(e)[:200]}") from None
    return gm.eval(), placeholders


def _install(root: nn.Module, target: str, value: torch.Tensor, parameter: bool) -> None:
    parts = target.split(".")
    if not all(p.isidentifier() or (p.isdigit() and p.isascii()) for p in parts):
        raise ValueError(f"weight name {target[:80]!r} is not a dotted path of identifiers and indices")
    mod = root
    for p in parts[:-1]:
        child = getattr(mod, p, None) if p in mod._modules else None
        if child is None:
            if hasattr(mod, p):
                raise ValueError(f"weight name {target[:80]!r} clashes with another weight")
            child = nn.Module()
            mod.add_module(p, child)
        mod = child
    leaf = parts[-1]
    # A fresh, aligned copy: safetensors hands out tensors at any offset of its buffer, and kernels take other
    # code paths (other rounding) on unaligned memory -- the copy is what makes results bit-exact with the model.
    value = value.detach().clone(memory_format=torch.contiguous_format)
    if leaf in mod._modules or leaf in mod._parameters or leaf in mod._buffers:
        raise ValueError(f"weight name {target[:80]!r} clashes with another weight")
    if parameter:
        mod.register_parameter(leaf, nn.Parameter(value, requires_grad=False))
    else:
        mod.register_buffer(leaf, value)


def retarget_devices(gm: fx.GraphModule, device: torch.device | str) -> int:
    """Point every ``device=`` argument of the graph (e.g. ``aten.arange(..., device=cpu)``, baked in by the
    export on the exporting machine) at ``device``, so the graph runs where its weights are. Returns how many
    arguments changed."""
    device = torch.device(device)
    changed = 0

    def swap(a: Any) -> Any:
        nonlocal changed
        if isinstance(a, torch.device) and a != device:
            changed += 1
            return device
        if isinstance(a, (list, tuple)):
            return type(a)(swap(x) for x in a)
        return a

    for n in gm.graph.nodes:
        n.args = swap(n.args)
        n.kwargs = {k: swap(v) for k, v in n.kwargs.items()}
    if changed:
        gm.recompile()
    return changed
