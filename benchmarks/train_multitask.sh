#!/usr/bin/env bash
# Train the multi-task SSD (boxes + polyp mask + normal/unclear/polyp triage) on Kvasir-SEG images,
# boxes and masks (data/splits kvasir_seg_train/val) + the PolypGen polyp-free train sequences as
# 'normal' frames with empty masks (val sequences held out for validation; test sequences never seen),
# a quarter of all samples degraded into 'unclear' frames. Resumable: run it again to continue from
# OUT/train_state.pt. Meant for a GPU (DEVICE=cuda); on a CPU, start from the shipped box-only detector
# (INIT=...: its backbone and SSD heads fill the multi-task model, the RFB, mask decoder and triage head
# start fresh) with FREEZE=11 and a few epochs:
#
#   OUT=runs/multitask nice -n 10 benchmarks/train_multitask.sh > runs/multitask.log 2>&1 &
#   INIT=src/endoedge/models/weights/polyp_ssdlite320_effl0_kvasir_polypgen.pt FREEZE=11 EPOCHS=8 LR=1e-3 \
#     WARMUP=0.3 THREADS=1 OUT=runs/multitask benchmarks/train_multitask.sh
#
# then unfreeze in steps (the shipped weights: the README's "Shipped checkpoint" lists all three stages), e.g.
#   INIT=runs/multitask_ft/last.pt FREEZE=3 EPOCHS=8 LR=4e-4 WARMUP=0.2 THREADS=2 OUT=runs/multitask_s3 ...
# ENDOSCOPY=all trains on frames cleaned as deployed (field-of-view crop + OSD mask; masks cut with their
# frames; stored in the checkpoints); the default, off, reproduces the stages above (frames as read).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DATA=${DATA:-$REPO/../shared/data}
OUT=${OUT:-$REPO/runs/multitask}
PY=${PY:-python}
ENDOSCOPY=${ENDOSCOPY:-off}
NEG=$DATA/polypgen/negative
SPLITS=$REPO/data/splits/polypgen_negatives
train_seqs=(centre_A/seq1_neg centre_A/seq3_neg centre_A/seq4_neg centre_A/seq5_neg
            centre_B/seq8_neg centre_B/seq10_neg centre_B/seq11_neg centre_B/seq15_neg)
val_seqs=(centre_A/seq7_neg centre_B/seq12_neg)
if [[ -f $SPLITS/polypgen_neg_train.txt ]]; then
  mapfile -t train_seqs < <(grep -v '^#' "$SPLITS/polypgen_neg_train.txt")
  mapfile -t val_seqs < <(grep -v '^#' "$SPLITS/polypgen_neg_val.txt")
fi
args=()
if [[ -n ${INIT:-} ]]; then args+=(--init "$INIT"); fi
for s in "${train_seqs[@]}"; do args+=(--negatives "$NEG/$s"); done
for s in "${val_seqs[@]}"; do args+=(--val-negatives "$NEG/$s"); done
exec "$PY" -m endoedge.cli train --data "$DATA/kvasir-seg" --split "$REPO/data/splits" "${args[@]}" \
  --arch ssdlite320_efficientnet_lite0_multitask --imgsz 320 --epochs "${EPOCHS:-60}" --batch "${BATCH:-16}" \
  --lr "${LR:-1.5e-3}" --warmup-epochs "${WARMUP:-2}" --final-lr 0.02 --freeze "${FREEZE:-0}" --seed 0 \
  --threads "${THREADS:-0}" --device "${DEVICE:-auto}" \
  --unclear-ratio 0.25 --mask-weight 1.0 --frame-weight 0.5 --resume --out "$OUT" --endoscopy "$ENDOSCOPY" \
  --notes "endoedge: multi-task SSDLite320 EfficientNet-Lite0 (RFB, mask attention, normal/unclear/polyp triage) trained on Kvasir-SEG images, boxes and masks (research and educational use only; cite Jha et al. 2020) + PolypGen centre A/B polyp-free sequences (CC BY-NC-SA 4.0; Ali et al. 2023) and degraded copies of both. The weights carry both terms: non-commercial research and education only, share-alike, attribute both."
