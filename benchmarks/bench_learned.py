"""Learned bottleneck codecs (``learned:b<cut>``) on the demo's TEST split: bytes vs fp32 and top-1 loss, as rows of
``benchmarks/results/cuts.json`` (model "demo", codec names starting with ``learned``), measured like
``bench_cuts.py`` (every image its own request at batch 1, header included; times are medians on image 0).

    python benchmarks/bench_learned.py [--artifact edgeflow/weights/demo_bottleneck.safetensors] [--limit 360]

The bottleneck artifact holds the demo model unchanged plus the bottleneck weights, so fp32 accuracy and the
reference answers are the demo's. Other rows in ``--out`` are kept; earlier ``learned`` rows of the demo are
replaced. The bottleneck was trained on the training split only (``scripts/train_bottleneck.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cuts import RESULTS, measure_cut, median_s  # noqa: E402

from edgeflow.core.artifact import load_artifact  # noqa: E402
from edgeflow.core.codecs.learned import LearnedCodec, install_bottlenecks  # noqa: E402
from edgeflow.core.data import DEMO_WEIGHTS, load_demo_dataset  # noqa: E402
from edgeflow.core.partition import partition  # noqa: E402

ARTIFACT = DEMO_WEIGHTS.with_name("demo_bottleneck.safetensors")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", type=Path, default=ARTIFACT)
    ap.add_argument("--split", default="test", help="test (the record) or calibration (while developing)")
    ap.add_argument("--limit", type=int, default=360)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS, help="'-' prints the rows only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    art = load_artifact(args.artifact)
    install_bottlenecks(art.fingerprint, art.bottlenecks)
    x_all, y_all = load_demo_dataset(args.split)
    x_all, y_all = x_all[: args.limit], y_all[: args.limit]
    p = partition(art.model, x_all[:1])
    with torch.no_grad():
        ref_top1 = torch.cat([art.model(x_all[i : i + 32]) for i in range(0, len(x_all), 32)]).argmax(1)
    rows = []
    for cut in sorted(art.bottlenecks):
        head = p.range_module(0, cut)
        with torch.no_grad():
            slice_s = median_s(lambda: head(x_all[:1]))
        row = measure_cut(p, cut, LearnedCodec(cut), x_all, ref_top1, y_all, slice_s)
        rows.append({"model": "demo", **row, "artifact": art.fingerprint, "split": args.split})
        print(f"cut {cut}: {row['bytes_per_request']:.1f} B/request, {row['bytes_ratio']:.1f}x, "
              f"loss {row['accuracy_loss_pts']:.2f} pt, agreement {row['agreement']:.4f} ({args.split}, "
              f"{len(x_all)} images; {time.perf_counter() - t0:.1f}s)", flush=True)
    if str(args.out) == "-":
        print(json.dumps(rows, indent=1))
        return
    if args.split != "test":
        raise SystemExit("cuts.json holds test-split measurements only: pass --out - with --split " + args.split)
    report = json.loads(args.out.read_text()) if args.out.exists() else {"rows": []}
    report["rows"] = [
        r for r in report.get("rows", [])
        if not (r.get("model", "demo") == "demo" and str(r.get("codec", "")).startswith("learned"))
    ] + rows
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {len(rows)} learned rows to {args.out}")


if __name__ == "__main__":
    main()
