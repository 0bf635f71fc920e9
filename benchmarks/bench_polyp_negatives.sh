#!/usr/bin/env bash
# Old vs new shipped polyp detector on polyp-free PolypGen sequences and Kvasir-SEG val, as deployed
# (endoscopy frame cleaning 'all': field-of-view crop + OSD masking), with `endoedge eval`:
#  1. Kvasir val + the held-out TEST negative sequences (data/splits/polypgen_negatives/*_test.txt):
#     mAP, P/R/F1, frame level, and the sensitivity vs false-alarm-frame curve;
#  2. the VAL negative sequences (*_val.txt; also watched during training): the curve and the point
#     chosen for a 2% false-alarm target (the new model's threshold was chosen this way);
#  3. video metrics on the test sequences (ordered frames; PolypGen subsampled them in time, so the
#     per-minute rate assumes 25 fps of the frames as stored) and the share of PolypGen's
#     positive-unlabelled centre A/B polyp frames that show a box.
#   MODELS="old=path.pt new=path.pt" benchmarks/bench_polyp_negatives.sh OUTDIR
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DATA=${DATA:-$REPO/../shared/data}
OUT=${1:?output folder}
PY=${PY:-python}
mkdir -p "$OUT"
for part in val test; do  # real folders (eval's --negatives does not follow folder links)
  rm -rf "$OUT/neg_$part"; mkdir -p "$OUT/neg_$part"
  grep -v '^#' "$REPO/data/splits/polypgen_negatives/polypgen_neg_$part.txt" | while read -r s; do
    cp -rl "$DATA/polypgen/negative/$s" "$OUT/neg_$part/${s//\//_}" 2>/dev/null || cp -r "$DATA/polypgen/negative/$s" "$OUT/neg_$part/${s//\//_}"
  done
done
for item in $MODELS; do
  name=${item%%=*}; model=${item#*=}
  common=(--endoscopy all)
  "$PY" -m endoedge.cli eval "$model" "$DATA/kvasir-seg" --split "$REPO/data/splits/kvasir_seg_val.txt" \
      --negatives "$OUT/neg_test" "${common[@]}" --json "$OUT/$name.kvasir_val+neg_test.json" | tee "$OUT/$name.kvasir_val+neg_test.txt"
  "$PY" -m endoedge.cli eval "$model" "$DATA/kvasir-seg" --split "$REPO/data/splits/kvasir_seg_val.txt" \
      --negatives "$OUT/neg_val" --target-fa 0.02 "${common[@]}" --json "$OUT/$name.kvasir_val+neg_val.json" | tee "$OUT/$name.kvasir_val+neg_val.txt"
  "$PY" -m endoedge.cli eval "$model" --video-negatives "$OUT/neg_test" \
      --video-polyps "$DATA/polypgen/positive-unlabelled/centre_A" --video-polyps "$DATA/polypgen/positive-unlabelled/centre_B" \
      "${common[@]}" --json "$OUT/$name.video.json" | tee "$OUT/$name.video.txt"
done
