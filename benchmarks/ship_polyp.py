"""Write the shipped polyp detector at a given threshold, with what that threshold costs recorded.

    python benchmarks/ship_polyp.py runs/pn_deep/epoch_005.pt --threshold 0.2392 --reason "..." \
        [--out src/endoedge/models/weights/polyp_ssdlite320_effl0_kvasir_polypgen.pt]

(``endoedge eval MODEL DATA --negatives DIR --conf T --reason TEXT --save-operating-point OUT.pt`` does
the same for any checkpoint; this script fixes the frames, the cleaning and the data terms.)

For when ``endoedge eval --target-fa`` cannot pick the point: its rule (the lowest threshold with at
most the target share of VAL polyp-free frames boxed) needs VAL frames that show false alarms, and a
model silent on all 70 VAL frames above some low score gets that low score. The threshold is then
given here, with the reason, and the file records (``operating_point``) what it measures at that
threshold on the same frames ``--target-fa`` uses: PolypGen VAL sequences (false alarms, with the
95% upper bound those frames can vouch for) and Kvasir-SEG val (sensitivity), frame cleaning
``all`` as deployed. The float16 file is what users get; its notes carry the data terms.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = ROOT.parent / "shared" / "data"
SPLITS = ROOT / "data" / "splits"
OUT = ROOT / "src" / "endoedge" / "models" / "weights" / "polyp_ssdlite320_effl0_kvasir_polypgen.pt"
TERMS = (
    "endoedge: SSDLite320 EfficientNet-Lite0 polyp detector fine-tuned (via polyp_ssdlite320_effl0_kvasir and "
    "two fine-tunes with polyp-free frames), every frame cleaned as deployed (endoscopy 'all': field-of-view crop + "
    "OSD mask), on Kvasir-SEG (880 train images; research and educational use only) + PolypGen centre A/B "
    "polyp-free sequences (304 frames; CC BY-NC-SA 4.0). The weights carry both terms: non-commercial research "
    "and education only, share-alike, attribute Jha et al. 2020 and Ali et al. 2023. Not a medical device; not "
    "clinically validated."
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path, help="endoedge checkpoint (the training run's epoch file)")
    ap.add_argument("--threshold", type=float, required=True, help="score threshold to ship, in (0, 1)")
    ap.add_argument("--reason", required=True, help="why this threshold (stored in the file)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if not 0.0 < args.threshold < 1.0:
        ap.error(f"--threshold {args.threshold}: give a value in (0, 1)")
    if not args.reason.strip():
        ap.error("--reason is empty: say why this threshold (it is stored in the file)")

    from endoedge.cli._common import endoscopy_option
    from endoedge.data.datasets import load_dataset, load_negatives, read_stems
    from endoedge.detector import load
    from endoedge.evaluation.operating import curve_from_run, given_threshold, save_operating_point
    from endoedge.evaluation.runner import run_detector

    seqs = [s.strip() for s in (SPLITS / "polypgen_negatives" / "polypgen_neg_val.txt").read_text().splitlines()
            if s.strip() and not s.startswith("#")]
    negatives = load_negatives([DATA / "polypgen" / "negative" / s for s in seqs], ("polyp",)).samples
    kvasir = load_dataset(DATA / "kvasir-seg").subset(read_stems(SPLITS / "kvasir_seg_val.txt"))
    with load(args.model, endoscopy=endoscopy_option("all")) as base:
        det = base.with_thresholds(score_threshold=0.001, max_detections=max(100, base.spec.max_detections))
        curve = curve_from_run(run_detector(det, kvasir, conf=args.threshold, negatives=negatives))
    point = given_threshold(
        curve, args.threshold, args.reason,
        chosen_on=f"PolypGen VAL sequences {' + '.join(seqs)} ({len(negatives)} frames, "
                  f"data/splits/polypgen_negatives/polypgen_neg_val.txt) and Kvasir-SEG val ({len(kvasir.samples)} "
                  "polyp frames), endoscopy cleaning 'all'; benchmarks/ship_polyp.py")
    out = save_operating_point(args.model, point, args.out, half=True, notes=TERMS)
    print(f"shipped {out} ({out.stat().st_size / 1e6:.1f} MB): {point}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
