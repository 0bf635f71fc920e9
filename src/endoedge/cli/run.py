"""``endoedge run SOURCE --model M``: a capture pipeline with overlay, recording and latency report."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from endoedge.cli._common import add_model_options, load_detector, open_output, prepare_output_dir
from endoedge.cli._jetson_opts import add_jetson_options, jetson_monitoring
from endoedge.errors import EndoedgeError, InputError
from endoedge.spec.redact import redact

if TYPE_CHECKING:
    from endoedge.cli._common import SubParsers
    from endoedge.detector import Detector
    from endoedge.pipeline.frames import FrameDetector, FrameSink
    from endoedge.pipeline.runner import Pipeline, RunStats

logger = logging.getLogger(__name__)


def add_parser(sub: SubParsers) -> None:
    """Register the ``run`` subcommand."""
    p = sub.add_parser(
        "run",
        help="run a detector on live video, a file, a folder or a GStreamer pipeline",
        description="Capture frames with GStreamer (or an image folder), detect, and write an "
        "annotated video, a detections JSONL (flushed per frame), a latency report and plot. "
        "SOURCE: a video file, /dev/videoN, rtsp://..., rtp://HOST:PORT, an image folder or glob, "
        "'test' / 'test:PATTERN' (videotestsrc, live), or a pipeline string ending in "
        "'appsink name=sink'. Ctrl-C stops cleanly with all outputs finalized.",
    )
    p.add_argument("source", help="what to read (see above)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--live", dest="live", action="store_true", default=None,
                      help="latest-frame mode: drop stale frames, bounded latency (default for devices, RTSP, test)")
    mode.add_argument("--offline", dest="live", action="store_false",
                      help="process every frame as fast as possible (default for files and folders)")
    s = p.add_argument_group("source")
    s.add_argument("--width", type=int, help="requested capture width (V4L2/test)")
    s.add_argument("--height", type=int, help="requested capture height (V4L2/test)")
    s.add_argument("--fps", type=float, help="requested frame rate; folders are played at it (default 30)")
    s.add_argument("--format", dest="pixel_format", help="V4L2 pixel format, e.g. YUY2, MJPG, NV12")
    s.add_argument("--latency", type=int, default=100, help="RTSP/RTP jitter buffer in ms (default 100)")
    s.add_argument("--loop", action="store_true", help="replay a folder source forever (live demos)")
    s.add_argument("--stall-timeout", type=float, default=5.0, help="seconds without a frame = stalled source (default 5)")
    s.add_argument("--reconnect-backoff", default="0.5:8", help="live reconnect back-off MIN:MAX seconds (default 0.5:8)")
    s.add_argument("--max-reconnects", type=int, default=None, help="give up after N reconnects (default: never)")
    s.add_argument("--jetson", choices=("auto", "on", "off"), default="auto",
                   help="use NVIDIA's hardware decode/convert presets (auto: when running on a Jetson)")
    o = p.add_argument_group("outputs")
    o.add_argument("--video", help="annotated video file (.mp4 / .mkv)")
    o.add_argument("--display", action="store_true", help="show the annotated video in a window")
    o.add_argument("--detections", help="detections JSONL (frame, pts, boxes in source pixels, scores, labels)")
    o.add_argument("--report", help="latency report JSON")
    o.add_argument("--plot", help="latency plot PNG (over frame index + CDF per stage)")
    o.add_argument("--warmup", type=int, default=10, help="frames excluded from statistics (default 10)")
    o.add_argument("--max-frames", type=int, help="stop after N frames")
    t = p.add_argument_group("temporal stabilization (what the overlay and the JSONL 'detections' show)")
    t.add_argument("--stabilize", choices=("auto", "on", "off"), default="auto",
                   help="track boxes over frames; show one after --onset hits in a row, hold it through "
                   "--hold misses, smooth it (auto: on for video sources, off for image folders)")
    t.add_argument("--onset", type=int, help="consecutive detections before a box is shown (default: the model's, else 3)")
    t.add_argument("--hold", type=int, help="missed frames a shown box stays (default: the model's, else 5)")
    t.add_argument("--smooth", type=float,
                   help="weight of the new detection in the box average, (0, 1]; 1 = no smoothing (default: the model's, else 0.5)")
    t.add_argument("--track-iou", type=float, help="min IoU to continue a track (default: the model's, else 0.3)")
    o.add_argument("--prescale", choices=("auto", "off"), default="auto",
                   help="auto: without --video/--display, scale frames to the model's input size in "
                   "GStreamer before the BGR conversion (boxes still in source pixels); off: full-size frames")
    add_model_options(p)
    add_jetson_options(p)
    p.set_defaults(func=run)


def _backoff(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise InputError(f"--reconnect-backoff '{text}' must look like MIN:MAX seconds, e.g. 0.5:8") from None
    if not 0 < lo <= hi:
        raise InputError(f"--reconnect-backoff '{text}': need 0 < MIN <= MAX")
    return lo, hi


def _output_file(path: str | None) -> Path | None:
    if not path:
        return None
    p = Path(path)
    prepare_output_dir(p.parent if str(p.parent) else ".")
    if p.is_dir():
        raise InputError(f"output '{p}' is a folder; give a file name")
    return p


def run(args: argparse.Namespace) -> int:
    """Run the pipeline; see the subcommand's description."""
    from endoedge.pipeline.report import build_report, plot_arrays
    from endoedge.pipeline.runner import Pipeline, RunOptions
    from endoedge.pipeline.sources import make_capture_factory, parse_source
    from endoedge.pipeline.stabilize import DetectionStabilizer, resolve_stabilize
    from endoedge.stats import env_info, format_table, plot_latency, write_json

    spec = parse_source(args.source, width=args.width, height=args.height, fps=args.fps,
                        pixel_format=args.pixel_format, latency_ms=args.latency)
    live = spec.is_live if args.live is None else args.live
    if args.warmup < 0 or (args.max_frames is not None and args.max_frames <= 0):
        raise InputError("--warmup must be >= 0 and --max-frames > 0")
    if not args.stall_timeout > 0 or (args.max_reconnects is not None and args.max_reconnects < 0):
        raise InputError(f"--stall-timeout must be > 0 seconds (got {args.stall_timeout:g}) and --max-reconnects "
                         f">= 0 (got {args.max_reconnects}); e.g. --stall-timeout 5")
    video_path, jsonl_path = _output_file(args.video), _output_file(args.detections)
    report_path, plot_path = _output_file(args.report), _output_file(args.plot)
    make_capture = make_capture_factory(spec, live=live, stall_timeout_s=args.stall_timeout,
                                        loop=args.loop, jetson=args.jetson)
    options = RunOptions(live=live, warmup=args.warmup, max_frames=args.max_frames,
                         backoff_s=_backoff(args.reconnect_backoff), max_reconnects=args.max_reconnects)
    fps_out = spec.fps or 30.0
    env = env_info()
    source_info: dict[str, Any] = {"description": spec.describe(), "kind": spec.kind,
                                   "mode": "live" if live else "offline"}
    video: FrameSink | None = None
    display: FrameSink | None = None
    jsonl: TextIO | None = None
    pipeline: Pipeline | None = None
    det: Detector | None = None
    jetson: dict[str, Any] = {}

    def report(stats: RunStats) -> dict[str, Any]:
        # Called once the detector and the pipeline exist (progress saves, the final report).
        source_info["reconnects"] = list(stats.gaps)
        return build_report(stats, dropped=pipeline.dropped if pipeline is not None else 0,
                            backend=det.describe() if det is not None else str(args.backend),
                            model=str(args.model), source=source_info, env=env)

    def save_progress(stats: RunStats) -> None:
        if report_path is not None:
            write_json(report_path, report(stats))

    restore: Callable[[], None] = _nothing_to_undo
    interrupted = False
    failure: EndoedgeError | None = None
    try:
        det = load_detector(args)
        stab = resolve_stabilize(  # getattr: `endoedge demo` builds its own argument namespace
            getattr(args, "stabilize", "auto"), spec.kind, det.spec.stabilize,
            **{k: getattr(args, a, None) for k, a in (("onset", "onset"), ("hold", "hold"),
                                                      ("smooth", "smooth"), ("iou", "track_iou"))})
        source_info["stabilize"] = None if stab is None else stab.to_dict()
        run_det: FrameDetector = det
        if getattr(args, "prescale", "auto") == "auto" and video_path is None and not args.display:
            from endoedge.pipeline.prescale import prescale_pipeline

            pre = prescale_pipeline(spec, det, live=live, stall_timeout_s=args.stall_timeout, jetson=args.jetson)
            if pre is not None:
                make_capture, run_det = pre.make_capture, pre.detector
                source_info["prescale"] = pre.caps
        if video_path is not None:
            from endoedge.pipeline.writer import VideoWriter

            video = VideoWriter(video_path, fps_out)
        if args.display:
            from endoedge.pipeline.writer import DisplaySink

            display = DisplaySink(fps_out)
        jsonl = open_output(jsonl_path) if jsonl_path is not None else None
        pipeline = Pipeline(run_det, make_capture, options, video=video, display=display, jsonl=jsonl,
                            on_progress=save_progress,
                            stabilizer=None if stab is None else DetectionStabilizer(stab, det.class_names))
        shows = "raw boxes" if stab is None else f"stabilized (onset {stab.onset}, hold {stab.hold}, smooth {stab.smooth:g})"
        print(f"endoedge run: {spec.describe()} ({source_info['mode']}) -> {det.describe()}; {shows}",
              file=sys.stderr)
        restore = _stop_on_signals(pipeline)
        try:
            with jetson_monitoring(args, warmup=args.warmup) as jetson:
                pipeline.run()
        except KeyboardInterrupt:  # a second Ctrl-C, or one before the handlers were installed
            interrupted = True
        except EndoedgeError as err:  # keep what was measured, then report the error
            failure = err
        interrupted = interrupted or pipeline.interrupted
    finally:
        restore()
        for sink in (video, display):
            if sink is not None:
                sink.close()
        if jsonl is not None:
            jsonl.close()
        if det is not None:
            det.close()
    stats = pipeline.stats
    if failure is not None:  # the report says why the run ended (credentials masked)
        source_info["error"] = redact(failure)
    final = report(stats)
    if jetson:
        final["jetson"] = jetson
    if report_path is not None:
        write_json(report_path, final)
    if stats.frames + stats.warmup_frames == 0:  # no frame at all: one line, no empty table
        if failure is not None:
            raise failure
        if interrupted:
            print("endoedge run: interrupted before the first frame", file=sys.stderr)
            return 130
        raise InputError(f"{spec.describe()} delivered no frame")
    if plot_path is not None and stats.frames:
        plot_latency(plot_arrays(stats, source_info["mode"]), plot_path,
                     title=f"{Path(args.model).name} on {spec.describe()}")
    elif plot_path is not None:
        plot_path = None  # every frame was a warm-up frame: nothing to plot
    split = final["e2e_split"]
    rows = {**final["stages"], "e2e: queue": split["queue"], "e2e: process": split["process"]}
    print(format_table(rows, title=f"latency per frame, ms ({stats.frames} frames after {stats.warmup_frames} "
                                   f"warm-up; {final['dropped']} dropped; {final['fps'] or 0:.1f} fps)"))
    if source_info["mode"] == "offline":
        print(split["note"])
    written = [f"{k} {v}" for k, v in (("video", video_path), ("detections", jsonl_path),
                                         ("report", report_path), ("plot", plot_path)) if v is not None]
    if written:
        print("wrote " + ", ".join(written))
    if failure is not None:
        raise failure
    if interrupted:
        print("endoedge run: interrupted; outputs finalized", file=sys.stderr)
        return 130
    return 0


def _nothing_to_undo() -> None:
    """The undo of a step that changed nothing."""


class Interruptible(Protocol):
    """What signal handling drives: a :class:`~endoedge.pipeline.runner.Pipeline`, a batch job."""

    @property
    def interrupted(self) -> bool:
        """Whether a stop was requested already (a second signal then interrupts at once)."""
        ...

    def request_stop(self) -> None:
        """Finish the item in hand, then stop (called from a signal handler: sets a flag only)."""
        ...


def _stop_on_signals(pipeline: Interruptible) -> Callable[[], None]:
    """While the pipeline runs, Ctrl-C (SIGINT) and SIGTERM ask it to stop after the current frame
    (outputs finalized, exit 130); a second Ctrl-C interrupts at once. Returns an undo."""
    if threading.current_thread() is not threading.main_thread():
        return _nothing_to_undo
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def handler(signum: int, frame: FrameType | None) -> None:
        if pipeline.interrupted:
            raise KeyboardInterrupt
        pipeline.request_stop()

    for sig in signals:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
