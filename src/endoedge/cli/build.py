"""``endoedge build MODEL.onnx --precision fp16 -o MODEL.engine``: a TensorRT engine + its manifest.

Options are checked in this order, each failure one line: argument syntax (argparse), the ONNX
and the options every TensorRT line would refuse (no TensorRT needed), then TensorRT itself is
imported (a machine without it gets "TensorRT could not be imported ..."), then the checks of the
installed line (e.g. ``--calib`` on TensorRT 11), then CUDA and the build.

``--runtime rtx`` (or ``auto`` where TensorRT for RTX is the only TensorRT installed, or where
``--compute-capability`` is given) builds with TensorRT for RTX, ahead of time, without a GPU.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from endoedge.cli._common import check_output_file, int_at_least
from endoedge.errors import InputError

if TYPE_CHECKING:
    from endoedge.calibration import CalibrationData
    from endoedge.cli._common import SubParsers
    from endoedge.data.onnx_facts import OnnxFacts

logger = logging.getLogger(__name__)


_positive = int_at_least(1)


def _core(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"'{text}' is not a DLA core number (0 or 1)")
    return int(text)


def _batch(text: str) -> tuple[int, int, int]:
    from endoedge.tensorrt.plan import parse_batch_range

    try:
        return parse_batch_range(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--batch ")) from None


def _ccs(text: str) -> tuple[str, ...]:
    from endoedge.tensorrt.rtx import parse_compute_capabilities

    try:
        return parse_compute_capabilities(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--compute-capability ")) from None


def add_parser(sub: SubParsers) -> None:
    """Register the ``build`` subcommand."""
    from endoedge.tensorrt.compat import RUNTIMES
    from endoedge.tensorrt.plan import HARDWARE_COMPAT, PRECISIONS
    from endoedge.tensorrt.rtx import supported_text

    p = sub.add_parser(
        "build",
        help="build a TensorRT engine (+ manifest) from an ONNX: fp32/fp16/int8, batch profile, DLA",
        description="Build a TensorRT engine from an ONNX on this machine's GPU and write "
        "ENGINE.json beside it (ONNX sha256, TensorRT version, GPU, JetPack, precision, profiles, "
        "pre-processing spec); loading refuses an engine whose manifest does not match the machine. "
        "TensorRT 8.6 / 10.x: precision via builder flags; INT8 from a Q/DQ ONNX or --calib. "
        "TensorRT 11: strongly typed; FP16 needs an FP16 ONNX and INT8 a Q/DQ ONNX "
        "(endoedge quantize makes both). TensorRT for RTX (--runtime rtx) builds ahead of time "
        "for --compute-capability targets, without a GPU, and always takes the precision from the ONNX.",
    )
    p.add_argument("onnx", help="the .onnx to build (endoedge export / endoedge quantize output)")
    p.add_argument("-o", "--output", help="engine path, e.g. model.engine (optional with --cache-dir)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="default: what the ONNX is (Q/DQ -> int8, FP16 ONNX -> fp16, else fp32)")
    c = p.add_argument_group("INT8 implicit calibration (TensorRT <= 10; prefer a Q/DQ ONNX)")
    c.add_argument("--calib", metavar="SRC", help="calibration images: folder, glob or dataset (endoedge.calibration)")
    c.add_argument("--calib-split", metavar="FILE", default=None,
                   help="keep only the image stems in FILE (e.g. the train split; never the eval split)")
    c.add_argument("--calib-images", type=_positive, default=None, help="images to calibrate on (default 500)")
    c.add_argument("--calib-batch", type=_positive, default=None, help="images per calibration batch (default 1)")
    c.add_argument("--calib-cache", metavar="FILE", help="calibration cache (reused while data, batch and TensorRT match)")
    b = p.add_argument_group("build")
    b.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="tensorrt (full TensorRT, on the GPU it runs on) or rtx (TensorRT for RTX, ahead of time); "
                   "auto: rtx with --compute-capability or when it is the only TensorRT installed")
    b.add_argument("--compute-capability", type=_ccs, default=(), metavar="CC[,CC...]",
                   help=f"TensorRT for RTX targets, e.g. 8.6,8.9 (supported: {supported_text()}; "
                   "default: its Ampere+ portable engine)")
    b.add_argument("--batch", type=_batch, default=None, metavar="MIN:OPT:MAX",
                   help="optimization profile of the dynamic batch axis (default 1:1:8; a fixed-batch ONNX keeps its batch)")
    b.add_argument("--workspace", type=_positive, default=None, metavar="MiB", help="builder workspace limit in MiB")
    b.add_argument("--timing-cache", metavar="FILE", help="TensorRT timing cache (read if present, updated after the build)")
    b.add_argument("--dla", type=_core, default=None, metavar="CORE", help="build for DLA core N with GPU fallback (Jetson Xavier/Orin)")
    b.add_argument("--version-compatible", action="store_true", help="engine runs on later TensorRT runtimes (>= 8.6)")
    b.add_argument("--hardware-compat", choices=HARDWARE_COMPAT, default="none",
                   help="ampere+: any Ampere+ discrete GPU; same-cc: same compute capability (TensorRT >= 10.9)")
    b.add_argument("--cache-dir", metavar="DIR", help="engine cache: reuse an engine built from the same ONNX, TensorRT, GPU and options")
    b.add_argument("--force", action="store_true", help="rebuild even if an up-to-date engine exists; replace -o")
    b.add_argument("--device", default="auto", help="auto, cuda or cuda:N")
    b.add_argument("--cuda-bindings", choices=("auto", "cuda-python", "pycuda"), default="auto",
                   help="CUDA Python bindings for buffers (default: cuda-python, else pycuda)")
    p.set_defaults(func=run)


def _calibration_loader(args: argparse.Namespace, facts: OnnxFacts) -> Callable[[], CalibrationData] | None:
    """A callable loading the calibration data through ``endoedge.calibration`` (only when used)."""
    if not args.calib:
        return None

    def load() -> CalibrationData:
        from endoedge.calibration import load_calibration_data
        from endoedge.spec import ModelSpec

        spec = ModelSpec.from_metadata(facts.metadata, where=f"'{facts.path}'")
        return load_calibration_data(args.calib, spec, num_images=args.calib_images or 500,
                                     batch_size=args.calib_batch or 1, input_name=facts.input_name,
                                     split=args.calib_split)

    return load


def _check_args(args: argparse.Namespace) -> None:
    if not args.calib:
        given = [f for f, v in (("--calib-images", args.calib_images), ("--calib-batch", args.calib_batch),
                                ("--calib-split", args.calib_split),
                                ("--calib-cache", args.calib_cache)) if v is not None]
        if given:
            raise InputError(f"{', '.join(given)} only apply with --calib SRC")
    if not args.output and not args.cache_dir:
        raise InputError("give the engine path with -o MODEL.engine (or an engine cache with --cache-dir DIR)")
    for flag, value in (("-o", args.output), ("--timing-cache", args.timing_cache), ("--calib-cache", args.calib_cache)):
        if value and Path(value).is_dir():
            raise InputError(f"{flag} '{value}' is a folder; give a file name")
    if args.output and Path(args.output).suffix.lower() == ".onnx":
        raise InputError(f"-o '{args.output}' would overwrite an ONNX; name the engine MODEL.engine")
    if args.cache_dir and Path(args.cache_dir).is_file():
        raise InputError(f"--cache-dir '{args.cache_dir}' is a file; give a folder")
    inputs = [p for p in (args.onnx, args.calib, args.calib_split) if p]
    if args.output:
        check_output_file(args.output, "-o", inputs=inputs, force=True, allowed_suffixes=(".engine", ".plan", ".trt"))
    for flag, value in (("--timing-cache", args.timing_cache), ("--calib-cache", args.calib_cache)):
        if value:  # read if present, then rewritten after the build: never a model or an input
            check_output_file(value, flag, inputs=[*inputs, *([args.output] if args.output else [])], force=True)
    for flag, value in (("--calib", args.calib), ("--calib-split", args.calib_split)):
        if value and not any(ch in str(value) for ch in "*?[") and not Path(value).exists():
            raise InputError(f"{flag} '{value}' does not exist; give an existing folder, file or glob")


def run(args: argparse.Namespace) -> int:
    """Build; see the subcommand's description."""
    from endoedge.data.onnx_facts import onnx_facts
    from endoedge.tensorrt.build import build_engine, precheck
    from endoedge.tensorrt.compat import resolve_runtime
    from endoedge.tensorrt.gpu_info import device_index
    from endoedge.tensorrt.plan import BuildRequest

    _check_args(args)
    runtime = resolve_runtime(args.runtime, compute_capabilities=bool(args.compute_capability))
    index = device_index(args.device)
    facts = onnx_facts(args.onnx)
    req = BuildRequest(
        precision=args.precision,
        calib=bool(args.calib),
        calib_batch=args.calib_batch or 1,
        batch=args.batch,
        workspace_mib=args.workspace,
        dla_core=args.dla,
        version_compatible=args.version_compatible,
        hardware_compat=args.hardware_compat,
        runtime=runtime,
        compute_capabilities=tuple(args.compute_capability),
        timing_cache=bool(args.timing_cache),
    )
    precheck(req, facts)  # what every TensorRT line refuses, before importing TensorRT
    result = build_engine(
        facts.path, args.output, req, cache_dir=args.cache_dir, force=args.force,
        timing_cache=args.timing_cache, calibration=_calibration_loader(args, facts),
        calib_cache=args.calib_cache, device=index, cuda_bindings=args.cuda_bindings,
    )
    m = result.manifest
    state = "up to date (not rebuilt)" if result.reused else "built"
    if m.flavour == "rtx":
        from endoedge.tensorrt.rtx import targets_text

        where = f"TensorRT for RTX {m.trt_version}, targets {targets_text(m.compute_capabilities)}"
    else:
        where = f"TensorRT {m.trt_version}, {m.gpu.name} cc {m.gpu.compute_capability}"
    print(f"{state}: {result.engine_path} ({m.precision}, {where}); manifest {result.engine_path}.json")
    print(f"plan: {result.plan.describe()}")
    return 0
