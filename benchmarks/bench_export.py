"""What ``edgeflow export`` gives for the zoo's image models and a small two-input text encoder.

    python benchmarks/bench_export.py            # ~1-2 min on 2 cores

Per model (seeded random weights; torchvision/timm are not installed here, so the zoo's torchvision-layout
re-implementations stand in): export and load seconds, artifact bytes vs the weights' own bytes, graph nodes,
positions and candidate cuts of the exported graph vs the fx trace of the original model, whether the rebuilt
graph is bit-exact with the model (batch 1 and 2), and whether a lossless split at the middle cut reproduces the
model bit-exactly at batch 3. Results go to ``benchmarks/results/export.json``; times are wall-clock on this
(shared) machine and only their order of magnitude means anything.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))

import torch  # noqa: E402

from edgeflow.core.artifact import load_artifact  # noqa: E402
from edgeflow.core.export import export_model, save_graph_artifact  # noqa: E402
from edgeflow.core.inputs import InputSpec, parse_input  # noqa: E402
from edgeflow.core.partition import partition  # noqa: E402
from edgeflow.core.zoo import build_model  # noqa: E402


def _cases() -> list[tuple[str, torch.nn.Module, list[InputSpec], Any]]:
    from user_models import text_batch, tiny_encoder

    torch.manual_seed(0)
    image = [InputSpec("x", (1, 3, 224, 224), torch.float32)]
    return [
        ("resnet18_224", build_model("resnet18").eval(), image, lambda b: (torch.rand(b, 3, 224, 224),)),
        ("mobilenet_v2_224", build_model("mobilenet_v2").eval(), image, lambda b: (torch.rand(b, 3, 224, 224),)),
        ("vit_224", build_model("vit").eval(), image, lambda b: (torch.rand(b, 3, 224, 224),)),
        ("tiny_encoder_text", tiny_encoder(), [parse_input("input_ids:1,8:int64"), parse_input("attention_mask:1,8:int64")],
         lambda b: text_batch(b, 1)),
    ]


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, specs, inputs in _cases():
            path = Path(tmp) / f"{name}.ef"
            t0 = time.perf_counter()
            exported = export_model(model, specs, source=name)
            t1 = time.perf_counter()
            save_graph_artifact(path, exported)
            t2 = time.perf_counter()
            art = load_artifact(path)
            t3 = time.perf_counter()
            p = partition(art.model, tuple(art.example_inputs(1).values()))
            t4 = time.perf_counter()
            original = partition(model, tuple(v[:1] for v in inputs(1)))
            x = inputs(3)
            with torch.no_grad():
                want = model(*x)
                cut = p.cuts[len(p.cuts) // 2]
                mid = p.run_range(0, cut, *x)
                got = p.run_range(cut, p.num_positions, *(mid if isinstance(mid, tuple) else (mid,)))
            weight_bytes = sum(v.numel() * v.element_size() for v in exported.weights.values())
            rows.append({
                "model": name, "batch": exported.batch, "export_s": round(t1 - t0, 2), "save_s": round(t2 - t1, 3),
                "load_s": round(t3 - t2, 3), "partition_s": round(t4 - t3, 2), "file_bytes": path.stat().st_size,
                "weight_bytes": weight_bytes, "file_over_weights": round(path.stat().st_size / weight_bytes, 4),
                "graph_nodes": len(exported.graph["nodes"]), "positions": p.num_positions, "cuts": len(p.cuts),
                "original_tracer": original.tracer, "original_positions": original.num_positions,
                "original_cuts": len(original.cuts), "export_bit_exact": exported.exact,
                "split_bit_exact_batch3": bool(torch.equal(got, want)),
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    out = REPO / "benchmarks" / "results" / "export.json"
    out.write_text(json.dumps({"machine": platform.platform(), "torch": torch.__version__, "threads": 1,
                               "note": "shared 2-core machine, loaded by other work; seeded random weights",
                               "models": rows}, indent=1) + "\n")  # fmt: skip
    print(f"written {out}")


if __name__ == "__main__":
    main()
