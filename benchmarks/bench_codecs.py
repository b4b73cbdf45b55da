"""Codec benchmark: compression ratio and encode+decode speed on realistic tensors.

    python benchmarks/bench_codecs.py [--quick] [--source zoo|synthetic] [--threads N] [--out PATH]

Tensors: a post-ReLU early conv activation (1, 64, 56, 56), a late one (1, 512, 7, 7), ViT tokens
(1, 197, 192), and the raw model input (1, 3, 224, 224) in [0, 1]. With ``--source zoo`` (default,
if ``edgeflow.core.zoo`` imports) activations come from the zoo's ResNet-18 and ViT run on a real
photo (scikit-learn's china.jpg); those models are randomly initialised, so ResNet's zero-initialised
residual BatchNorm scales are set to 1 first, or every block would be an identity and no tensor would
look like a trained network's (~50% zeros after ReLU). ``--source synthetic`` uses relu(N(0, 1)).

Speed is reported against a plain memory copy of the same bytes timed in the same run, so the ratio
``x copy = (encode + decode time) / copy time`` carries across machines; all times are medians.
Results go to ``benchmarks/results/codecs.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from edgeflow.core.codecs import Codec, codec_from_spec, decode  # noqa: E402

SPECS = [
    "lossless:z1", "lossless:z3", "fp16:z1", "fp16:z1:s1", "bf16:z1",
    "int8:z1", "int8c:z1", "int4:z1", "int2:z1", "png:z1", "jpeg:q90",
]  # fmt: skip
RESULTS = Path(__file__).resolve().parent / "results" / "codecs.json"


def photo(size: int = 224) -> tuple[torch.Tensor, str]:
    """A real photo's centre crop as (1, 3, size, size) float32 k/255, or a synthetic one."""
    try:
        from sklearn.datasets import load_sample_image

        pixels = torch.from_numpy(load_sample_image("china.jpg").copy())  # (H, W, 3) uint8
        top, left = (pixels.shape[0] - size) // 2, (pixels.shape[1] - size) // 2
        crop = pixels[top : top + size, left : left + size].permute(2, 0, 1).unsqueeze(0)
        return crop.float().div_(255), "sklearn china.jpg centre crop"
    except ImportError:
        yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
        noise = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0)) * 0.1
        image = (torch.stack([yy, xx, (yy + xx) / 2]) * 0.9 + noise).clamp(0, 1)
        return (image * 255).round().div(255).unsqueeze(0), "synthetic gradient + noise"


def synthetic_activations() -> dict[str, tuple[torch.Tensor, str]]:
    g = torch.Generator().manual_seed(0)
    return {
        "conv56": (torch.relu(torch.randn(1, 64, 56, 56, generator=g)), "relu(N(0,1))"),
        "late7": (torch.relu(torch.randn(1, 512, 7, 7, generator=g)), "relu(N(0,1))"),
        "vit197": (torch.randn(1, 197, 192, generator=g), "N(0,1)"),
    }


def zoo_activations(image: torch.Tensor) -> dict[str, tuple[torch.Tensor, str]]:
    """Activations of the zoo's ResNet-18 (early, late) and ViT (middle block) on ``image``."""
    from edgeflow.core.zoo import build_model

    torch.manual_seed(0)  # the zoo's random init
    resnet = build_model("resnet18").eval()
    for module in resnet.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(module.weight)  # undo zero-init residuals: see the module docstring
    conv = _outputs_of_shape(resnet, image, {(1, 64, 56, 56), (1, 512, 7, 7)})
    tokens = _outputs_of_shape(build_model("vit").eval(), image, {(1, 197, 192)})[(1, 197, 192)]
    return {
        "conv56": (conv[(1, 64, 56, 56)][-1], "zoo resnet18 (random init) layer1 out, china.jpg"),
        "late7": (conv[(1, 512, 7, 7)][-1], "zoo resnet18 (random init) layer4 out, china.jpg"),
        "vit197": (tokens[len(tokens) // 2], "zoo vit (random init) middle block out, china.jpg"),
    }


def _outputs_of_shape(model: torch.nn.Module, x: torch.Tensor, shapes: set) -> dict[tuple, list[torch.Tensor]]:
    found: dict[tuple, list[torch.Tensor]] = {s: [] for s in shapes}

    def hook(module: torch.nn.Module, args: object, out: object) -> None:
        if isinstance(out, torch.Tensor) and tuple(out.shape) in found:
            found[tuple(out.shape)].append(out.detach().clone())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    missing = [s for s, outs in found.items() if not outs]
    if missing:
        raise LookupError(f"no module output of shape {missing}")
    return found


def median_s(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocator, zstd contexts
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_one(codec: Codec, x: torch.Tensor, copy_s: float, repeats: int) -> dict[str, object]:
    payload = codec.encode(x)
    encode_s = median_s(lambda: codec.encode(x), repeats)
    decode_s = median_s(lambda: decode(payload), repeats)
    y = decode(payload)
    bound = codec.max_abs_error(x)
    return {
        "codec": codec.spec,
        "payload_nbytes": len(payload),
        "ratio_vs_fp32": round(x.numel() * 4 / len(payload), 3),
        "encode_ms": round(encode_s * 1e3, 4),
        "decode_ms": round(decode_s * 1e3, 4),
        "encode_decode_MBps": round(x.nbytes / (encode_s + decode_s) / 1e6, 1),
        "x_copy": round((encode_s + decode_s) / copy_s, 1),
        "max_abs_error": float((y.double() - x.double()).abs().max()),
        "bound": bound,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 15")
    parser.add_argument("--source", choices=["zoo", "synthetic"], default="zoo")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: one edge core)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 15

    image, image_source = photo()
    tensors = synthetic_activations()
    source = "synthetic"
    if args.source == "zoo":
        try:
            tensors = zoo_activations(image)
            source = "zoo"
        except (ImportError, LookupError) as e:  # zoo missing or changed: fall back, and say so
            print(f"zoo activations unavailable ({e}); using synthetic ones", file=sys.stderr)
    tensors["image224"] = (image, image_source)

    rows = []
    for name, (x, origin) in tensors.items():
        dst = torch.empty_like(x)
        copy_s = median_s(lambda: dst.copy_(x), repeats * 20)
        for spec in SPECS:
            codec = codec_from_spec(spec)
            if codec.image_only and name != "image224":
                continue
            shape = "x".join(map(str, x.shape))
            row = {"tensor": name, "shape": shape, "source": origin, **bench_one(codec, x, copy_s, repeats)}
            row["zeros_fraction"] = round(float((x == 0).float().mean()), 3)
            row["copy_GBps"] = round(x.nbytes / copy_s / 1e9, 2)
            rows.append(row)

    meta = {
        "source": source,
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "zstandard": zstandard.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")
    os.replace(tmp, args.out)
    print_table(rows, meta)
    print(f"\nwrote {args.out}")
    return 0


def print_table(rows: list[dict], meta: dict) -> None:
    print(f"source={meta['source']} threads={meta['torch_threads']} repeats={meta['repeats']} (medians)")
    print(f"{'tensor':9} {'zeros':>5} {'codec':12} {'ratio':>7} {'enc ms':>7} {'dec ms':>7} {'MB/s':>7} {'x copy':>7}")
    for r in rows:
        print(
            f"{r['tensor']:9} {r['zeros_fraction']:5.2f} {r['codec']:12} {r['ratio_vs_fp32']:7.2f} "
            f"{r['encode_ms']:7.3f} {r['decode_ms']:7.3f} {r['encode_decode_MBps']:7.0f} {r['x_copy']:7.0f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
