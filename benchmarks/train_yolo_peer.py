"""Train the Ultralytics peer that issue 14's cross-centre INT8 table measures (a test-time peer).

Ultralytics is AGPL-3.0: endoedge never imports it; this script is a benchmark helper that rebuilds
the peer the table describes, so the YOLO rows can be reproduced (the earlier peers lived in ``runs/``
and were lost with it). Recipe, as in ``benchmarks/RESULTS.md``: the Kvasir-SEG train split
(``data/splits/kvasir_seg_train.txt``, 880 images; val = the 120 of ``kvasir_seg_val.txt``) written
as a YOLO dataset (images linked, one ``polyp`` box per line from ``kavsir_bboxes.json``), the
architecture's YAML trained from scratch (no download: no pretrained weights), ``imgsz 320``,
12 epochs, CPU, then exported to ONNX (opset 17, dynamic batch) beside the weights.

    python benchmarks/train_yolo_peer.py [--arch yolov8n] [--epochs 12] [--out runs/yolo_peer]

``--init PEER.pt --name NAME`` continues a trained peer for ``--epochs`` more (a new schedule from its
weights, not Ultralytics' resume) into ``OUT/NAME``: the longer-trained peer of issue 14's session 11.

``--negatives data/splits/polypgen_negatives/polypgen_neg_train.txt`` adds the frames of the PolypGen
polyp-free sequences listed there to the training images as background (an empty label file each,
Ultralytics' background images): the same negatives the shipped SSD was trained with, the held-out
sequences (``polypgen_neg_val.txt``, ``polypgen_neg_test.txt``) left out. The dataset then goes to
``OUT/data_neg`` (PolypGen's CC BY-NC-SA 4.0 terms join Kvasir-SEG's on those weights).

Data terms: Kvasir-SEG is for research and education only; the peer's weights carry them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KVASIR = ROOT.parent / "shared" / "data" / "kvasir-seg"
SPLITS = ROOT / "data" / "splits"
PG_NEG = ROOT.parent / "shared" / "data" / "polypgen" / "negative"


def stems(path: Path) -> list[str]:
    return [s for s in (line.strip() for line in path.read_text().splitlines()) if s and not s.startswith("#")]


def write_dataset(out: Path, negatives: Path | None = None) -> Path:
    """The Kvasir-SEG split as a YOLO dataset under ``out`` (plus ``negatives``' polyp-free sequences
    as background training images); returns its data YAML."""
    boxes = json.loads((KVASIR / "kavsir_bboxes.json").read_text())
    for split in ("train", "val"):
        img_dir, lab_dir = out / "images" / split, out / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lab_dir.mkdir(parents=True, exist_ok=True)
        for stem in stems(SPLITS / f"kvasir_seg_{split}.txt"):
            src = KVASIR / "images" / f"{stem}.jpg"
            link = img_dir / src.name
            if not link.exists():
                link.symlink_to(src)
            rec = boxes[stem]
            w, h = float(rec["width"]), float(rec["height"])
            lines = [f"0 {(b['xmin'] + b['xmax']) / 2 / w:.6f} {(b['ymin'] + b['ymax']) / 2 / h:.6f} "
                     f"{(b['xmax'] - b['xmin']) / w:.6f} {(b['ymax'] - b['ymin']) / h:.6f}" for b in rec["bbox"]]
            (lab_dir / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    if negatives is not None:
        img_dir, lab_dir = out / "images" / "train", out / "labels" / "train"
        for seq in stems(negatives):
            frames = sorted((PG_NEG / seq).glob("*.jpg"))
            if not frames:
                raise SystemExit(f"error: --negatives: no frames in {PG_NEG / seq}")
            for src in frames:
                stem = f"pgneg_{seq.replace('/', '_')}_{src.stem}"
                link = img_dir / f"{stem}.jpg"
                if not link.exists():
                    link.symlink_to(src)
                (lab_dir / f"{stem}.txt").write_text("")
    yaml = out / "kvasir.yaml"
    yaml.write_text(f"path: {out}\ntrain: images/train\nval: images/val\nnames:\n  0: polyp\n")
    return yaml


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="yolov8n", help="Ultralytics model YAML stem (yolov8n, yolo11n)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "yolo_peer")
    ap.add_argument("--init", type=Path, help="a trained peer's .pt to continue from (default: from scratch)")
    ap.add_argument("--name", help="run folder under --out (default: --arch)")
    ap.add_argument("--negatives", type=Path,
                    help="a PolypGen negatives split file: its sequences join training as background images")
    args = ap.parse_args()
    if not (KVASIR / "kavsir_bboxes.json").is_file():
        print(f"error: Kvasir-SEG not found at {KVASIR} (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    out = args.out.resolve()
    if args.init is not None and not args.init.is_file():
        print(f"error: --init {args.init} is not a file (a peer's weights/best.pt)", file=sys.stderr)
        return 2
    name = args.name or args.arch
    os.environ.setdefault("YOLO_CONFIG_DIR", str(out / "ultralytics_cfg"))
    if args.negatives is not None and not args.negatives.is_file():
        print(f"error: --negatives {args.negatives} is not a file (e.g. data/splits/polypgen_negatives/"
              "polypgen_neg_train.txt)", file=sys.stderr)
        return 2
    data = write_dataset(out / ("data_neg" if args.negatives else "data"), args.negatives)
    try:
        from ultralytics import YOLO
    except ImportError as err:
        print(f"error: Ultralytics is not installed ({err}); `make venv` installs it (a test-time peer, AGPL)",
              file=sys.stderr)
        return 2

    model = YOLO(str(args.init.resolve()) if args.init else f"{args.arch}.yaml")
    model.train(data=str(data), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, device="cpu",
                workers=2, seed=args.seed, project=str(out), name=name, exist_ok=True, plots=False,
                pretrained=args.init is not None, amp=False, verbose=False)
    best = out / name / "weights" / "best.pt"
    onnx = YOLO(str(best)).export(format="onnx", opset=17, dynamic=True, imgsz=args.imgsz, simplify=False)
    print(f"peer: {best}\nonnx: {onnx}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
