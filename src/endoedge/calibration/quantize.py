"""INT8 Q/DQ and FP16 ONNX from an FP32 endoedge ONNX, both validated in ONNX Runtime.

INT8 (:func:`quantize_int8`) is ``onnxruntime.quantization.quantize_static`` on the CPU in the
explicit form every TensorRT line from 8.6 to 11 parses (see :mod:`endoedge.calibration.qdq_check`):
QuantizeLinear/DequantizeLinear pairs, int8 activations and weights, symmetric (all zero points
0), weights per channel on the Conv output axis 0, activations per tensor, biases left float
(``QuantizeBias=False``: no int32 DequantizeLinear, which TensorRT cannot parse), weights kept
float with a dedicated Q/DQ pair each (``AddQDQPairToWeight``, as NVIDIA ModelOpt writes them),
Q/DQ on the inputs of quantized ops only. FP16 (:func:`convert_fp16`) is onnxconverter-common's
``convert_float_to_float16`` with float32 inputs and outputs.

Both keep the source's ``endoedge.*`` metadata and add ``endoedge.precision`` (and for INT8
``endoedge.quant_method``, ``endoedge.calibration_sha256``, ``endoedge.calibration_images``,
``endoedge.quant_float_nodes``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from endoedge._optional import require
from endoedge.calibration.graph_rules import output_layers
from endoedge.errors import ExportError, ModelFormatError
from endoedge.spec import check_graph_present

logger = logging.getLogger(__name__)

METHODS = ("entropy", "minmax", "percentile", "mse")
# Ops whose inputs get Q/DQ. Conv/Gemm/MatMul carry the compute; Add lets TensorRT fuse residual
# additions into the INT8 convolution. Everything else (Clip/Relu, Reshape, Concat, ...) stays
# float and TensorRT fuses it around the quantized layers.
DEFAULT_OP_TYPES: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add")
CALIB_CHUNK = 16  # batches per ORT calibration pass (bounds the histogram calibrators' memory)


@dataclass
class QuantResult:
    """What :func:`quantize_int8` / :func:`convert_fp16` wrote.

    Attributes:
        path: the output ONNX.
        precision: ``"int8"`` or ``"fp16"``.
        method: calibration method (INT8).
        float_nodes: nodes kept in floating point on purpose (INT8 fallback).
        output_layers: nodes kept in floating point by the output-layer rule
            (:func:`~endoedge.calibration.graph_rules.output_layers`; INT8).
        calibration: :meth:`CalibrationData.describe` of the calibration set (INT8).
        metadata: the ``endoedge.*`` keys added.
    """

    path: Path
    precision: str
    method: str | None = None
    float_nodes: list[str] = field(default_factory=list)
    output_layers: list[str] = field(default_factory=list)
    calibration: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def _working_dir(path: str) -> Iterator[None]:
    """Run the block in ``path`` (contextlib.chdir is Python 3.11+; JetPack 6 has 3.10)."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _onnx() -> Any:
    return require("onnx", extra="torch", purpose="ONNX quantization")


