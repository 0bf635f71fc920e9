#!/usr/bin/env bash
# Install endoedge on an NVIDIA Jetson with JetPack 6 (L4T R36) or JetPack 7 (L4T R38/R39).
#
#   jetson/install.sh [--venv PATH] [--extras LIST] [--no-apt] [--dry-run]
#
# What it does:
#   1. reads /etc/nv_tegra_release: R36 -> JetPack 6 (CUDA 12.x), R38/R39 -> JetPack 7 (CUDA 13.x);
#      older releases are refused (Python < 3.10);
#   2. apt: python3-venv, python3-gi and the GStreamer plugins; checks that JetPack's TensorRT Python
#      bindings (python3-libnvinfer) and NVIDIA's GStreamer plugins (nvidia-l4t-gstreamer) are there;
#   3. a venv created WITH --system-site-packages, so it sees JetPack's `tensorrt` and apt's `gi`
#      (never pip-install tensorrt or PyGObject into it: they would hide the JetPack builds);
#   4. pip install -e the repository (extras: plot by default) and cuda-python pinned to the
#      JetPack's CUDA (JetPack 6.0: 12.2.*, 6.1/6.2: 12.6.*, 7.x: 13.*);
#   5. checks: import tensorrt, gi, endoedge; `endoedge jetson info`.
#
# Environment: ENDOEDGE_ROOT (default /) is where /etc/nv_tegra_release is read (tests point it at a
# fake tree), PYTHON (default python3), SUDO (default sudo when not root).
# --dry-run prints the commands instead of running them.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
ROOT=${ENDOEDGE_ROOT:-/}
PYTHON=${PYTHON:-python3}
VENV="$REPO/.venv"
EXTRAS="plot"
APT=1
DRY=0
if [ "$(id -u)" -eq 0 ]; then SUDO=${SUDO:-}; else SUDO=${SUDO:-sudo}; fi

while [ $# -gt 0 ]; do
  case "$1" in
    --venv) VENV=$2; shift 2 ;;
    --extras) EXTRAS=$2; shift 2 ;;
    --no-apt) APT=0; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

run() {
  if [ "$DRY" -eq 1 ]; then echo "+ $*"; else echo "+ $*" >&2; "$@"; fi
}

release_file="${ROOT%/}/etc/nv_tegra_release"
if [ ! -r "$release_file" ]; then
  echo "install.sh: $release_file not found: this is not a Jetson (L4T); on a desktop use 'make venv'" >&2
  exit 1
fi
line=$(head -n 1 "$release_file")
major=$(sed -n 's/.*R\([0-9][0-9]*\) (release).*/\1/p' <<<"$line")
revision=$(sed -n 's/.*REVISION: \([0-9.]*\).*/\1/p' <<<"$line")
case "$major" in
  36)
    JETPACK=6
    case "$revision" in
      2*|3*) CUDA_PIN="12.2.*" ;;   # JetPack 6.0 DP / 6.0
      *) CUDA_PIN="12.6.*" ;;       # JetPack 6.1 / 6.2 / 6.2.1
    esac ;;
  38|39) JETPACK=7; CUDA_PIN="13.*" ;;
  "") echo "install.sh: cannot read the L4T release from '$line'" >&2; exit 1 ;;
  *) echo "install.sh: L4T R$major (JetPack 4/5) has Python < 3.10; endoedge needs JetPack 6 or 7" >&2; exit 1 ;;
esac
echo "L4T R$major.$revision -> JetPack $JETPACK; cuda-python $CUDA_PIN; venv $VENV" >&2

if [ "$APT" -eq 1 ]; then
  run $SUDO apt-get update
  run $SUDO apt-get install -y --no-install-recommends python3-venv python3-dev python3-gi \
    gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gstreamer1.0-tools gstreamer1.0-plugins-base \
    gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav
  for pkg in python3-libnvinfer nvidia-l4t-gstreamer; do
    if [ "$DRY" -eq 0 ] && ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      echo "install.sh: $pkg is missing: install JetPack's components (sudo apt install nvidia-jetpack)" >&2
    fi
  done
fi

run "$PYTHON" -m venv --system-site-packages "$VENV"
run "$VENV/bin/python" -m pip install --upgrade pip
spec="$REPO"
if [ -n "$EXTRAS" ]; then spec="$REPO[$EXTRAS]"; fi
run "$VENV/bin/python" -m pip install -e "$spec" "cuda-python==$CUDA_PIN"
run "$VENV/bin/python" -c "import tensorrt, gi, endoedge; print('tensorrt', tensorrt.__version__, '| endoedge', endoedge.__version__)"
run "$VENV/bin/endoedge" jetson info
echo "done: activate with 'source $VENV/bin/activate'; check the pipelines with jetson/check_pipelines.sh (PYTHON=$VENV/bin/python)" >&2
