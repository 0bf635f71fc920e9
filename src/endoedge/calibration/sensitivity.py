"""Per-layer INT8 sensitivity and the greedy float fallback that makes an INT8 model pass the gate.

Ranking (cheap proxy): starting from the fully quantized model, each quantized node in turn
gets its Q/DQ inputs removed (:func:`bypass_nodes`; the same graph ``quantize_static`` makes
with that node in ``nodes_to_exclude``, because every node has its own Q/DQ pairs), and the
copy's detections are compared with the FP32 model's on a small, spread subset of the
calibration batches at the operating score threshold, as the gate does
(:class:`~endoedge.evaluation.agreement.Agreement`): the cost is ``(1 - box agreement) +
extra-box share + |mean score shift|``. The node whose exclusion lowers the cost most costs
most (the raw-head error this replaced misses a uniform score shift that drops boxes below the
threshold).

Fallback (:func:`greedy_fallback`): the most costly nodes are tried in float one more at a
time, re-quantizing from the cached calibration ranges; a node stays float only when the
caller's gate (the operating-point and mAP criteria, or the label-free agreement) comes closer
to passing, until it passes or ``max_layers`` are float; the closest copy measured is the
file left.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from endoedge._optional import require

if TYPE_CHECKING:
    from endoedge.calibration.data import CalibrationData
    from endoedge.evaluation.metrics import Prediction
    from endoedge.spec import ModelSpec

logger = logging.getLogger(__name__)

PROXY = ("operating-point cost vs FP32 at score >= {t:g} (boxes matched at IoU >= 0.5): "
         "(1 - box agreement) + extra-box share + |mean score shift|")


@dataclass(frozen=True)
class LayerCost:
    """What keeping one quantized node in float buys (:func:`rank_layers`).

    Attributes:
        node: ONNX node name.
        op_type: its op type (``Conv``, ``Add``, ...).
        error_if_float: the proxy raw-head error with only this node in float (unitless).
        gain: full-INT8 error minus ``error_if_float`` (larger = the node costs more as INT8).
    """

    node: str
    op_type: str
    error_if_float: float
    gain: float

    def to_dict(self) -> dict[str, str | float]:
        """JSON-ready ``{"node", "op_type", "error_if_float", "gain"}``."""
        return {"node": self.node, "op_type": self.op_type, "error_if_float": self.error_if_float,
                "gain": self.gain}


@dataclass(frozen=True)
class LayerRanking:
    """:func:`rank_layers`' result.

    Attributes:
        proxy: what the error is (text).
        n_images: calibration images it was measured on.
        full_int8_error: the proxy error of the fully quantized model.
        layers: every ranked node, largest ``gain`` first.
    """

    proxy: str
    n_images: int
    full_int8_error: float
    layers: list[LayerCost]

    def to_dict(self, top: int | None = None) -> dict[str, object]:
        """JSON-ready ``{"proxy", "n_images", "full_int8_error", "layers"}`` (the first ``top`` layers)."""
        return {"proxy": self.proxy, "n_images": self.n_images, "full_int8_error": self.full_int8_error,
                "layers": [x.to_dict() for x in self.layers[:top]]}


class GateVerdict(Protocol):
    """What :func:`greedy_fallback` needs from a gate (e.g. :class:`~endoedge.calibration.report.GateResult`)."""

    @property
    def passed(self) -> bool: ...

    @property
    def drop_points(self) -> float | None: ...

    @property
    def box_agreement(self) -> float | None: ...

    @property
    def shortfall(self) -> float: ...


@dataclass(frozen=True)
class FallbackStep:
    """One step of :func:`greedy_fallback`: the nodes kept in float and the gate's verdict.

    Attributes:
        float_nodes: node names kept in float at this step.
        drop_points: mAP@0.5 drop in points (1 point = 0.01) the gate measured (``None``
            without an evaluation set).
        passed: the gate's verdict.
        box_agreement: the box agreement the gate measured (``None`` when not measured).
    """

    float_nodes: list[str]
    drop_points: float | None
    passed: bool
    box_agreement: float | None = None
    kept: bool = True
    shortfall: float | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready ``{"float_nodes", "drop_points", "passed", "box_agreement", "kept", "shortfall"}``."""
        return {"float_nodes": list(self.float_nodes), "drop_points": self.drop_points, "passed": self.passed,
                "box_agreement": self.box_agreement, "kept": self.kept, "shortfall": self.shortfall}


