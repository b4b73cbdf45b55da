"""Export a user's model into a self-contained artifact that loads without the model's Python code.

``export_model`` captures the model with ``torch.export`` (the batch dim made dynamic where the model allows,
so agents may batch), drops the nodes that only check the trace's example, and serializes the graph as
JSON of ATen op calls (:mod:`edgeflow.core.graphjson`) with the weights as tensors. ``save_graph_artifact``
writes both into one safetensors file (the format of :mod:`edgeflow.core.artifact`, format version "2"):

    tensors   ``model.<graph attribute>`` (weights, buffers, constants) and ``exits.<i>.<key>`` (exit heads)
    metadata  ``edgeflow.format_version``  "2"
              ``edgeflow.graph``           JSON graph (:func:`~edgeflow.core.graphjson.graph_to_json`)
              ``edgeflow.inputs``          JSON input spec (:mod:`edgeflow.core.inputs`)
              ``edgeflow.model``           JSON ``{"source", "batch": "dynamic" | "fixed", "num_outputs"}``
              ``edgeflow.exits``, ``edgeflow.calibration``, ``edgeflow.fingerprint``  as in format "1"
              ``edgeflow.tokenizer``       optional: JSON :class:`~edgeflow.core.tokenizer.TokenizerSpec` (``hf:`` models)

The fingerprint is :func:`edgeflow.core.artifact.fingerprint` with architecture ``"edgeflow.graph"`` and, as
config, the canonical JSON of graph, inputs, model fields and the tokenizer (when there is one) — so it covers
the graph, the input spec, the tokenizer, the weights, the exit heads and the calibration. Loading re-checks it,
rebuilds the graph through the op whitelist, and never unpickles anything.

The model's outputs are flattened (``torch.utils._pytree``): one tensor comes back bare, anything else (a
tuple, a dict, a Hugging Face ``ModelOutput``) as a tuple of its tensors in flattening order.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import linecache
import logging
import os
import traceback
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.fx as fx
from torch import nn

from ..errors import ArtifactError
from .exits import CalibrationTable, ExitHead
from .graphjson import DROPPED_TARGETS, check_sizes, graph_from_json, graph_to_json, target_name
from .inputs import InputSpec, check_names, inputs_from_json, inputs_to_json
from .tokenizer import TokenizerSpec

__all__ = ["GRAPH_FORMAT_VERSION", "ExportedModel", "export_model", "save_graph_artifact"]

GRAPH_FORMAT_VERSION = "2"
GRAPH_ARCH = "edgeflow.graph"  # the fingerprint's architecture field for graph artifacts
MAX_EXPORT_BATCH = 4096


@dataclass
class ExportedModel:
    """A model captured as a stored graph, ready to save.

    Attributes:
        graph: the JSON-able graph (:func:`~edgeflow.core.graphjson.graph_to_json`).
        weights: graph attribute -> tensor.
        inputs: the input spec (placeholder names, shapes, dtypes), in the graph's order.
        batch: ``"dynamic"`` (any batch dim) or ``"fixed"`` (the model only runs at the spec's batch).
        num_outputs: flat output tensors.
        source: where the model came from (``MODULE:FACTORY``, ``torchvision:NAME``...), for people.
        exact: whether the rebuilt graph reproduced the model bit-exactly on the example inputs.
        max_abs_diff: the largest difference seen when it did not.
        tokenizer: the tokenizer that turns text into the model's inputs (an ``hf:`` folder's), or None.
    """

    graph: dict[str, Any]
    weights: dict[str, torch.Tensor]
    inputs: list[InputSpec]
    batch: str
    num_outputs: int
    source: str = ""
    exact: bool = True
    max_abs_diff: float = 0.0
    tokenizer: TokenizerSpec | None = None

    def model_json(self) -> dict[str, Any]:
        return {"source": self.source, "batch": self.batch, "num_outputs": self.num_outputs}

    def build(self) -> fx.GraphModule:
        """The graph module an agent would load (eval mode)."""
        gm, _ = graph_from_json(self.graph, self.weights)
        return gm


def _example(spec: InputSpec, batch: int, seed: int) -> torch.Tensor:
    """A random example: floats uniform in [0, 1), integers and bools from the ones the spec's example uses
    (a token id of 1 and a full attention mask are valid for every text model)."""
    if spec.dtype.is_floating_point:
        g = torch.Generator().manual_seed(seed)
        return torch.rand((batch, *spec.shape[1:]), generator=g).to(spec.dtype)
    return spec.example(batch)


def _user_frame(e: BaseException) -> str:
    """The innermost frame of the traceback outside torch: where the model did what could not be exported."""
    torch_dir = os.path.dirname(torch.__file__)
    frames = [f for f in traceback.extract_tb(e.__traceback__) if not f.filename.startswith(torch_dir)
              and not f.filename.startswith(os.path.dirname(__file__)) and not f.filename.startswith("<")]  # fmt: skip
    if not frames:
        return ""
    f = frames[-1]
    line = (f.line or linecache.getline(f.filename, f.lineno or 0)).strip()
    return f" at {f.filename}:{f.lineno} in {f.name}: `{line}`"


def _reason(e: BaseException) -> str:
    text = str(e).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    head = " ".join(lines[:3])[:600]
    return f"{type(e).__name__}: {head}"


@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    """torch.export logs each failed attempt (traceback, graph dump) at ERROR; the caller reports failures itself."""
    logging.disable(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def _export(model: nn.Module, specs: Sequence[InputSpec], dynamic: bool) -> torch.export.ExportedProgram:
    # At batch 1 torch.export specializes the dim to the constant 1, so the dynamic capture traces at batch 2.
    batch = 2 if dynamic else specs[0].shape[0]
    values = {s.name: _example(s, batch if dynamic else s.shape[0], i) for i, s in enumerate(specs)}
    params = inspect.signature(model.forward).parameters
    by_name = all(s.name in params and params[s.name].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                               inspect.Parameter.KEYWORD_ONLY) for s in specs)  # fmt: skip
    dim = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    if by_name:
        shapes: Any = {s.name: {0: dim} for s in specs} if dynamic else None
        return torch.export.export(model, (), kwargs=values, dynamic_shapes=shapes, strict=False)
    shapes = tuple({0: dim} for _ in specs) if dynamic else None
    return torch.export.export(model, tuple(values.values()), dynamic_shapes=shapes, strict=False)


def export_model(model: nn.Module, inputs: Sequence[InputSpec], *, source: str = "") -> ExportedModel:
    """Capture ``model`` as a stored graph and check that the rebuilt graph reproduces it.

    Inputs are passed by name when every name is a parameter of ``model.forward`` (so a Hugging Face model
    takes ``input_ids``/``attention_mask`` whatever their order), else positionally in the given order; the
    graph's inputs take the spec's names either way.

    Args:
        model: the model (put in eval mode here).
        inputs: its inputs; dim 0 of each shape is the batch dim.
        source: where it came from, stored for people.

    Returns:
        The :class:`ExportedModel`; ``exact`` says whether it reproduced ``model`` bit-exactly.

    Raises:
        ArtifactError: the model cannot be captured (the message names the failing node or source line and
            torch's reason), uses an op edgeflow does not store (naming the node), or returns non-tensors.
    """
    inputs = list(inputs)
    try:
        check_names(inputs)
    except ValueError as e:
        raise ArtifactError(f"cannot export: {e}") from None
    if not inputs:
        raise ArtifactError("cannot export: the model needs at least one input")
    model = model.eval()
    name = type(model).__name__
    with _quiet_torch():
        try:
            ep, batch = _export(model, inputs, dynamic=True), "dynamic"
        except Exception:  # the model may specialize its batch dim; try once more without
            try:
                ep, batch = _export(model, inputs, dynamic=False), "fixed"
            except Exception as e:  # torch.export raises many types; each one is the model's, reported as such
                raise ArtifactError(f"cannot export {name}{_user_frame(e)}: {_reason(e)}") from None
    gm = ep.module()
    _clean(gm, [s.name for s in inputs])
    _localize_sizes(gm)
    num_outputs = _flatten_output(gm, name)
    try:
        graph = graph_to_json(gm)
    except ValueError as e:
        raise ArtifactError(f"cannot export {name}: {e}") from None
    weights = {t: _attr(gm, t).detach().cpu().contiguous().clone() for t in graph["params"]}
    exported = ExportedModel(graph, weights, inputs, batch, num_outputs, source)
    _verify(model, exported, name)
    return exported


def _attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _clean(gm: fx.GraphModule, names: list[str]) -> None:
    """Drop the trace's own checks (the guards submodule, metadata asserts); give placeholders the spec's names."""
    for n in list(gm.graph.nodes):
        dropped = (n.op == "call_module" and str(n.target).startswith("_guards_fn")) or (
            n.op == "call_function" and target_name(n.target) in DROPPED_TARGETS
        )
        if dropped and not n.users:
            gm.graph.erase_node(n)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(names):
        raise ArtifactError(f"the exported graph takes {len(placeholders)} inputs, the spec gives {len(names)} {names}")
    by_name = {p.name: p for p in placeholders}
    if set(by_name) == set(names):  # exported by name: put them in the spec's order
        placeholders = [by_name[n] for n in names]
        anchor = next(n for n in gm.graph.nodes if n not in placeholders)
        for p in placeholders:  # forward's arguments follow the placeholders' order in the graph
            anchor.prepend(p)
    taken = {n.name for n in gm.graph.nodes if n.op != "placeholder"}
    for p, want in zip(placeholders, names):
        if want in taken:
            raise ArtifactError(f"input name {want!r} is also the name of a graph node; choose another")
        p.name = p.target = want
    gm.graph.lint()
    gm.recompile()


def _sym_expr(node: Any) -> Any:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    return val.node.expr if isinstance(val, torch.SymInt) else None


def _localize_sizes(gm: fx.GraphModule) -> None:
    """Read symbolic sizes where they are used, so no size crosses a cut.

    With a dynamic batch dim, ``B, T, C = x.shape`` becomes one ``sym_size`` node whose int is live from
    there to its last use (a ``view`` much later): every position in between would carry a non-tensor and
    could not be a cut (a small transformer kept 10 cuts of 60). Where a user of such a size (or of an
    ``operator`` expression of sizes) also takes a tensor with a dim of that size, the size is read again
    from that tensor right before the user. Sizes that cannot be re-read stay as they are.
    """
    graph = gm.graph

    def remat(v: fx.Node, tensors: list[fx.Node], before: fx.Node, depth: int = 0) -> fx.Node | None:
        expr = _sym_expr(v)
        if expr is None or depth > 4:
            return None
        for t in tensors:
            val = t.meta.get("val")
            for k, d in enumerate(getattr(val, "shape", ())):
                if isinstance(d, torch.SymInt) and d.node.expr == expr:
                    with graph.inserting_before(before):
                        new = graph.call_function(torch.ops.aten.sym_size.int, (t, k))
                    new.meta["val"] = d
                    return new
        if v.op == "call_function" and target_name(v.target).startswith("operator.") and not v.kwargs:
            args = []
            for a in v.args:
                if isinstance(a, fx.Node):
                    r = remat(a, tensors, before, depth + 1)
                    if r is None:
                        return None
                    args.append(r)
                else:
                    args.append(a)
            with graph.inserting_before(before):
                new = graph.call_function(v.target, tuple(args))
            new.meta["val"] = v.meta.get("val")
            return new
        return None

    for u in list(graph.nodes):
        if u.op != "call_function" or target_name(u.target).startswith("operator."):
            continue
        tensors = [a for a in u.all_input_nodes if isinstance(a.meta.get("val"), torch.Tensor)]
        sizes = [a for a in u.all_input_nodes if _sym_expr(a) is not None]
        if not tensors or not sizes:
            continue
        for v in sizes:
            new = remat(v, tensors, u)
            if new is not None:
                u.replace_input_with(v, new)
    graph.eliminate_dead_code()
    graph.lint()
    gm.recompile()


def _flatten_output(gm: fx.GraphModule, name: str) -> int:
    """Make the graph return its flat output tensors: one bare, several as a tuple. Returns how many."""
    out = next(n for n in gm.graph.nodes if n.op == "output")
    flat, _ = torch.utils._pytree.tree_flatten(out.args[0])
    for v in flat:
        if not isinstance(v, fx.Node):
            raise ArtifactError(f"cannot export {name}: it returns a constant {type(v).__name__}, not a tensor")
    out.args = (flat[0] if len(flat) == 1 else tuple(flat),)
    gm._out_spec = None  # the flat form is the artifact's contract; drop the exported pytree codegen
    gm.graph._codegen = fx.graph.CodeGen()
    gm.graph.lint()
    gm.recompile()
    return len(flat)


def _verify(model: nn.Module, exported: ExportedModel, name: str) -> None:
    """Rebuild the stored graph and compare with the model at batch 1 (and 2 when dynamic)."""
    try:
        gm = exported.build()
    except ValueError as e:
        raise ArtifactError(f"cannot export {name}: the stored graph does not rebuild: {e}") from None
    params = inspect.signature(model.forward).parameters
    by_name = all(s.name in params for s in exported.inputs)
    batches = [exported.inputs[0].shape[0]] if exported.batch == "fixed" else [1, 2]
    for b in batches:
        values = [_example(s, b, 100 + i) for i, s in enumerate(exported.inputs)]
        with torch.no_grad():
            if by_name:
                want = model(**{s.name: v for s, v in zip(exported.inputs, values)})
            else:
                want = model(*values)
            got = gm(*values)
        want_flat, _ = torch.utils._pytree.tree_flatten(want)
        got_flat = [got] if isinstance(got, torch.Tensor) else list(got)
        want_flat = [w for w in want_flat if isinstance(w, torch.Tensor)]
        if len(want_flat) != len(got_flat):
            raise ArtifactError(f"cannot export {name}: the graph returns {len(got_flat)} tensors, the model {len(want_flat)}")
        for w, g in zip(want_flat, got_flat):
            if w.shape != g.shape or w.dtype != g.dtype:
                raise ArtifactError(f"cannot export {name}: the graph returns {g.dtype} {list(g.shape)}, "
                                    f"the model {w.dtype} {list(w.shape)}")  # fmt: skip
            if not torch.equal(w, g) and not (w.is_floating_point() and torch.equal(w.isnan(), g.isnan())
                                              and torch.equal(w.nan_to_num(), g.nan_to_num())):  # fmt: skip
                exported.exact = False
                if w.is_floating_point():
                    exported.max_abs_diff = max(exported.max_abs_diff, float((w - g).abs().nan_to_num().max()))


# -------------------------------------------------------------------------------------------- saving
def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def graph_config_json(graph: Any, inputs_json: str, model_json: Any, tokenizer: TokenizerSpec | None = None) -> str:
    """What the fingerprint covers besides tensors, exits and calibration (canonical JSON). Without a tokenizer
    the text is what it was before tokenizers were carried, so older artifacts keep their fingerprints."""
    config = {"graph": graph, "inputs": json.loads(inputs_json), "model": model_json}
    if tokenizer is not None:
        config["tokenizer"] = tokenizer.to_json()
    return canonical_json(config)


def save_graph_artifact(
    path: str | os.PathLike[str],
    exported: ExportedModel,
    exits: Sequence[ExitHead] = (),
    calibration: CalibrationTable | None = None,
) -> str:
    """Write an exported model (+ exit heads, calibration) as one safetensors file, atomically.

    Exit heads attach at positions of the partition an agent builds from the loaded artifact
    (``edgeflow.core.partition.partition(load_artifact(path).model, ...)``).

    Returns:
        The fingerprint.
    """
    from .artifact import _META, _exits_json, fingerprint, write_atomically  # artifact imports this module lazily

    exits = sorted(exits, key=lambda h: h.spec.position)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in exported.weights.items()}
    for i, h in enumerate(exits):
        tensors.update({f"exits.{i}.{k}": v.detach().cpu().contiguous().clone() for k, v in h.state_dict().items()})
    specs = [h.spec for h in exits]
    cal_text = calibration.to_json() if calibration is not None else "null"
    inputs_json = inputs_to_json(exported.inputs)
    model_json = exported.model_json()
    if exported.tokenizer is not None:
        try:
            exported.tokenizer.check_inputs(exported.inputs)
        except ValueError as e:
            raise ArtifactError(f"cannot save the tokenizer: {e}") from None
    config = graph_config_json(exported.graph, inputs_json, model_json, exported.tokenizer)
    fp = fingerprint(GRAPH_ARCH, config, tensors, specs, cal_text)
    metadata = {
        _META + "format_version": GRAPH_FORMAT_VERSION,
        _META + "graph": canonical_json(exported.graph),
        _META + "inputs": inputs_json,
        _META + "model": canonical_json(model_json),
        _META + "exits": _exits_json(specs),
        _META + "calibration": cal_text,
        _META + "fingerprint": fp,
    }
    if exported.tokenizer is not None:
        metadata[_META + "tokenizer"] = canonical_json(exported.tokenizer.to_json())
    write_atomically(path, tensors, metadata)
    return fp


# -------------------------------------------------------------------------------------------- loading
def load_graph_artifact(
    where: str, metadata: Mapping[str, str], tensors: Mapping[str, torch.Tensor], expect_fingerprint: str | None
) -> tuple[fx.GraphModule, list[InputSpec], dict[str, Any], list[Any], CalibrationTable | None, str, TokenizerSpec | None]:
    """The graph half of :func:`edgeflow.core.artifact.load_artifact` (format "2"): check, then rebuild.

    Returns:
        (graph module, inputs, model fields, exit specs, calibration, fingerprint, tokenizer or None).

    Raises:
        ArtifactError: malformed metadata, fingerprint mismatch, a graph the whitelist refuses, weights that
            do not match the graph, inputs that do not match its placeholders.
    """
    from .artifact import _META, _parse_json, _untrusted, check_fingerprint, fingerprint, read_exits

    def meta(key: str) -> str:
        try:
            return metadata[_META + key]
        except KeyError:
            raise ArtifactError(f"{where}: metadata {_META + key!r} is missing") from None

    with _untrusted(where, "malformed graph"):
        graph = _parse_json(meta("graph"))
    with _untrusted(where, "malformed input spec"):
        inputs = inputs_from_json(_parse_json(meta("inputs")))
    with _untrusted(where, "malformed model fields"):
        model_json = _parse_json(meta("model"))
        if not isinstance(model_json, dict) or set(model_json) != {"source", "batch", "num_outputs"}:
            raise ValueError("expected an object with source, batch and num_outputs")
        if model_json["batch"] not in ("dynamic", "fixed") or not isinstance(model_json["source"], str):
            raise ValueError(f"batch must be 'dynamic' or 'fixed', got {str(model_json['batch'])[:40]!r}")
    specs, cal_text, calibration = read_exits(where, meta)
    tokenizer = None
    if _META + "tokenizer" in metadata:
        with _untrusted(where, "malformed tokenizer"):
            tokenizer = TokenizerSpec.from_json(_parse_json(meta("tokenizer")))
    with _untrusted(where, "graph cannot be fingerprinted"):
        config = graph_config_json(graph, inputs_to_json(inputs), model_json, tokenizer)
    fp = fingerprint(GRAPH_ARCH, config, tensors, specs, cal_text)
    check_fingerprint(where, fp, meta("fingerprint"), expect_fingerprint)
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    with _untrusted(where, "graph does not rebuild"):
        gm, placeholders = graph_from_json(graph, weights)
    if placeholders != [s.name for s in inputs]:
        raise ArtifactError(f"{where}: the graph takes inputs {placeholders}, the input spec names {[s.name for s in inputs]}")
    with _untrusted(where, "graph refused"):
        check_sizes(gm, [s.example(1) for s in inputs])
    if tokenizer is not None:
        with _untrusted(where, "tokenizer does not fit the inputs"):
            tokenizer.check_inputs(inputs)
    return gm, inputs, model_json, specs, calibration, fp, tokenizer
