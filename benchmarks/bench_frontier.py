"""Rate-accuracy curves per cut: bits per element vs top-1 loss for every codec, with references, in one run.

    python benchmarks/bench_frontier.py [--limit 360] [--every 4] [--extra-cuts 20,36,52] [--split test]

For the demo model (trained weights; the test split measures, nothing is tuned on it) at every ``--every``-th
mid-network cut (positions n/4..3n/4) and at the outputs of layer1..layer3: each codec of ``CODECS`` and ``dct`` at every step of ``--steps``
(tenths of a std), measured as ``bench_cuts.py`` measures (batch 1 per image, payload bytes including the
edgeflow header). References in the same run: fp32 (32 bits per element, 0 loss), int8 and today's best
(``int2``, 16.95x at 0.28 pt at layer2.1.conv2 before this benchmark existed), each measured at every cut.

Writes benchmarks/results/frontier.json and frontier.png (matplotlib; skipped with a note if missing).
The step of ``dct``'s default (d15) was chosen on the *training* split: see ``--split train``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_cuts import measure_cut, median_s  # noqa: E402

from edgeflow.core.artifact import load_artifact  # noqa: E402
from edgeflow.core.codecs import codec_from_spec  # noqa: E402
from edgeflow.core.data import DEMO_WEIGHTS, load_demo_dataset  # noqa: E402
from edgeflow.core.partition import partition  # noqa: E402

CODECS = ("fp16", "int8", "int8c", "int4", "int2")
TODAYS_BEST = "int2"  # 16.95x at 0.28 pt (layer2.1.conv2), benchmarks/results/cuts.json before dct
RESULTS = Path(__file__).resolve().parent / "results"


def plot(report: dict[str, Any], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"no plot: {e}"
    curves = report["curves"]
    cols = 3
    rows = -(-len(curves) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (cut, c) in zip(axes.flat, curves.items()):
        dct = [r for r in c["rows"] if r["codec"].startswith("dct")]
        ax.plot([r["bits_per_element"] for r in dct], [r["accuracy_loss_pts"] for r in dct], "o-", label="dct (steps)")
        for r in c["rows"]:
            if not r["codec"].startswith("dct"):
                ax.plot(r["bits_per_element"], r["accuracy_loss_pts"], "s", label=r["codec"].split(":")[0])
        ax.axvline(32.0, color="k", ls=":", label="fp32 (32 b/elt)")
        ax.axvline(c["reference"]["int8_bits_per_element"], color="tab:green", ls="--", label="int8")
        ax.axvline(c["reference"]["todays_best_bits_per_element"], color="tab:red", ls="--", label="today's best (int2)")
        ax.axvline(1.0, color="tab:purple", ls="-.", lw=0.8, label="32x target (1 b/elt)")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_title(f"cut {cut} {c['label']} ({c['fp32_bytes']} B fp32)", fontsize=9)
        ax.set_xlabel("bits per element (payload incl. header)", fontsize=8)
        ax.set_ylabel("top-1 loss (pts)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=7)
    fig.suptitle(f"demo ({report['images']} test images): rate vs top-1 loss per cut", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    fig.savefig(path, dpi=110)
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=360)
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--extra-cuts", default="20,36,52", help="also these (the outputs of layer1..layer3)")
    ap.add_argument("--steps", default="5,8,10,12,15,18,20,25,30")
    ap.add_argument("--split", default="test", choices=["train", "test"], help="train: choosing the step")
    ap.add_argument("--out", type=Path, default=RESULTS / "frontier.json")
    args = ap.parse_args()
    torch.set_num_threads(1)

    art = load_artifact(DEMO_WEIGHTS)
    x_all, y_all = load_demo_dataset(args.split)
    x_all, y_all = x_all[: args.limit], y_all[: args.limit]
    p = partition(art.model, x_all[:1])
    n = p.num_positions
    with torch.no_grad():
        ref_top1 = art.model(x_all).argmax(1)
    specs = [*CODECS, *(f"dct:d{s}" for s in args.steps.split(","))]
    codecs = [codec_from_spec(s) for s in specs]
    extra = {int(k) for k in args.extra_cuts.split(",") if k.strip()}
    cuts = sorted({k for k in p.cuts[:: args.every] if n // 4 <= k <= 3 * n // 4} | (extra & set(p.cuts)))
    t0 = time.perf_counter()
    curves: dict[str, Any] = {}
    for k in cuts:
        head = p.range_module(0, k)
        with torch.no_grad():
            slice_s = median_s(lambda: head(x_all[:1]))
        rows = [measure_cut(p, k, c, x_all, ref_top1, y_all, slice_s) for c in codecs]
        by = {r["codec"].split(":")[0]: r for r in rows if not r["codec"].startswith("dct")}
        curves[str(k)] = {
            "label": p.node_label(k - 1), "fp32_bytes": rows[0]["fp32_bytes"], "rows": rows,
            "reference": {"fp32_bits_per_element": 32.0, "fp32_loss_pts": 0.0,
                          "int8_bits_per_element": by["int8"]["bits_per_element"],
                          "int8_loss_pts": by["int8"]["accuracy_loss_pts"],
                          "todays_best": by[TODAYS_BEST]["codec"],
                          "todays_best_bits_per_element": by[TODAYS_BEST]["bits_per_element"],
                          "todays_best_loss_pts": by[TODAYS_BEST]["accuracy_loss_pts"]},
        }  # fmt: skip
        print(f"cut {k} {p.node_label(k - 1)}: " + "  ".join(
            f"{r['codec']} {r['bytes_ratio']:.1f}x/{r['accuracy_loss_pts']:+.2f}" for r in rows), flush=True)
    best = [r | {"cut": int(k)} for k, c in curves.items() for r in c["rows"]
            if r["bytes_ratio"] >= 32 and r["accuracy_loss_pts"] <= 1.0]  # fmt: skip
    report = {
        "model": "demo", "fingerprint": art.fingerprint, "split": args.split, "images": len(x_all),
        "fp32_accuracy": float((ref_top1 == y_all).float().mean()), "cuts": cuts, "codecs": specs,
        "wall_s": time.perf_counter() - t0,
        "meeting_32x_at_1pt": [f"cut {r['cut']} {r['label']} {r['codec']}: {r['bytes_ratio']:.1f}x, "
                               f"{r['accuracy_loss_pts']:.2f} pt" for r in best],  # fmt: skip
        "curves": curves,
    }
    stem = args.out.with_suffix("") if args.split == "test" else args.out.with_name(args.out.stem + "_train")
    report["plot"] = plot(report, stem.with_suffix(".png"))
    if Path(report["plot"]).is_absolute():  # the file's name in the repository, not on this machine
        report["plot"] = str(Path(report["plot"]).resolve().relative_to(Path(__file__).resolve().parents[1]))
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "curves"}, indent=1))


if __name__ == "__main__":
    main()
