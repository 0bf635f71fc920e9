"""Option groups shared by subcommands, and the detector loading they imply."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from endoedge.errors import InputError

if TYPE_CHECKING:
    from endoedge.detector import Detector

    #: What ``endoedge.cli`` hands each subcommand module's ``add_parser``.
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def int_at_least(minimum: int, *, noun: str = "", unit: str = "", hint: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum`` (messages: ``noun`` after "whole number",
    ``unit`` after the value, ``hint`` after the minimum)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number{noun}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value}{unit} is too small; use at least {minimum}{hint}")
        return value

    return parse


#: argparse type for ``--imgsz``: a square network input size in pixels, at least 32.
image_size = int_at_least(32, noun=" of pixels", unit=" px", hint=" (e.g. 320)")


def prepare_output_dir(path: str | Path) -> Path:
    """Create an output folder (and parents).

    Raises:
        InputError: it exists as a file, or cannot be created (permissions, read-only disk).
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"output '{out}' exists and is not a folder; pick another --output")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create output folder '{out}': {err.strerror}; pick another --output") from err
    return out


#: File types an output (a report, a results file) must never overwrite.
PROTECTED_SUFFIXES = (".onnx", ".engine", ".plan", ".trt", ".pt", ".pth", ".ckpt",
                      ".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp",
                      ".mp4", ".mkv", ".avi", ".mov", ".txt", ".lst", ".list", ".csv")


def check_output_file(path: str | Path, flag: str, *, inputs: Sequence[str | Path] = (),
                      force: bool = False, force_flag: str = "--force",
                      allowed_suffixes: Sequence[str] = ()) -> Path:
    """Check an output file *before* any work: not a folder, not one of ``inputs``, not a model,
    image, video or list file (unless its suffix is in ``allowed_suffixes``), not existing unless
    ``force``; creates its parent folder.

    Raises:
        InputError: one line naming ``flag``, what is wrong and how to fix it.
    """
    out = Path(path)
    if out.is_dir():
        raise InputError(f"{flag} '{out}' is a folder; give a file name")
    resolved = out.resolve()
    for item in inputs:
        if Path(item).resolve() == resolved:
            raise InputError(f"{flag} '{out}' is also an input of this command; pick another {flag}")
    suffix = out.suffix.lower()
    if suffix in PROTECTED_SUFFIXES and suffix not in allowed_suffixes:
        raise InputError(f"{flag} '{out}' looks like a model, image, video or list file ({suffix}); "
                         f"pick another {flag}")
    if out.exists() and not force:
        raise InputError(f"{flag} '{out}' already exists; pass {force_flag} to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the folder of {flag} '{out}': {err.strerror}") from err
    return out


def open_output(path: Path) -> TextIO:
    """Open a text output file for writing (UTF-8, line-buffered).

    Raises:
        InputError: it cannot be written.
    """
    try:
        return open(path, "w", encoding="utf-8", buffering=1)
    except OSError as err:
        raise InputError(f"cannot write '{path}': {err.strerror}") from err


ENDOSCOPY_HELP = (
    "endoscopy frame cleaning before detection: 'off', or comma-separated fov_crop, mask_osd, "
    "median, wavelet, all (= fov_crop,mask_osd), key=value (e.g. redetect_every=1)"
)


