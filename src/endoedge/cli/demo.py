"""``endoedge demo``: build the demo detector, export it to ONNX, run the pipeline over a sample clip.

Until a trained checkpoint ships, the demo detector is the untrained, seeded SSDLite320 of
:mod:`endoedge.models.demo`; its detections are meaningless, the pipeline around it is real.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    """Register the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo",
        help="export the demo detector and run it over the bundled colonoscopy frames",
        description="Build the demo detector (untrained SSDLite320, classes normal/unclear/tumor), "
        "save it as an endoedge checkpoint, export it to ONNX with a parity check, and run it "
        "through the GStreamer pipeline over a clip built from the bundled HoloHub colonoscopy "
        "frames: writes annotated.mp4, detections.jsonl, report.json and latency.png, and prints "
        "the latency table.",
    )
    p.add_argument("-o", "--output", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--backend", default="onnxruntime", help="backend for the run (default onnxruntime)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N]")
    p.add_argument("--frames", type=int, default=90, help="frames in the sample clip (default 90)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Checkpoint -> ONNX (+ parity) -> detect over the sample frames."""
    from endoedge.cli import export
    from endoedge.cli import run as run_cmd
    from endoedge.models.checkpoint import save_checkpoint
    from endoedge.models.demo import make_demo_model

    out = Path(args.output)
    ckpt = out / "demo_ssdlite320.pt"
    onnx_path = out / "demo_ssdlite320.onnx"
    print(f"[1/4] building the demo detector -> {ckpt}")
    loaded = make_demo_model()
    save_checkpoint(ckpt, loaded)
    print(f"      {loaded.notes}")
    print(f"[2/4] exporting to ONNX -> {onnx_path}")
    rc = export.run(argparse.Namespace(
        weights=str(ckpt), output=str(onnx_path), arch=None, classes=None, imgsz=None, opset=17,
        static_batch=False, no_simplify=False, no_check=False, atol=1e-3, rtol=1e-3,
        conf=None, iou=None, max_det=None,
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
