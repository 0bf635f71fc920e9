"""Output-aware rounding of the INT8 Conv weights of a Q/DQ copy (AdaRound's objective,
Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization", solved by
greedy flips instead of a learned relaxation).

Rounding each weight to its nearest grid point minimizes the weight error, not the layer's
*output* error: a Conv output is a sum of weight x input products, and rounding errors of
correlated inputs add up. For a Conv with weight row ``w`` (one output channel, ``d =
in_channels / group x kh x kw`` values) and per-channel scale ``s``, the output error of a
rounding ``q`` is ``e = (w - s q) . x`` over the input patches ``x``, so its variance is
``(w - s q)^T C (w - s q)`` with ``C`` the covariance of the patches (the mean part is left to
bias correction, :mod:`endoedge.calibration.bias_correction`, which runs after this). Starting
from round-to-nearest, each step toggles, per output channel, the one weight between floor and
ceil that lowers that quadratic most, until no toggle helps: the error never grows, and every
weight stays on one of its two neighbouring grid points.

Measured (benchmarks/RESULTS.md, "INT8/FP16 across centres"): on the shipped SSDLite the
depthwise 3x3/5x5 Convs' INT8 weights were the largest source of score noise (weights alone:
logit std 0.148 vs activations alone 0.121 on PolypGen polyp frames); this halves the summed
layer output error (2.23 -> 0.83) and the weights-only score noise falls to 0.105.

TensorRT's explicit-quantization rules are kept: the float weight initializer behind each weight
Q/DQ pair is replaced by ``s q`` (so TensorRT's own round-to-nearest of ``w / s`` gives exactly
``q``); scales, zero points and the graph are untouched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from endoedge._optional import require
from endoedge.errors import ExportError

logger = logging.getLogger(__name__)

QMAX = 127  # symmetric int8 weights: [-127, 127]


@dataclass(frozen=True)
class WeightRounding:
    """What :func:`round_weights` changed.

    Attributes:
        layers: Convs whose INT8 weights were re-rounded.
        images: calibration images the input statistics came from.
        flipped: weights moved from their nearest grid point to the other neighbour.
        error_before: summed over layers, the output-error variance of round-to-nearest
            (layer output units squared, from the calibration inputs).
        error_after: the same after re-rounding.
    """

    layers: int
    images: int
    flipped: int
    error_before: float
    error_after: float


@dataclass
class _Layer:
    node: Any
    weight: str  # float weight initializer behind the weight's Q/DQ pair
    scale: str  # its per-channel (or per-tensor) scale initializer
    source: str  # the Conv's input tensor before its activation Q/DQ (a name in the FP32 model)


def _onnx() -> Any:
    return require("onnx", extra="torch", purpose="INT8 weight rounding")


def _attr(node: Any, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return list(a.ints) if a.ints else int(a.i)
    return default


def _layers(model: Any, fp32_tensors: set[str]) -> list[_Layer]:
    """Quantized Convs (weight: float initializer -> Q -> DQ; input: Q -> DQ) the FP32 model shares."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}

    def pair(name: str) -> Any:
        dq = producer.get(name)
        q = None if dq is None or dq.op_type != "DequantizeLinear" else producer.get(dq.input[0])
        return q if q is not None and q.op_type == "QuantizeLinear" else None

    out = []
    for n in g.node:
        auto_pad = next((a.s for a in n.attribute if a.name == "auto_pad"), b"NOTSET")
        if n.op_type != "Conv" or len(n.input) < 2 or auto_pad not in (b"NOTSET", b""):
            continue  # SAME_* padding is not spelled out in ``pads``: such a layer keeps nearest rounding
        qw, qx = pair(n.input[1]), pair(n.input[0])
        if qw is None or qx is None or qw.input[0] not in inits or qx.input[0] not in fp32_tensors:
            continue
        out.append(_Layer(n, qw.input[0], qw.input[1], qx.input[0]))
    return out


