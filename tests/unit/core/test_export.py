"""edgeflow.core.export: a user's model as a stored graph that loads without its code, and refuses tampering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from edgeflow.core.artifact import fingerprint, load_artifact
from edgeflow.core.exits import CalibrationRow, CalibrationTable, ExitHead, ExitSpec
from edgeflow.core.export import GRAPH_ARCH, export_model, graph_config_json, save_graph_artifact
from edgeflow.core.inputs import InputSpec, parse_input
from edgeflow.core.partition import partition
from edgeflow.errors import ArtifactError


class Conv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(pixels)))  # (B, 4, H, W)
        return self.fc(h.flatten(2).mean(-1))  # (B, 3)


class TwoInputs(nn.Module):
    """int64 ids and a float weight per token; a dict output (flattened into a tuple by the export)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 6)
        self.fc = nn.Linear(6, 2)

    def forward(self, ids: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        B, T = ids.shape
        h = self.embed(ids) * weights.unsqueeze(-1)  # (B, T, 6)
        return {"pooled": self.fc(h.sum(1)), "tokens": h.reshape(B, T * 6)}


def _conv() -> nn.Module:
    torch.manual_seed(0)
    m = Conv().train()
    with torch.no_grad():
        m(torch.rand(4, 3, 8, 8))  # batch-norm statistics that are not the defaults
    return m.eval()


CONV_INPUTS = [InputSpec("pixels", (1, 3, 8, 8), torch.float32)]
TWO_INPUTS = [parse_input("weights:1,5:float32"), parse_input("ids:1,5:int64")]  # not forward's order


@pytest.fixture
def conv_file(tmp_path: Path) -> Path:
    path = tmp_path / "conv.ef"
    save_graph_artifact(path, export_model(_conv(), CONV_INPUTS, source="test:conv"))
    return path


def test_round_trip_is_bit_exact_at_any_batch(conv_file: Path) -> None:
    model = _conv()
    art = load_artifact(conv_file)
    assert art.arch == GRAPH_ARCH and art.inputs == CONV_INPUTS and art.max_batch is None
    assert art.config == {"source": "test:conv", "batch": "dynamic", "num_outputs": 1}
    assert not any(True for _ in art.model.named_children() if _[0] == "_guards_fn")
    for batch in (1, 4):
        x = art.example_inputs(batch)["pixels"] + torch.rand(batch, 3, 8, 8)
        with torch.no_grad():
            assert torch.equal(art.model(x), model(x))


def test_export_is_deterministic(conv_file: Path, tmp_path: Path) -> None:
    again = save_graph_artifact(tmp_path / "again.ef", export_model(_conv(), CONV_INPUTS, source="test:conv"))
    assert again == load_artifact(conv_file).fingerprint


def test_several_inputs_by_name_in_the_spec_order(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TwoInputs().eval()
    exported = export_model(model, TWO_INPUTS)
    assert exported.exact and exported.num_outputs == 2
    save_graph_artifact(tmp_path / "two.ef", exported)
    art = load_artifact(tmp_path / "two.ef")
    assert [s.name for s in art.inputs] == ["weights", "ids"]
    ex = art.example_inputs(3)
    assert ex["ids"].dtype == torch.int64 and ex["ids"].shape == (3, 5)
    ids, w = torch.randint(0, 20, (3, 5)), torch.rand(3, 5)
    with torch.no_grad():
        want = model(ids=ids, weights=w)
        got = art.model(w, ids)  # the artifact's positional order is the spec's
    assert isinstance(got, tuple) and torch.equal(got[0], want["pooled"]) and torch.equal(got[1], want["tokens"])
    p = partition(art.model, tuple(ex.values()))
    assert [t.name for t in p.cut_info(0).tensors] == ["weights", "ids"]
    assert len(p.cuts) >= 3, "the batch size read from ids must not cross every cut"


def test_exit_heads_and_calibration_are_stored_and_fingerprinted(tmp_path: Path) -> None:
    exported = export_model(_conv(), CONV_INPUTS)
    p = partition(exported.build(), (torch.zeros(1, 3, 8, 8),))
    pos = next(c for c in p.cuts if len(p.cut_info(c).tensors[p.cut_info(c).primary].shape) == 4)
    torch.manual_seed(3)
    head = ExitHead(ExitSpec(pos, 4, 3))
    table = CalibrationTable([CalibrationRow(pos, "max_prob", 0.5, 0.4, 0.9, 0.8)], final_accuracy=0.9,
                             exit_accuracy={pos: 0.7}, num_samples=10)  # fmt: skip
    fp = save_graph_artifact(tmp_path / "e.ef", exported, exits=[head], calibration=table)
    art = load_artifact(tmp_path / "e.ef")
    assert art.exit_positions == [pos] and art.calibration is not None and art.calibration.final_accuracy == 0.9
    x = torch.rand(2, 4, 8, 8)
    assert torch.equal(art.exits[0](x), head(x))
    table.final_accuracy = 0.99
    assert save_graph_artifact(tmp_path / "e2.ef", exported, exits=[head], calibration=table) != fp


# ------------------------------------------------------------------------------------------- tampering
def _rewrite(src: Path, dst: Path, edit: Callable[[dict[str, Any], dict[str, torch.Tensor]], None], refingerprint: bool) -> None:
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    graph = json.loads(meta["edgeflow.graph"])
    parts = {"graph": graph, "inputs": json.loads(meta["edgeflow.inputs"]), "model": json.loads(meta["edgeflow.model"])}
    edit(parts, tensors)
    meta["edgeflow.graph"] = json.dumps(parts["graph"])
    meta["edgeflow.inputs"] = json.dumps(parts["inputs"])
    if refingerprint:  # a forger who knows the format: the file is self-consistent, only the checks can stop it
        config = graph_config_json(parts["graph"], json.dumps(parts["inputs"]), parts["model"])
        meta["edgeflow.fingerprint"] = fingerprint(GRAPH_ARCH, config, tensors, [], meta["edgeflow.calibration"])
    save_file(tensors, str(dst), metadata=meta)


def _node(parts: dict[str, Any], op: str) -> dict[str, Any]:
    return next(n for n in parts["graph"]["nodes"] if n["op"] == op)


def _set_target(target: str) -> Callable[..., None]:
    def edit(parts: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        _node(parts, "call_function")["target"] = target
    return edit


def _deep(parts: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    arg: Any = 1
    for _ in range(50):
        arg = {"list": [arg]}
    _node(parts, "call_function")["args"]["list"].append(arg)


FORGED = {
    "python builtin": (_set_target("builtins.eval"), "is not an ATen op"),
    "file reading op": (_set_target("aten.from_file.default"), "reads files"),
    "custom namespace": (_set_target("myops.evil.default"), "is not an ATen op"),
    "unknown aten op": (_set_target("aten.no_such_op.default"), "no such ATen op"),
    "dangling reference": (lambda p, t: _node(p, "call_function")["args"]["list"].__setitem__(0, {"node": "nowhere"}),
                           "not an earlier node"),
    "nested arguments": (_deep, "nested too deeply"),
    "missing weight": (lambda p, t: t.pop("model.fc.bias"), "missing ['fc.bias']"),
    "renamed input": (lambda p, t: p["inputs"][0].__setitem__("name", "other"), "the graph takes inputs ['pixels']"),
    "unknown argument tag": (lambda p, t: _node(p, "call_function")["args"]["list"].append({"pickle": "x"}), "not a stored value"),
    "node op": (lambda p, t: _node(p, "call_function").__setitem__("op", "call_module"), "is not placeholder"),
    "weight name": (lambda p, t: (p["graph"]["params"].__setitem__("forward", "buffer"),
                                  t.__setitem__("model.forward", torch.zeros(1))), "cannot be a module attribute"),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_forged_graphs_are_refused_by_the_whitelist(conv_file: Path, tmp_path: Path, case: str) -> None:
    edit, words = FORGED[case]
    bad = tmp_path / "forged.ef"
    _rewrite(conv_file, bad, edit, refingerprint=True)
    with pytest.raises(ArtifactError) as e:
        load_artifact(bad)
    assert words in str(e.value) and "forged.ef" in str(e.value)


@pytest.mark.parametrize("what", ["weight", "graph", "inputs"])
def test_tampering_without_the_fingerprint_is_refused(conv_file: Path, tmp_path: Path, what: str) -> None:
    def edit(parts: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        if what == "weight":
            tensors["model.fc.weight"] = tensors["model.fc.weight"] + 1e-6
        elif what == "graph":
            _node(parts, "call_function")["target"] = "aten.sub.Tensor"
        else:
            parts["inputs"][0]["shape"] = [1, 3, 9, 9]
    bad = tmp_path / "t.ef"
    _rewrite(conv_file, bad, edit, refingerprint=False)
    with pytest.raises(ArtifactError, match="tampered or corrupt"):
        load_artifact(bad)


def test_truncated_and_bit_flipped_files_are_refused(conv_file: Path, tmp_path: Path) -> None:
    data = conv_file.read_bytes()
    for name, blob in (("cut.ef", data[: len(data) // 2]), ("header.ef", data[:40]), ("empty.ef", b"")):
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(ArtifactError, match="not a readable safetensors file"):
            load_artifact(tmp_path / name)
    flipped = bytearray(data)
    flipped[-1] ^= 0x10
    (tmp_path / "flip.ef").write_bytes(bytes(flipped))
    with pytest.raises(ArtifactError, match="tampered or corrupt"):
        load_artifact(tmp_path / "flip.ef")


# ------------------------------------------------------------------------------------------- failures
class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x


class Cond(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(x.sum() > 0, lambda t: t * 2, lambda t: t - 1, (x,))


class ReturnsInt(nn.Module):
    def forward(self, x: torch.Tensor) -> Any:
        return x + 1, 3


def test_a_model_that_cannot_be_captured_names_the_line_and_the_reason() -> None:
    with pytest.raises(ArtifactError) as e:
        export_model(DataDependent(), [InputSpec("x", (1, 4), torch.float32)])
    msg = str(e.value)
    assert "cannot export DataDependent" in msg and "in forward" in msg and "if x.sum() > 0:" in msg
    assert "data-dependent" in msg


def test_an_op_outside_the_whitelist_names_the_node() -> None:
    with pytest.raises(ArtifactError, match=r"node 'cond' \(torch\.ops\.higher_order\.cond\).*not an ATen op"):
        export_model(Cond(), [InputSpec("x", (1, 4), torch.float32)])


def test_a_non_tensor_output_is_refused() -> None:
    with pytest.raises(ArtifactError, match="returns a constant int"):
        export_model(ReturnsInt(), [InputSpec("x", (1, 4), torch.float32)])


def test_duplicate_input_names_are_refused() -> None:
    with pytest.raises(ArtifactError, match="given twice"):
        export_model(_conv(), CONV_INPUTS * 2)


def test_device_arguments_follow_the_runtime_device() -> None:
    from edgeflow.core.graphjson import retarget_devices

    class Positions(nn.Module):
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return ids + torch.arange(ids.shape[1], device=ids.device)  # device=cpu baked into the graph

    gm = export_model(Positions(), [parse_input("ids:1,4:int64")]).build()
    devices = [a for n in gm.graph.nodes for a in n.kwargs.values() if isinstance(a, torch.device)]
    assert devices == [torch.device("cpu")]
    assert retarget_devices(gm, "meta") == 1
    assert [a for n in gm.graph.nodes for a in n.kwargs.values() if isinstance(a, torch.device)] == [torch.device("meta")]
    assert retarget_devices(gm, "meta") == 0
