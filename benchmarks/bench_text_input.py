"""Text in at a device agent vs token ids in: request bytes and the device's time per request, all-MiniLM-L6-v2.

    python benchmarks/bench_text_input.py [--out benchmarks/results/text_input.json] [--repeats 3]

Needs the extra edgeflow[text]. A device agent (in process, device-only plan ``device[0:]``, 32 tokens) is sent each
shipped sentence (scenarios/data/sentences.txt, 63) twice per round: as text (one ``BYTES`` row, tokenized by the
agent, edgeflow.agent.textin) and as its token ids and mask (two lossless INT64 payloads, tokenized by the caller),
both through the full request encoding and decoding (encode_request / decode_request, what gRPC carries). Reports
the mean request bytes of each and their ratio, the p50 of the agent's time per request (decode + admission +
tokenize + the encoder) of each and their ratio, and that both answers are bit-exact. Ratios from one run on this
host; the machine is shared and loaded, so absolute times are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgeflow.agent import Agent  # noqa: E402
from edgeflow.agent.loader import load_runtime  # noqa: E402
from edgeflow.config import NodeConfig  # noqa: E402
from edgeflow.core.codecs import decode, get_codec  # noqa: E402
from edgeflow.core.text import read_sentences  # noqa: E402
from edgeflow.transport import InferCall, WireLimits, WireTensor  # noqa: E402
from edgeflow.transport.messages import decode_request, encode_request  # noqa: E402
from edgeflow.transport.strings import BYTES, encode_strings  # noqa: E402

SENTENCES = REPO / "scenarios" / "data" / "sentences.txt"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "text_input.json"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = NodeConfig.from_mapping({"role": "device", "plan": "device[0:]", "model": {"artifact": "text:all-MiniLM-L6-v2"}})
    agent = Agent(cfg, load_runtime(cfg), profile_repeats=0)
    codec = get_codec("lossless")
    sentences = read_sentences(SENTENCES)
    nbytes: dict[str, list[int]] = {"text": [], "tokens": []}
    times: dict[str, list[float]] = {"text": [], "tokens": []}
    exact = True
    try:
        for r in range(args.repeats + 1):  # round 0 warms up
            for i, s in enumerate(sentences):
                ids, mask = agent.runtime.tokenizer.encode([s])
                calls = {
                    "text": [WireTensor("text", BYTES, (1,), "", encode_strings([s]))],
                    "tokens": [WireTensor("input_ids", "INT64", tuple(ids.shape), codec.spec, codec.encode(ids)),
                               WireTensor("attention_mask", "INT64", tuple(mask.shape), codec.spec, codec.encode(mask))],
                }  # fmt: skip
                out = {}
                for kind, tensors in calls.items():
                    data = encode_request(InferCall(f"{kind}-{r}-{i}", agent.fingerprint, 0, tensors))
                    t0 = time.perf_counter()
                    reply = agent.infer(decode_request(data, WireLimits()), time.monotonic() + 60)
                    dt = time.perf_counter() - t0
                    out[kind] = decode(reply.tensors[0].payload, reply.tensors[0].decode_limits())
                    if r:
                        nbytes[kind].append(len(data))
                        times[kind].append(dt)
                exact = exact and torch.equal(out["text"], out["tokens"])
    finally:
        agent.close()
    mean_b = {k: statistics.fmean(v) for k, v in nbytes.items()}
    p50 = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "model": "text:all-MiniLM-L6-v2 (32 tokens)",
        "sentences": len(sentences),
        "repeats": args.repeats,
        "request_bytes_mean": {k: round(v, 1) for k, v in mean_b.items()},
        "request_bytes_ratio_text_over_tokens": round(mean_b["text"] / mean_b["tokens"], 3),
        "device_time_p50_ms": {k: round(v * 1e3, 3) for k, v in p50.items()},
        "device_time_ratio_text_over_tokens": round(p50["text"] / p50["tokens"], 3),
        "bit_exact_text_vs_tokens": exact,
        "host": f"{platform.machine()}, {torch.get_num_threads()} torch thread; shared and loaded machine",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