def patches(x: np.ndarray, kernel: tuple[int, int], strides: list[int], pads: list[int],
            dilations: list[int]) -> np.ndarray:
    """The Conv input patches of ``x`` (N, C, H, W): (N, C, kh * kw, output positions)."""
    kh, kw = kernel
    x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    eh, ew = (kh - 1) * dilations[0] + 1, (kw - 1) * dilations[1] + 1
    v = np.lib.stride_tricks.sliding_window_view(x, (eh, ew), axis=(2, 3))
    v = v[:, :, ::strides[0], ::strides[1], ::dilations[0], ::dilations[1]]  # N, C, Ho, Wo, kh, kw
    n, c = v.shape[:2]
    return v.reshape(n, c, -1, kh * kw).transpose(0, 1, 3, 2)


def greedy_round(w: np.ndarray, cov: np.ndarray, *, max_steps: int | None = None) -> tuple[np.ndarray, int]:
    """Integer weights near ``w`` (grid units) that lower each row's ``e^T cov e``, ``e = w - q``.

    Args:
        w: (groups, rows, d) weights divided by their scale.
        cov: (groups, d, d) covariance of the inputs each group's rows see.
        max_steps: toggles per row at most (default 2 d + 2).

    Returns:
        (q, toggles): q (groups, rows, d) in [-127, 127], each value the floor or ceil of ``w``
        (clipped), no row's error above round-to-nearest's; the number of toggles made.
    """
    q = np.clip(np.round(w), -QMAX, QMAX)
    e = w - q
    lo_ok, hi_ok = q - 1 >= -QMAX, q + 1 <= QMAX
    grad = e @ cov
    diag = np.broadcast_to(np.einsum("gdd->gd", cov)[:, None, :], e.shape)
    tol = 1e-12 * max(float(np.abs(diag).max(initial=0.0)), 1e-30)
    steps = 2 * w.shape[-1] + 2 if max_steps is None else max_steps
    toggles = 0
    gi, ci = (a.ravel() for a in np.indices(e.shape[:2]))  # rows that may still improve
    for _ in range(steps):
        ee = e[gi, ci]
        s = np.sign(ee)  # toggling q by s moves e by -s (floor <-> ceil)
        legal = (s != 0) & np.where(s > 0, hi_ok[gi, ci], lo_ok[gi, ci])
        change = np.where(legal, diag[gi, ci] - 2 * s * grad[gi, ci], np.inf)
        j = change.argmin(-1)
        live = change[np.arange(len(j)), j] < -tol
        if not live.any():
            break
        gi, ci, j = gi[live], ci[live], j[live]
        sj = s[live, j]
        e[gi, ci, j] -= sj
        q[gi, ci, j] += sj
        hi_ok[gi, ci, j] = q[gi, ci, j] + 1 <= QMAX
        lo_ok[gi, ci, j] = q[gi, ci, j] - 1 >= -QMAX
        grad[gi, ci, :] -= sj[:, None] * cov[gi, j, :]
        toggles += len(gi)
    return q, toggles


def _variance(e: np.ndarray, cov: np.ndarray, scale: np.ndarray) -> float:
    """Summed output-error variance of grid-unit weight errors ``e`` (g, rows, d) with ``scale`` (g, rows, 1)."""
    return float((((e @ cov) * e).sum(-1) * scale[..., 0] ** 2).sum())


