"""The report of a scenario: ``summary.json``, ``requests.jsonl``, ``report.md`` (plots: :mod:`.plots`).

Metrics per run (edgeflow's and each baseline's, computed the same way):

- ``requests``, ``answered`` (an answer arrived), ``lost`` (no answer before the request's deadline: an error
  or a timeout), ``duplicated`` (answers beyond the first for one request id). ``answered + lost == requests``.
- ``latency_ms``: p50/p95/p99/mean over answered requests, from the scheduled send time to the answer.
- ``accuracy``: top-1 against the labels over answered requests (None for unlabelled workloads);
  ``agreement``: top-1 agreement with the unsplit fp32 model over answered requests. For a model whose output
  is an embedding (a text workload: no labels, no classes) a request agrees when its answer's cosine similarity
  with the unsplit model's output is at least ``AGREE_COSINE``; ``cosine`` gives the mean and min over answered
  requests and ``bit_exact`` the share of answers equal to the unsplit model's bit for bit.
- ``memory`` (None unless the device's result memory is on): ``hits``, ``misses``, ``hit_rate``, ``bytes_saved``
  (what the hits' first requests moved over every hop), ``bytes_moved`` and ``bytes_without_memory``.
- ``validation`` (None unless the device checks upstream answers, ``validate``): ``checked`` (upstream answers),
  ``flagged`` (flagged or recomputed), ``recomputed``, ``unchecked``; ``flipped``: answers whose upstream class is
  not the unsplit model's (the runner knows it, the device does not; with a lossy plan an honest answer can differ
  too); ``detection_rate`` = flipped answers flagged / flipped; ``false_alarm_rate`` = answers not flipped that were
  flagged / answers not flipped.
- ``bytes_per_request``: mean bytes on the links per answered request, both directions, all hops
  (``bytes_per_hop`` splits it: ``device_edge`` / ``edge_cloud``, request up + reply down).
- ``plan_switches``: changes of plan between consecutive requests (by send time).
- ``deadline_miss_rate``: share of requests lost or slower than the SLO (lost only, when there is no SLO).
- ``fallbacks``: requests answered although a tier could not reach its upstream (it finished the model itself:
  the reply's ``breakdown.fallback`` says which tier and why).

With faults or link outages (:func:`recovery_metrics`): ``faults`` (what happened when, each with its
``resume_s`` and ``deadline_misses``), ``split_resumed``, ``resume_s`` and ``deadline_misses_per_outage``.

``ratios``: for each baseline, baseline / edgeflow for latency p50, p95 and mean, and for bytes per request;
above 1 means edgeflow is better.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from edgeflow.core.plan import Plan
from edgeflow.errors import PlanError
from edgeflow.scenario.runner import RunResult, ScenarioResult

__all__ = ["request_records", "run_metrics", "recovery_metrics", "build_summary", "write_report"]

_HOPS = ("device_edge", "edge_cloud")
_TIER_OF_HOP = {"device_edge": "device", "edge_cloud": "edge"}  # the tier whose bytes_out is the hop
# The tiers a fault takes out of reach of the device: the edge is the device's only way to the cloud.
_OUT_OF_REACH = {"edge": ("edge", "cloud"), "cloud": ("cloud",), "device_edge": ("edge", "cloud"), "edge_cloud": ("cloud",)}
# After a peer returns, requests sent within this long still count towards its fault's deadline misses (the
# switch back to split mode is part of the recovery; target <= 2 s, benchmarks/bench_chaos.py).
SETTLE_S = 2.0
AGREE_COSINE = 0.99  # an embedding answer agrees with the unsplit model at this cosine similarity or above


def _ms(x: float) -> float:
    return round(x * 1e3, 3)


def request_records(result: ScenarioResult, run: RunResult) -> list[dict[str, Any]]:
    """One JSON-ready record per request of ``run`` (see ``docs/SCENARIOS.md`` for the fields)."""
    wl = result.workload
    plan = run.spec.key
    streamed = result.scenario.workload.streamed
    out = []
    for o in sorted(run.outcomes, key=lambda o: o.index):
        rec: dict[str, Any] = {
            "run": run.spec.name, "id": o.request_id, "index": o.index, "device": o.device,
            "sample": int(wl.sample_index[o.index]), "send_s": round(o.send_s, 6), "start_s": round(o.start_s, 6),
            "plan": o.plan or plan, "status": "answered" if o.answer is not None else "lost", "error": o.error,
            "answers": o.answers, "fallback": "", "trace_id": o.trace_id, "streamed": streamed,
        }  # fmt: skip
        rec["bandwidth_mbit"] = {h: _mbit(result.links[h].rate_bps_at(o.send_s)) for h in _HOPS}
        if o.answer is not None:
            b = o.answer.breakdown
            fidelity = _embedding_fidelity(o.answer.logits, result.reference, o.index)
            pred = None if fidelity else int(o.answer.logits.float().argmax(dim=-1)[0])
            label = None if wl.labels is None else int(wl.labels[o.index])
            tiers = {t.tier: t for t in b.tiers}
            rec.update(
                latency_ms=_ms(o.latency_s or 0.0),
                answered_by=b.answered_by,
                exit_position=b.exit_position,
                exit_confidence=round(b.exit_confidence, 6),
                fallback=b.fallback,
                memory=b.memory,
                memory_saved_bytes=b.memory_saved_bytes,
                validation=b.validation,
                validation_reason=b.validation_reason,
                upstream_class=b.upstream_classes[0] if b.upstream_classes else None,
                flipped=None if not b.upstream_classes else b.upstream_classes[0] != int(result.reference[o.index]),
                stream_delta_hops=b.stream_delta_hops,
                stream_saved_bytes=b.stream_saved_bytes,
                prediction=pred,
                label=label,
                correct=None if label is None else pred == label,
                agree=fidelity["cosine"] >= AGREE_COSINE if fidelity else pred == int(result.reference[o.index]),
                **fidelity,
                predicted_ms=None if o.answer.predicted_s is None else _ms(o.answer.predicted_s),
                predicted_path_ms=None if o.answer.predicted_path_s is None else _ms(o.answer.predicted_path_s),
                bytes={h: _hop_bytes(tiers.get(_TIER_OF_HOP[h])) for h in _HOPS},
                stages=[_stage(t) for t in b.tiers],
            )
        out.append(rec)
    return out


def _embedding_fidelity(output: Any, reference: np.ndarray, index: int) -> dict[str, Any]:
    """``{"cosine", "bit_exact"}`` of an embedding answer against the unsplit model's (reference rows are
    embeddings when it is 2-D); ``{}`` for a classifier's workload (the reference holds top-1 classes)."""
    if reference.ndim != 2:
        return {}
    got = output.detach().float().reshape(-1).numpy()
    want = reference[index].reshape(-1)
    if got.shape != want.shape:
        return {"cosine": float("nan"), "bit_exact": False}
    a, b = got.astype(np.float64), want.astype(np.float64)
    cos = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))
    return {"cosine": round(cos, 9), "bit_exact": bool(np.array_equal(got, want))}


