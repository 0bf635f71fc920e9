"""``endoedge export-triton MODEL -o REPO``: a Triton Inference Server model repository."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from endoedge.cli._common import SubParsers


def _batch_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of whole numbers (e.g. 4,8)") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one batch size (e.g. 4,8)")
    return values


def add_parser(sub: SubParsers) -> None:
    """Register the ``export-triton`` subcommand."""
    p = sub.add_parser(
        "export-triton",
        help="write a Triton Inference Server model repository (config.pbtxt + model.onnx/model.plan)",
        description="Write REPO/NAME/config.pbtxt, REPO/NAME/VERSION/model.onnx (platform "
        "onnxruntime_onnx) or model.plan (tensorrt_plan, I/O read from the engine's manifest), and "
        "REPO/NAME/endoedge_spec.json. The model serves raw heads: clients do the pre-processing "
        "and decoding the spec describes (also stored as config parameters endoedge.*).",
    )
    p.add_argument("model", help="an endoedge .onnx, or a TensorRT .engine/.plan from `endoedge build`")
    p.add_argument("-o", "--output", required=True, help="model repository folder (created if needed)")
    p.add_argument("--name", help="Triton model name (default: the model file's stem)")
    p.add_argument("--max-batch", type=int, help="max_batch_size (default: the engine profile max; 8 for ONNX)")
    p.add_argument("--instances", type=int, default=1, help="model instances (default 1)")
    p.add_argument("--kind", default="gpu", choices=("gpu", "cpu"), help="instance kind (default gpu)")
    p.add_argument("--preferred-batch", type=_batch_list, default=[], metavar="N[,N...]",
                   help="dynamic batching preferred batch sizes, e.g. 4,8")
    p.add_argument("--max-queue-delay-us", type=int, metavar="US",
                   help="dynamic batching: longest wait for a fuller batch, microseconds (Triton default 0)")
    p.add_argument("--version", type=int, default=1, dest="model_version", help="model version folder (default 1)")
    p.add_argument("--force", action="store_true", help="replace an existing REPO/NAME")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the repository and print what was written."""
    from endoedge.deploy.triton import export_triton

    result = export_triton(
        args.model,
        args.output,
        name=args.name,
        max_batch=args.max_batch,
        instances=args.instances,
        kind=args.kind,
        preferred_batch=args.preferred_batch,
        max_queue_delay_us=args.max_queue_delay_us,
        version=args.model_version,
        force=args.force,
    )
    batching = f"max_batch_size {result.max_batch_size}" if result.max_batch_size else "fixed batch (max_batch_size 0)"
    print(f"wrote {result.model_dir} ({result.platform}, {batching}): {result.model_path.name}, config.pbtxt"
          + (", endoedge_spec.json" if result.spec_path else " (no endoedge spec in the model)"))
    for note in result.notes:
        print(f"note: {note}")
    print(f"serve: tritonserver --model-repository {result.model_dir.parent}")
    return 0
