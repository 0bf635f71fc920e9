"""Per-channel activation smoothing before INT8 quantization (``quantize --smooth``).

TensorRT quantizes activations per tensor (one scale for all channels: its Q/DQ rules allow
per-channel scales on weights only). When a Conv's input channels span very different ranges
(after SiLU in YOLO necks, after ReLU6 in MobileNet-style backbones), the small channels get a
handful of INT8 levels and their rounding noise goes through the layer with the channel's weights.
Smoothing (Xiao et al. 2023, "SmoothQuant", written for Conv inputs here) divides input channel
``c`` by ``s_c`` in front of the layer's QuantizeLinear and multiplies the Conv weights of that
input channel by ``s_c``: the float result is unchanged, the activation channels move towards one
range, and the spread moves into the weights, which are quantized per output channel.

``s_c = max|x_c|^alpha / max|W_:,c|^(1 - alpha)`` over calibration frames (``alpha`` 0.5 as in
the paper). The division is an explicit ``Mul`` by a constant ``[1, C, 1, 1]`` on the Conv's own
branch (other consumers of the tensor still see it unscaled); whether TensorRT fuses it into the
QuantizeLinear after it is not measured (no GPU here). The Q/DQ structure is the usual one: per-tensor activation
scales, per-channel weight scales, zero points 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from endoedge._optional import require
from endoedge.calibration.bias_correction import probe_session
from endoedge.errors import ExportError

logger = logging.getLogger(__name__)

ALPHA = 0.5
_MIN_RANGE = 1e-6  # channels below this (dead ones) keep s = 1


@dataclass(frozen=True)
class Smoothing:
    """What :func:`smooth_conv_inputs` changed.

    Attributes:
        layers: Convs whose input got a per-channel scale.
        images: calibration images measured.
        alpha: migration strength (0 = none, 1 = all of the activation spread into the weights).
        spread_before: median over layers of (largest / median channel range) of the Conv input.
        spread_after: the same for the scaled inputs.
    """

    layers: int
    images: int
    alpha: float
    spread_before: float
    spread_after: float


def _targets(model: Any, exclude: set[str]) -> list[tuple[Any, Any]]:
    """(Conv node, its float weight initializer) for the Convs to smooth: weight a constant,
    input 0 computed in the graph (not a graph input), node not excluded."""
    inits = {i.name: i for i in model.graph.initializer}
    graph_inputs = {i.name for i in model.graph.input}
    out = []
    for n in model.graph.node:
        if n.op_type != "Conv" or n.name in exclude or len(n.input) < 2:
            continue
        if n.input[1] not in inits or n.input[0] in graph_inputs or n.input[0] in inits:
            continue
        out.append((n, inits[n.input[1]]))
    return out


def _channel_ranges(model: Any, names: list[str], feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """max |x| per channel (axis 1) of each tensor in ``names`` over every feed."""
    sess = probe_session(model, names)
    ranges: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, value in zip(names, sess.run(names, feed), strict=True):
            axes = (0, *range(2, value.ndim))
            r = np.abs(value).max(axis=axes).astype(np.float64)
            ranges[name] = r if name not in ranges else np.maximum(ranges[name], r)
    return ranges


def _weight_ranges(w: np.ndarray, in_channels: int, groups: int) -> np.ndarray:
    """max |W| per *input* channel of a Conv weight ``[K, C/groups, kh, kw]``."""
    k, cg = w.shape[0], w.shape[1]
    per = np.abs(w.reshape(groups, k // groups, cg, -1)).max(axis=(1, 3))  # groups x C/groups
    return per.reshape(in_channels).astype(np.float64)


def _spread(r: np.ndarray) -> float:
    live = r[r > _MIN_RANGE]
    return float(live.max() / np.median(live)) if live.size else 1.0


def smooth_conv_inputs(model: Any, feeds: list[dict[str, np.ndarray]], *, exclude: set[str] | None = None,
                       alpha: float = ALPHA) -> Smoothing:
    """Insert a per-channel ``Mul`` in front of each float-weight Conv of ``model`` (in place) and
    fold its inverse into the Conv's weights (see the module docstring).

    Args:
        model: a float ONNX ModelProto (before ``quantize_static``).
        feeds: calibration batches ``{input_name: float32 NCHW}``.
        exclude: Conv node names left alone (those kept in floating point).
        alpha: migration strength, in [0, 1].

    Raises:
        ExportError: ``alpha`` is out of range, no feed was given or ONNX Runtime fails.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ExportError(f"smoothing alpha must be within [0, 1], got {alpha}")
    if not feeds:
        raise ExportError("activation smoothing got no calibration batch")
    onnx = require("onnx", extra="torch", purpose="activation smoothing")
    numpy_helper = onnx.numpy_helper
    targets = _targets(model, exclude or set())
    if not targets:
        return Smoothing(0, 0, alpha, 1.0, 1.0)
    names = list(dict.fromkeys(n.input[0] for n, _ in targets))
    try:
        ranges = _channel_ranges(model, names, feeds)
    except Exception as err:  # noqa: BLE001 - ORT raises plain exceptions
        raise ExportError(f"activation smoothing could not run the model: {str(err).splitlines()[0]}") from err
    before, after, new_nodes = [], [], []
    weight_uses: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            weight_uses[i] = weight_uses.get(i, 0) + 1
    for node, init in targets:
        if weight_uses.get(init.name, 0) != 1:  # a weight shared by several Convs cannot take one scale
            continue
        w = numpy_helper.to_array(init).astype(np.float32)
        x_range = ranges[node.input[0]]
        groups = next((int(a.i) for a in node.attribute if a.name == "group"), 1)
        if w.ndim < 3 or x_range.shape[0] != w.shape[1] * groups:
            continue
        w_range = _weight_ranges(w, x_range.shape[0], groups)
        live = (x_range > _MIN_RANGE) & (w_range > _MIN_RANGE)
        s = np.ones_like(x_range)
        s[live] = x_range[live] ** alpha / w_range[live] ** (1.0 - alpha)
        s[live] /= np.exp(np.log(s[live]).mean())  # geometric mean 1: keeps the tensor's scale
        before.append(_spread(x_range))
        after.append(_spread(x_range / s))
        cin_g = w.shape[1]
        s_w = s.reshape(groups, cin_g)  # weight [K, C/g, ...]: group g's rows take s of its channels
        w_new = (w.reshape(groups, w.shape[0] // groups, cin_g, -1) * s_w[:, None, :, None]).reshape(w.shape)
        init.CopyFrom(numpy_helper.from_array(w_new.astype(np.float32), init.name))
        inv_name = f"{node.name or node.output[0]}_smooth_inv"
        scaled = f"{node.input[0]}_smoothed_for_{node.name or node.output[0]}"
        model.graph.initializer.append(numpy_helper.from_array(
            (1.0 / s).astype(np.float32).reshape(1, -1, *([1] * (w.ndim - 2))), inv_name))
        new_nodes.append((node, onnx.helper.make_node("Mul", [node.input[0], inv_name], [scaled],
                                                      name=f"{node.name or node.output[0]}_smooth")))
        node.input[0] = scaled
    # each Mul goes right before its Conv (keeps the graph topologically sorted)
    mul_of = {c.output[0]: m for c, m in new_nodes}
    order = [onnx.NodeProto() for _ in model.graph.node]
    for copy, n in zip(order, model.graph.node, strict=True):
        copy.CopyFrom(n)
    del model.graph.node[:]
    for n in order:
        if n.op_type == "Conv" and n.output[0] in mul_of:
            model.graph.node.append(mul_of[n.output[0]])
        model.graph.node.append(n)
    images = sum(int(next(iter(f.values())).shape[0]) for f in feeds)
    result = Smoothing(len(new_nodes), images, alpha,
                       float(np.median(before)) if before else 1.0, float(np.median(after)) if after else 1.0)
    logger.info("smoothing: %d Conv inputs, median channel spread %.1f -> %.1f (alpha %.2f, %d images)",
                result.layers, result.spread_before, result.spread_after, alpha, images)
    return result
