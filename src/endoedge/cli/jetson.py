"""``endoedge jetson info|pipeline``: print the device's JetPack info or a preset string.

Used by ``jetson/check_pipelines.sh`` on a device; works anywhere (the strings need no GStreamer).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from endoedge.errors import InputError
from endoedge.jetson.presets import pipeline_for_source
from endoedge.spec.redact import redact

if TYPE_CHECKING:
    from endoedge.cli._common import SubParsers


DEFAULT_SINK = "appsink name=sink drop=true max-buffers=1 sync=false emit-signals=false"


def add_parser(sub: SubParsers) -> None:
    """Register ``endoedge jetson info`` and ``endoedge jetson pipeline SOURCE``."""
    parser = sub.add_parser("jetson", help="Jetson facts (JetPack, L4T, board) and GStreamer preset strings",
                            description=__doc__)
    jsub = parser.add_subparsers(dest="jetson_command", metavar="info|pipeline")
    jsub.required = True
    jsub.add_parser("info", help="print is-Jetson, board, L4T/JetPack, installed TensorRT and CUDA, power mode "
                    "and clocks as JSON (power mode and clocks need root)")
    p = jsub.add_parser("pipeline", help="print the Jetson preset pipeline for a source")
    p.add_argument("source", help="csi://N, /dev/videoN, rtsp://..., or a video file")
    p.add_argument("--sink", default=DEFAULT_SINK, help="sink element description at the end")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--fps", type=float)
    p.add_argument("--format", dest="fmt", help="V4L2 pixel format: YUY2, UYVY, NV12, MJPG, ...")
    p.add_argument("--codec", help="RTSP: h264 (default) or h265; file: auto (default), h264, ...")
    p.add_argument("--latency-ms", type=int, default=100, help="RTSP jitter-buffer latency")
    p.add_argument("--num-buffers", type=int, help="stop a camera after N frames")
    p.add_argument("--show-credentials", action="store_true",
                   help="print an RTSP URL's user:password@ and token=... as given (default: masked, ***), "
                   "for piping the string into gst-launch-1.0")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--live", dest="live", action="store_true", default=None)
    mode.add_argument("--offline", dest="live", action="store_false")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the info JSON or the preset string; InputError when there is no preset."""
    if args.jetson_command == "info":
        from endoedge.jetson.power import device_state

        print(json.dumps(device_state(), indent=2))
        return 0
    desc = pipeline_for_source(
        args.source,
        appsink=args.sink,
        live=args.live,
        width=args.width,
        height=args.height,
        fps=args.fps,
        fmt=args.fmt,
        latency_ms=args.latency_ms,
        num_buffers=args.num_buffers,
        codec=args.codec,
    )
    if desc is None:
        raise InputError(f"no Jetson preset for source {redact(repr(args.source))}; give csi://N, /dev/videoN, rtsp://... or a video file")
    print(desc if args.show_credentials else redact(desc))
    return 0
