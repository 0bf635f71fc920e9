#!/usr/bin/env bash
# Run endoedge's Jetson GStreamer presets on a real Jetson with gst-launch-1.0 and a fakesink.
#
# Each preset string comes from `endoedge jetson pipeline SOURCE` (python -m endoedge.cli jetson), exactly as endoedge
# builds it, with `fakesink` in place of the appsink. A check passes when gst-launch exits 0, the
# sink negotiated video/x-raw,format=BGR, and at least one frame reached it.
#
# By default it encodes two short test clips on the device (H.264 in MP4 and H.265 in MKV, with
# NVENC where the board has one, else x264enc/x265enc) and decodes them with the file preset, one
# through a path with a space to check the quoting. Cameras and RTSP are checked when asked for:
#
#   jetson/check_pipelines.sh [--csi N] [--v4l2 /dev/videoN] [--v4l2-format YUY2|UYVY|NV12|MJPG]
#                             [--size WxH] [--fps N] [--rtsp URL] [--rtsp-codec h264|h265]
#                             [--file PATH]... [--frames N] [--seconds S] [--no-clips]
#
# Environment: PYTHON (default python3; the one that has endoedge's dependencies). Exit status: the
# number of failed checks (0 = all passed).
set -u -o pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
SINK="fakesink sync=false silent=false"

CSI="" V4L2="" V4L2_FMT="" SIZE="" FPS="" RTSP="" RTSP_CODEC="h264"
FRAMES=60 SECS=15 CLIPS=1
FILES=()
while [ $# -gt 0 ]; do
  case "$1" in
    --csi) CSI=$2; shift 2 ;;
    --v4l2) V4L2=$2; shift 2 ;;
    --v4l2-format) V4L2_FMT=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --fps) FPS=$2; shift 2 ;;
    --rtsp) RTSP=$2; shift 2 ;;
    --rtsp-codec) RTSP_CODEC=$2; shift 2 ;;
    --file) FILES+=("$2"); shift 2 ;;
    --frames) FRAMES=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --no-clips) CLIPS=0; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done

command -v gst-launch-1.0 >/dev/null || { echo "gst-launch-1.0 not found: sudo apt install gstreamer1.0-tools" >&2; exit 2; }
echo "== device"
"$PYTHON" -m endoedge.cli jetson info || exit 2
gst-launch-1.0 --version | head -n 2

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FAILED=0
RUNS=0
SUMMARY=()

# launch NAME DESCRIPTION: run it (word-split, globbing off: gst-launch re-joins its arguments with
# single spaces, so quoted locations with single spaces survive) and judge the log.
launch() {
  local name=$1 desc=$2 log rc frames note
  RUNS=$((RUNS + 1))
  log="$WORK/run$RUNS.log"
  echo; echo "== $name"; echo "gst-launch-1.0 -v -e $desc"
  set -f
  # shellcheck disable=SC2086
  timeout --preserve-status -s INT "$SECS" gst-launch-1.0 -v -e $desc >"$log" 2>&1
  rc=$?
  set +f
  frames=$(grep -c "last-message = chain" "$log")
  # 0: reached EOS; 130/124: stopped by the time limit (an RTSP stream never ends on its own).
  case "$rc" in 0) note="" ;; 124|130) note=", stopped at the ${SECS}s limit" ;; *) note="" ;; esac
  if { [ "$rc" -eq 0 ] || [ -n "$note" ]; } && [ "$frames" -gt 0 ] \
      && grep -qE 'GstFakeSink:fakesink0\.GstPad:sink: caps = video/x-raw, .*format=\(string\)BGR(,|$)' "$log"; then
    SUMMARY+=("PASS  $name ($frames frames$note)")
  else
    SUMMARY+=("FAIL  $name (rc=$rc, $frames frames; log above)")
    tail -n 25 "$log"
    FAILED=$((FAILED + 1))
  fi
}

# check NAME SOURCE [pipeline options...]: build the preset with endoedge, then launch it.
check() {
  local name=$1 desc
  shift
  if ! desc=$("$PYTHON" -m endoedge.cli jetson pipeline "$@" --sink "$SINK" --show-credentials); then
    SUMMARY+=("FAIL  $name (endoedge refused to build the pipeline)")
    FAILED=$((FAILED + 1))
    return
  fi
  launch "$name" "$desc"
}

# encode FILE ENCODER PARSER MUXER: a 3 s 1280x720 test clip (NVENC elements take NVMM input).
encode() {
  local out=$1 enc=$2 parser=$3 muxer=$4 rc
  local src="videotestsrc num-buffers=90 ! video/x-raw,width=1280,height=720,framerate=30/1"
  case "$enc" in
    nv*) src="$src ! nvvidconv ! video/x-raw(memory:NVMM),format=NV12 ! $enc" ;;
    *) src="$src ! videoconvert ! $enc" ;;
  esac
  set -f
  # shellcheck disable=SC2086
  gst-launch-1.0 -q -e $src ! $parser ! $muxer ! filesink location="$out" >/dev/null 2>&1
  rc=$?
  set +f
  return "$rc"
}

if [ "$CLIPS" = 1 ]; then
  mkdir -p "$WORK/with space"
  if encode "$WORK/with space/clip264.mp4" nvv4l2h264enc h264parse mp4mux \
      || encode "$WORK/with space/clip264.mp4" x264enc h264parse mp4mux; then
    FILES+=("$WORK/with space/clip264.mp4")
  else
    SUMMARY+=("SKIP  H.264 clip (no nvv4l2h264enc or x264enc to make one)")
  fi
  if encode "$WORK/clip265.mkv" nvv4l2h265enc h265parse matroskamux \
      || encode "$WORK/clip265.mkv" x265enc h265parse matroskamux; then
    FILES+=("$WORK/clip265.mkv")
  else
    SUMMARY+=("SKIP  H.265 clip (no nvv4l2h265enc or x265enc to make one)")
  fi
fi

CAM_OPTS=(--num-buffers "$FRAMES")
if [ -n "$SIZE" ]; then CAM_OPTS+=(--width "${SIZE%x*}" --height "${SIZE#*x}"); fi
if [ -n "$FPS" ]; then CAM_OPTS+=(--fps "$FPS"); fi

for f in ${FILES[@]+"${FILES[@]}"}; do
  check "file $(basename "$f")" "$f" --offline
  check "file $(basename "$f") live" "$f" --live
done
if [ -n "$CSI" ]; then check "csi $CSI" "csi://$CSI" "${CAM_OPTS[@]}"; fi
if [ -n "$V4L2" ]; then
  check "v4l2 $V4L2 ${V4L2_FMT:-YUY2}" "$V4L2" "${CAM_OPTS[@]}" ${V4L2_FMT:+--format "$V4L2_FMT"}
fi
if [ -n "$RTSP" ]; then check "rtsp $RTSP_CODEC" "$RTSP" --codec "$RTSP_CODEC"; fi

echo; echo "== summary"
printf '%s\n' "${SUMMARY[@]}"
exit "$FAILED"
