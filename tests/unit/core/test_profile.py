"""Profiles: structure, cumulative sums, codec bytes, JSON round trip. Times come from a fake clock."""

from __future__ import annotations

import itertools
import math

import torch

from edgeflow.core.codecs import get_codec
from edgeflow.core.partition import partition
from edgeflow.core.profile import ModelProfile, _codec_costs, profile_model
from edgeflow.core.zoo import build_model


class FakeClock:
    """Advances 1 ms per reading: every timed interval is exactly 1 ms, so medians are predictable."""

    def __init__(self):
        self._ticks = itertools.count()

    def __call__(self) -> float:
        return next(self._ticks) * 1e-3


def _profile():
    torch.manual_seed(0)
    model = build_model("resnet18", width=8, image_size=32).eval()
    x = torch.rand(1, 3, 32, 32)
    p = partition(model, x)
    prof = profile_model(
        p, (x,), name="r", activation_codecs=[get_codec("int8"), get_codec("lossless")],
        input_codecs=[get_codec("lossless")], repeats=3, codec_repeats=2, clock=FakeClock(),
    )
    return p, prof


def test_profile_structure_and_cumulative_sums():
    p, prof = _profile()
    assert len(prof.positions) == p.num_positions + 1
    assert prof.signature == p.signature
    # every node takes exactly one fake-clock tick
    assert abs(prof.positions[-1].cum_compute_s - p.num_positions * 1e-3) < 1e-9
    assert abs(prof.range_compute_s(p.cuts[3], p.cuts[10]) - (p.cuts[10] - p.cuts[3]) * 1e-3) < 1e-9
    flops = [pp.cum_flops for pp in prof.positions]
    assert flops == sorted(flops) and flops[-1] > 1e6  # convs counted, monotone
    for k in p.cuts:
        pp = prof.positions[k]
        assert pp.is_cut and pp.nbytes == p.cut_info(k).nbytes
        assert set(pp.codecs) == {"int8", "lossless"}
        assert pp.codecs["int8"].nbytes < pp.codecs["lossless"].nbytes
    assert set(prof.positions[0].codecs) == {"lossless"}


def test_profile_json_round_trip():
    _, prof = _profile()
    again = ModelProfile.from_json(prof.to_json())
    assert again == prof


def test_codecs_are_timed_as_served_right_after_the_model_ran():
    torch.manual_seed(0)
    model = build_model("resnet18", width=8, image_size=32).eval()
    x = torch.rand(1, 3, 32, 32)
    p = partition(model, x)
    events: list[str] = []
    p.model.register_forward_hook(lambda *_: events.append("F"))
    forwards = {}
    for served in (True, False):
        events.clear()
        profile_model(p, (x,), activation_codecs=[get_codec("int8")], repeats=1, codec_repeats=2, clock=FakeClock(),
                      codecs_as_served=served)  # fmt: skip
        forwards[served] = len(events)
    assert forwards[True] - forwards[False] == 2 * 2 * len(p.cuts)  # before every encode and decode: 2 repeats a cut

    events.clear()
    ticks = itertools.count()

    def clock() -> float:
        events.append("c")
        return next(ticks) * 1e-3

    _codec_costs([x], [get_codec("int8")], 3, clock, disturb=lambda: events.append("F"))
    assert "".join(events) == "FccFcc" * 3  # the disturbance, then the timed call: never timed itself


def test_the_shipped_demo_example_is_the_rendered_calibration_image() -> None:
    from edgeflow.core import data

    assert data.DEMO_EXAMPLE.is_file()
    rendered = data.load_demo_dataset("calibration")[0][:1]
    assert torch.equal(data.demo_example(0), rendered)  # the shipped copy, byte for byte
    assert torch.equal(data.demo_example(3), data.load_demo_dataset("calibration")[0][3:4])  # rendered alone


def test_fitted_codec_times_measure_bytes_everywhere_and_time_a_few_cuts():
    torch.manual_seed(0)
    model = build_model("resnet18", width=8, image_size=32).eval()
    x = torch.rand(1, 3, 32, 32)
    p = partition(model, x)
    codecs = [get_codec("int8"), get_codec("lossless")]
    each = profile_model(p, (x,), activation_codecs=codecs, repeats=1, codec_repeats=1)
    timed: list[int] = []
    events: list[str] = []
    p.model.register_forward_hook(lambda *_: events.append("F"))
    fit = profile_model(p, (x,), activation_codecs=codecs, repeats=1, codec_repeats=1, codec_fit_points=3,
                        count_flops=False, clock=lambda: (timed.append(1), float(len(timed)) * 1e-3)[1])  # fmt: skip
    assert fit.positions[-1].cum_flops == 0 < each.positions[-1].cum_flops
    for a, b in zip(each.positions, fit.positions):
        assert {k: c.nbytes for k, c in a.codecs.items()} == {k: c.nbytes for k, c in b.codecs.items()}
    # times: 3 cuts timed per codec (with a cache flush before each call, not a forward pass), fitted elsewhere
    assert events.count("F") < 10 and all(c.encode_s > 0 and c.decode_s > 0 for pp in fit.positions for c in pp.codecs.values())
    sizes = {pp.position: sum(math.prod(t["shape"]) for t in pp.tensors) for pp in fit.positions if pp.is_cut}
    by_size: dict[int, set[float]] = {}
    for pp in fit.positions:
        if pp.is_cut:
            by_size.setdefault(sizes[pp.position], set()).add(round(pp.codecs["int8"].encode_s, 12))
    assert all(len(v) == 1 for v in by_size.values())  # a function of the size: the same size, the same time
