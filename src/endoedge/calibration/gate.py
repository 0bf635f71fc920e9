"""The quantize workflow with its accuracy gate (what ``endoedge quantize`` runs).

:func:`quantize_gated`: INT8 (explicit Q/DQ, calibrated) or FP16 copy of an FP32 ONNX, the
TensorRT Q/DQ rule check, then, with an evaluation set, the comparison with the FP32 model
(:func:`~endoedge.calibration.compare.compare_models`). An INT8 model that fails the gate is
repaired by keeping its most sensitive layers in float
(:func:`~endoedge.calibration.sensitivity.greedy_fallback`). The result is a
:class:`~endoedge.calibration.report.QuantReport`; the output file is kept either way.

Example::

    from endoedge.calibration.gate import QuantOptions, quantize_gated

    report = quantize_gated("polyp.onnx", "polyp.int8.onnx",
                            QuantOptions(calib="frames/", eval_data="kvasir-seg",
                                         split="data/splits/kvasir_seg_val.txt"), echo=print)
    print(report.passed, report.float_nodes, report.gate.drop_points if report.gate else None)
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from endoedge.calibration.compare import DEFAULT_MAX_DROP
from endoedge.calibration.report import CompareResult, GateResult, QuantReport
from endoedge.errors import InputError

if TYPE_CHECKING:
    from endoedge.calibration.data import CalibrationData
    from endoedge.spec import ModelSpec

logger = logging.getLogger(__name__)

PRECISIONS = ("int8", "fp16")


@dataclass(frozen=True)
class QuantOptions:
    """What :func:`quantize_gated` does (the ``endoedge quantize`` options).

    Attributes:
        precision: ``"int8"`` (Q/DQ, needs ``calib``) or ``"fp16"``.
        calib: calibration images: folder (recursive), glob, video or labelled set (INT8).
        calib_split: keep only the image stems in this file (INT8).
        method: calibration method, one of :data:`~endoedge.calibration.quantize.METHODS`.
        num_images: calibration images, spread over the source.
        batch: calibration batch size (``None`` = 8, or the model's fixed batch).
        seed: selection seed.
        eval_data: labelled set for the gate (``None`` = accuracy not checked).
        split: file of image stems of ``eval_data`` to evaluate.
        fmt: ``eval_data`` layout: ``auto``, ``kvasir``, ``coco`` or ``yolo``.
        max_drop: largest allowed mAP@0.5 drop, in points (1 point = 0.01).
        max_fallback: INT8: most layers to keep in float to pass the gate (0 = none).
        sensitivity_images: calibration images the per-layer ranking measures on.
    """

    precision: str = "int8"
    calib: str | Path | None = None
    calib_split: str | Path | None = None
    method: str = "minmax"
    num_images: int = 500
    batch: int | None = None
    seed: int = 0
    eval_data: str | Path | None = None
    split: str | Path | None = None
    fmt: str = "auto"
    max_drop: float = DEFAULT_MAX_DROP
    max_fallback: int = 10
    sensitivity_images: int = 32


def quantize_gated(
    model: str | Path,
    output: str | Path,
    options: QuantOptions | None = None,
    *,
    spec: ModelSpec | None = None,
    echo: Callable[[str], None] | None = None,
) -> QuantReport:
    """Quantize (INT8 Q/DQ) or convert (FP16) ``model`` to ``output``, check it, gate it.

    Args:
        model: FP32 ONNX exported by endoedge (or Ultralytics).
        output: the ``.onnx`` to write (replaced if it exists; kept when the gate fails).
        options: see :class:`QuantOptions` (default: INT8 without calibration data: an error).
        spec: the model's spec (default: read from its metadata).
        echo: receives each progress line (``endoedge quantize`` prints them); default: logged.

    Returns:
        the :class:`~endoedge.calibration.report.QuantReport`; its ``passed`` is ``False`` when
        the gate failed, ``None`` without ``eval_data``.

    Raises:
        InputError: no calibration data for INT8, calibration images that are evaluation
            images, a model that is not a single-input detector or whose fixed batch differs.
        ExportError: quantization fails or the file breaks TensorRT's Q/DQ rules.
    """
    opts = options or QuantOptions()
    if opts.precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got '{opts.precision}'")
    model, out = Path(model), Path(output)
    if spec is None:
        from endoedge.spec import ModelSpec, read_onnx_metadata

        spec = ModelSpec.from_metadata(read_onnx_metadata(model), where=str(model))
    run = _Workflow(model, out, opts, echo or _log)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="endoedge-quant-") as tmp:
        if opts.precision == "fp16":
            from endoedge.calibration.quantize import convert_fp16

            convert_fp16(model, out)
            run.say(f"wrote {out} (FP16 weights and activations, float32 inputs/outputs; runs in ONNX Runtime)")
            run.gate(data=None, cache=None)
        else:
            run.int8(spec, Path(tmp))
    run.report.wall_s = round(time.perf_counter() - t0, 1)
    return run.report


def _log(line: str) -> None:
    logger.info("%s", line)


class _Workflow:
    """One :func:`quantize_gated` call: its inputs, the report being filled, the progress sink."""

    def __init__(self, model: Path, out: Path, opts: QuantOptions, say: Callable[[str], None]) -> None:
        self.model, self.out, self.opts, self.say = model, out, opts, say
        self.report = QuantReport(model=str(model), output=str(out), precision=opts.precision)

    def int8(self, spec: ModelSpec, tmp: Path) -> None:
        """Calibrate, quantize, check the Q/DQ rules, gate."""
        from endoedge.calibration import load_calibration_data
        from endoedge.calibration.qdq_check import check_qdq
        from endoedge.calibration.quantize import quantize_int8

        o = self.opts
        if not o.calib:
            raise InputError("INT8 needs calibration images: --calib SRC (folder, glob, video or labelled set)")
        input_name, fixed_batch = _input(self.model)
        batch = o.batch or fixed_batch or 8
        if fixed_batch and batch != fixed_batch:
            raise InputError(f"'{self.model}' has a fixed batch of {fixed_batch}; use --batch {fixed_batch}")
        data = load_calibration_data(o.calib, spec, num_images=o.num_images, batch_size=batch,
                                     input_name=input_name, seed=o.seed, split=o.calib_split)
        self.say(f"calibration: {data.num_images} images from {o.calib}"
                 + (f" ({Path(o.calib_split).name})" if o.calib_split else "")
                 + f", batch {data.batch_size}, sha256 {data.content_hash[:16]}..."
                 + (f", {len(data.skipped)} unreadable skipped" if data.skipped else ""))
        self.report.calibration = data.describe()
        if o.eval_data:
            _refuse_overlap(data, o.eval_data, o)
        cache = tmp / "ranges.json"
        result = quantize_int8(self.model, self.out, data, method=o.method, cache_path=cache)
        qdq = check_qdq(self.out)
        self.say(f"wrote {self.out} (INT8 Q/DQ, {o.method} calibration); {qdq.summary()}")
        self.report.method, self.report.qdq = o.method, qdq.summary()
        self.report.qdq_violations, self.report.metadata = qdq.violations, result.metadata
        if qdq.violations:
            raise InputError(f"the quantized model breaks TensorRT's Q/DQ rules: {qdq.violations[0]}")
        self.gate(data=data, cache=cache)

    def compare(self, candidate: Path, eval_data: str | Path,
                reference_report: dict[str, Any] | None = None) -> CompareResult:
        """The FP32 model against ``candidate`` on ``eval_data``, on the CPU."""
        from endoedge.calibration.compare import compare_models
        from endoedge.evaluation import EvalSet

        o = self.opts
        return compare_models(self.model, candidate, EvalSet(eval_data, split=o.split, fmt=o.fmt),
                              max_drop=o.max_drop, device="cpu", reference_report=reference_report)

    def gate(self, *, data: CalibrationData | None, cache: Path | None) -> None:
        """Compare with the FP32 model; for INT8, fall back layer by layer."""
        from endoedge.calibration.compare import format_compare

        eval_data = self.opts.eval_data
        if not eval_data:
            self.say("no --eval DATA given: accuracy NOT checked; run `endoedge eval --compare "
                     f"{self.model} {self.out} DATA` before deploying")
            return
        cmp = self.compare(self.out, eval_data)
        self.say(format_compare(cmp))
        self.report.gate, self.report.raw_heads = cmp.gate, cmp.raw_heads
        if cmp.gate.passed or data is None or self.opts.max_fallback <= 0:
            return
        self.fallback(data, cache, eval_data, cmp)

    def fallback(self, data: CalibrationData, cache: Path | None, eval_data: str | Path,
                 first: CompareResult) -> None:
        """Rank the quantized layers, then keep the worst in float until the gate passes."""
        from endoedge.calibration.compare import format_compare
        from endoedge.calibration.qdq_check import check_qdq
        from endoedge.calibration.quantize import quantize_int8
        from endoedge.calibration.sensitivity import greedy_fallback, rank_layers

        o = self.opts
        n_batches = max(1, -(-o.sensitivity_images // data.batch_size))
        self.say(f"INT8 fails the gate: ranking layers by sensitivity on {n_batches * data.batch_size} "
                 "calibration images ...")

        def progress(done: int, total: int) -> None:
            if done % 10 == 0 or done == total:
                logger.info("sensitivity: %d/%d layers", done, total)

        ranking = rank_layers(self.model, self.out, data, n_batches=n_batches, progress=progress)
        self.say(f"  full INT8 raw-head error (proxy) {ranking.full_int8_error:.4g}; most costly layers:")
        self.say(f"  {'node':<40}{'op':>6}{'error if float':>16}{'gain':>12}")
        for x in ranking.layers[:10]:
            self.say(f"  {x.node:<40}{x.op_type:>6}{x.error_if_float:>16.4g}{x.gain:>12.4g}")
        self.report.sensitivity = ranking
        last: list[CompareResult] = []

        def quantize(nodes: list[str]) -> Path:
            quantize_int8(self.model, self.out, data, method=o.method, nodes_to_exclude=nodes, cache_path=cache)
            return self.out

        def gate(path: Path) -> GateResult:
            last.append(self.compare(path, eval_data, reference_report=first.reference))
            return last[-1].gate

        result = greedy_fallback(ranking, quantize, gate, max_layers=o.max_fallback)
        self.report.fallback = result
        if last:
            self.say(format_compare(last[-1]))
            self.report.gate, self.report.raw_heads = last[-1].gate, last[-1].raw_heads
        qdq = check_qdq(self.out)
        self.report.qdq = qdq.summary()
        names = ", ".join(result.float_nodes) or "none"
        self.say(f"kept in float ({len(result.float_nodes)}): {names}; {qdq.summary()}")


def _refuse_overlap(data: CalibrationData, eval_data: str | Path, opts: QuantOptions) -> None:
    """Calibrating on evaluation images inflates the gate: refuse it."""
    from endoedge.evaluation import load_eval_dataset

    evalset = load_eval_dataset(eval_data, fmt=opts.fmt, split=opts.split)
    eval_paths = {s.path.resolve() for s in evalset.samples}
    shared = [it for it in data.items if it.path.resolve() in eval_paths]
    if shared:
        raise InputError(
            f"{len(shared)} calibration images are also evaluation images (e.g. {shared[0].path.name}); "
            "calibrate on other images, e.g. --calib-split with the train split"
        )


def _input(model: Path) -> tuple[str, int | None]:
    """The model's input name and its fixed batch size (``None`` when dynamic)."""
    from endoedge.spec import load_onnx_proto

    graph = load_onnx_proto(model).graph
    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise InputError(f"'{model}' has {len(inputs)} inputs; endoedge quantizes single-input detectors")
    dims = inputs[0].type.tensor_type.shape.dim
    return inputs[0].name, (int(dims[0].dim_value) or None) if dims else None
