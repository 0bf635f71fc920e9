"""Write the shipped multi-task checkpoint and the metadata beside it.

    python benchmarks/ship_multitask.py RUN/last.pt [--sensitivity 0.9] \
        [--out src/endoedge/models/weights/polyp_multitask_ssdlite320_effl0_kvasir_polypgen.pt]

1. the float16 file (what users get) with the terms in its notes;
2. its operating threshold: ``endoedge eval --target-sensitivity`` on the Kvasir-SEG val split
   (the highest threshold keeping that share of val polyps with a box on the polyp), false alarms
   measured on the PolypGen VAL negative sequences; frame cleaning ``all`` as deployed;
3. the held-out numbers on the held-aside triage set (``benchmarks/make_triage_set.py`` over the
   PolypGen TEST sequences + Kvasir val, degraded copies as ``unclear``): box mAP, mask Dice /
   IoU, triage confusion, at that threshold, into ``OUT.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
NEG = DATA / "polypgen" / "negative"
SPLITS = ROOT / "data" / "splits"
OUT = ROOT / "src" / "endoedge" / "models" / "weights" / "polyp_multitask_ssdlite320_effl0_kvasir_polypgen.pt"
TERMS = (
    "endoedge multi-task SSDLite320 EfficientNet-Lite0 (RFB, mask attention, normal/unclear/polyp triage), "
    "initialised from polyp_ssdlite320_effl0_kvasir_polypgen and trained on Kvasir-SEG images, boxes and masks "
    "(Jha et al. 2020; research and educational use only) + PolypGen centre A/B polyp-free sequences (Ali et al. "
    "2023; CC BY-NC-SA 4.0) and degraded copies of both. The weights carry both terms: non-commercial research "
    "and education only, share-alike, attribute both. Not a medical device; not clinically validated."
)

CHOSEN_ON = ("Kvasir-SEG val split (data/splits/kvasir_seg_val.txt, {n_pos} polyp frames) for the sensitivity; false "
             "alarms measured on the PolypGen VAL sequences (data/splits/polypgen_negatives/polypgen_neg_val.txt, "
             "{n_neg} frames); frame cleaning 'all'; endoedge eval --target-sensitivity")


def _seqs(part: str) -> list[Path]:
    lines = (SPLITS / "polypgen_negatives" / f"polypgen_neg_{part}.txt").read_text().splitlines()
    return [NEG / s.strip() for s in lines if s.strip() and not s.startswith("#")]


def _cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "endoedge.cli", *args]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True)


def main() -> int:
    from endoedge.evaluation.operating import OperatingPoint, save_operating_point
    from endoedge.models.checkpoint import load_checkpoint, save_checkpoint

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--sensitivity", type=float, default=0.9)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--triage-set", type=Path, help="an existing make_triage_set.py output (default: build one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        loaded = load_checkpoint(args.checkpoint)
        half = save_checkpoint(t / "half.pt", loaded, notes=TERMS, half=True)
        val_neg = t / "val_neg"
        val_neg.mkdir()
        for s in _seqs("val"):
            (val_neg / f"{s.parent.name}_{s.name}").symlink_to(s)
        _cli("eval", str(half), str(DATA / "kvasir-seg"), "--split", str(SPLITS / "kvasir_seg_val.txt"),
             "--negatives", str(val_neg), "--endoscopy", "all", "--target-sensitivity", str(args.sensitivity),
             "--save-operating-point", str(args.out), "--json", str(t / "choose.json"))
        chosen = json.loads((t / "choose.json").read_text())["operating_point"]
        chosen["chosen_on"] = CHOSEN_ON.format(n_neg=chosen["n_negative"], n_pos=chosen["n_positive"])
        save_operating_point(args.out, OperatingPoint(**chosen), args.out)  # without the temporary paths
        triage = args.triage_set
        if triage is None:
            triage = t / "triage"
            subprocess.run([sys.executable, str(ROOT / "benchmarks" / "make_triage_set.py"), "--out", str(triage),
                            "--normal", *map(str, _seqs("test")), "--polyp-images", str(DATA / "kvasir-seg" / "images"),
                            "--polyp-split", str(SPLITS / "kvasir_seg_val.txt")], check=True)
        _cli("eval", str(args.out), str(DATA / "kvasir-seg"), "--split", str(SPLITS / "kvasir_seg_val.txt"),
             "--negatives", str(triage / "normal"), "--unclear", str(triage / "unclear"), "--endoscopy", "all",
             "--json", str(t / "held.json"))
        held = json.loads((t / "held.json").read_text())
    meta = {
        "model": args.out.name, "arch": loaded.arch.name, "classes": list(loaded.spec.class_names),
        "frame_classes": ["normal", "unclear", "polyp"], "source_checkpoint": args.checkpoint.name,
        "operating_threshold": chosen["score_threshold"], "operating_point": chosen,
        "held_out": {"polyp_frames": "Kvasir-SEG val split (120)",
                     "normal_frames": "PolypGen TEST sequences " + ", ".join(f"{s.parent.name}/{s.name}" for s in _seqs("test")),
                     "unclear_frames": "degraded copies (benchmarks/make_triage_set.py, seed 0)",
                     "box_map50": held["coco"]["map50"], "box_map50_95": held["coco"]["map50_95"],
                     "frame": held["frame"], "mask": held.get("mask"), "triage": held.get("triage"),
                     "prf": held.get("prf")},
        "terms": TERMS,
    }
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"shipped {args.out} ({args.out.stat().st_size / 1e6:.1f} MB), threshold {chosen['score_threshold']}; "
          f"held-out mAP@0.5 {held['coco']['map50']:.3f}, mask Dice {(held.get('mask') or {}).get('dice')}, "
          f"triage accuracy {(held.get('triage') or {}).get('accuracy')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
