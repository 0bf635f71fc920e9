#!/usr/bin/env bash
# Fine-tune the shipped polyp detector on Kvasir-SEG (train split) + PolypGen centre A/B polyp-free
# sequences (data/splits/polypgen_negatives/polypgen_neg_train.txt), validating on Kvasir val and the
# held-out negative sequences of polypgen_neg_val.txt. The test sequences (polypgen_neg_test.txt)
# are never seen. Resumable: run it again to continue from OUT/train_state.pt.
# Every frame (boxed, polyp-free, validation) is cleaned as the deployed detector cleans it
# (ENDOSCOPY=all: field-of-view crop + OSD mask; the setting is stored in the checkpoints).
# ENDOSCOPY=off reproduces the first fine-tune (frames as read), shipped before 2026-12-06 21:00.
#
# INIT, FREEZE, LR, NEG_RATIO, HARD_SHARE, DYE, ZOOM ("MIN MAX"), EPOCHS, SEED, THREADS override the recipe's values;
# EXTRA_NEG (space-separated folders, e.g. Kvasir-SEG background crops from kvasir_background_crops.py)
# adds polyp-free training frames beside the PolypGen sequences.
#   OUT=runs/polyp_neg nice -n 5 benchmarks/retrain_polyp_negatives.sh > runs/polyp_neg.log 2>&1 &
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DATA=${DATA:-$REPO/../shared/data}
OUT=${OUT:-$REPO/runs/polyp_neg}
EPOCHS=${EPOCHS:-4}
PY=${PY:-python}
ENDOSCOPY=${ENDOSCOPY:-all}
NEG=$DATA/polypgen/negative
INIT=${INIT:-$REPO/src/endoedge/models/weights/polyp_ssdlite320_effl0_kvasir.pt}
args=()
while read -r seq; do args+=(--negatives "$NEG/$seq"); done < <(grep -v '^#' "$REPO/data/splits/polypgen_negatives/polypgen_neg_train.txt")
for d in ${EXTRA_NEG:-}; do args+=(--negatives "$d"); done
while read -r seq; do args+=(--val-negatives "$NEG/$seq"); done < <(grep -v '^#' "$REPO/data/splits/polypgen_negatives/polypgen_neg_val.txt")
exec "$PY" -m endoedge.cli train --data "$DATA/kvasir-seg" --split "$REPO/data/splits" \
  --init "$INIT" \
  "${args[@]}" --neg-ratio ${NEG_RATIO:-0.5} --hard-share ${HARD_SHARE:-0.5} --domain-aug on --dye ${DYE:-0} --zoom ${ZOOM:-0.7 1.5} \
  --arch ssdlite320_efficientnet_lite0 --imgsz 320 --epochs "$EPOCHS" --batch 16 \
  --lr ${LR:-6e-4} --warmup-epochs 0.3 --final-lr 0.05 --freeze ${FREEZE:-11} --seed ${SEED:-0} --threads ${THREADS:-1} \
  --save-epochs --resume --out "$OUT" --endoscopy "$ENDOSCOPY" \
  --notes "endoedge: SSDLite320 EfficientNet-Lite0 polyp detector fine-tuned from $(basename "$INIT" .pt), every frame cleaned as deployed (endoscopy '$ENDOSCOPY'), on Kvasir-SEG (880 train images; research and educational use only) + PolypGen centre A/B polyp-free sequences (304 frames; CC BY-NC-SA 4.0). The weights carry both terms: non-commercial research and education only, share-alike, attribute Jha et al. 2020 and Ali et al. 2023."
