"""Empirical bias correction of an INT8 Q/DQ copy (Nagel et al. 2019, "Data-Free Quantization
Through Weight Equalization and Bias Correction", section 4.2, the empirical variant).

Quantizing a layer's weights and inputs shifts the *mean* of its output per channel: rounding
errors do not cancel when a channel's weights are not symmetric around their grid points. The
shift adds up through the network and moves the scores at the operating threshold
(benchmarks/RESULTS.md, "INT8/FP16 across centres"). Bias correction measures, on
calibration frames, each quantized Conv's per-channel output mean in the FP32 model and in the
Q/DQ copy, and adds the difference to that Conv's float bias, layer by layer in graph order so
each layer sees the corrections above it.

TensorRT's explicit-quantization rules are kept: only the float bias initializers change (no
new Q/DQ, no int32 bias); the Conv/Q/DQ structure is untouched.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from endoedge._optional import require
from endoedge.errors import ExportError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BiasCorrection:
    """What :func:`correct_biases` changed.

    Attributes:
        layers: quantized Conv layers whose bias was corrected.
        images: calibration images measured.
        mean_abs_shift_before: mean over layers of the mean |per-channel output-mean error|
            (FP32 minus INT8, in the layer's output units) before correction.
        mean_abs_shift_after: the same after the correction.
    """

    layers: int
    images: int
    mean_abs_shift_before: float
    mean_abs_shift_after: float


def _onnx() -> Any:
    return require("onnx", extra="torch", purpose="INT8 bias correction")


def _quantized_convs(model: Any) -> list[Any]:
    """Conv nodes whose weight comes from a DequantizeLinear of a constant (the quantized ones)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        if n.op_type != "Conv" or len(n.input) < 2:
            continue
        dq = producer.get(n.input[1])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producer.get(dq.input[0])  # weights kept float with a Q/DQ pair (AddQDQPairToWeight)
        if dq.input[0] in inits or (q is not None and q.op_type == "QuantizeLinear" and q.input[0] in inits):
            out.append(n)
    return out


def probe_session(model: Any, outputs: list[str]) -> Any:
    """An ONNX Runtime CPU session of ``model`` that also returns the tensors ``outputs``."""
    onnx = _onnx()
    ort = require("onnxruntime", extra="torch", purpose="INT8 bias correction")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output}
    for name in outputs:
        if name not in known:
            m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _layer_means(session: Any, names: list[str], feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Per-channel means of ``names`` (Conv outputs, NCHW) over all ``feeds``."""
    sums = [np.zeros(0)] * len(names)
    counts = [0] * len(names)
    for feed in feeds:
        outs = session.run(names, feed)
        for i, o in enumerate(outs):
            axes = (0, *range(2, o.ndim))
            s = o.astype(np.float64).sum(axis=axes)
            sums[i] = s if counts[i] == 0 else sums[i] + s
            counts[i] += o.size // o.shape[1]
    return [s / c for s, c in zip(sums, counts, strict=True)]


def correct_biases(fp32_path: str | Path, qdq_path: str | Path, feeds: list[dict[str, np.ndarray]]) -> BiasCorrection:
    """Correct the float biases of the quantized Convs of ``qdq_path`` in place, layer by layer.

    In graph (topological) order, each quantized Conv's per-channel output mean is measured in
    the copy, with every earlier layer already corrected, and its difference to FP32's mean is
    added to the layer's bias. Correcting every layer's total shift at once over-corrects (most
    of a deep layer's shift is inherited from the layers above, which are corrected too); a
    layer-local estimate (INT8 layer vs its float twin on the same input) misses the shift that
    zero-mean rounding noise turns into through ReLU6/Clip (measured: it removed 30% of the total
    shift where the sequential pass removes 94%). A layer's mean depends only on the corrections
    of the quantized Convs that feed it, so layers none of which feeds another are measured in one
    pass (:func:`_levels`; the same corrections, to the bit, as one layer per pass). ONNX Runtime
    runs the whole graph per fetch, so this costs one forward pass of the calibration frames per
    group (the shipped SSD: 62 for 73 layers; YOLOv8n: 48 for 60).

    Args:
        fp32_path: the FP32 ONNX the copy was made from (same Conv output names, as ONNX
            Runtime's ``quantize_static`` keeps them).
        qdq_path: the Q/DQ copy; rewritten with the corrected biases.
        feeds: calibration batches ``{input_name: float32 NCHW}`` (the calibration frames).

    Raises:
        ExportError: the two models share no quantized Conv, or ONNX Runtime fails.
    """
    onnx = _onnx()
    numpy_helper = onnx.numpy_helper
    ref = onnx.load(str(fp32_path))
    qm = onnx.load(str(qdq_path))
    ref_tensors = {o for n in ref.graph.node for o in n.output}
    inits = {i.name: i for i in qm.graph.initializer}
    uses = Counter(i for n in qm.graph.node for i in n.input)
    # a bias shared by several Convs (exporters dedupe equal constants) or computed in the graph
    # cannot take one layer's correction: those layers are left as they are
    convs = [n for n in _quantized_convs(qm) if n.output[0] in ref_tensors and (
        len(n.input) < 3 or not n.input[2] or (uses[n.input[2]] == 1 and n.input[2] in inits))]
    if not convs:
        raise ExportError(f"'{qdq_path}' has no quantized Conv shared with '{fp32_path}': nothing to correct")
    if not feeds:
        raise ExportError("bias correction got no calibration batch")
    names = [n.output[0] for n in convs]
    biases = [_bias_of(numpy_helper, qm, inits, n) for n in convs]
    probe = onnx.ModelProto()
    probe.CopyFrom(qm)
    for name in biases:  # the biases become inputs of the measuring graph: one session serves every step
        probe.graph.input.append(onnx.helper.make_tensor_value_info(
            name, onnx.TensorProto.FLOAT, list(numpy_helper.to_array(inits[name]).shape)))
    values = {name: numpy_helper.to_array(inits[name]).astype(np.float32) for name in biases}
    try:
        ref_means = _layer_means(probe_session(ref, names), names, feeds)
        sess = probe_session(probe, names)

        def means(fetch: list[str]) -> list[np.ndarray]:
            return _layer_means(sess, fetch, [{**f, **values} for f in feeds])

        before = _mean_abs(ref_means, means(names))
        for group in _levels(qm, names):
            for i, mean in zip(group, means([names[i] for i in group]), strict=True):
                values[biases[i]] = values[biases[i]] + (ref_means[i] - mean).astype(np.float32)
        after = _mean_abs(ref_means, means(names))
    except Exception as err:  # noqa: BLE001 - ORT raises plain exceptions
        raise ExportError(f"bias correction could not run '{qdq_path}': {str(err).splitlines()[0]}") from err
    logger.info("bias correction: mean |output-mean error| vs FP32 %.5f -> %.5f over %d layers",
                before, after, len(convs))
    for name, value in values.items():
        inits[name].CopyFrom(numpy_helper.from_array(value, name))
    tmp = Path(str(qdq_path) + ".tmp")
    onnx.save(qm, str(tmp))
    tmp.replace(qdq_path)
    images = sum(int(next(iter(f.values())).shape[0]) for f in feeds)
    return BiasCorrection(len(convs), images, before, after)


def _levels(model: Any, names: list[str]) -> list[list[int]]:
    """Indices into ``names`` (Conv outputs of ``model``) in groups, in order: no layer of a group
    feeds another of the same group, and every layer that feeds one, directly or through other
    nodes, is in an earlier group (group ``k``: ``k`` of ``names`` on the longest path from the
    graph inputs to the layer's input)."""
    index = {name: i for i, name in enumerate(names)}
    depth: dict[str, int] = {}
    groups: dict[int, list[int]] = {}
    for node in model.graph.node:  # ONNX keeps nodes in topological order
        d = max((depth.get(t, 0) for t in node.input if t), default=0)
        for t in node.output:
            if t in index:
                groups.setdefault(d, []).append(index[t])
            depth[t] = d + 1 if t in index else d
    return [sorted(groups[d]) for d in sorted(groups)]


def _mean_abs(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    """Mean over layers of the mean |per-channel mean error|."""
    return float(np.mean([np.abs(r - g).mean() for r, g in zip(ref, got, strict=True)]))


def _bias_of(numpy_helper: Any, model: Any, inits: dict[str, Any], node: Any) -> str:
    """The name of ``node``'s float bias initializer; a zero one is added when it has none."""
    if len(node.input) >= 3 and node.input[2]:
        return str(node.input[2])
    producer = {o: n for n in model.graph.node for o in n.output}
    t = node.input[1]  # the weight: an initializer behind its Q/DQ pair
    while t not in inits and t in producer:
        t = producer[t].input[0]
    if t not in inits:
        raise ExportError(f"cannot find the weight of '{node.name}' for bias correction")
    name = f"{node.name or node.output[0]}_bias_corrected"
    channels = int(numpy_helper.to_array(inits[t]).shape[0])
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(channels, np.float32), name))
    inits[name] = model.graph.initializer[-1]
    while len(node.input) < 3:
        node.input.append("")
    node.input[2] = name
    return name
