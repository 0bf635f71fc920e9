"""Cut polyp-free background crops from Kvasir-SEG training images, as extra negatives for training.

Kvasir-SEG has no polyp-free frame, but most of each image around the polyp is normal mucosa
(folds, vessels, glare) seen through the same scope as the boxed polyps. This script cuts up to
``--per-image`` square-ish crops per TRAIN image (``data/splits/kvasir_seg_train.txt``; validation
images are never read) that hold no mask pixel, not even within a margin of ``--margin`` of the crop
side, little black border and none of the green scope-position box, and writes them as JPEGs to
``--out`` (a folder that ``endoedge train --negatives`` takes). Deterministic for a given ``--seed``.

The crops carry Kvasir-SEG's terms (research and educational use only); they are written under
``runs/`` and never committed.

    python benchmarks/kvasir_background_crops.py --out runs/kvasir_bg
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def crops_for(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, per_image: int,
              margin: float, tries: int = 60) -> list[np.ndarray]:
    """Up to ``per_image`` crops of ``image`` (BGR) that avoid ``mask`` (bool, same size) and borders.

    A crop's side is 35-60% of the image's shorter side, its aspect 1.0-1.4 (either way); it is
    kept when no mask pixel lies within it grown by ``margin`` x side, at most 3% of its pixels are
    near-black (< 25 in every channel) and at most 0.2% are scope-box green.
    """
    h, w = mask.shape
    side0 = min(h, w)
    black = (image < 25).all(axis=2)
    b, g, r = (image[..., i].astype(np.int16) for i in range(3))
    green = (g > 120) & (g - r > 60) & (g - b > 20)
    # summed-area tables: counts inside any rectangle in O(1)
    sat = {name: cv2.integral(m.astype(np.uint8)) for name, m in (("mask", mask), ("black", black), ("green", green))}

    def count(name: str, x0: int, y0: int, x1: int, y1: int) -> int:
        t = sat[name]
        return int(t[y1, x1] - t[y0, x1] - t[y1, x0] + t[y0, x0])

    out: list[np.ndarray] = []
    taken: list[tuple[int, int, int, int]] = []
    for _ in range(tries):
        if len(out) >= per_image:
            break
        side = int(side0 * rng.uniform(0.35, 0.6))
        aspect = rng.uniform(1.0, 1.4)
        cw, ch = (int(side * aspect), side) if rng.random() < 0.5 else (side, int(side * aspect))
        if cw >= w or ch >= h:
            continue
        x0, y0 = int(rng.integers(0, w - cw)), int(rng.integers(0, h - ch))
        x1, y1 = x0 + cw, y0 + ch
        m = int(margin * side)
        if count("mask", max(0, x0 - m), max(0, y0 - m), min(w, x1 + m), min(h, y1 + m)):
            continue
        area = cw * ch
        if count("black", x0, y0, x1, y1) > 0.03 * area or count("green", x0, y0, x1, y1) > 0.002 * area:
            continue
        # not mostly the same region as a crop already taken
        if any(max(0, min(x1, a1) - max(x0, a0)) * max(0, min(y1, b1) - max(y0, b0)) > 0.3 * area
               for a0, b0, a1, b1 in taken):
            continue
        taken.append((x0, y0, x1, y1))
        out.append(image[y0:y1, x0:x1].copy())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "kvasir-seg")
    ap.add_argument("--split", type=Path, default=REPO / "data" / "splits" / "kvasir_seg_train.txt")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--per-image", type=int, default=2)
    ap.add_argument("--margin", type=float, default=0.1, help="keep-out around the mask, as a share of the crop side")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not (args.data / "images").is_dir() or not (args.data / "masks").is_dir():
        print(f"error: {args.data} has no images/ and masks/ folders; give --data the Kvasir-SEG folder", file=sys.stderr)
        return 2
    if not args.split.is_file():
        print(f"error: split file {args.split} not found; give --split a list of Kvasir-SEG image stems", file=sys.stderr)
        return 2
    if args.per_image < 1 or not 0 <= args.margin < 1:
        print("error: --per-image must be >= 1 and --margin in 0..1 (a share of the crop side)", file=sys.stderr)
        return 2
    if args.out.is_file():
        print(f"error: --out {args.out} is a file; give a new folder", file=sys.stderr)
        return 2
    if args.out.exists() and any(args.out.iterdir()):
        print(f"error: {args.out} is not empty; give a new --out folder", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    stems = [s.strip() for s in args.split.read_text(encoding="utf-8-sig").splitlines()
             if s.strip() and not s.startswith("#")]
    rng = np.random.default_rng(args.seed)
    n_crops, n_images = 0, 0
    for stem in stems:
        image = cv2.imread(str(args.data / "images" / f"{stem}.jpg"))
        mask = cv2.imread(str(args.data / "masks" / f"{stem}.jpg"), cv2.IMREAD_GRAYSCALE)
        if image is None or mask is None or mask.shape != image.shape[:2]:
            print(f"skipped {stem}: unreadable image or mask", file=sys.stderr)
            continue
        crops = crops_for(image, mask > 127, rng, args.per_image, args.margin)
        n_images += bool(crops)
        for k, crop in enumerate(crops):
            cv2.imwrite(str(args.out / f"{stem}_bg{k}.jpg"), crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
        n_crops += len(crops)
    print(f"{n_crops} crops from {n_images} of {len(stems)} train images -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
