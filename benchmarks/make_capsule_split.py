"""Write the WCEBleedGen train/val split (image stems) with near-duplicate frames grouped.

    python benchmarks/make_capsule_split.py [--data ../shared/data/wcebleedgen/train] \
        [--out data/splits/wcebleedgen] [--val-fraction 0.2] [--seed 0]

WCEBleedGen names frames ``img-<N>-_png_jpg.rf.<hash>.jpg`` (bleeding) and ``img-<N>-_png.rf...``
(non-bleeding), ``N`` numbering each class's frames in order. Groups: thumbnails within 10 grey
levels (mean absolute difference of 24 x 24 colour thumbnails; random pairs of this set differ by
16 at their 1st percentile) plus blocks of 10 consecutive numbers of a class. Whole groups go to
val, per class, until each class has ``--val-fraction`` of its frames there.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from endoedge.data.neardup import group_frames, grouped_split, thumbnails  # noqa: E402

NAME = re.compile(r"img-(\d+)-_(png_jpg|png)\.rf")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/wcebleedgen/train"))
    ap.add_argument("--out", default=str(ROOT / "data/splits/wcebleedgen"))
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-mad", type=float, default=10.0)
    ap.add_argument("--block", type=int, default=10)
    args = ap.parse_args()
    images = sorted((Path(args.data) / "images").glob("*.jpg"))
    if not images:
        print(f"no images under {args.data}/images", file=sys.stderr)
        return 1
    seq = []
    for p in images:
        m = NAME.match(p.name)
        seq.append(("bleeding" if m and m.group(2) == "png_jpg" else "normal", int(m.group(1)) if m else 0))
    positive = [(Path(args.data) / "labels" / f"{p.stem}.txt").stat().st_size > 0 for p in images]
    groups = group_frames(thumbnails(images), max_mad=args.max_mad, sequence=seq, block=args.block)
    split = grouped_split(groups, args.val_fraction, args.seed, strata=positive)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    head = (f"# WCEBleedGen train export, near-duplicate groups (MAD <= {args.max_mad}, blocks of "
            f"{args.block}), seed {args.seed}; benchmarks/make_capsule_split.py\n")
    for part, idx in (("train", split.train), ("val", split.val)):
        (out / f"wcebleedgen_{part}.txt").write_text(head + "".join(images[i].stem + "\n" for i in idx))
    for part, idx, ng in (("train", split.train, split.train_groups), ("val", split.val, split.val_groups)):
        pos = sum(positive[i] for i in idx)
        print(f"{part}: {len(idx)} frames ({pos} bleeding, {len(idx) - pos} normal) in {ng} groups")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