def endoscopy_option(text: str | None) -> Any:
    """``--endoscopy`` -> :class:`~endoedge.endoscopy.EndoscopyConfig` (``None`` when not given).

    Raises:
        InputError: an unknown option or invalid value.
    """
    from endoedge.endoscopy import EndoscopyConfig

    if text is None:
        return None
    if text.strip().lower() in ("off", "none"):
        return EndoscopyConfig(enabled=False)
    return EndoscopyConfig.parse(text)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --backend, --device, thresholds, and flags describing a metadata-less ONNX."""
    from endoedge.runtime import backend_names

    g = parser.add_argument_group("model")
    g.add_argument("--model", "-m", required=True, help="model: .onnx (endoedge or Ultralytics) or endoedge checkpoint")
    g.add_argument("--backend", default="auto", help=f"auto or one of: {', '.join(backend_names())}")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda[:N] (onnxruntime also tensorrt[:N])")
    g.add_argument("--conf", type=float, default=None, help="score threshold (default: the model's)")
    g.add_argument("--iou", type=float, default=None, help="NMS IoU threshold (default: the model's)")
    g.add_argument("--max-det", type=int, default=None, help="max detections per image (default: the model's)")
    g.add_argument("--precise-resize", action="store_true", help="resize in float32 (exact torchvision parity, slower)")
    g.add_argument("--endoscopy", metavar="OPTIONS", help=ENDOSCOPY_HELP + " (default: as stored in the model)")
    add_tensorrt_options(parser)
    add_foreign_model_options(parser)


def add_tensorrt_options(parser: argparse.ArgumentParser) -> None:
    """--rebuild-if-stale, --cuda-graph (the tensorrt backend only)."""
    t = parser.add_argument_group("TensorRT engines (--backend tensorrt, or a .engine model)")
    t.add_argument("--rebuild-if-stale", action="store_true",
                   help="rebuild an engine whose manifest does not match this TensorRT/GPU/ONNX (from the ONNX it names)")
    t.add_argument("--cuda-graph", action="store_true", help="replay the engine as a CUDA graph (cuda-python)")


def tensorrt_options(args: argparse.Namespace, backend: str, model: str | Path) -> dict[str, Any]:
    """Backend options from --rebuild-if-stale / --cuda-graph.

    Raises:
        InputError: one is given but the model does not run on the tensorrt backend.
    """
    from endoedge.runtime import auto_backend

    wanted = {k: True for k in ("rebuild_if_stale", "cuda_graph") if getattr(args, k, False)}
    name = auto_backend(model) if backend == "auto" else backend
    if wanted and name not in ("tensorrt", "tensorrt-rtx"):
        flags = ", ".join("--" + k.replace("_", "-") for k in wanted)
        raise InputError(f"{flags} apply to TensorRT engines only; use --backend tensorrt or a .engine model")
    return wanted


def add_foreign_model_options(parser: argparse.ArgumentParser) -> None:
    """--decoder, --classes, --imgsz: describe an ONNX without metadata (see :func:`foreign_spec`)."""
    f = parser.add_argument_group("describe an ONNX without endoedge/Ultralytics metadata")
    from endoedge.spec import YOLO_LAYOUTS

    f.add_argument("--decoder", choices=YOLO_LAYOUTS, help="output layout of a foreign YOLO ONNX (yolo_end2end: NMS-free B x K x 6)")
    f.add_argument("--classes", help="comma-separated class names of a foreign ONNX")
    f.add_argument("--imgsz", type=image_size, help="square input size of a foreign ONNX (default: read from the ONNX)")


def load_detector(args: argparse.Namespace, **options: Any) -> Detector:
    """``endoedge.load`` with the model options of ``args``."""
    from endoedge.detector import load

    options.update(tensorrt_options(args, args.backend, args.model))
    return load(
        args.model,
        backend=args.backend,
        device=args.device,
        score_threshold=args.conf,
        iou_threshold=args.iou,
        max_detections=args.max_det,
        spec=foreign_spec(args),
        precise_resize=args.precise_resize,
        endoscopy=endoscopy_option(getattr(args, "endoscopy", None)),
        **options,
    )


def foreign_spec(args: argparse.Namespace) -> Any:
    """The :class:`~endoedge.spec.ModelSpec` that --decoder/--classes/--imgsz describe, or ``None``.

    Raises:
        InputError: only one of --decoder and --classes is given.
    """
    if not (args.decoder or args.classes):
        return None
    from endoedge.models.checkpoint import parse_class_names
    from endoedge.spec import spec_for_foreign_yolo

    if not (args.decoder and args.classes):
        raise InputError("describing a foreign ONNX needs both --decoder and --classes")
    names = parse_class_names(args.classes) or ()
    size = args.imgsz or _onnx_input_size(args.model)
    return spec_for_foreign_yolo(args.decoder, names, (size, size))


def _onnx_input_size(path: str) -> int:
    from endoedge.errors import ModelFormatError
    from endoedge.spec import load_onnx_proto

    graph = load_onnx_proto(path).graph  # a missing or unreadable file: ModelFormatError
    try:
        dims = graph.input[0].type.tensor_type.shape.dim
        h, w = dims[2].dim_value, dims[3].dim_value
    except IndexError as err:  # no input, or fewer than 4 dimensions
        raise ModelFormatError(f"cannot read the input size of '{path}'; pass --imgsz") from err
    if not (h and w and h == w):
        raise ModelFormatError(f"'{path}' has no fixed square input size; pass --imgsz N")
    return int(h)
