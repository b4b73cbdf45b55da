"""PNG plots of a scenario report (matplotlib, Agg backend: no display needed).

- ``latency_over_time.png``: edgeflow's per-request latency over the run, lost requests and fallback answers
  marked, the links' set bandwidth underneath (outages at 0), plan switches as vertical lines, and faults as
  shaded spans from the moment a peer went down to its return.
- ``latency_cdf.png``: latency CDF of edgeflow and every baseline.
- ``bytes_per_request.png``: mean bytes per request per run, split by hop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_plots"]

_HOP_LABEL = {"device_edge": "device-edge", "edge_cloud": "edge-cloud"}


def write_plots(result: Any, records: dict[str, list[dict[str, Any]]], summary: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write the three plots into ``out_dir``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    paths = [
        _over_time(plt, result, records["edgeflow"], out_dir / "latency_over_time.png", summary.get("faults", [])),
        _cdf(plt, records, summary, out_dir / "latency_cdf.png"),
        _bytes(plt, records, summary, out_dir / "bytes_per_request.png"),
    ]
    plt.close("all")
    return paths


def _over_time(plt: Any, result: Any, recs: list[dict[str, Any]], path: Path, faults: list[dict[str, Any]]) -> Path:
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    ok = [r for r in recs if r["status"] == "answered"]
    lost = [r for r in recs if r["status"] != "answered"]
    fell = [r for r in ok if r.get("fallback")]
    ax.plot([r["send_s"] for r in ok], [r["latency_ms"] for r in ok], ".", ms=4, label="edgeflow latency")
    if fell:
        ax.plot([r["send_s"] for r in fell], [r["latency_ms"] for r in fell], "o", ms=6, mfc="none", color="tab:orange",
                label="fallback")  # fmt: skip
    if lost:
        ax.plot([r["send_s"] for r in lost], [0] * len(lost), "rx", label="lost")
    for f in (x for x in faults if x.get("down_s") is not None):
        end = f["up_s"] if f.get("up_s") is not None else max([r["send_s"] for r in recs] + [f["down_s"]])
        for axis in (ax, bx):
            axis.axvspan(f["down_s"], end, color="tab:purple", alpha=0.12, lw=0)
        ax.text(f["down_s"], 0.02, f" {f['kind']} {f['target']}", transform=ax.get_xaxis_transform(), fontsize=7,
                va="bottom", color="tab:purple")  # fmt: skip
    ordered = sorted(recs, key=lambda r: r["send_s"])
    for a, b in zip(ordered, ordered[1:]):
        if a["plan"] != b["plan"]:
            for axis in (ax, bx):
                axis.axvline(b["send_s"], color="tab:red", lw=0.8, alpha=0.6)
    if result.scenario.slo_ms:
        ax.axhline(result.scenario.slo_ms, color="grey", ls="--", lw=0.8, label="SLO")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log" if ok and max(r["latency_ms"] for r in ok) > 20 * min(r["latency_ms"] for r in ok) else "linear")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{result.scenario.name}: edgeflow ({result.adaptation['mode']} plan)", fontsize=10)
    end = max([r["send_s"] for r in recs] + [1.0]) * 1.02
    t = np.linspace(0, end, 600)
    for name, lp in result.links.items():
        if lp.trace is None and not lp.outages:
            continue
        rate = [lp.rate_bps_at(x) for x in t]
        bx.step(t, [np.nan if v is None else v / 1e6 for v in rate], where="post", label=_HOP_LABEL.get(name, name))
    bx.set_ylabel("set rate (Mbit/s)")
    bx.set_xlabel("time since run start (s)")
    if bx.get_legend_handles_labels()[0]:
        bx.legend(loc="upper right", fontsize=8)
    else:
        bx.text(0.5, 0.5, "links unshaped", ha="center", va="center", transform=bx.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _cdf(plt: Any, records: dict[str, list[dict[str, Any]]], summary: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels: dict[str, list[str]] = {"edgeflow": ["edgeflow"]}  # run -> names it stands for (equal plans: one curve)
    for name, b in summary["baselines"].items():
        run = b.get("chosen_run", name)
        key = next((k for k in labels if summary["runs"].get(k, {}).get("plan") == b["plan"]), run)
        labels.setdefault(key, []).append(name)
    for run, names in labels.items():
        label = " = ".join(names)
        lat = np.sort([r["latency_ms"] for r in records[run] if r["status"] == "answered"])
        if lat.size == 0:
            continue
        frac = np.arange(1, lat.size + 1) / len(records[run])  # lost requests keep the curve below 1
        ax.step(lat, frac, where="post", lw=2.0 if "edgeflow" in names else 1.2, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of requests answered")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _bytes(plt: Any, records: dict[str, list[dict[str, Any]]], summary: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    rows = [("edgeflow", summary)] + list(summary["baselines"].items())
    names = [n for n, _ in rows]
    bottom = np.zeros(len(rows))
    for hop in ("device_edge", "edge_cloud"):
        vals = np.array([m["bytes_per_hop"][hop] for _, m in rows]) / 1e3
        ax.bar(names, vals, bottom=bottom, label=_HOP_LABEL[hop])
        bottom += vals
    ax.set_ylabel("kB per answered request (up + down)")
    ax.legend(fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