@dataclass
class FallbackResult:
    """:func:`greedy_fallback`'s result: the closest state it measured.

    Attributes:
        passed: the kept state passed the gate (``False`` when no step ran).
        float_nodes: the nodes kept in float (empty: no layer brought the copy closer).
        steps: every step tried, in order (``kept`` says which stayed).
        path: the model file of the kept state (``None`` when no step was kept and none rewritten).
        gate: the kept state's verdict (the first copy's when no step was kept).
        rewritten: the kept state was quantized again after the last step (the last try was
            not kept), so ``path`` holds it.
    """

    passed: bool = False
    float_nodes: list[str] = field(default_factory=list)
    steps: list[FallbackStep] = field(default_factory=list)
    path: Path | None = None
    gate: GateVerdict | None = None
    rewritten: bool = False

    def to_dict(self) -> dict[str, object]:
        """JSON-ready ``{"steps", "float_nodes"}`` (what the quantize report stores)."""
        return {"steps": [s.to_dict() for s in self.steps], "float_nodes": list(self.float_nodes)}


def bypass_nodes(model: Any, nodes: set[str]) -> Any:
    """A copy of a Q/DQ ``model`` where ``nodes`` read their float inputs directly (their
    QuantizeLinear -> DequantizeLinear pairs removed, dangling Q/DQ nodes dropped)."""
    onnx = require("onnx", extra="torch", purpose="the sensitivity search")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    producer = {o: n for n in graph.node for o in n.output}
    for n in graph.node:
        if n.name not in nodes:
            continue
        for i, name in enumerate(n.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                n.input[i] = q.input[0]
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return out


def quantized_nodes(model: Any) -> list[tuple[str, str]]:
    """``(name, op_type)`` of nodes fed by a DequantizeLinear, in graph order."""
    producer = {o: n for n in model.graph.node for o in n.output}
    found = []
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input):
            found.append((n.name, n.op_type))
    return found


def _session(model: Any, threads: int) -> Any:
    ort = require("onnxruntime", extra="gpu", purpose="the sensitivity search")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def subset_feeds(data: CalibrationData, n_batches: int) -> list[dict[str, np.ndarray]]:
    """About ``n_batches`` batches spread evenly over the calibration data."""
    total = len(data)
    picks = sorted(set(np.linspace(0, total - 1, min(n_batches, total)).round().astype(int).tolist()))
    feeds: list[dict[str, np.ndarray]] = []
    for b in picks:
        feeds.extend(data.batches(b, b + 1))
    return feeds


class _Detections:
    """Decodes a session's outputs into per-image detections at the detection pass threshold
    (network-input pixels, model class ids), as :class:`~endoedge.Detector` does."""

    def __init__(self, spec: ModelSpec, output_names: Sequence[str]) -> None:
        from endoedge.evaluation import MAP_CONF
        from endoedge.postprocess import make_decoder

        self.spec, self.names = spec, tuple(output_names)
        self.decoder = make_decoder(spec, self.names)
        self.low, self.max_det = MAP_CONF, max(100, spec.max_detections)

    def __call__(self, session: Any, feeds: Sequence[dict[str, np.ndarray]]) -> list[Prediction]:
        from endoedge.evaluation.metrics import Prediction

        preds: list[Prediction] = []
        for feed in feeds:
            outputs = dict(zip(self.names, session.run(list(self.names), feed), strict=True))
            for i in range(next(iter(feed.values())).shape[0]):
                raw = self.decoder(outputs, i, self.low, self.spec.iou_threshold, self.max_det)
                preds.append(Prediction(raw.boxes, raw.scores, raw.class_ids))
        return preds


