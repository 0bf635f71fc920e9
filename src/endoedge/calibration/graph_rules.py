"""Graph rules of the INT8 recipe that need no per-model node list.

**Output layers stay in floating point.** A detector's last layers compute what the decoder
reads: class logits that a Sigmoid/Softmax turns into the scores compared with the operating
threshold, and (in Ultralytics heads) the DFL expectation and the anchor arithmetic that make box
coordinates in input pixels. Quantizing the inputs of those layers to 8 bits moves scores and
coordinates directly: there is no later layer to average the rounding out. The rule: every node
of a quantizable op type whose output reaches a graph output without passing through another
weighted layer (Conv, ConvTranspose, Gemm, MatMul) keeps float inputs. Shape-only paths
(``Shape``/``Size`` consumers, e.g. Ultralytics' anchor grid) carry no values and are ignored.

For the shipped SSDLite this keeps the 12 last head convolutions (one classification and one
regression conv per feature map, ~1% of the MACs); for YOLOv8/11 the 3 class convs, the DFL conv
and the decode arithmetic. TensorRT runs them in FP16/FP32 (the Q/DQ rules allow float layers
between quantized ones: the network stays valid explicit quantization).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: Layers that carry weights: a path from a node to an output through one of these is "mixed".
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
#: Consumers that read only a tensor's shape.
SHAPE_OPS = frozenset({"Shape", "Size"})


def output_layers(graph: Any, op_types: Iterable[str], depth: int = 1) -> list[str]:
    """Names of the nodes of ``op_types`` whose outputs reach a graph output through value paths
    that pass fewer than ``depth`` other weighted layers (see the module docstring), in graph order.

    Args:
        graph: an ``onnx.GraphProto`` (topologically sorted, as ONNX requires).
        op_types: the op types the quantizer would quantize.
        depth: 1 = the layers that feed the outputs directly (the rule); 2 adds the weighted
            layers feeding those, and so on (0 = none).
    """
    wanted = set(op_types)
    outputs = {o.name for o in graph.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    # hops[t]: the fewest weighted layers a value of tensor t crosses on its way to a graph output.
    # Walk the nodes backwards (reverse topological order) so every consumer is decided first.
    never = 1 << 30
    hops: dict[str, int] = {}
    for node in reversed(graph.node):
        for t in node.output:
            hops[t] = 0 if t in outputs else min(
                (min((hops.get(o, never) for o in c.output), default=never) + (c.op_type in WEIGHTED_OPS)
                 for c in consumers.get(t, ()) if c.op_type not in SHAPE_OPS),
                default=never)
    return [n.name for n in graph.node
            if n.op_type in wanted and min((hops.get(t, never) for t in n.output), default=never) < depth]
