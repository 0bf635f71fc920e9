"""Weight scales wide enough for every quantized Conv's float bias to fit int32.

A Q/DQ copy keeps each Conv's bias float (TensorRT cannot parse an int32 bias DequantizeLinear, and
adds the bias in float). ONNX Runtime's CPU provider, when it fuses DequantizeLinear -> Conv ->
QuantizeLinear into an integer kernel, quantizes that float bias to int32 at
``input_scale * weight_scale[c]`` and clamps what does not fit: a channel whose weights are all near
zero (a weight scale of ~1e-9) loses its bias (benchmarks/RESULTS.md, "INT8/FP16 across centres":
the shipped SSD's stem channel 31 bias -14.1 acts as -0.013). Raising such a channel's weight scale
to ``|bias| / ((2^31 - 1) * input_scale)`` (ONNX Runtime's own rule when it quantizes biases, times
1.0001) lets the bias through; the channel's weights, already near zero, round to zero. Only the
scales of the affected channels change; the Q/DQ structure, zero points and TensorRT's rules are kept.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from endoedge._optional import require

logger = logging.getLogger(__name__)

INT32_MAX = float(np.iinfo(np.int32).max)
MARGIN = 1.0001


def _onnx() -> Any:
    return require("onnx", extra="torch", purpose="INT8 weight scales")


def _biased_convs(model: Any, inits: dict[str, Any], producer: dict[str, Any]) -> Iterator[tuple[Any, float, str, np.ndarray]]:
    """The quantized Convs with a float bias initializer and a per-tensor DequantizeLinear input:
    ``(conv, input_scale, weight scale initializer name, bias as float64)``."""
    from endoedge.calibration.bias_correction import _quantized_convs

    numpy_helper = _onnx().numpy_helper
    for conv in _quantized_convs(model):
        x_dq, w_dq = producer.get(conv.input[0]), producer[conv.input[1]]
        if (len(conv.input) < 3 or conv.input[2] not in inits or x_dq is None or x_dq.op_type != "DequantizeLinear"
                or len(x_dq.input) < 2 or x_dq.input[1] not in inits or w_dq.input[1] not in inits):
            continue
        x_scale = float(numpy_helper.to_array(inits[x_dq.input[1]]).reshape(-1)[0])
        yield conv, x_scale, str(w_dq.input[1]), numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)


def widen_weight_scales(path: str | Path) -> int:
    """Widen, in place, the per-channel weight scales of ``path``'s quantized Convs whose float
    bias does not fit int32 at ``input_scale * weight_scale``; return the channels changed.

    A scale shared with anything but its own weight's QuantizeLinear/DequantizeLinear pair is
    left as it is.
    """
    onnx = _onnx()
    numpy_helper = onnx.numpy_helper
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    uses = Counter(i for n in model.graph.node for i in n.input)
    changed = 0
    for conv, x_scale, scale_name, bias in _biased_convs(model, inits, producer):
        w_dq = producer[conv.input[1]]
        w_q = producer.get(w_dq.input[0])
        own_uses = 1 + int(w_q is not None and w_q.op_type == "QuantizeLinear" and w_q.input[1] == scale_name)
        scale = numpy_helper.to_array(inits[scale_name])
        if uses[scale_name] != own_uses or x_scale <= 0 or scale.shape != bias.shape:
            continue
        need = MARGIN * np.abs(bias) / (INT32_MAX * x_scale)
        over = need > scale.astype(np.float64)
        if not over.any():
            continue
        new = scale.copy()
        new[over] = need[over].astype(scale.dtype)
        low = new.astype(np.float64) < need  # float32 rounding below the bound: one step up
        new[low & over] = np.nextafter(new[low & over], np.array(np.inf, dtype=scale.dtype))
        inits[scale_name].CopyFrom(numpy_helper.from_array(new, scale_name))
        changed += int(over.sum())
        logger.debug("%s: %d weight scale(s) widened for the int32 bias", conv.name or conv.output[0], int(over.sum()))
    if changed:
        tmp = Path(str(path) + ".tmp")
        onnx.save(model, str(tmp))
        tmp.replace(path)
    return changed


@dataclass(frozen=True)
class ClampedLayer:
    """A quantized Conv with float biases beyond int32 at ``input_scale * weight_scale``.

    Attributes:
        conv: the Conv node's name (its output's when it has none).
        channels: output channels whose bias does not fit.
        of: the Conv's output channels.
        max_abs_bias: the largest |bias| among them (the layer's output units).
    """

    conv: str
    channels: int
    of: int
    max_abs_bias: float


def clamped_bias_layers(path: str | Path) -> list[ClampedLayer]:
    """The quantized Convs of ``path`` with a float bias beyond int32 at ``input_scale *
    weight_scale`` (what :func:`widen_weight_scales` fixes), in graph order."""
    onnx = _onnx()
    numpy_helper = onnx.numpy_helper
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    out = []
    for conv, x_scale, scale_name, bias in _biased_convs(model, inits, producer):
        scale = numpy_helper.to_array(inits[scale_name]).astype(np.float64)
        over = np.abs(bias) > INT32_MAX * x_scale * scale
        if over.any():
            out.append(ClampedLayer(conv.name or conv.output[0], int(over.sum()), int(bias.size),
                                    float(np.abs(bias[over]).max())))
    return out


def clamped_bias_channels(path: str | Path) -> int:
    """How many quantized Conv output channels of ``path`` have a float bias beyond int32."""
    return sum(layer.channels for layer in clamped_bias_layers(path))
