"""Write the demo's labelled test images as a folder of PNGs, ``<out>/<digit>/<n>.png``: data for the
``image-folder`` scenario (``workload.source`` a folder, ``labels: folders``), made from the dataset that ships
inside the package (scikit-learn's bundled digits and photos; nothing is downloaded). The images are uint8 at heart,
so PNG keeps them exactly: the folder scenario's accuracy equals ``demo-test``'s on the same images.

    python scripts/demo_images.py                      # scenarios/demo-images, 5 per class (50 images, ~0.4 MB)
    python scripts/demo_images.py --out DIR --per-class 20
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from edgeflow.core.data import load_demo_dataset

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "scenarios" / "demo-images")
    ap.add_argument("--per-class", type=int, default=5, help="images per digit (the test split has ~36 per digit)")
    ap.add_argument("--split", default="test", choices=["train", "calibration", "test"])
    args = ap.parse_args()
    images, labels = load_demo_dataset(args.split)  # (N, 3, 64, 64) float32 = uint8 / 255, (N,)
    written = 0
    for c in range(10):
        folder = args.out / str(c)
        folder.mkdir(parents=True, exist_ok=True)
        for n, i in enumerate(np.flatnonzero(labels.numpy() == c)[: args.per_class]):
            rgb = (images[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # (64, 64, 3)
            Image.fromarray(rgb).save(folder / f"{n}.png")
            written += 1
    print(f"wrote {written} images to {args.out}")


if __name__ == "__main__":
    main()
