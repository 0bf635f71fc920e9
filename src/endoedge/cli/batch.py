"""``endoedge batch SRC --model M --out results.jsonl``: read a capsule-endoscopy study."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from endoedge.cli._common import endoscopy_option

if TYPE_CHECKING:
    from endoedge.cli._common import SubParsers

logger = logging.getLogger(__name__)


def add_parser(sub: SubParsers) -> None:
    """Register the ``batch`` subcommand."""
    p = sub.add_parser(
        "batch",
        help="flag frames of a capsule study: folder, list file or video -> results JSONL",
        description="Run detectors and/or classifiers over every image of a study with decoding "
        "overlapping batched inference. SRC: an image folder (recursive; jpg/jpeg/png/bmp/tif/tiff), a "
        "list file (.txt/.lst/.list/.csv: one path per line, relative to the list file) or a video "
        "(one record per frame). One JSONL record per input, written as results come; bad files get "
        "an error record and never stop the study. --resume finishes an interrupted run.",
    )
    p.add_argument("source", metavar="SRC", help="image folder, list file, or video")
    p.add_argument("--model", "-m", action="append", required=True, metavar="[NAME=]PATH",
                   help="detector or classifier ONNX/checkpoint; repeat for several models in one pass "
                   "(records then hold one key per NAME, default the file stem)")
    p.add_argument("--out", "-o", required=True, help="results JSONL (refused if it exists, unless --resume/--overwrite)")
    p.add_argument("--report", help="summary JSON: counts, flagged list, stage times, images/s")
    p.add_argument("--html", metavar="REPORT.html",
                   help="study report page (summary, score timeline, flagged frames as thumbnails with boxes, "
                   "review list CSV); opens offline; thumbnails go to REPORT_files/ as the batch runs")
    p.add_argument("--resume", action="store_true", help="finish an interrupted --out (skips inputs already in it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--batch-size", type=int, default=8,
                   help="images per inference batch (default 8: larger batches gain nothing on a CPU; raise it on a GPU)")
    p.add_argument("--workers", type=int, default=2, help="decode workers (default 2; Ray: actors)")
    p.add_argument("--decode", choices=("threads", "processes"), default="threads",
                   help="decode workers are threads (default, measured faster here) or processes")
    p.add_argument("--streams", type=int, default=2,
                   help="inference streams: model copies running batches concurrently, each ONNX Runtime "
                   "session with cores/streams threads (default 2, measured fastest on 2 cores)")
    p.add_argument("--flag-threshold", type=float, default=0.5,
                   help="flag a frame when its max detection score >= this (default 0.5)")
    p.add_argument("--flag-label", action="append", default=[], metavar="LABEL",
                   help="flag a frame when a classifier's top label is LABEL (repeatable)")
    p.add_argument("--fsync-every", type=int, default=100, metavar="K", help="fsync the results every K records (default 100)")
    p.add_argument("--full-decode", action="store_true",
                   help="decode JPEGs at full size (default: libjpeg decodes large ones at 1/2, 1/4 or 1/8, "
                   "never below the network input: faster; an area-filtered downscale, so scores and boxes differ slightly)")
    p.add_argument("--max-pixels", type=int, default=100_000_000,
                   help="decode limit per image (default 100e6): larger JPEGs are decoded reduced, others refused")
    p.add_argument("--fail-on-error", action="store_true", help="exit 2 when any input got an error record")
    p.add_argument("--quiet", dest="no_bar", action="store_true", help="no progress bar: progress as log lines")
    p.add_argument("--engine", choices=("local", "ray"), default="local", help="local (default) or ray (Ray Data)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    g = p.add_argument_group("model")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda[:N]")
    g.add_argument("--conf", type=float, default=None, help="detection score threshold (default: the model's)")
    g.add_argument("--iou", type=float, default=None, help="NMS IoU threshold (default: the model's)")
    g.add_argument("--max-det", type=int, default=None, help="max detections per image (default: the model's)")
    g.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (default: one per core)")
    g.add_argument("--ort-spin", action="store_true",
                   help="let ONNX Runtime threads spin-wait between batches (off: it starves the decoders)")
    g.add_argument("--endoscopy", metavar="OPTIONS", help="endoscopy frame cleaning (as for `endoedge run`)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the job; exit 0, 2 with --fail-on-error when an input failed, 1 when every input failed, 130 when
    interrupted."""
    from endoedge.batch import BatchConfig, run_batch
    from endoedge.cli._common import check_output_file
    from endoedge.errors import InputError

    if args.address and args.engine != "ray":
        raise InputError("--address needs --engine ray")

    if args.threads < 0:
        raise InputError(f"--threads must be >= 0 (0 = one per core), got {args.threads}")
    inputs = [args.source, *args.model, *(m.partition("=")[2] for m in args.model if "=" in m)]
    check_output_file(args.out, "--out", inputs=inputs, force=True)
    if args.report:
        check_output_file(args.report, "--report", inputs=[*inputs, args.out], force=True)
    if args.html:
        check_output_file(args.html, "--html", inputs=[*inputs, args.out, *([args.report] if args.report else [])],
                          force=True, allowed_suffixes=(".html", ".htm"))
    stop = threading.Event()
    cfg = BatchConfig(
        source=args.source, models=args.model, out=args.out, report=args.report, resume=args.resume,
        overwrite=args.overwrite, batch_size=args.batch_size, workers=args.workers, decode=args.decode,
        streams=args.streams,
        max_pixels=args.max_pixels, flag_threshold=args.flag_threshold, flag_labels=args.flag_label,
        fsync_every=args.fsync_every, engine=args.engine, address=args.address,
        progress=not args.no_bar,
        device=args.device, score_threshold=args.conf, iou_threshold=args.iou, max_detections=args.max_det,
        intra_op_threads=args.threads, spin=args.ort_spin, full_decode=args.full_decode, html=args.html, endoscopy=endoscopy_option(args.endoscopy), stop=stop,
    )
    restore = _stop_on_signals(stop)
    try:
        summary = run_batch(cfg)
    finally:
        restore()
    c, r = summary["counts"], summary["run"]
    print(f"endoedge batch: {c['images']} images ({r['processed']} this run, {r['resumed']} resumed): "
          f"{c['ok']} ok, {c['errors']} errors, {c['flagged']} flagged; "
          + (f"{r['images_per_s']:.1f} img/s, {r['minutes_per_50k']:.1f} min per 50,000 images"
             if r["images_per_s"] and r["minutes_per_50k"] else "nothing left to process")
          + f" -> {args.out}" + (f", report {summary['html']}" if summary.get("html") else ""),
          file=sys.stderr)
    if stop.is_set():
        print("endoedge batch: interrupted; results so far are kept, finish with --resume", file=sys.stderr)
        return 130
    if args.fail_on_error and c["errors"]:
        return 2
    if c["images"] and not c["ok"] and c["errors"] == c["images"]:
        first = summary["errors"][0] if summary.get("errors") else {"path": "?", "error": "?"}
        raise InputError(f"none of the {c['images']} images could be read (first: '{first['path']}': "
                         f"{first['error']}); the error records are in {args.out}: check the study's paths or "
                         "list file")
    return 0


class _Stopper:
    """Adapts the job's stop event to what :func:`endoedge.cli.run._stop_on_signals` drives."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    @property
    def interrupted(self) -> bool:
        return self.stop.is_set()

    def request_stop(self) -> None:
        self.stop.set()


def _stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """Ctrl-C / SIGTERM finish the batch in progress and stop (a second Ctrl-C interrupts at once)."""
    from endoedge.cli.run import _stop_on_signals as install

    return install(_Stopper(stop))
