"""Zoo models build, run on [0, 1] images, fx-trace faithfully and cut in many places; the registry."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from edgeflow.core.partition import partition
from edgeflow.core.registry import (
    architecture_names,
    build_model,
    config_to_json,
    get_architecture,
    make_config,
    register_architecture,
)
from edgeflow.core.zoo import ZOO_NAMES
from edgeflow.core.zoo import build_model as zoo_build_model
from edgeflow.errors import ConfigError

SMALL = {
    "resnet18": dict(width=4, num_classes=7, image_size=32),
    "mobilenet_v2": dict(width_mult=0.25, num_classes=7, image_size=32, last_channels=64),
    "vit": dict(image_size=32, patch_size=8, dim=32, depth=2, num_heads=2, num_classes=7),
}


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_builds_runs_and_fx_traces(name):
    torch.manual_seed(0)
    model = zoo_build_model(name, **SMALL[name]).eval()
    x = torch.rand(2, 3, 32, 32)
    gm = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        y = model(x)
        assert y.shape == (2, 7) and y.dtype == torch.float32 and torch.isfinite(y).all()
        assert torch.equal(gm(x), y)
    # The model normalises its input itself: the graph's first compute op reads the raw image.
    first = next(n for n in gm.graph.nodes if n.op != "placeholder" and n.op != "get_attr")
    assert any(a.op == "placeholder" for a in first.all_input_nodes)


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_no_shape_ints_so_most_positions_are_cuts(name):
    model = zoo_build_model(name, **SMALL[name]).eval()
    p = partition(model, torch.rand(1, 3, 32, 32))
    assert p.tracer == "fx"
    invalid = [k for k in range(1, p.num_positions) if not p.cut_info(k).valid]
    assert not invalid, [p.cut_info(k).reason for k in invalid]


def test_vit_can_be_cut_inside_attention():
    model = zoo_build_model("vit", **SMALL["vit"]).eval()
    p = partition(model, torch.rand(1, 3, 32, 32))
    labels = [p.node_label(i) for i in range(p.num_positions)]
    qkv, proj = labels.index("blocks.0.attn.qkv"), labels.index("blocks.0.attn.proj")
    inside = [k for k in p.cuts if qkv < k <= proj]
    assert len(inside) >= 8  # after qkv, the head split, q/k/v, scores, softmax, attn @ v, ...


def test_default_sizes_match_the_references():
    # Parameter counts of torchvision's resnet18 and mobilenet_v2 (ImageNet heads).
    assert sum(p.numel() for p in zoo_build_model("resnet18").parameters()) == 11_689_512
    assert sum(p.numel() for p in zoo_build_model("mobilenet_v2").parameters()) == 3_504_872
    vit = zoo_build_model("vit")
    assert vit.config.image_size == 224 and vit.config.patch_size == 16 and vit.pos_embed.shape == (1, 197, 192)


def test_resnet_stage_shapes():
    model = zoo_build_model("resnet18", width=8, num_classes=10, image_size=64).eval()
    x = torch.rand(1, 3, 64, 64)
    shapes = {}
    for i in range(1, 5):
        getattr(model, f"layer{i}").register_forward_hook(lambda m, a, out, i=i: shapes.__setitem__(i, out.shape))
    model(x)
    assert shapes == {1: (1, 8, 16, 16), 2: (1, 16, 8, 8), 3: (1, 32, 4, 4), 4: (1, 64, 2, 2)}


def test_registry_has_the_zoo_and_rejects_bad_names_and_fields():
    assert set(ZOO_NAMES) <= set(architecture_names())
    with pytest.raises(ConfigError, match="unknown architecture 'nope'"):
        build_model("nope")
    with pytest.raises(ConfigError, match="depthh"):
        build_model("vit", depthh=3)
    with pytest.raises(ConfigError, match="already registered"):
        register_architecture("resnet18", lambda c: nn.Identity(), get_architecture("resnet18").config_cls)
    with pytest.raises(ConfigError, match="not a dataclass"):
        register_architecture("x-not-dc", lambda c: nn.Identity(), dict)


@dataclass(frozen=True)
class _TinyConfig:
    num_classes: int = 3
    hidden: tuple[int, ...] = (5, 6)


class _Tiny(nn.Module):
    def __init__(self, cfg: _TinyConfig):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.LazyLinear(cfg.hidden[0]), nn.ReLU(), nn.Linear(cfg.hidden[0], cfg.num_classes))


def test_user_architectures_and_json_tuples():
    register_architecture("test-zoo-tiny", _Tiny, _TinyConfig, replace=True)
    assert "test-zoo-tiny" in architecture_names()
    cfg = make_config("test-zoo-tiny", hidden=[7, 8])  # a list, as JSON gives it back
    assert cfg.hidden == (7, 8)
    assert config_to_json(cfg) == '{"hidden":[7,8],"num_classes":3}'
    assert isinstance(zoo_build_model("test-zoo-tiny"), _Tiny)  # the zoo's build_model sees the registry