def _mbit(bps: float | None) -> float | None:
    return None if bps is None else round(bps / 1e6, 6)


def _hop_bytes(t: Any) -> dict[str, int]:
    if t is None:
        return {"up": 0, "down": 0}
    return {"up": int(t.bytes_out), "down": int(t.bytes_back)}


def _stage(t: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"tier": t.tier, "range": [t.start, t.stop]}
    for k in ("queue_s", "compute_s", "encode_s", "decode_s", "network_s", "total_s"):
        d[k.replace("_s", "_ms")] = _ms(getattr(t, k))
    d.update(bytes_in=t.bytes_in, bytes_out=t.bytes_out, bytes_back=t.bytes_back)
    return d


def run_metrics(records: list[dict[str, Any]], slo_ms: float | None) -> dict[str, Any]:
    """The summary fields of one run (see the module doc) from its request records."""
    n = len(records)
    ok = [r for r in records if r["status"] == "answered"]
    lat = np.array([r["latency_ms"] for r in ok], dtype=np.float64)
    dup = sum(max(0, r["answers"] - 1) for r in records)
    ids = [r["id"] for r in records]
    dup += len(ids) - len(set(ids))
    labelled = [r for r in ok if r.get("correct") is not None]
    per_hop = {h: float(np.mean([r["bytes"][h]["up"] + r["bytes"][h]["down"] for r in ok])) if ok else 0.0 for h in _HOPS}
    missed = sum(1 for r in records if r["status"] != "answered" or (slo_ms is not None and r["latency_ms"] > slo_ms))
    ordered = sorted(records, key=lambda r: r["send_s"])
    switches = sum(1 for a, b in zip(ordered, ordered[1:]) if a["plan"] != b["plan"])
    exits = [r for r in ok if r["exit_position"] >= 0]
    plans: dict[str, int] = {}
    for r in records:
        plans[r["plan"]] = plans.get(r["plan"], 0) + 1
    return {
        "requests": n,
        "answered": len(ok),
        "lost": n - len(ok),
        "duplicated": int(dup),
        "latency_ms": _percentiles(lat),
        "accuracy": float(np.mean([r["correct"] for r in labelled])) if labelled else None,
        "agreement": float(np.mean([r["agree"] for r in ok])) if ok else None,
        **_cosine_metrics(ok),
        "bytes_per_request": sum(per_hop.values()),
        "bytes_per_hop": per_hop,
        "plan_switches": switches,
        "deadline_miss_rate": missed / n if n else 0.0,
        "fallbacks": sum(1 for r in ok if r.get("fallback")),
        "early_exit_rate": len(exits) / len(ok) if ok else 0.0,
        "answered_by": {t: sum(1 for r in ok if r["answered_by"] == t) for t in ("device", "edge", "cloud")},
        "plans": dict(sorted(plans.items(), key=lambda kv: -kv[1])),
        "prediction": _prediction_error(ok),
        "memory": _memory(ok),
        "validation": _validation(ok),
        "stream": _stream(ok),
    }