def _load(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise ModelFormatError(f"model '{p}' does not exist or is not a file")
    try:
        model = _onnx().load(str(p))
    except Exception as err:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise ModelFormatError(f"'{p}' is not a readable ONNX file ({type(err).__name__})") from err
    check_graph_present(model, p)
    return model


def quantize_int8(
    model_path: str | Path,
    output: str | Path,
    data: Any,
    *,
    method: str = "entropy",
    nodes_to_exclude: Sequence[str] = (),
    op_types: Sequence[str] = DEFAULT_OP_TYPES,
    cache_path: str | Path | None = None,
    float_output_layers: bool = True,
    float_output_depth: int = 1,
    bias_correction: bool = False,
    bias_correction_images: int = 16,
    weight_rounding: bool = False,
    smooth: float | None = None,
    smooth_images: int = 64,
    int32_bias: bool = True,
) -> QuantResult:
    """Write an explicit Q/DQ INT8 copy of ``model_path`` calibrated on ``data``.

    Args:
        model_path: FP32 ONNX (opset >= 13; endoedge exports opset 17).
        output: destination ``.onnx``.
        data: a :class:`~endoedge.calibration.CalibrationData` (or ``None`` with an existing
            ``cache_path``).
        method: ``entropy`` (ONNX Runtime's KL-divergence calibrator with its default 128
            histogram bins), ``minmax`` (= TensorRT's max calibration with symmetric
            activations), ``percentile`` (99.999th) or ``mse`` (per tensor, the range with the
            least quantization error over a 2048-bin histogram:
            :mod:`~endoedge.calibration.mse_ranges`).
        nodes_to_exclude: node names kept in floating point.
        op_types: op types whose inputs are quantized.
        cache_path: ORT calibration cache (JSON): reused when it exists, written otherwise
            (an ``mse`` cache is only reused by ``mse`` and the other way round).
        float_output_layers: keep the layers that feed the outputs directly (class logits, box
            regression, DFL and decode arithmetic) in floating point
            (:func:`~endoedge.calibration.graph_rules.output_layers`); the default, measured in
            benchmarks/RESULTS.md ("INT8/FP16 across centres").
        float_output_depth: with ``float_output_layers``: 1 = the layers that feed the outputs
            directly; 2 adds the weighted layers that feed those, and so on.
        bias_correction: correct the float biases of the quantized Convs so their per-channel
            output means match FP32's on the first ``bias_correction_images`` calibration images
            (:func:`~endoedge.calibration.bias_correction.correct_biases`; needs ``data``).
        weight_rounding: before bias correction, re-round the quantized Convs' INT8 weights for
            the least output error on the same calibration images
            (:func:`~endoedge.calibration.weight_rounding.round_weights`; needs ``data``).
        smooth: move each quantized Conv input's per-channel spread into its weights with this
            strength (0-1; :mod:`~endoedge.calibration.smoothing`), measured on the first
            ``smooth_images`` calibration images; ``None``: no smoothing (needs ``data``).
        int32_bias: widen the weight scales of channels whose float bias would not fit int32 at
            ``input_scale * weight_scale`` (ONNX Runtime's fused CPU kernels clamp it there), before
            weight rounding and bias correction and again after
            (:func:`~endoedge.calibration.int32_bias.widen_weight_scales`); the default since
            2026-12-07 (benchmarks/RESULTS.md, "INT8/FP16 across centres").

    Raises:
        ExportError: the method is unknown or ONNX Runtime cannot quantize or run the result.
    """
    if method not in METHODS:
        raise ExportError(f"unknown calibration method '{method}'; use one of {', '.join(METHODS)}")
    if bias_correction and data is None:
        raise ExportError("bias correction needs the calibration images, not only a calibration cache "
                          "(pass the data, or bias_correction=False)")
    if smooth is not None and weight_rounding:
        raise ExportError("smoothing and weight rounding do not combine (the rounding measures each layer's input "
                          "in the FP32 model, which smoothing rescales): use one of them")
    if smooth is not None and data is None:
        raise ExportError("activation smoothing needs the calibration images, not only a calibration cache "
                          "(pass the data, or no smoothing)")
    if weight_rounding and data is None:
        raise ExportError("weight rounding needs the calibration images, not only a calibration cache "
                          "(pass the data, or weight_rounding=False)")
    q = require("onnxruntime.quantization", extra="torch", purpose="INT8 quantization")
    onnx = _onnx()
    src = _load(model_path)
    opset = next((o.version for o in src.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        raise ExportError(f"'{model_path}' has opset {opset}; per-channel Q/DQ needs >= 13 (re-export it)")
    out = Path(output)
    method_enum = {"entropy": q.CalibrationMethod.Entropy, "minmax": q.CalibrationMethod.MinMax,
                   "percentile": q.CalibrationMethod.Percentile, "mse": q.CalibrationMethod.Percentile}[method]
    cache_file = None if cache_path is None else Path(cache_path)
    cache_hit = cache_file is not None and cache_file.is_file()
    if cache_file is not None and cache_hit:
        from endoedge.calibration.mse_ranges import cache_method

        cached_mse = cache_method(cache_file) == "mse"
        if cached_mse != (method == "mse"):
            raise ExportError(f"calibration cache '{cache_path}' holds {'MSE' if cached_mse else 'ONNX Runtime'} "
                              f"ranges, not {method} ones: pass the method it was made with or another "
                              "--calib-cache path")
    extra: dict[str, Any] = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "AddQDQPairToWeight": True,
        "DedicatedQDQPair": True,
        "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1},
        "OpTypesToExcludeOutputQuantization": list(op_types),
        "QDQDisableWeightAdjustForInt32Bias": True,
        "CalibTensorRangeSymmetric": True,
    }
    reader = None
    if data is not None and not cache_hit:
        reader = data.as_ort_reader()
        n = len(reader)
        # ORT's chunked pass needs a stride that divides the batch count.
        stride = max(d for d in range(1, min(n, CALIB_CHUNK) + 1) if n % d == 0)
        if stride < n and method != "mse":
            extra["CalibStridedMinMax"] = stride
    with tempfile.TemporaryDirectory(prefix="endoedge-q-") as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        source = Path(model_path).resolve()  # before the chdir below: a relative path names a file here
        try:
            # On a failed symbolic shape inference ONNX Runtime saves "sym_shape_infer_temp.onnx" plus
            # external data into the working directory: keep that litter in the temporary folder.
            with _working_dir(tmp):
                q.quant_pre_process(str(source), str(prepped), skip_optimization=True)
        except Exception as err:  # noqa: BLE001 - fall back to the file as it is
            logger.info("quant_pre_process failed (%s); quantizing the file as it is", err)
            prepped = Path(model_path)
        outputs = (output_layers(_onnx().load(str(prepped), load_external_data=False).graph, op_types,
                                 float_output_depth)
                   if float_output_layers else [])
        excluded = list(dict.fromkeys([*nodes_to_exclude, *outputs]))
        smoothing_meta: dict[str, Any] = {}
        if smooth is not None and data is not None:
            from endoedge.calibration.smoothing import smooth_conv_inputs

            model = _onnx().load(str(prepped))
            n_smooth = max(1, -(-smooth_images // data.batch_size))
            sm = smooth_conv_inputs(model, list(data.batches(0, min(n_smooth, len(data)))),
                                    exclude=set(excluded), alpha=smooth)
            prepped = Path(tmp) / "smoothed.onnx"
            _onnx().save(model, str(prepped))
            if cache_file is not None and cache_hit:
                _check_cache_covers(cache_file, [n.output[0] for n in model.graph.node
                                                 if n.op_type == "Mul" and n.name.endswith("_smooth")])
            smoothing_meta = {"layers": sm.layers, "images": sm.images, "alpha": sm.alpha,
                              "spread_before": round(sm.spread_before, 3), "spread_after": round(sm.spread_after, 3)}
        ranges_cache = None if cache_path is None else str(cache_path)
        if method == "mse" and reader is not None:
            from endoedge.calibration.mse_ranges import collect_histograms, write_range_cache

            ranges_path = Path(tmp) / "mse_ranges.json" if cache_file is None else cache_file
            try:
                hists = collect_histograms(Path(prepped), list(op_types), reader, CALIB_CHUNK, Path(tmp),
                                           ["CPUExecutionProvider"])
            except Exception as err:  # noqa: BLE001 - ORT raises plain Exceptions
                raise ExportError(f"ONNX Runtime could not calibrate '{model_path}': "
                                  f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
            write_range_cache(hists, ranges_path)
            ranges_cache, reader = str(ranges_path), None
        try:
            q.quantize_static(
                str(prepped), str(out), reader,
                quant_format=q.QuantFormat.QDQ,
                op_types_to_quantize=list(op_types),
                per_channel=True,
                reduce_range=False,
                activation_type=q.QuantType.QInt8,
                weight_type=q.QuantType.QInt8,
                nodes_to_exclude=excluded,
                calibrate_method=method_enum,
                calibration_providers=["CPUExecutionProvider"],
                extra_options=extra,
                calibration_cache_path=ranges_cache,
            )
        except Exception as err:  # noqa: BLE001 - ORT raises plain Exceptions/ValueErrors
            raise ExportError(f"ONNX Runtime could not quantize '{model_path}': "
                              f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
    meta = {
        "endoedge.precision": "int8",
        "endoedge.quant_method": method,
        "endoedge.quant_format": "qdq-s8s8-symmetric-per-channel",
        "endoedge.quant_float_nodes": json.dumps(list(nodes_to_exclude)),
        "endoedge.quant_float_outputs": json.dumps(outputs),
    }
    if smooth is not None and data is not None:
        meta["endoedge.quant_smoothing"] = json.dumps(smoothing_meta)
    if data is not None:
        meta["endoedge.calibration_sha256"] = data.content_hash
        meta["endoedge.calibration_images"] = str(data.num_images)
    n_batches = max(1, -(-bias_correction_images // data.batch_size)) if data is not None else 0
    if int32_bias:
        from endoedge.calibration.int32_bias import widen_weight_scales

        widened = widen_weight_scales(out)
    if weight_rounding and data is not None:
        from endoedge.calibration.weight_rounding import round_weights

        wr = round_weights(model_path, out, list(data.batches(0, n_batches)))
        meta["endoedge.quant_weight_rounding"] = json.dumps(
            {"layers": wr.layers, "images": wr.images, "flipped": wr.flipped,
             "error_before": round(wr.error_before, 6), "error_after": round(wr.error_after, 6)})
    if bias_correction and data is not None:
        from endoedge.calibration.bias_correction import correct_biases

        bc = correct_biases(model_path, out, list(data.batches(0, n_batches)))
        logger.info("bias correction: %d layers, mean |output-mean error| %.4g -> %.4g on %d images",
                    bc.layers, bc.mean_abs_shift_before, bc.mean_abs_shift_after, bc.images)
        meta["endoedge.quant_bias_correction"] = json.dumps(
            {"layers": bc.layers, "images": bc.images})
    if int32_bias:
        widened += widen_weight_scales(out)
        meta["endoedge.quant_int32_bias"] = json.dumps({"channels_widened": widened})
    _finish(onnx, src, out, meta)
    validate_in_ort(out)
    return QuantResult(out, "int8", method, list(nodes_to_exclude), outputs,
                       None if data is None else data.describe(), meta)


def _check_cache_covers(cache_file: Path, tensors: list[str]) -> None:
    """Refuse a calibration cache that lacks ranges for ``tensors`` (one made without smoothing)."""
    try:
        payload = json.loads(cache_file.read_text())
        known = set(payload["data"] if isinstance(payload.get("data"), dict) else payload)
    except (OSError, ValueError, AttributeError) as err:
        raise ExportError(f"calibration cache '{cache_file}' is not a readable range cache: {err}") from err
    missing = [t for t in tensors if t not in known]
    if missing:
        raise ExportError(f"calibration cache '{cache_file}' has no ranges for {len(missing)} smoothed tensor(s) "
                          "(it was made without smoothing): drop the cache or the smoothing")


def convert_fp16(model_path: str | Path, output: str | Path, *,
                 op_block_list: Sequence[str] | None = None) -> QuantResult:
    """Write an FP16 copy of ``model_path``: weights and activations float16, inputs and
    outputs float32 (Cast nodes at the edges), for TensorRT 11's strongly typed builds.

    Args:
        op_block_list: op types kept float32 (default: onnxconverter-common's list).

    Raises:
        BackendUnavailableError: onnxconverter-common is not installed (``endoedge[quant]``).
        ExportError: the conversion or the ONNX Runtime check fails.
    """
    float16 = require("onnxconverter_common.float16", extra="quant", purpose="FP16 conversion")
    onnx = _onnx()
    src = _load(model_path)
    kwargs: dict[str, Any] = {"keep_io_types": True}
    if op_block_list is not None:
        kwargs["op_block_list"] = list(op_block_list)
    import warnings

    _dedupe_value_info(src)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            half = float16.convert_float_to_float16(src, **kwargs)
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"FP16 conversion of '{model_path}' failed: {err}") from err
    if caught:  # one warning per weight value below float16's smallest normal, clamped to +-1e-7
        logger.info("FP16: %d weight values were clamped to float16's range (%s)", len(caught), caught[0].message)
    fixed = _retarget_float_casts(half)
    if fixed:
        logger.info("FP16: %d Cast-to-float32 node(s) inside the graph now cast to float16", fixed)
    out = Path(output)
    meta = {"endoedge.precision": "fp16"}
    _finish(onnx, half, out, meta, src_meta=src)
    validate_in_ort(out)
    return QuantResult(out, "fp16", metadata=meta)


def _dedupe_value_info(model: Any) -> None:
    """Keep the first ``value_info`` entry per tensor name: some exporters repeat entries, and
    onnxconverter-common retypes only one of them, leaving a float32 twin that ONNX Runtime then
    holds against the float16 tensor."""
    seen: set[str] = set()
    keep = []
    for v in model.graph.value_info:
        if v.name not in seen:
            seen.add(v.name)
            keep.append(v)
    if len(keep) != len(model.graph.value_info):
        del model.graph.value_info[:]
        model.graph.value_info.extend(keep)


def _retarget_float_casts(model: Any) -> int:
    """Make the graph's own ``Cast(to=FLOAT)`` nodes cast to FLOAT16 where the converter typed
    their output float16; return how many.

    onnxconverter-common retypes every float32 tensor of the graph to float16 but leaves the
    ``to`` attribute of existing Cast nodes alone, so a Cast from an integer index (e.g. the
    anchor grid Ultralytics' heads build from ``Range``) declares a float16 output and makes a
    float32 one: ONNX Runtime refuses the file ("Type (tensor(float16)) of output arg ... does
    not match expected type"). Casts the converter inserted at the float32 inputs/outputs keep
    their float32 outputs (typed float32), so they are left as they are.
    """
    onnx = _onnx()
    outputs = {o.name for o in model.graph.output}  # typed by graph.output, float32 (keep_io_types)
    fp16 = {v.name for v in model.graph.value_info
            if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 and v.name not in outputs}
    n = 0
    for node in model.graph.node:
        if node.op_type != "Cast" or not any(o in fp16 for o in node.output):
            continue
        for attr in node.attribute:
            if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                attr.i = onnx.TensorProto.FLOAT16
                n += 1
    return n


def _finish(onnx: Any, src: Any, out: Path, extra: dict[str, str], src_meta: Any = None) -> None:
    """Copy ``src``'s metadata_props into the written ``out``, add ``extra``, check, save."""
    model = src if src_meta is not None else onnx.load(str(out))
    props = {p.key: p.value for p in (src_meta or src).metadata_props}
    props.update(extra)
    del model.metadata_props[:]
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    try:
        onnx.checker.check_model(model)
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"the written model '{out}' fails the ONNX checker: {err}") from err
    tmp = out.with_name(out.name + ".tmp")
    try:
        onnx.save(model, str(tmp))
        tmp.replace(out)
    except OSError as err:
        raise ExportError(f"cannot write '{out}': {err.strerror or err}") from err


def validate_in_ort(path: str | Path) -> None:
    """Open ``path`` in ONNX Runtime (CPU) and run one real-looking frame through it.

    Raises:
        ExportError: ONNX Runtime cannot load or run it, or an output is not finite.
    """
    import numpy as np

    from endoedge.errors import EndoedgeError
    from endoedge.runtime.ort import OnnxRuntimeBackend
    from endoedge.spec import ModelSpec, read_onnx_metadata

    try:
        spec = ModelSpec.from_metadata(read_onnx_metadata(path), where=str(path))
        from endoedge.data.imageio import read_image
        from endoedge.data.samples import sample_frame_paths
        from endoedge.preprocess import Preprocessor

        batch, _ = Preprocessor(spec.preprocess)([read_image(sample_frame_paths()[0])])
        with OnnxRuntimeBackend(path, device="cpu") as backend:
            outputs = backend.infer({backend.input_name: batch})
    except EndoedgeError as err:
        raise ExportError(f"the written model '{path}' does not run in ONNX Runtime: {err}") from err
    bad = [k for k, v in outputs.items() if not np.isfinite(v).all()]
    if bad:
        raise ExportError(f"the written model '{path}' gives non-finite values in {', '.join(bad)}")
