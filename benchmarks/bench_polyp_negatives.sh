#!/usr/bin/env bash
# Video metrics of polyp detectors with `endoedge eval --video-negatives/--video-polyps`, as deployed
# (endoscopy frame cleaning 'all'): the held-out TEST polyp-free sequences of
# data/splits/polypgen_negatives/polypgen_neg_test.txt (ordered frames; PolypGen subsampled them in
# time, so the per-minute rate assumes 25 fps of the frames as stored) and the share of PolypGen's
# positive-unlabelled centre A/B polyp frames that show a box (single frames, not sequences: their
# toggles and frames-to-first mean nothing). Per-frame scores, the operating curve and the chosen
# threshold: benchmarks/bench_operating_point.py.
#   MODELS="old=a.pt new=b.pt" benchmarks/bench_polyp_negatives.sh OUTDIR
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DATA=${DATA:-$REPO/../shared/data}
OUT=${1:?output folder}
PY=${PY:-python}
mkdir -p "$OUT"
args=()
while read -r s; do args+=(--video-negatives "$DATA/polypgen/negative/$s"); done \
  < <(grep -v '^#' "$REPO/data/splits/polypgen_negatives/polypgen_neg_test.txt")
for item in $MODELS; do
  name=${item%%=*}; model=${item#*=}
  "$PY" -m endoedge.cli eval "$model" "${args[@]}" --endoscopy all \
      --video-polyps "$DATA/polypgen/positive-unlabelled/centre_A" --video-polyps "$DATA/polypgen/positive-unlabelled/centre_B" \
      --json "$OUT/$name.video.json" | tee "$OUT/$name.video.txt"
done
