"""Per-layer INT8 sensitivity and the greedy float fallback that makes an INT8 model pass the gate.

Ranking (cheap proxy): starting from the fully quantized model, each quantized node in turn
gets its Q/DQ inputs removed (:func:`bypass_nodes`; the same graph ``quantize_static`` makes
with that node in ``nodes_to_exclude``, because every node has its own Q/DQ pairs), and the
raw-head error against the FP32 model is measured on a small, spread subset of the
calibration batches. The node whose exclusion lowers the error most costs most.

Fallback (:func:`greedy_fallback`): the most costly nodes are kept in float one more at a
time, re-quantizing from the cached calibration ranges, until the caller's gate (a real mAP
evaluation) passes or ``max_layers`` is reached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from endoedge._optional import require

logger = logging.getLogger(__name__)


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


def _proxy_error(session: Any, feeds: Sequence[dict[str, np.ndarray]], refs: list[list[np.ndarray]]) -> float:
    """Mean over outputs of (sum squared error / sum squared deviation of the reference)."""
    err = np.zeros(len(refs[0]))
    var = np.zeros(len(refs[0]))
    for feed, ref in zip(feeds, refs, strict=True):
        for k, (r, c) in enumerate(zip(ref, session.run(None, feed), strict=True)):
            d = r.astype(np.float64) - c
            err[k] += float(np.vdot(d, d))
            var[k] += float(((r - r.mean()) ** 2).sum())
    return float(np.mean(err / np.maximum(var, 1e-30)))


def subset_feeds(data: Any, n_batches: int) -> list[dict[str, np.ndarray]]:
    """About ``n_batches`` batches spread evenly over the calibration data."""
    total = len(data)
    picks = sorted(set(np.linspace(0, total - 1, min(n_batches, total)).round().astype(int).tolist()))
    feeds = []
    for b in picks:
        feeds.extend(data.batches(b, b + 1))
    return feeds


def rank_layers(fp32_path: str | Path, int8_path: str | Path, data: Any, *, n_batches: int = 16,
                threads: int = 0, nodes: Sequence[str] | None = None,
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Rank the quantized nodes of ``int8_path`` (or only ``nodes``) by how much keeping each in
    float lowers the raw-head error (proxy; see the module docstring). Costs one ONNX Runtime
    session and ``n_batches`` inferences per node.

    Returns:
        ``{"proxy": "...", "n_images", "full_int8_error", "layers": [{"node", "op_type",
        "error_if_float", "gain"}...]}`` with ``layers`` sorted by ``gain``, largest first.
    """
    onnx = require("onnx", extra="torch", purpose="the sensitivity search")
    feeds = subset_feeds(data, n_batches)
    ref_sess = _session(onnx.load(str(fp32_path)), threads)
    refs = [ref_sess.run(None, f) for f in feeds]
    qmodel = onnx.load(str(int8_path))
    base = _proxy_error(_session(qmodel, threads), feeds, refs)
    candidates = quantized_nodes(qmodel)
    if nodes is not None:
        wanted = set(nodes)
        candidates = [c for c in candidates if c[0] in wanted]
    layers: list[dict[str, Any]] = []
    for i, (name, op) in enumerate(candidates):
        e = _proxy_error(_session(bypass_nodes(qmodel, {name}), threads), feeds, refs)
        layers.append({"node": name, "op_type": op, "error_if_float": e, "gain": base - e})
        if progress is not None:
            progress(i + 1, len(candidates))
    layers.sort(key=lambda x: -float(x["gain"]))
    n_images = sum(next(iter(f.values())).shape[0] for f in feeds)
    return {"proxy": "mean over outputs of squared raw-head error / reference variance vs FP32",
            "n_images": n_images, "full_int8_error": base, "layers": layers}


def greedy_fallback(
    ranking: dict[str, Any],
    quantize: Callable[[list[str]], Path],
    gate: Callable[[Path], dict[str, Any]],
    *,
    max_layers: int = 10,
) -> dict[str, Any]:
    """Keep the most costly layers in float, one more each step, until ``gate`` passes.

    Args:
        ranking: :func:`rank_layers` output.
        quantize: writes the INT8 model with the given nodes kept float; returns its path.
        gate: evaluates a model; returns :func:`~endoedge.evaluation.compare.gate_result`-like
            ``{"passed": bool, "drop_points": float, ...}``.
        max_layers: the most nodes to keep in float.

    Returns:
        ``{"passed", "float_nodes", "steps": [{"float_nodes", "drop_points", "passed"}...],
        "path"}`` of the last step.
    """
    order = [x["node"] for x in ranking["layers"] if x["gain"] > 0][:max_layers]
    steps: list[dict[str, Any]] = []
    result: dict[str, Any] = {"passed": False, "float_nodes": [], "steps": steps, "path": None}
    for k in range(1, len(order) + 1):
        nodes = order[:k]
        path = quantize(nodes)
        g = gate(path)
        steps.append({"float_nodes": nodes, "drop_points": g["drop_points"], "passed": g["passed"]})
        logger.info("float fallback %d layer(s) (%s): mAP@0.5 drop %.2f points -> %s",
                    k, nodes[-1], g["drop_points"], "pass" if g["passed"] else "fail")
        result.update(passed=g["passed"], float_nodes=nodes, path=path, gate=g)
        if g["passed"]:
            break
    return result
