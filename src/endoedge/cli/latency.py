"""``endoedge latency --model M``: source-to-output latency read from QR time stamps in the pixels.

See :mod:`endoedge.pipeline.qrlatency` for what is measured and on which clock.
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import TYPE_CHECKING, Any

from endoedge.cli._common import add_model_options, check_output_file, load_detector
from endoedge.errors import InputError

if TYPE_CHECKING:
    from endoedge.cli._common import SubParsers


def add_parser(sub: SubParsers) -> None:
    """Register the ``latency`` subcommand."""
    p = sub.add_parser(
        "latency",
        help="source-to-output latency from QR time stamps (debugqroverlay -> pipeline -> zbar)",
        description="Stamp each frame of a live test source with a QR code of its clock time "
        "(GStreamer debugqroverlay), run it through the real pipeline (pre-process, inference, box "
        "overlay, then H.264 encode+decode, a raw path or a display), read the stamps back from the "
        "output pixels with the zbar element, and report source->output latency ('glass_to_glass': "
        "p50/p90/p99/max, frames decoded) beside the in-process per-stage latency. Needs "
        "gstreamer1.0-plugins-bad with libqrencode and libzbar. Camera exposure and display scan-out "
        "are not in this loop: see the README for the camera-films-the-monitor recipe.",
    )
    p.add_argument("--seconds", type=float, default=10.0, help="how long to measure (default 10)")
    p.add_argument("--report", required=True, help="report JSON (the run report plus 'glass_to_glass')")
    p.add_argument("--plot", help="latency plot PNG (stages and glass_to_glass)")
    p.add_argument("--output", dest="output_path", choices=("h264", "raw", "display"), default="h264",
                   help="what the annotated frames go through before the QR read-back (default h264: "
                   "encode and decode, as --video or a stream would)")
    p.add_argument("--width", type=int, default=1280, help="source width (default 1280)")
    p.add_argument("--height", type=int, default=720, help="source height (default 720)")
    p.add_argument("--fps", type=float, default=30.0, help="source frame rate (default 30)")
    p.add_argument("--pattern", default="ball", help="videotestsrc pattern under the stamp (default ball)")
    p.add_argument("--qr-pixel-size", type=int, default=4, help="QR module size in pixels (default 4)")
    p.add_argument("--warmup", type=int, default=10, help="frames excluded from statistics (default 10)")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure; see the subcommand's description."""
    from endoedge.cli.run import _stop_on_signals
    from endoedge.pipeline.qrlatency import ClockedCapture, QrReadback, stamped_source_description
    from endoedge.pipeline.report import build_report, plot_arrays
    from endoedge.pipeline.runner import Pipeline, RunOptions
    from endoedge.stats import format_table, plot_latency, write_json

    if not 0 < args.seconds <= 3600 or args.warmup < 0 or args.fps <= 0:
        raise InputError("--seconds must be in (0, 3600], --fps > 0 and --warmup >= 0")
    check_output_file(args.report, "--report", force=True)
    if args.plot:
        check_output_file(args.plot, "--plot", force=True, allowed_suffixes=(".png",))
    description = stamped_source_description(width=args.width, height=args.height, fps=args.fps,
                                             pattern=args.pattern, qr_pixel_size=args.qr_pixel_size)
    capture = ClockedCapture(description, location="QR-stamped videotestsrc", live=True)
    det = load_detector(args)
    readback: QrReadback | None = None
    try:
        readback = QrReadback(capture, args.fps, path=args.output_path, warmup=args.warmup,
                              qr_pixel_size=args.qr_pixel_size)
        pipeline = Pipeline(det, lambda: capture, RunOptions(live=True, warmup=args.warmup, reconnect=False),
                            video=readback)
        timer = threading.Timer(args.seconds, pipeline.request_stop)
        restore = _stop_on_signals(pipeline)
        print(f"endoedge latency: {args.seconds:g} s of QR-stamped {args.width}x{args.height}@{args.fps:g} "
              f"-> {det.describe()} -> {args.output_path} -> zbar", file=sys.stderr)
        timer.start()
        try:
            stats = pipeline.run()
        finally:
            timer.cancel()
            restore()
    finally:
        if readback is not None:
            readback.close()
        det.close()
    source: dict[str, Any] = {"description": description, "kind": "test", "mode": "live",
                              "reconnects": list(stats.gaps)}
    report = build_report(stats, dropped=pipeline.dropped, backend=det.describe(), model=str(args.model),
                          source=source)
    g2g = readback.glass_to_glass()
    report["glass_to_glass"] = g2g
    write_json(args.report, report)
    if args.plot and stats.frames:
        arrays = plot_arrays(stats, "live")
        if g2g["frames_measured"]:
            import numpy as np

            arrays["glass_to_glass"] = np.asarray(readback.stats.latency_ms, dtype=np.float64)
        plot_latency(arrays, args.plot, title=f"{args.model} - QR source->output ({args.output_path})")
    split = report["e2e_split"]
    rows = {**report["stages"], "e2e: queue": split["queue"], "e2e: process": split["process"]}
    rows["glass_to_glass"] = {k: g2g.get(k) for k in ("mean", "p50", "p90", "p99", "max")}
    print(format_table(rows, title=f"latency per frame, ms ({stats.frames} frames after {stats.warmup_frames} "
                                   f"warm-up; {report['dropped']} dropped; QR decoded {g2g['frames_decoded']}"
                                   f"/{g2g['frames_sent']} output frames)"))
    print(f"wrote report {args.report}" + (f", plot {args.plot}" if args.plot else ""))
    return 0
