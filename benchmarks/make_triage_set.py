"""Write the held-aside triage set: normal frames (links) and degraded 'unclear' copies.

    python benchmarks/make_triage_set.py --out runs/triage_set \
        --normal ../shared/data/polypgen/negative/centre_A/seq2_neg ... \
        --polyp-images ../shared/data/kvasir-seg/images --polyp-split data/splits/kvasir_seg_val.txt

OUT/normal/ links every frame of the --normal folders (never trained on); OUT/unclear/ holds one
degraded copy (endoedge.training.degrade: motion blur, defocus, smear, exposure, haze, bubbles;
seeded, at source resolution) of every --share-th polyp and normal frame, with the operations
of each in OUT/unclear/manifest.jsonl. Evaluate with
``endoedge eval MODEL KVASIR --split VAL --negatives OUT/normal --unclear OUT/unclear``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from endoedge.data.media import IMAGE_SUFFIXES
from endoedge.training.degrade import DEGRADATIONS, degrade


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--normal", nargs="+", type=Path, default=[], help="polyp-free frame folders (held out)")
    ap.add_argument("--polyp-images", type=Path, help="folder of polyp images (e.g. Kvasir-SEG images/)")
    ap.add_argument("--polyp-split", type=Path, help="file of polyp image stems to use (e.g. the val split)")
    ap.add_argument("--share", type=int, default=2, help="degrade every N-th frame (default 2: half)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    normal_dir, unclear_dir = args.out / "normal", args.out / "unclear"
    normal_dir.mkdir(parents=True, exist_ok=True)
    unclear_dir.mkdir(parents=True, exist_ok=True)
    normals = [(f"{folder.parent.name}_{folder.name}_{p.stem}", p) for folder in args.normal for p in _images(folder)]
    for name, p in normals:
        link = normal_dir / (name + p.suffix)
        if not link.exists():
            link.symlink_to(p.resolve())
    polyps: list[tuple[str, Path]] = []
    if args.polyp_images:
        keep = None
        if args.polyp_split:
            keep = {s.split("#")[0].strip() for s in args.polyp_split.read_text().splitlines()} - {""}
        polyps = [(p.stem, p) for p in _images(args.polyp_images) if keep is None or p.stem in keep]
    rng = np.random.default_rng(args.seed)
    n = 0
    with open(unclear_dir / "manifest.jsonl", "w") as manifest:
        for i, (name, p) in enumerate(polyps + normals):
            if i % args.share:
                continue
            k = 1 if rng.random() < 0.6 else 2
            ops = [DEGRADATIONS[j] for j in rng.choice(len(DEGRADATIONS), k, replace=False)]
            rgb = cv2.imread(str(p), cv2.IMREAD_COLOR)[..., ::-1]
            out = degrade(np.ascontiguousarray(rgb), rng, ops)
            cv2.imwrite(str(unclear_dir / f"{name}_unclear.jpg"), out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
            manifest.write(json.dumps({"source": str(p), "ops": ops}) + "\n")
            n += 1
    print(f"{len(normals)} normal frames linked under {normal_dir}; {n} unclear frames written to {unclear_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