class _Moments:
    """Streaming per-group input covariance of one Conv."""

    def __init__(self, layer: _Layer, weight_shape: tuple[int, ...]) -> None:
        n = layer.node
        self.group = int(_attr(n, "group", 1))
        self.kernel = (int(weight_shape[2]), int(weight_shape[3]))
        self.strides = _attr(n, "strides", [1, 1])
        self.pads = _attr(n, "pads", [0, 0, 0, 0])
        self.dilations = _attr(n, "dilations", [1, 1])
        self.sum_xx: np.ndarray | None = None
        self.sum_x: np.ndarray | None = None
        self.count = 0

    def add(self, x: np.ndarray) -> None:
        """Accumulate the patches of ``x`` (N, C, H, W), an image at a time (bounded memory)."""
        for image in x:
            p = patches(image[None].astype(np.float64), self.kernel, self.strides, self.pads, self.dilations)[0]
            c, k, positions = p.shape
            p = p.reshape(self.group, (c // self.group) * k, positions)
            xx = p @ p.transpose(0, 2, 1)
            sx = p.sum(axis=2)
            self.sum_xx = xx if self.sum_xx is None else self.sum_xx + xx
            self.sum_x = sx if self.sum_x is None else self.sum_x + sx
            self.count += positions

    def covariance(self) -> np.ndarray:
        """(groups, d, d) covariance of the patches seen so far."""
        if self.sum_xx is None or self.sum_x is None:
            raise ExportError("weight rounding saw no input")
        mean = self.sum_x / self.count
        return self.sum_xx / self.count - np.einsum("gd,ge->gde", mean, mean)


def round_weights(fp32_path: str | Path, qdq_path: str | Path, feeds: list[dict[str, np.ndarray]]) -> WeightRounding:
    """Re-round the INT8 Conv weights of ``qdq_path`` in place for the least output error.

    Each quantized Conv's input patches are taken from the FP32 model on ``feeds``; their
    covariance weighs the rounding errors (:func:`greedy_round`, per output channel).

    Args:
        fp32_path: the FP32 ONNX the copy was made from (same tensor names, as ONNX Runtime's
            ``quantize_static`` keeps them).
        qdq_path: the Q/DQ copy (float weights behind Q/DQ pairs, per-channel scales); rewritten.
        feeds: calibration batches ``{input_name: float32 NCHW}``.

    Raises:
        ExportError: no quantized Conv shares its input with the FP32 model, no batch was given,
            or ONNX Runtime fails.
    """
    onnx = _onnx()
    ort = require("onnxruntime", extra="torch", purpose="INT8 weight rounding")
    nh = onnx.numpy_helper
    ref = onnx.load(str(fp32_path))
    qm = onnx.load(str(qdq_path))
    fp32_tensors = {o for n in ref.graph.node for o in n.output} | {i.name for i in ref.graph.input}
    layers = _layers(qm, fp32_tensors)
    if not layers:
        raise ExportError(f"'{qdq_path}' has no quantized Conv whose input is in '{fp32_path}': nothing to round")
    if not feeds:
        raise ExportError("weight rounding got no calibration batch")
    inits = {i.name: i for i in qm.graph.initializer}
    weights = {lay.weight: nh.to_array(inits[lay.weight]).astype(np.float64) for lay in layers}
    moments = [_Moments(lay, weights[lay.weight].shape) for lay in layers]
    probe = onnx.ModelProto()
    probe.CopyFrom(ref)
    known = {o.name for o in probe.graph.output}
    sources = list(dict.fromkeys(lay.source for lay in layers))
    for name in sources:
        if name not in known:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        for feed in feeds:
            values = dict(zip(sources, sess.run(sources, feed), strict=True))
            for lay, mom in zip(layers, moments, strict=True):
                mom.add(values[lay.source])
    except Exception as err:  # noqa: BLE001 - ORT raises plain exceptions
        raise ExportError(f"weight rounding could not run '{fp32_path}': {str(err).splitlines()[0]}") from err
    before = after = 0.0
    flipped = 0
    for lay, mom in zip(layers, moments, strict=True):
        w = weights[lay.weight]
        scale = nh.to_array(inits[lay.scale]).astype(np.float64)
        rows = w.shape[0]
        s = np.broadcast_to(scale.reshape(-1) if scale.ndim else scale, (rows,)).reshape(mom.group, rows // mom.group, 1)
        wg = w.reshape(mom.group, rows // mom.group, -1) / s
        cov = mom.covariance()
        q, toggles = greedy_round(wg, cov)
        near = np.clip(np.round(wg), -QMAX, QMAX)
        before += _variance(wg - near, cov, s)
        after += _variance(wg - q, cov, s)
        flipped += int((q != near).sum())
        new = (q * s).reshape(w.shape).astype(np.float32)
        inits[lay.weight].CopyFrom(nh.from_array(new, lay.weight))
        logger.debug("weight rounding %s: %d toggles", lay.node.name, toggles)
    logger.info("weight rounding: output-error variance %.4g -> %.4g over %d layers (%d weights flipped)",
                before, after, len(layers), flipped)
    tmp = Path(str(qdq_path) + ".tmp")
    onnx.save(qm, str(tmp))
    tmp.replace(qdq_path)
    images = sum(int(next(iter(f.values())).shape[0]) for f in feeds)
    return WeightRounding(len(layers), images, flipped, before, after)
