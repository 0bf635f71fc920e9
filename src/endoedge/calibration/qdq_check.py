"""Check an ONNX file against TensorRT's explicit-quantization (Q/DQ) rules.

The rules (onnx-tensorrt's QuantizeLinear/DequantizeLinear importers, TensorRT 8.6 to 11):

1. default-domain opset >= 13 (the per-axis ``axis`` attribute);
2. every QuantizeLinear/DequantizeLinear has an int8 zero point that is all 0 (TensorRT is
   symmetric-only; uint8 is refused) and a constant, positive, finite scale;
3. per-axis scales (size > 1) only on weights: a Conv's weight Q/DQ is per channel along the
   output axis 0 with one scale per output channel; activation Q/DQ is per tensor;
4. no quantized bias: a Conv's bias input is a float initializer, not a DequantizeLinear
   output (TensorRT cannot dequantize int32);
5. no DequantizeLinear of int32 data anywhere.

:func:`check_qdq` returns the list of violations (empty = passes) so tests and the CLI can show
all of them at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from endoedge._optional import require

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass
class QdqReport:
    """Result of :func:`check_qdq`.

    Attributes:
        violations: one line per broken rule instance.
        n_quantize / n_dequantize: Q and DQ node counts.
        n_per_channel_weights: Conv weights quantized per channel.
        quantized_convs / float_convs: Conv nodes with / without Q/DQ on their weight.
        opset: default-domain opset.
    """

    violations: list[str] = field(default_factory=list)
    n_quantize: int = 0
    n_dequantize: int = 0
    n_per_channel_weights: int = 0
    quantized_convs: list[str] = field(default_factory=list)
    float_convs: list[str] = field(default_factory=list)
    opset: int = 0

    @property
    def ok(self) -> bool:
        """No violation and at least one Q/DQ pair."""
        return not self.violations and self.n_quantize > 0 and self.n_dequantize > 0

    def summary(self) -> str:
        """One line: counts and the verdict."""
        verdict = "passes" if self.ok else f"FAILS ({len(self.violations)} violations)"
        if not self.violations and not (self.n_quantize and self.n_dequantize):
            verdict = "FAILS (no Q/DQ nodes: not a quantized model)"
        return (f"Q/DQ rules {verdict}: opset {self.opset}, {self.n_quantize} Q / {self.n_dequantize} DQ, "
                f"{len(self.quantized_convs)} INT8 Conv ({self.n_per_channel_weights} per-channel weights), "
                f"{len(self.float_convs)} float Conv")


def check_qdq(model: str | Path | Any) -> QdqReport:
    """Check a model (path or ``onnx.ModelProto``) against the rules in the module docstring."""
    onnx = require("onnx", extra="torch", purpose="the Q/DQ check")
    from onnx import numpy_helper

    proto: Any = model if hasattr(model, "graph") else onnx.load(str(model))
    graph = proto.graph
    rep = QdqReport()
    rep.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if rep.opset < 13:
        rep.violations.append(f"opset {rep.opset} < 13: per-channel Q/DQ needs the axis attribute of opset 13")
    inits = {t.name: t for t in graph.initializer}
    consts: dict[str, Any] = {}
    for n in graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = a.t
    producer = {o: n for n in graph.node for o in n.output}

    def const(name: str) -> np.ndarray | None:
        t = inits.get(name) or consts.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def elem_type(name: str) -> int | None:
        t = inits.get(name) or consts.get(name)
        return None if t is None else int(t.data_type)

    for n in graph.node:
        if n.op_type not in QDQ_OPS:
            continue
        if n.op_type == "QuantizeLinear":
            rep.n_quantize += 1
        else:
            rep.n_dequantize += 1
        where = f"{n.op_type} '{n.name or n.output[0]}'"
        scale = const(n.input[1]) if len(n.input) > 1 else None
        if scale is None:
            rep.violations.append(f"{where}: scale is not a constant")
        elif not (np.isfinite(scale).all() and (scale > 0).all()):
            rep.violations.append(f"{where}: scale has non-positive or non-finite values")
        if len(n.input) < 3 or not n.input[2]:
            rep.violations.append(f"{where}: no zero point (it would default to uint8 for QuantizeLinear)")
        else:
            zp_type = elem_type(n.input[2])
            zp = const(n.input[2])
            if zp is None:
                rep.violations.append(f"{where}: zero point is not a constant")
            elif zp_type != onnx.TensorProto.INT8:
                rep.violations.append(f"{where}: zero point is {onnx.TensorProto.DataType.Name(zp_type or 0)}, "
                                      "TensorRT needs INT8")
            elif np.any(zp != 0):
                rep.violations.append(f"{where}: zero point is not all 0 (asymmetric quantization)")
        if n.op_type == "DequantizeLinear":
            x_type = elem_type(n.input[0])
            if x_type == onnx.TensorProto.INT32:
                rep.violations.append(f"{where}: dequantizes INT32 data (a quantized bias); TensorRT cannot")
        if scale is not None and scale.size > 1:
            # Per-axis: must be a weight's Q/DQ (its data comes from a constant, possibly via Q).
            src = n.input[0]
            if n.op_type == "DequantizeLinear" and src in producer and producer[src].op_type == "QuantizeLinear":
                src = producer[src].input[0]
            if const(src) is None:
                rep.violations.append(f"{where}: per-axis scale on an activation (TensorRT: weights only)")

    for n in graph.node:
        if n.op_type != "Conv":
            continue
        weight_dq = producer.get(n.input[1])
        if weight_dq is None or weight_dq.op_type != "DequantizeLinear":
            rep.float_convs.append(n.name)
        else:
            rep.quantized_convs.append(n.name)
            _check_conv_weight(n, weight_dq, producer, const, rep)
        if len(n.input) > 2 and n.input[2]:
            bias = n.input[2]
            if bias in producer and producer[bias].op_type == "DequantizeLinear":
                rep.violations.append(f"Conv '{n.name}': bias is quantized (comes from a DequantizeLinear)")
            elif const(bias) is None:
                rep.violations.append(f"Conv '{n.name}': bias is not a float initializer")
            else:
                b = const(bias)
                if b is not None and b.dtype.kind != "f":
                    rep.violations.append(f"Conv '{n.name}': bias has dtype {b.dtype}, not float")
    return rep


def _check_conv_weight(conv: Any, dq: Any, producer: dict[str, Any], const: Any, rep: QdqReport) -> None:
    """Per-channel along axis 0 with one scale per output channel."""
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    scale = const(dq.input[1])
    src = dq.input[0]
    if src in producer and producer[src].op_type == "QuantizeLinear":
        src = producer[src].input[0]
    w = const(src)
    if w is None or scale is None:
        rep.violations.append(f"Conv '{conv.name}': weight Q/DQ is not on a constant weight")
        return
    if scale.size == 1 and w.shape[0] > 1:
        rep.violations.append(f"Conv '{conv.name}': weight quantized per tensor, not per channel")
        return
    if axis != 0 or scale.size != w.shape[0]:
        rep.violations.append(f"Conv '{conv.name}': weight per-channel axis {axis} with {scale.size} scales; "
                              f"expected axis 0 with {w.shape[0]} (output channels)")
        return
    rep.n_per_channel_weights += 1