def rank_layers(fp32_path: str | Path, int8_path: str | Path, data: CalibrationData, *, n_batches: int = 16,
                threads: int = 0, nodes: Sequence[str] | None = None,
                progress: Callable[[int, int], None] | None = None,
                threshold: float | None = None) -> LayerRanking:
    """Rank the quantized nodes of ``int8_path`` (or only ``nodes``) by how much keeping each in
    float lowers the operating-point cost against FP32 (see the module docstring) on
    ``n_batches`` spread calibration batches. Costs one ONNX Runtime session and ``n_batches``
    inferences per node.

    Args:
        threshold: the operating score threshold (default: ``data.spec``'s).

    Returns:
        a :class:`LayerRanking` with ``layers`` sorted by ``gain``, largest first.
    """
    from endoedge.evaluation.agreement import agreement

    onnx = require("onnx", extra="torch", purpose="the sensitivity search")
    t = data.spec.score_threshold if threshold is None else threshold
    feeds = subset_feeds(data, n_batches)
    ref_sess = _session(onnx.load(str(fp32_path)), threads)
    detect = _Detections(data.spec, [o.name for o in ref_sess.get_outputs()])
    refs = detect(ref_sess, feeds)
    qmodel = onnx.load(str(int8_path))
    base = agreement(refs, detect(_session(qmodel, threads), feeds), t).cost
    candidates = quantized_nodes(qmodel)
    if nodes is not None:
        wanted = set(nodes)
        candidates = [c for c in candidates if c[0] in wanted]
    layers: list[LayerCost] = []
    for i, (name, op) in enumerate(candidates):
        e = agreement(refs, detect(_session(bypass_nodes(qmodel, {name}), threads), feeds), t).cost
        layers.append(LayerCost(name, op, e, base - e))
        if progress is not None:
            progress(i + 1, len(candidates))
    layers.sort(key=lambda x: -x.gain)
    return LayerRanking(PROXY.format(t=t), len(refs), base, layers)


def greedy_fallback(
    ranking: LayerRanking,
    quantize: Callable[[list[str]], Path],
    gate: Callable[[Path], GateVerdict],
    *,
    max_layers: int = 10,
    max_tries: int | None = None,
    first: GateVerdict | None = None,
) -> FallbackResult:
    """Keep layers in float, in rank order, while each one brings the copy closer to passing,
    until ``gate`` passes.

    A layer's rank is what bypassing it alone buys on the fully quantized copy; re-quantized
    without it (new ranges downstream, new bias corrections) the copy can end up worse. So each
    candidate is tried on top of the layers already kept and kept only when the gate's
    ``shortfall`` falls (a pass always counts); otherwise it goes back to INT8 and the next is
    tried. When the last model written is not the closest one, the closest is written again
    (``rewritten``), so a failing fallback never leaves a worse file than it measured.

    Args:
        ranking: :func:`rank_layers` output (only layers with a positive gain are tried).
        quantize: writes the INT8 model with the given nodes kept float; returns its path.
        gate: evaluates a model; returns a :class:`GateVerdict`.
        max_layers: the most nodes to keep in float.
        max_tries: the most candidates to try (default ``2 * max_layers``); each costs one
            quantization and one gate run.
        first: the verdict of the copy with no layer in float (``None``: any step is closer).

    Returns:
        the :class:`FallbackResult`: every step tried, and the closest state.
    """
    tries = 2 * max_layers if max_tries is None else max_tries
    order = [x.node for x in ranking.layers if x.gain > 0][:max(0, tries)]
    result = FallbackResult(gate=first)
    best = float("inf") if first is None else first.shortfall
    kept: list[str] = []
    last: list[str] | None = None
    for node in order:
        if len(kept) >= max_layers or result.passed:
            break
        nodes = [*kept, node]
        path = quantize(nodes)
        g = gate(path)
        last = nodes
        closer = g.passed or g.shortfall < best
        result.steps.append(FallbackStep(nodes, g.drop_points, g.passed, g.box_agreement, kept=closer,
                                         shortfall=None if g.shortfall == float("inf") else round(g.shortfall, 4)))
        measured = ", ".join(part for part in (
            None if g.drop_points is None else f"mAP@0.5 drop {g.drop_points:.2f} points",
            None if g.box_agreement is None else f"box agreement {g.box_agreement:.3f}",
            f"{g.shortfall:.3g} points short") if part)
        logger.info("float fallback +%s (%d in float): %s -> %s", node, len(nodes), measured,
                    "pass" if g.passed else "closer, kept" if closer else "not closer, back to INT8")
        if closer:
            kept, best = nodes, g.shortfall
            result.passed, result.float_nodes, result.path, result.gate = g.passed, nodes, path, g
    if last is not None and last != kept:
        result.path = quantize(kept)
        result.rewritten = True
    return result
