"""The planner takes a learned bottleneck as one more codec at its one cut, with its measured accuracy cost."""

from __future__ import annotations

import torch

from edgeflow.core.codecs import get_codec
from edgeflow.core.codecs.learned import Bottleneck, LearnedCodec, install_bottlenecks, uninstall_bottlenecks
from edgeflow.core.partition import partition
from edgeflow.core.planner import Conditions, CostModel, LinkState, TierSpec, codec_drops_from_cuts, search
from edgeflow.core.profile import CodecCost, profile_model
from edgeflow.core.zoo import build_model


def test_profiles_offer_learned_only_at_its_cut() -> None:
    torch.manual_seed(0)
    model = build_model("resnet18", width=8, num_classes=10, image_size=64).eval()
    p = partition(model, torch.rand(1, 3, 64, 64))
    shape = p.cut_info(20).tensors[p.cut_info(20).primary].shape
    same_shape = [k for k in p.cuts if k != 20 and len(p.cut_info(k).tensors) == 1
                  and p.cut_info(k).tensors[0].shape == shape]  # fmt: skip
    assert same_shape  # layer1.0's output, say: the codec would encode there and decode garbage
    install_bottlenecks("c3" * 32, {20: Bottleneck(8, 16, 16, 2, 4, 8).eval()})
    try:
        prof = profile_model(p, (torch.rand(1, 3, 64, 64),), activation_codecs=[get_codec("int8"), LearnedCodec(20)],
                             repeats=1, codec_repeats=1)  # fmt: skip
    finally:
        uninstall_bottlenecks()
    assert "learned" in prof.positions[20].codecs
    assert all("learned" not in prof.positions[k].codecs for k in p.cuts if k != 20)
    assert all("int8" in prof.positions[k].codecs for k in same_shape)


def test_scarce_bandwidth_picks_learned_at_its_cut_with_its_measured_drop(tiny) -> None:
    tiny.positions[2].codecs["learned"] = CodecCost(100, 1e-3, 1e-3)  # at cut 2 only
    report = {"rows": [
        {"model": "demo", "cut": 2, "codec": "learned:b2", "accuracy_loss_pts": 0.5},
        {"model": "demo", "cut": 2, "codec": "int8:z1", "accuracy_loss_pts": 0.0},
    ]}  # fmt: skip
    drops = codec_drops_from_cuts(report)
    assert drops[(2, "learned")] == 0.5
    tiers = [TierSpec("device", tiny, compute_scale=4.0), TierSpec("cloud", tiny)]

    def best(drop_table, bps):
        md = CostModel(tiers, activation_codecs=["lossless", "int8", "learned"], input_codecs=["lossless"],
                       codec_accuracy_drop=drop_table, max_accuracy_drop_pts=1.0)  # fmt: skip
        return md, search(md, Conditions((LinkState(bps, 0.01),))).best.plan

    md, scarce = best(drops, 20e3)
    assert [s.codec for s in scarce.stages][:-1] == ["learned:b2"], str(scarce)
    assert md.canonical(scarce) == scarce  # the spec parses back to the same choice
    _, wide = best(drops, 1e9)
    assert not any((s.codec or "").startswith("learned") for s in wide.stages), str(wide)
    _, unmeasured = best({}, 20e3)  # no measurement: the default drop (4 pts) keeps it out of a 1-point budget
    assert not any((s.codec or "").startswith("learned") for s in unmeasured.stages), str(unmeasured)