def _validation(ok: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The device's check of upstream answers over a run (None when it was off): see the module doc."""
    seen = [r for r in ok if r.get("validation")]
    if not seen:
        return None
    checked = [r for r in seen if r["validation"] != "unchecked" and r.get("flipped") is not None]
    flagged = [r for r in checked if r["validation"] in ("flagged", "recomputed")]
    flipped = [r for r in checked if r["flipped"]]
    honest = [r for r in checked if not r["flipped"]]
    caught = sum(1 for r in flipped if r["validation"] in ("flagged", "recomputed"))
    alarms = sum(1 for r in honest if r["validation"] in ("flagged", "recomputed"))
    return {"checked": len(checked), "flagged": len(flagged),
            "recomputed": sum(1 for r in checked if r["validation"] == "recomputed"),
            "unchecked": sum(1 for r in seen if r["validation"] == "unchecked"), "flipped": len(flipped),
            "flipped_flagged": caught, "not_flipped_flagged": alarms,
            "detection_rate": caught / len(flipped) if flipped else None,
            "false_alarm_rate": alarms / len(honest) if honest else None}  # fmt: skip


def _stream(ok: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Stream frames over a run (None unless requests were frames of a stream): the request bytes each frame
    moved up over every hop, and what coding every frame on its own would have moved (measured in the same run:
    each hop's sender codes every frame both ways and sends the smaller, ``stream_saved_bytes`` being the
    difference; a residual the receiver refused counts against it). ``by_plan``: the same per plan the frames went
    by (with ``plan: auto``, what the live planner chose, in the order it chose them), with their median latency."""
    frames = [r for r in ok if r.get("streamed")]
    if not frames:
        return None
    up = [sum(r["bytes"][h]["up"] for h in _HOPS) for r in frames]
    independent = [u + int(r["stream_saved_bytes"]) for u, r in zip(up, frames)]
    per_frame, alone = float(np.mean(up)), float(np.mean(independent))
    by_plan: dict[str, dict[str, Any]] = {}
    for plan in dict.fromkeys(r["plan"] for r in frames):  # in the order the run took them
        idx = [i for i, r in enumerate(frames) if r["plan"] == plan]
        by_plan[plan] = {"frames": len(idx), "bytes_per_frame": float(np.mean([up[i] for i in idx])),
                         "bytes_per_frame_independent": float(np.mean([independent[i] for i in idx])),
                         "delta_hops_per_frame": float(np.mean([frames[i]["stream_delta_hops"] for i in idx])),
                         "latency_p50_ms": float(np.median([frames[i]["latency_ms"] for i in idx]))}  # fmt: skip
    return {"frames": len(frames), "bytes_per_frame": per_frame, "bytes_per_frame_independent": alone,
            "ratio_independent_over_delta": alone / per_frame if per_frame else None,
            "delta_hops_per_frame": float(np.mean([r["stream_delta_hops"] for r in frames])),
            "delta_coded_frames": sum(1 for r in frames if r["stream_delta_hops"] > 0),
            "bytes_saved": int(sum(independent) - sum(up)), "by_plan": by_plan}  # fmt: skip


def _memory(ok: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The device's result memory over a run (None when it was off): hits, misses, the hit rate, and the bytes
    the hits saved (what their inputs' first requests moved over every hop) against the bytes the run moved."""
    used = [r for r in ok if r.get("memory")]
    if not used:
        return None
    hits = sum(1 for r in used if r["memory"] == "hit")
    near = [r for r in used if r["memory"] == "near"]  # answered from a near-duplicate's answer (memory.near)
    moved = sum(r["bytes"][h]["up"] + r["bytes"][h]["down"] for r in ok for h in _HOPS)
    saved = sum(int(r.get("memory_saved_bytes") or 0) for r in used)
    return {"hits": hits, "misses": len(used) - hits - len(near), "hit_rate": hits / len(used), "bytes_saved": saved,
            "bytes_moved": moved, "bytes_without_memory": moved + saved, "near_hits": len(near),
            "near_hit_rate": len(near) / len(used),
            "near_agreement": float(np.mean([r["agree"] for r in near])) if near else None}  # fmt: skip


def _prediction_error(ok: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Mean absolute percentage error of the live planner's per-request predictions (None without any): against
    the expectation it planned with (``mape_expected``: which requests exit cannot be known when they are sent, so
    with exits this mixes the cost model's error with the spread of exit outcomes), and against its prediction for
    the path each request took (``mape_path``: its exit, or the output; the cost model's own error)."""
    def mape(key: str) -> tuple[float | None, int]:
        pairs = [(r["latency_ms"], r[key]) for r in ok if r.get(key) and r["latency_ms"] > 0]
        return (float(np.mean([abs(m - p) / m for m, p in pairs])) if pairs else None), len(pairs)

    expected, n = mape("predicted_ms")
    if not n:
        return None
    path, n_path = mape("predicted_path_ms")
    return {"requests": n, "mape_expected": expected, "mape_path": path, "requests_path": n_path}


def recovery_metrics(records: list[dict[str, Any]], faults: Sequence[dict[str, Any]], *, slo_ms: float | None,
                     timeout_s: float) -> dict[str, Any]:
    """How a run came through its faults and link outages.

    A peer *returns* at its fault's ``up_s`` (a restarted agent listens again, a stalled one resumes, an outage
    ends). A request is *split* when it was answered without a fallback by a plan that uses a tier the fault
    took out of reach (edge down: the edge or the cloud; cloud down: the cloud).

    Returns:
        ``faults``: each fault's record with ``resume_s`` (from its return to the first split answer among the
        requests sent after it; None if there was none) and ``deadline_misses`` (requests in flight during the
        fault or sent up to ``SETTLE_S`` after its return that were lost or slower than ``slo_ms``);
        ``split_resumed``: a request sent after the last return was split (None without faults);
        ``resume_s``: the largest ``resume_s`` (None if none resumed); ``deadline_misses_per_outage``: the
        ``deadline_misses`` of each fault, in order.
    """
    out = []
    for f in faults:
        rec = dict(f)
        up, down = f.get("up_s"), f.get("down_s")
        if up is None or down is None:  # not done (the run ended first), or never came back
            rec.update(resume_s=None, deadline_misses=None)
            out.append(rec)
            continue
        tiers = _OUT_OF_REACH.get(f["target"], ())
        after = sorted((r for r in records if r["send_s"] >= up and _split(r, tiers)), key=_done_s)
        rec["resume_s"] = round(_done_s(after[0]) - up, 4) if after else None
        hit = [r for r in records if r["send_s"] < up + SETTLE_S and _end_s(r, timeout_s) > down]
        rec["deadline_misses"] = sum(1 for r in hit if _missed(r, slo_ms))
        out.append(rec)
    done = [f for f in out if f.get("up_s") is not None]
    resumed = None
    if done:
        last = max(done, key=lambda f: f["up_s"])
        tiers = _OUT_OF_REACH.get(last["target"], ())
        resumed = any(r["send_s"] >= last["up_s"] and _split(r, tiers) for r in records)
    times = [f["resume_s"] for f in done if f["resume_s"] is not None]
    return {
        "faults": out,
        "split_resumed": resumed,
        "resume_s": max(times) if times else None,
        "deadline_misses_per_outage": [f["deadline_misses"] for f in out if f["deadline_misses"] is not None],
    }


@functools.lru_cache(maxsize=256)
def _plan_tiers(text: str) -> tuple[str, ...]:
    try:
        return Plan.parse(text).tiers
    except PlanError:
        return ()


def _split(r: dict[str, Any], tiers: Sequence[str]) -> bool:
    return r["status"] == "answered" and not r.get("fallback") and any(t in tiers for t in _plan_tiers(r["plan"]))


def _done_s(r: dict[str, Any]) -> float:
    return r["send_s"] + r["latency_ms"] / 1e3


def _end_s(r: dict[str, Any], timeout_s: float) -> float:
    return _done_s(r) if r["status"] == "answered" else r["send_s"] + timeout_s


def _missed(r: dict[str, Any], slo_ms: float | None) -> bool:
    return r["status"] != "answered" or (slo_ms is not None and r["latency_ms"] > slo_ms)


def _percentiles(lat: np.ndarray) -> dict[str, float | None]:
    if lat.size == 0:
        return {"p50": None, "p95": None, "p99": None, "mean": None}
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3),
            "mean": round(float(lat.mean()), 3)}


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or not math.isfinite(a) or not math.isfinite(b):
        return None
    return round(a / b, 4)


def build_summary(result: ScenarioResult, records: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """``summary.json``: edgeflow's metrics at the top level, ``baselines`` by name, ``ratios``, and context."""
    sc = result.scenario
    def metrics(run: str) -> dict[str, Any]:
        m = run_metrics(records[run], sc.slo_ms)
        m.update(recovery_metrics(records[run], result.runs[run].faults, slo_ms=sc.slo_ms, timeout_s=sc.workload.timeout_s))
        return m

    own = metrics("edgeflow")
    base: dict[str, Any] = {}
    for name, run_name in result.baseline_names.items():
        m = metrics(run_name)
        base[name] = {**m, "plan": result.runs[run_name].spec.key, "how": result.runs[run_name].spec.how}
        if name == "best-fixed":
            base[name]["chosen_run"] = run_name
            base[name]["how"] = result.best_fixed_how
    ratios = {
        name: {
            "latency_p50": _ratio(m["latency_ms"]["p50"], own["latency_ms"]["p50"]),
            "latency_p95": _ratio(m["latency_ms"]["p95"], own["latency_ms"]["p95"]),
            "latency_mean": _ratio(m["latency_ms"]["mean"], own["latency_ms"]["mean"]),
            "bytes_per_request": _ratio(m["bytes_per_request"], own["bytes_per_request"]),
        }
        for name, m in base.items()
    }
    full_acc = None
    if result.workload.labels is not None:
        full_acc = float(np.mean(result.reference == result.workload.labels))
    fidelity = _fidelity(result)
    runs = {
        name: {**metrics(name), "plan": r.spec.key, "how": r.spec.how,
               "predicted_latency_ms": None if r.spec.predicted_latency_s is None else round(r.spec.predicted_latency_s * 1e3, 3),
               "duration_s": round(r.duration_s, 3), "notes": r.notes, "link_stats": r.link_stats,
               "plan_switch_log": r.switches}
        for name, r in result.runs.items()
    }  # fmt: skip
    return {
        "scenario": sc.name,
        "description": sc.description,
        **own,
        "plan": result.runs["edgeflow"].spec.key,
        "adaptation": result.adaptation,
        "slo_ms": sc.slo_ms,
        "objective": sc.objective,
        "full_model_accuracy": full_acc,
        "fidelity": fidelity,
        "baselines": base,
        "ratios": ratios,
        "runs": runs,
        "input_codec": result.input_codec.to_json(),
        "planner": result.planner,
        "links": {name: lp.describe() for name, lp in result.links.items()},
        "workload": sc.workload.model_dump(mode="json"),
        "timings_s": {k: round(v, 3) for k, v in result.timings_s.items()},
    }


def _fidelity(result: ScenarioResult) -> dict[str, Any]:
    """How the report measures fidelity: accuracy against the workload's labels, or, without labels, agreement with
    the unsplit model only -- said in so many words, so an unlabelled run is never read as accurate."""
    wl = result.workload
    if wl.labels is not None:
        return {"metric": "accuracy", "labels": wl.labels_from,
                "note": f"accuracy against the labels ({wl.labels_from}); agreement is top-1 agreement with the "
                        f"unsplit fp32 model"}  # fmt: skip
    return {"metric": "agreement", "labels": None,
            "note": f"the workload ({wl.spec.source}) has no labels, so accuracy is not measured; fidelity is top-1 "
                    f"agreement with the unsplit fp32 model on the same inputs"}  # fmt: skip


def write_report(result: ScenarioResult, out_dir: Path, *, plots: bool = True) -> dict[str, Any]:
    """Write ``summary.json``, ``requests.jsonl``, ``report.md`` and the plots into ``out_dir``; returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    records = {name: request_records(result, r) for name, r in result.runs.items()}
    summary = build_summary(result, records)
    with open(out_dir / "requests.jsonl", "w") as f:
        for rec in _all(records):
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
    written = []
    if plots:
        from edgeflow.scenario.plots import write_plots

        written = write_plots(result, records, summary, out_dir)
    summary["plots"] = [p.name for p in written]
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / "report.md").write_text(markdown(summary))
    return summary


def _all(records: dict[str, list[dict[str, Any]]]) -> Iterable[dict[str, Any]]:
    for recs in records.values():
        yield from recs


def _cosine_metrics(ok: list[dict[str, Any]]) -> dict[str, Any]:
    """``cosine`` (mean, min) and ``bit_exact`` (share) over answered embedding requests; nothing for classifiers."""
    cos = [r["cosine"] for r in ok if "cosine" in r]
    if not cos:
        return {}
    return {"cosine": {"mean": float(np.mean(cos)), "min": float(np.min(cos))},
            "bit_exact": float(np.mean([r["bit_exact"] for r in ok if "cosine" in r]))}


def _f(x: float | None, fmt: str = ".1f") -> str:
    return "–" if x is None else format(x, fmt)


def markdown(s: dict[str, Any]) -> str:
    """``report.md``: what ran, the results table, how each plan was chosen, and the plots."""
    lines = [f"# Scenario `{s['scenario']}`", ""]
    if s["description"]:
        lines += [s["description"], ""]
    lines += ["- links: " + "; ".join(f"{k}: {v}" for k, v in s["links"].items()),
              f"- workload: {s['workload']['requests']} requests, {s['workload']['source']}, "
              f"{s['workload']['arrival']} arrivals" + (f" at {s['workload']['rate_hz']:g}/s" if s['workload']['arrival'] != 'closed' else f", {s['workload']['concurrency']} outstanding")
              + f", {s['workload']['devices']} device(s), seed {s['workload']['seed']}",
              f"- edgeflow plan: `{s['plan']}`",
              f"- adaptation: **{s['adaptation']['mode']}**: {s['adaptation']['detail']}",
              f"- objective: {s['objective']}" + (f", SLO {s['slo_ms']:g} ms" if s["slo_ms"] else ""),
              f"- input codec for plans that send the raw input: {s['input_codec']['codec']}"
              + (f" ({', '.join(f'{k} {v:.0f} B' for k, v in s['input_codec']['bytes_per_image'].items())} per image)"
                 if s['input_codec']['bytes_per_image'] else ""),
              ""]  # fmt: skip
    if s.get("full_model_accuracy") is not None:
        lines += [f"Unsplit fp32 model accuracy on these requests: {s['full_model_accuracy']:.4f}", ""]
    if s.get("fidelity"):
        lines += [f"Fidelity: {s['fidelity']['note']}", ""]
    lines += ["| run | plan | answered | lost | p50 ms | p95 ms | p99 ms | accuracy | agreement | bytes/req | miss rate |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    rows = [("edgeflow", s)] + list(s["baselines"].items())
    for name, m in rows:
        lat = m["latency_ms"]
        lines.append(
            f"| {name} | `{m['plan']}` | {m['answered']}/{m['requests']} | {m['lost']} | {_f(lat['p50'])} | "
            f"{_f(lat['p95'])} | {_f(lat['p99'])} | {_f(m['accuracy'], '.4f')} | {_f(m['agreement'], '.4f')} | "
            f"{m['bytes_per_request']:.0f} | {m['deadline_miss_rate']:.3f} |"
        )
    if "cosine" in s:
        lines += ["", f"No labels: the answers are sentence embeddings, compared with the unsplit model's. Agreement is "
                  f"the share with cosine similarity >= {AGREE_COSINE}.", "",
                  "| run | cosine mean | cosine min | bit-exact |", "|---|---|---|---|"]
        lines += [f"| {name} | {m['cosine']['mean']:.6f} | {m['cosine']['min']:.6f} | {m['bit_exact']:.3f} |"
                  for name, m in rows if "cosine" in m]
    lines += ["", "Ratios, baseline / edgeflow (above 1: edgeflow is better):", "",
              "| baseline | p50 | p95 | mean | bytes |", "|---|---|---|---|---|"]
    for name, r in s["ratios"].items():
        lines.append(f"| {name} | {_f(r['latency_p50'], '.2f')} | {_f(r['latency_p95'], '.2f')} | "
                     f"{_f(r['latency_mean'], '.2f')} | {_f(r['bytes_per_request'], '.2f')} |")
    if s["adaptation"]["mode"] == "adaptive":
        lines += ["", "## edgeflow's plans", "", "| requests | plan |", "|---|---|"]
        lines += [f"| {n} | `{p}` |" for p, n in s["plans"].items()]
        if s["adaptation"]["switches"]:
            lines += ["", "| t (s) | after request | switch to | why |", "|---|---|---|---|"]
            lines += [f"| {sw['t_s']:.2f} | {sw['request_index']} | `{sw['new']}` | {sw['reason']} |"
                      for sw in s["adaptation"]["switches"]]
    if s.get("validation"):
        lines += ["", "## Validated upstream answers", "",
                  "The device checked each upstream answer with its own exit head (`validate`); *flipped*: the upstream's "
                  "class is not the unsplit model's (known to the runner, not to the device).", "",
                  "| run | checked | flipped | flipped flagged | detection | not flipped flagged | false alarms | "
                  "recomputed | unchecked |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, m in [("edgeflow", s)] + list(s["baselines"].items()):
            v = m.get("validation")
            if v:
                lines.append(f"| {name} | {v['checked']} | {v['flipped']} | {v['flipped_flagged']} | "
                             f"{_f(v['detection_rate'], '.3f')} | {v['not_flipped_flagged']} | "
                             f"{_f(v['false_alarm_rate'], '.3f')} | {v['recomputed']} | {v['unchecked']} |")  # fmt: skip
    if s.get("faults"):
        others = ", ".join(f"{n}: {m['fallbacks']} fallbacks" for n, m in s["baselines"].items()) or "no baselines"
        lines += ["", "## Faults", "",
                  f"edgeflow: {s['fallbacks']} requests answered by a fallback; back in split mode after the last "
                  f"fault: {'yes' if s['split_resumed'] else 'no'}; worst time back: {_f(s['resume_s'], '.2f')} s. "
                  f"Every run had the same faults ({others}).",
                  "", "| fault | down at (s) | back at (s) | split again after (s) | deadline misses |", "|---|---|---|---|---|"]
        lines += [f"| {f['fault']}{' (' + f['error'] + ')' if f.get('error') else ''} | {_f(f['down_s'], '.2f')} | "
                  f"{_f(f['up_s'], '.2f')} | {_f(f['resume_s'], '.2f')} | {'–' if f['deadline_misses'] is None else f['deadline_misses']} |"
                  for f in s["faults"]]  # fmt: skip
    lines += ["", "## How each plan was chosen", ""]
    for name, m in s["runs"].items():
        pred = f" (predicted {m['predicted_latency_ms']:.1f} ms)" if m.get("predicted_latency_ms") is not None else ""
        lines.append(f"- **{name}**: `{m['plan']}`: {m['how']}{pred}")
    if "best-fixed" in s["baselines"]:
        lines += ["", f"Best fixed split: `{s['baselines']['best-fixed']['chosen_run']}`: {s['baselines']['best-fixed']['how']}"]
    if s.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in s["plots"]]
    t = s["timings_s"]
    lines += ["", f"Wall time: {t.get('total_s', 0):.1f} s (agents start {t.get('agents_start_s', 0):.1f} s, "
              f"runs {t.get('runs_s', 0):.1f} s)", ""]
    return "\n".join(lines)
