"""Bytes vs fp32 and top-1 agreement per codec at every cut of the demo model (trained weights, real test set).

    python benchmarks/bench_cuts.py [--every 1] [--limit 360] [--out benchmarks/results/cuts.json]

For each candidate cut k and codec, every test image is sent as its own request (batch 1, as on the wire):
its activations at k are encoded, decoded, and the rest of the model [k:N] runs on them. Reported per
(cut, codec), all measured in one run:
  - ``bytes_ratio``: fp32 bytes crossing k / encoded bytes (mean over images),
  - ``agreement``: top-1 agreement with the unsplit fp32 model, ``accuracy_loss_pts`` vs fp32 accuracy,
  - ``codec_vs_slice``: (encode + decode seconds) / compute seconds of the device slice [0:k], medians.
The summary names the cuts that meet the issue's target: >= 16x fewer bytes, <= 1 point top-1 loss, and
encode+decode <= 10% of the slice's compute.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgeflow.core.artifact import load_artifact  # noqa: E402
from edgeflow.core.codecs import decode, get_codec  # noqa: E402
from edgeflow.core.data import DEMO_WEIGHTS, load_demo_dataset  # noqa: E402
from edgeflow.core.partition import partition  # noqa: E402

CODECS = ("lossless", "fp16", "int8", "int8c", "int4", "int2")
RESULTS = Path(__file__).resolve().parent / "results" / "cuts.json"


def _as_tuple(v):
    return v if isinstance(v, tuple) else (v,)


def _median_s(fn, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--every", type=int, default=1, help="measure every n-th cut")
    ap.add_argument("--limit", type=int, default=360, help="test images used")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    art = load_artifact(DEMO_WEIGHTS)
    model = art.model
    x_all, y_all = load_demo_dataset("test")
    x_all, y_all = x_all[: args.limit], y_all[: args.limit]
    p = partition(model, x_all[:1])
    n = p.num_positions
    with torch.no_grad():
        ref_logits = model(x_all)
    ref_top1 = ref_logits.argmax(1)
    ref_acc = float((ref_top1 == y_all).float().mean())
    codecs = [get_codec(c) for c in CODECS]
    rows = []
    cuts = p.cuts[:: args.every]
    t_start = time.perf_counter()
    for k in cuts:
        head, tail = p.range_module(0, k), p.range_module(k, n)
        x1 = x_all[:1]
        slice_s = _median_s(lambda: head(x1))
        acts1 = _as_tuple(head(x1))
        fp32_bytes = sum(t.numel() * 4 for t in acts1)
        for codec in codecs:
            codec_s = _median_s(lambda: [decode(codec.encode(t)) for t in acts1])
            nbytes, preds = 0, []
            with torch.no_grad():
                for i in range(len(x_all)):
                    acts = _as_tuple(head(x_all[i : i + 1]))
                    payloads = [codec.encode(t) for t in acts]
                    nbytes += sum(len(pl) for pl in payloads)
                    preds.append(int(tail(*[decode(pl) for pl in payloads]).argmax(1)))
            pred = torch.tensor(preds)
            rows.append({
                "cut": k,
                "label": p.node_label(k - 1),
                "codec": codec.spec,
                "fp32_bytes": fp32_bytes,
                "bytes_per_request": nbytes / len(x_all),
                "bytes_ratio": fp32_bytes * len(x_all) / nbytes,
                "agreement": float((pred == ref_top1).float().mean()),
                "accuracy": float((pred == y_all).float().mean()),
                "accuracy_loss_pts": 100 * (ref_acc - float((pred == y_all).float().mean())),
                "slice_compute_s": slice_s,
                "codec_s": codec_s,
                "codec_vs_slice": codec_s / slice_s,
            })
        print(f"cut {k:3d} {p.node_label(k - 1):>18s}: " + "  ".join(
            f"{r['codec'].split(':')[0]} {r['bytes_ratio']:.1f}x/{r['agreement']:.3f}" for r in rows[-len(codecs):]
        ), flush=True)
    meets = [r for r in rows if r["bytes_ratio"] >= 16 and r["accuracy_loss_pts"] <= 1.0]
    meets_all = [r for r in meets if r["codec_vs_slice"] <= 0.10]
    mid = [r for r in meets if n // 4 <= r["cut"] <= 3 * n // 4]
    best_mid = max(mid, key=lambda r: r["bytes_ratio"], default=None)
    summary = {
        "model": "demo", "fingerprint": art.fingerprint, "test_images": len(x_all), "fp32_accuracy": ref_acc,
        "threads": args.threads, "num_positions": n, "cuts_measured": len(cuts),
        "wall_s": time.perf_counter() - t_start,
        "target": ">=16x fewer bytes than fp32, <=1 pt top-1 loss, encode+decode <=10% of slice compute",
        "cut_codecs_meeting_bytes_and_accuracy": len(meets),
        "cut_codecs_meeting_all": len(meets_all),
        "best_mid_network": best_mid,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
