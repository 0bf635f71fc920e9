"""What the TensorRT build plan needs to know about an ONNX file, read without TensorRT.

:func:`onnx_facts` reads the graph once (external weights are not loaded) and reports the input
name and shape (``-1`` for a symbolic dimension), the output names, whether the graph is
explicitly quantized (``QuantizeLinear`` / ``DequantizeLinear`` nodes: a Q/DQ INT8 ONNX from
``endoedge quantize --precision int8``), whether it is FP16-typed (float16 initializers or
float16 graph inputs/outputs: an FP16 ONNX from ``endoedge quantize --precision fp16``), its
``metadata_props`` (the :class:`~endoedge.spec.ModelSpec` an engine inherits) and its sha256.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from endoedge.errors import ModelFormatError
from endoedge.spec import load_onnx_proto

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


@dataclass(frozen=True)
class OnnxFacts:
    """Facts about one ONNX file (see the module docstring).

    Attributes:
        path: the ONNX file.
        sha256: hex sha256 of the file's bytes.
        input_name: the single graph input.
        input_shape: its shape, ``-1`` where the dimension is symbolic (e.g. ``[-1, 3, 320, 320]``).
        output_names: graph outputs in order.
        has_qdq: the graph holds Q/DQ nodes (explicit INT8 quantization).
        has_fp16: the graph is FP16-typed (float16 initializers, inputs or outputs).
        metadata: ``metadata_props`` as a dict.
    """

    path: Path
    sha256: str
    input_name: str
    input_shape: tuple[int, ...]
    output_names: tuple[str, ...]
    has_qdq: bool = False
    has_fp16: bool = False
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def dynamic_batch(self) -> bool:
        """The batch axis (dimension 0) is symbolic."""
        return bool(self.input_shape) and self.input_shape[0] < 0

    @property
    def precision(self) -> str:
        """The precision the file itself implies: ``"int8"`` (Q/DQ), ``"fp16"`` or ``"fp32"``."""
        return "int8" if self.has_qdq else "fp16" if self.has_fp16 else "fp32"


def _dims(value_info: object) -> tuple[int, ...]:
    dims = value_info.type.tensor_type.shape.dim  # type: ignore[attr-defined]
    return tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in dims)


def onnx_facts(path: str | Path) -> OnnxFacts:
    """Read :class:`OnnxFacts` of ``path``.

    Raises:
        ModelFormatError: the file is missing, not ONNX, or does not have exactly one input.
    """
    from onnx import TensorProto

    from endoedge.data.hashing import file_sha256

    p = Path(path)
    model = load_onnx_proto(p)
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelFormatError(
            f"'{p}' has {len(inputs)} inputs; endoedge builds engines of single-image-input detectors"
        )
    fp16 = TensorProto.FLOAT16
    nodes = list(graph.node)
    for fn in model.functions:
        nodes.extend(fn.node)
    has_fp16 = any(i.data_type == fp16 for i in graph.initializer) or any(
        v.type.tensor_type.elem_type == fp16 for v in [*inputs, *graph.output]
    )
    return OnnxFacts(
        path=p,
        sha256=file_sha256(p),
        input_name=inputs[0].name,
        input_shape=_dims(inputs[0]),
        output_names=tuple(o.name for o in graph.output),
        has_qdq=any(n.op_type in QDQ_OPS for n in nodes),
        has_fp16=has_fp16,
        metadata={prop.key: prop.value for prop in model.metadata_props},
    )
