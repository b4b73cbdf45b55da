"""Profiles: structure, cumulative sums, codec bytes, JSON round trip. Times come from a fake clock."""

from __future__ import annotations

import itertools

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
