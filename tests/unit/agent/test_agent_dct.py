"""The dct codec on a real agent chain: a plan names it, the device encodes, the next tier decodes."""

from __future__ import annotations

from typing import Callable

import torch

from edgeflow.agent import Agent, DeviceClient, ModelRuntime
from edgeflow.core.codecs import codec_from_spec, decode

ChainFactory = Callable[..., list[Agent]]


def test_a_dct_hop_carries_fewer_bytes_than_int8_and_decodes_within_its_bound(
    chain: ChainFactory, runtime: ModelRuntime
) -> None:
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    sizes = {}
    for spec in ("int8", "dct:d5"):
        dev, cloud = chain(f"device[0:13]|{spec} > cloud[13:]")
        r = DeviceClient(dev).infer(x)
        assert r.answered_by == cloud.role and r.output.shape == (1, runtime.model(x).shape[1])
        sizes[spec] = r.breakdown.tiers[0].bytes_out
    assert 0 < sizes["dct:d5"] < sizes["int8"]
    # what the device sent at 13 is what the codec makes of the slice's values: within the codec's bound
    with torch.inference_mode():
        acts = runtime.partition.range_module(0, 13)(x)
    codec = codec_from_spec("dct:d5")
    for t in acts if isinstance(acts, tuple) else (acts,):
        assert (decode(codec.encode(t)) - t).abs().max() <= codec.max_abs_error(t)
