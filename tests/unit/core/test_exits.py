"""Exit heads, taps, training and the calibration table."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeflow.core.artifact import load_artifact
from edgeflow.core.data import DEMO_WEIGHTS
from edgeflow.core.exits import (
    CRITERIA,
    CalibrationTable,
    ExitHead,
    ExitSpec,
    TrainConfig,
    calibrate,
    check_exits,
    confidence,
    evaluate,
    exit_specs_for,
    partition_tap,
    position_after,
    train_with_exits,
)
from edgeflow.core.partition import partition
from edgeflow.core.zoo import build_model
from edgeflow.errors import PartitionError


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_model("resnet18", width=4, num_classes=3, image_size=32).eval()
    p = partition(model, torch.rand(1, 3, 32, 32))
    return model, p


@pytest.mark.parametrize(
    "spec, shape",
    [
        (ExitSpec(1, 8, 5), (2, 8, 6, 6)),
        (ExitSpec(1, 8, 5, hidden=4), (2, 8, 6, 6)),
        (ExitSpec(1, 8, 5, hidden=16, pool=4), (2, 8, 6, 6)),
        (ExitSpec(1, 8, 5, pool=2), (2, 8, 1, 1)),  # a grid larger than the map repeats cells
        (ExitSpec(1, 8, 5, rank=3), (2, 9, 8)),
        (ExitSpec(1, 8, 5, rank=3, hidden=3), (2, 9, 8)),
    ],
)
def test_head_shapes(spec, shape):
    head = ExitHead(spec)
    assert head(torch.rand(shape)).shape == (2, 5)
    assert head.position == 1


def test_head_rejects_bad_specs_and_inputs():
    with pytest.raises(ValueError, match="rank"):
        ExitHead(ExitSpec(1, 8, 5, rank=2))
    with pytest.raises(ValueError, match="pool"):
        ExitHead(ExitSpec(1, 8, 5, rank=3, pool=2))
    with pytest.raises(ValueError, match="expects rank 4"):
        ExitHead(ExitSpec(1, 8, 5))(torch.rand(2, 9, 8))


def test_spec_json_round_trip():
    s = ExitSpec(3, 8, 5, rank=4, hidden=2, pool=4, tensor="relu_1")
    assert ExitSpec.from_json(s.to_json()) == s


def test_confidence_criteria():
    logits = torch.tensor([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 2.0, 0.5]])
    for c in CRITERIA:
        conf = confidence(logits, c)
        assert conf.shape == (3,) and ((conf >= 0) & (conf <= 1)).all()
        assert conf[0] > conf[2] > conf[1]
    assert confidence(logits, "max_prob")[1].item() == pytest.approx(1 / 3)
    assert confidence(logits, "entropy")[1].item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="unknown exit criterion"):
        confidence(logits, "margin")


def test_positions_specs_and_tap_match_the_partition(tiny):
    model, p = tiny
    positions = [position_after(p, f"layer{i}") for i in (1, 2, 3)]
    assert positions == sorted(positions) and all(k in p.cuts for k in positions)
    specs = exit_specs_for(p, positions, 3, hidden=[8, None, None], pool=(4, 2, 1))
    assert [s.in_channels for s in specs] == [4, 8, 16] and [s.pool for s in specs] == [4, 2, 1]
    assert specs[0].hidden == 8 and specs[1].hidden is None
    heads = [ExitHead(s) for s in specs]
    check_exits(p, heads)
    x = torch.rand(2, 3, 32, 32)
    feats, out = partition_tap(p, positions)(x)
    acts = p.activations(x, positions=positions)
    for k, f in zip(positions, feats):
        assert torch.equal(f, acts[k][p.cut_info(k).primary])
    with torch.no_grad():
        assert torch.equal(out, model(x))
    with pytest.raises(PartitionError, match="no graph node"):
        position_after(p, "layer9")
    with pytest.raises(PartitionError, match="trained on"):
        check_exits(p, [ExitHead(ExitSpec(positions[0], 4, 3, tensor="elsewhere"))])


def test_joint_training_learns_and_frozen_training_keeps_the_backbone(tiny):
    _, p0 = tiny
    torch.manual_seed(0)
    model = build_model("resnet18", width=4, num_classes=3, image_size=32).eval()
    p = partition(model, torch.rand(1, 3, 32, 32))
    positions = [position_after(p, "layer1"), position_after(p, "layer2")]
    heads = [ExitHead(s) for s in exit_specs_for(p, positions, 3, pool=2)]
    tap = partition_tap(p, positions)
    # A separable toy task: the class is which colour channel is brightest.
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (96,), generator=g)
    x = torch.rand(96, 3, 32, 32, generator=g) * 0.5
    x[torch.arange(96), y] += 0.5
    cfg = TrainConfig(epochs=6, batch_size=32, lr=1e-2, label_smoothing=0.0)
    losses = train_with_exits(model, tap, heads, lambda e: (x, y), cfg)
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert not model.training and all(not h.training for h in heads)
    acc = evaluate(tap, heads, x, y)
    assert set(acc) == {"final", f"exit@{positions[0]}", f"exit@{positions[1]}"} and acc["final"] > 0.6

    before = {k: v.clone() for k, v in model.state_dict().items()}
    head_before = heads[0].fc.weight.clone()
    train_with_exits(model, tap, heads, lambda e: (x, y), TrainConfig(epochs=1, batch_size=32, freeze_backbone=True))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # batch-norm stats too
    assert not torch.equal(head_before, heads[0].fc.weight)
    assert all(q.requires_grad for q in model.parameters())


class _FakeTap:
    """Exit logits and final logits fixed in advance: calibration is then exact arithmetic."""

    def __init__(self, exit_logits, final_logits):
        self.exit_logits, self.final_logits, self.i = exit_logits, final_logits, 0

    def __call__(self, x):
        n = len(x)
        sl = slice(self.i, self.i + n)
        self.i = (self.i + n) % len(self.final_logits)
        return [e[sl] for e in self.exit_logits], self.final_logits[sl]


class _PassHead(ExitHead):
    def __init__(self, position):
        super().__init__(ExitSpec(position, 1, 2, rank=3))

    def forward(self, x):
        return x


def test_calibration_numbers_are_exact():
    # 4 samples, labels 0 0 1 1. The exit is right on samples 0, 1, 2 with confidence 0.88, 0.5, 0.73
    # (sample 1 is a tie, and argmax picks class 0); wrong on 3 with confidence 0.98.
    # The final model is right on all but sample 0.
    y = torch.tensor([0, 0, 1, 1])
    exit_logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 1.0], [4.0, 0.0]])
    final = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    table = calibrate(_FakeTap([exit_logits], final), [_PassHead(7)], torch.zeros(4, 1), y, thresholds=[0.0, 0.6, 0.9, 0.99], criteria=["max_prob"], batch_size=3)
    rows = {r.threshold: r for r in table.rows_for(7)}
    assert table.final_accuracy == 0.75 and table.exit_accuracy == {7: 0.75} and table.num_samples == 4
    assert (rows[0.0].exit_rate, rows[0.0].exit_accuracy, rows[0.0].overall_accuracy) == (1.0, 0.75, 0.75)
    assert (rows[0.6].exit_rate, rows[0.6].exit_accuracy, rows[0.6].overall_accuracy) == (0.75, 2 / 3, 0.75)
    assert (rows[0.9].exit_rate, rows[0.9].exit_accuracy, rows[0.9].overall_accuracy) == (0.25, 0.0, 0.5)
    assert (rows[0.99].exit_rate, rows[0.99].exit_accuracy, rows[0.99].overall_accuracy) == (0.0, None, 0.75)
    assert table.threshold_for(7, 0.75).threshold == 0.0  # highest exit rate that keeps 75%
    assert table.threshold_for(7, 0.8) is None
    assert CalibrationTable.from_json(table.to_json()) == table


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(CRITERIA))
def test_higher_threshold_never_exits_more(seed, criterion):
    g = torch.Generator().manual_seed(seed)
    n = 50
    y = torch.randint(0, 5, (n,), generator=g)
    exits = [torch.randn(n, 5, generator=g) * s for s in (0.5, 3.0)]
    final = torch.randn(n, 5, generator=g)
    table = calibrate(_FakeTap(exits, final), [_PassHead(3), _PassHead(9)], torch.zeros(n, 1), y, criteria=[criterion])
    for k in (3, 9):
        rows = table.rows_for(k, criterion)
        rates = [r.exit_rate for r in rows]
        assert [r.threshold for r in rows] == sorted(r.threshold for r in rows)
        assert all(a >= b for a, b in zip(rates, rates[1:]))
        assert rows[0].threshold == 0.0 and rows[0].exit_rate == 1.0
        for r in rows:
            assert 0 <= r.overall_accuracy <= 1 and (r.exit_accuracy is None) == (r.exit_rate == 0)


@pytest.mark.skipif(not DEMO_WEIGHTS.exists(), reason="demo artifact not built")
def test_demo_artifact_exits_fit_and_calibration_is_sane():
    art = load_artifact(DEMO_WEIGHTS)
    p = partition(art.model, art.example_input())
    check_exits(p, art.exits)
    assert art.exit_positions == [position_after(p, f"layer{i}") for i in (1, 2, 3)]
    table = art.calibration
    assert table.positions == art.exit_positions and table.final_accuracy >= 0.9
    for k in table.positions:
        for c in CRITERIA:
            rates = [r.exit_rate for r in table.rows_for(k, c)]
            assert rates and all(a >= b for a, b in zip(rates, rates[1:]))
        assert not math.isnan(table.exit_accuracy[k])
    assert "exit@" in table.summary()
