"""Train a learned bottleneck (``learned:b<cut>``) into a copy of the demo artifact, the rest of the model frozen.

    nice .venv/bin/python scripts/train_bottleneck.py            # writes edgeflow/weights/demo_bottleneck.safetensors

Data: the demo's TRAINING split (plus seeded fresh renderings of its digits) trains; the calibration split reports a
held-out accuracy while training. The test split is never read here (``benchmarks/bench_cuts.py`` measures on it).

Loss: distillation from the frozen model's own logits (KL at temperature 2) + cross-entropy on the labels + a small
L1 pull of the latent towards 0 (level 0 becomes the most likely symbol, so the entropy coder spends little on it).
After training the per-channel symbol frequencies on the training features become the entropy model (``pmf``).
Seeded; the demo artifact itself is never modified (its fingerprint is pinned in nodes/*.yaml).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgeflow.core.artifact import load_artifact, save_artifact  # noqa: E402
from edgeflow.core.codecs.learned import Bottleneck, bottleneck_tensors  # noqa: E402
from edgeflow.core.data import DEMO_WEIGHTS, augment_digits, load_demo_dataset, load_digit_split  # noqa: E402
from edgeflow.core.partition import partition  # noqa: E402

OUT = DEMO_WEIGHTS.with_name("demo_bottleneck.safetensors")
CUT = 20  # layer1's output, (8, 16, 16) in the demo


def head(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = (x - model.mean) / model.std
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    return model.layer1(x)


def tail(model: torch.nn.Module, f: torch.Tensor) -> torch.Tensor:
    for i in range(1, model.num_stages):
        f = getattr(model, f"layer{i + 1}")(f)
    return model.fc(f.mean((2, 3)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--latent", type=int, default=3)
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--renders", type=int, default=6, help="fresh renderings of each training digit, besides its own")
    ap.add_argument("--rate", type=float, default=0.03, help="weight of the L1 pull of the latent towards level 0")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    art = load_artifact(DEMO_WEIGHTS)
    model = art.model.eval()
    for p in model.parameters():
        p.requires_grad_(False)

    # The cut is layer1's output: check it against the partition the agents use.
    x0, _ = load_demo_dataset("calibration")
    part = partition(model, art.example_input())
    ref = part.activations(x0[:2], positions=[CUT])[CUT][0]
    assert torch.allclose(ref, head(model, x0[:2]), atol=1e-5), "cut 20 is not layer1's output"

    rng = np.random.default_rng(args.seed)
    xs, ys = load_demo_dataset("train")
    digits, labels, _ = load_digit_split("train")
    images = [xs] + [augment_digits(digits, xs.shape[-1], rng) for _ in range(args.renders)]
    targets = torch.cat([ys] + [torch.from_numpy(labels)] * args.renders)
    with torch.no_grad():
        feats = torch.cat([head(model, im) for im in images])
        teacher = tail(model, feats)
    xv, yv = load_demo_dataset("calibration")
    with torch.no_grad():
        fv = head(model, xv)
        val_ref = (tail(model, fv).argmax(1) == yv).float().mean().item()
    print(f"features: {tuple(feats.shape)} train, {tuple(fv.shape)} calibration; fp32 calibration top-1 "
          f"{100 * val_ref:.2f}%  ({time.perf_counter() - t0:.1f}s)", flush=True)

    c, h, w = feats.shape[1:]
    b = Bottleneck(c, h, w, args.latent, args.levels, args.hidden)
    opt = torch.optim.Adam(b.parameters(), lr=3e-3)
    n = len(feats)
    steps = args.epochs * math.ceil(n / 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        b.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, 64):
            idx = perm[i : i + 64]
            z = b.enc(feats[idx])
            q = z + (z.round().clamp(0, args.levels - 1) - z).detach()
            logits = tail(model, b.dec(q))
            kd = F.kl_div(F.log_softmax(logits / 2, 1), F.softmax(teacher[idx] / 2, 1), reduction="batchmean") * 4
            loss = kd + 0.5 * F.cross_entropy(logits, targets[idx]) + args.rate * z.abs().mean()
            loss = loss + 0.1 * (z - z.clamp(0, args.levels - 1)).square().mean()  # keep z in the levels' range
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            b.eval()
            with torch.no_grad():
                acc = (tail(model, b(fv)).argmax(1) == yv).float().mean().item()
            print(f"epoch {epoch + 1}: loss {total / n:.4f}, calibration top-1 {100 * acc:.2f}% "
                  f"({time.perf_counter() - t0:.1f}s)", flush=True)

    b.eval()
    q = torch.from_numpy(b.symbols(feats))  # (N, latent, h, w)
    counts = torch.stack([torch.bincount(q[:, k].reshape(-1), minlength=args.levels) for k in range(args.latent)])
    pmf = (counts.double() + 1) / (counts.double() + 1).sum(1, keepdim=True)
    b.pmf.copy_(pmf.float())
    bits = float(-(counts.double() * pmf.log2()).sum() / len(feats))
    with torch.no_grad():
        acc = (tail(model, b(fv)).argmax(1) == yv).float().mean().item()
    print(f"pmf {np.round(pmf.numpy(), 3).tolist()}; ideal {bits:.1f} bits/image on training features; "
          f"calibration top-1 {100 * acc:.2f}% vs fp32 {100 * val_ref:.2f}%", flush=True)
    fp = save_artifact(args.out, model, art.arch, art.config, list(art.exits), art.calibration,
                       extra=bottleneck_tensors(CUT, b))
    print(f"wrote {args.out} fingerprint {fp}; took {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
