"""``endoedge demo``: the shipped polyp detector -> ONNX -> the GStreamer pipeline over a sample clip.

The detector is :data:`endoedge.models.pretrained.POLYP_DETECTOR` (trained on Kvasir-SEG and
PolypGen polyp-free frames: non-commercial research and education only), exported with endoscopy frame cleaning (field-of-view crop,
OSD masking) stored in the ONNX. ``--untrained`` uses the seeded, untrained SSDLite320 of
:mod:`endoedge.models.demo` instead (meaningless detections; the pipeline around it is the same).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from endoedge.errors import InputError

if TYPE_CHECKING:
    from endoedge.cli._common import SubParsers


def add_parser(sub: SubParsers) -> None:
    """Register the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo",
        help="export the shipped polyp detector and run it over the bundled colonoscopy frames",
        description="Export the shipped polyp detector (SSDLite320-EfficientNet-Lite0 trained on "
        "Kvasir-SEG and PolypGen polyp-free frames; non-commercial research and education only) to ONNX with endoscopy frame cleaning and a "
        "parity check, and run it "
        "through the GStreamer pipeline over a clip built from the bundled HoloHub colonoscopy "
        "frames: writes annotated.mp4, detections.jsonl, report.json and latency.png, and prints "
        "the latency table.",
    )
    p.add_argument("-o", "--output", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--backend", default="onnxruntime", help="backend for the run (default onnxruntime)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N]")
    p.add_argument("--frames", type=int, default=90, help="frames in the sample clip (default 90)")
    p.add_argument("--untrained", action="store_true",
                   help="use the untrained placeholder SSDLite320 (classes normal/unclear/tumor) instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Checkpoint -> ONNX (+ parity) -> detect over the sample frames."""
    from endoedge.cli import export
    from endoedge.cli import run as run_cmd
    from endoedge.models.checkpoint import load_checkpoint, save_checkpoint
    from endoedge.models.demo import make_demo_model
    from endoedge.models.pretrained import (
        POLYP_DETECTOR,
        POLYP_DETECTOR_ENDOSCOPY,
        shipped_checkpoint,
    )

    if args.frames < 1:
        raise InputError(f"--frames must be at least 1, got {args.frames}")
    out = Path(args.output)
    if args.untrained:
        ckpt, endoscopy = out / "demo_ssdlite320.pt", "off"
        print(f"[1/4] building the untrained placeholder detector -> {ckpt}")
        loaded = make_demo_model()
        save_checkpoint(ckpt, loaded)
    else:
        ckpt, endoscopy = shipped_checkpoint(), POLYP_DETECTOR_ENDOSCOPY
        print(f"[1/4] the shipped polyp detector: {ckpt}")
        loaded = load_checkpoint(ckpt)
    onnx_path = out / f"{'demo_ssdlite320' if args.untrained else POLYP_DETECTOR}.onnx"
    print(f"      {loaded.notes}")
    print(f"[2/4] exporting to ONNX -> {onnx_path}")
    rc = export.run(argparse.Namespace(
        weights=str(ckpt), output=str(onnx_path), arch=None, classes=None, imgsz=None, opset=17,
        static_batch=False, no_simplify=False, no_check=False, atol=1e-3, rtol=1e-3,
        conf=None, iou=None, max_det=None, endoscopy=endoscopy,
    ))
    if rc:
        return rc
    from endoedge.pipeline.clip import make_sample_clip

    clip = out / "sample_colonoscopy.mp4"
    print(f"[3/4] building the sample clip from the bundled HoloHub frames -> {clip}")
    make_sample_clip(clip, frames=args.frames)
    print(f"[4/4] running the GStreamer pipeline over it with {args.backend}")
    return run_cmd.run(argparse.Namespace(
        source=str(clip), live=None, width=None, height=None, fps=None, pixel_format=None, latency=100,
        loop=False, stall_timeout=10.0, reconnect_backoff="0.5:8", max_reconnects=None, jetson="auto",
        video=str(out / "annotated.mp4"), display=False, detections=str(out / "detections.jsonl"),
        report=str(out / "report.json"), plot=str(out / "latency.png"), warmup=5, max_frames=None,
        model=str(onnx_path), backend=args.backend, device=args.device, conf=None, iou=None,
        max_det=None, precise_resize=False, decoder=None, classes=None, imgsz=None,
    ))
