"""Equivalence is the test that matters: composed slices reproduce model(x) bit-exactly."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeflow import PartitionError, compose, partition
from edgeflow.core.zoo import ZOO_NAMES, build_model


def _assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


def _check_all_single_cuts(model, inputs):
    p = partition(model, inputs)
    ref = model(*inputs)
    assert p.cuts, "expected candidate cuts"
    for c in p.cuts:
        _assert_same(compose(p.split([c]), *inputs), ref)
    return p


# ------------------------------------------------------------------ zoo models
SMALL = {"resnet18": dict(image_size=64), "mobilenet_v2": dict(image_size=64), "vit": dict(image_size=32, patch_size=8)}


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_every_single_cut_is_bit_exact(name):
    torch.manual_seed(0)
    model = build_model(name, **SMALL[name]).eval()
    size = SMALL[name]["image_size"]
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        p = _check_all_single_cuts(model, (x,))
    assert len(p.cuts) >= 50, f"{name}: only {len(p.cuts)} cuts"


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_full_size_random_cut_sets_are_bit_exact(name):
    torch.manual_seed(1)
    model = build_model(name).eval()
    x = torch.rand(1, 3, 224, 224)
    rng = random.Random(1234)
    with torch.no_grad():
        p = partition(model, x)
        ref = model(x)
        for _ in range(50):
            cuts = sorted(rng.sample(p.cuts, rng.randint(1, 4)))
            out = compose(p.split(cuts), x)
            assert torch.equal(out, ref), f"{name} cuts {cuts}"


def test_residual_cut_carries_skip_tensor():
    model = build_model("resnet18", image_size=64).eval()
    p = partition(model, torch.rand(1, 3, 64, 64))
    # Some cut inside a residual block carries both the block input and the branch activation.
    multi = [c for c in p.cuts if len(p.cut_info(c).tensors) >= 2]
    assert multi
    info = p.cut_info(multi[0])
    assert info.nbytes == sum(t.nbytes for t in info.tensors)
    acts = p.activations(torch.rand(1, 3, 64, 64), positions=[multi[0]])[multi[0]]
    assert [tuple(a.shape) for a in acts] == [t.shape for t in info.tensors]


# ------------------------------------------------------------------ model shapes
class _Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):  # (B, C, H, W)
        return F.relu(x + self.conv2(F.relu(self.bn(self.conv1(x)))))


class MultiIO(nn.Module):
    """Two inputs, dict + tuple outputs, a residual block, two branches, a shared submodule, late input use."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.block = _Block(8)
        self.shared = nn.Linear(8, 8)
        self.left = nn.Conv2d(8, 8, 1)
        self.right = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, image, vec):
        h = self.block(self.stem(image))  # (B, 8, H-2, W-2)
        h = torch.cat([self.left(h), torch.sigmoid(self.right(h))], dim=1)  # branches
        f = h.mean(dim=(2, 3))[:, :8]
        a = self.shared(f)
        b = self.shared(a + vec)  # shared submodule, input used late
        return {"a": a, "b": torch.cat([b, vec], dim=1)}, h.sum(dim=(1, 2, 3))


def test_multi_input_output_branches_shared_modules():
    torch.manual_seed(0)
    model = MultiIO().eval()
    inputs = (torch.rand(2, 3, 12, 12), torch.rand(2, 8))
    with torch.no_grad():
        p = _check_all_single_cuts(model, inputs)
        ref = model(*inputs)
        rng = random.Random(0)
        for _ in range(30):
            cuts = sorted(rng.sample(p.cuts, rng.randint(2, 5)))
            _assert_same(compose(p.split(cuts), *inputs), ref)
    # the late-used input is passed through every slice before the one that uses it
    assert any(t.name == "vec" for t in p.cut_info(p.cuts[0]).tensors)
    assert any(t.name == "vec" for t in p.cut_info(p.cuts[-3]).tensors)


class ShapeControlFlow(nn.Module):
    """fx cannot trace Python control flow on shapes; torch.export can."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.b = nn.Linear(6, 3)

    def forward(self, x):
        if x.shape[0] > 1:
            x = torch.relu(self.a(x))
        return self.b(x) * 2, x


def test_export_fallback_when_fx_fails():
    torch.manual_seed(0)
    model = ShapeControlFlow().eval()
    x = torch.rand(4, 6)
    with torch.no_grad():
        p = _check_all_single_cuts(model, (x,))
    assert p.tracer == "export"


class DataControlFlow(nn.Module):
    def forward(self, x):
        return x * 2 if x.sum() > 0 else x


def test_untraceable_model_raises_partition_error_with_both_causes():
    with pytest.raises(PartitionError) as e:
        partition(DataControlFlow(), torch.rand(3))
    assert "fx:" in str(e.value) and "export:" in str(e.value)


class ScalarAcross(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 4)

    def forward(self, x):
        n = x.size(0)
        y = torch.relu(self.l(x))
        return (y * 3).view(n, -1)


def test_non_tensor_values_make_positions_invalid():
    p = partition(ScalarAcross(), torch.rand(2, 4))
    bad = [k for k in range(1, p.num_positions) if k not in p.cuts]
    assert bad
    with pytest.raises(PartitionError, match="not a candidate cut.*int"):
        p.split([bad[0]])


@pytest.mark.parametrize(
    "cuts, match",
    [([0], "out of range"), ([10_000], "out of range"), ([-1], "out of range"), (["3"], "must be an int")],
)
def test_bad_cuts(cuts, match):
    p = partition(MultiIO().eval(), (torch.rand(1, 3, 8, 8), torch.rand(1, 8)))
    with pytest.raises(PartitionError, match=match):
        p.split(cuts)


def test_cuts_must_increase():
    p = partition(MultiIO().eval(), (torch.rand(1, 3, 8, 8), torch.rand(1, 8)))
    with pytest.raises(PartitionError, match="strictly increasing"):
        p.split([p.cuts[3], p.cuts[1]])
    with pytest.raises(PartitionError, match="empty"):
        p.range_module(p.cuts[2], p.cuts[2])


def test_no_cuts_gives_whole_model_and_ranges_run_any_batch():
    torch.manual_seed(0)
    model = build_model("resnet18", image_size=64).eval()
    p = partition(model, torch.rand(1, 3, 64, 64))
    (whole,) = p.split([])
    x = torch.rand(3, 3, 64, 64)  # another batch size than traced with
    with torch.no_grad():
        assert torch.equal(whole(x), model(x))
        mid = p.cuts[len(p.cuts) // 2]
        assert torch.equal(p.run_range(mid, p.num_positions, *_as_tuple(p.run_range(0, mid, x))), model(x))


def _as_tuple(v):
    return v if isinstance(v, tuple) else (v,)


def test_signature_is_stable_across_traces():
    a = partition(build_model("vit", image_size=32, patch_size=8).eval(), torch.rand(1, 3, 32, 32))
    b = partition(build_model("vit", image_size=32, patch_size=8).eval(), torch.rand(1, 3, 32, 32))
    assert a.signature == b.signature
