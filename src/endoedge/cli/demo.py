"""``endoedge demo``: build the demo detector, export it to ONNX, run it over bundled frames.

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
        "with ONNX Runtime over the bundled HoloHub colonoscopy frames, printing detections and "
        "per-image latency.",
    )
    p.add_argument("-o", "--output", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--backend", default="onnxruntime", help="backend for the run (default onnxruntime)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N]")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Checkpoint -> ONNX (+ parity) -> detect over the sample frames."""
    from endoedge.assets import sample_frame_paths
    from endoedge.cli import detect, export
    from endoedge.models.checkpoint import save_checkpoint
    from endoedge.models.demo import make_demo_model

    out = Path(args.output)
    ckpt = out / "demo_ssdlite320.pt"
    onnx_path = out / "demo_ssdlite320.onnx"
    print(f"[1/3] building the demo detector -> {ckpt}")
    loaded = make_demo_model()
    save_checkpoint(ckpt, loaded)
    print(f"      {loaded.notes}")
    print(f"[2/3] exporting to ONNX -> {onnx_path}")
    rc = export.run(argparse.Namespace(
        weights=str(ckpt), output=str(onnx_path), arch=None, classes=None, imgsz=None, opset=17,
        static_batch=False, no_simplify=False, no_check=False, atol=1e-3, rtol=1e-3,
        conf=None, iou=None, max_det=None,
    ))
    if rc:
        return rc
    frames = [str(p) for p in sample_frame_paths()]
    print(f"[3/3] detecting in {len(frames)} bundled 1920x1080 HoloHub frames with {args.backend}")
    return detect.run(argparse.Namespace(
        sources=frames, output=str(out), no_images=False, warmup=2, show=3, model=str(onnx_path),
        backend=args.backend, device=args.device, conf=None, iou=None, max_det=None,
        precise_resize=False, decoder=None, classes=None, imgsz=None,
    ))
