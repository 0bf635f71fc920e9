"""PyTorch -> ONNX export of a detector's raw heads, with the metadata that makes it self-describing.

The exported graph has one input ``images`` (``N x 3 x H x W`` float32, normalized, dynamic
``N``) and the architecture's raw outputs (for SSDs ``bbox_regression`` and ``cls_logits``). No
NMS is inside, so ONNX Runtime and every TensorRT line from 8.5 to 11 run it unchanged.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from endoedge._optional import is_installed, require
from endoedge.errors import ExportError
from endoedge.models.checkpoint import LoadedModel
from endoedge.preprocess import real_looking_batch
from endoedge.spec import ModelSpec

logger = logging.getLogger(__name__)

INPUT_NAME = "images"
MIN_OPSET = 17


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ONNX file.
        spec: the spec stored in its metadata.
        simplified: whether onnxslim simplified the graph.
        opset: the ONNX opset of the default domain.
    """

    path: Path
    spec: ModelSpec
    simplified: bool
    opset: int


def export_onnx(
    loaded: LoadedModel,
    output: str | Path,
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
    simplify: bool = True,
    sample: np.ndarray | None = None,
) -> ExportResult:
    """Export ``loaded``'s raw heads to ``output`` and store its spec as ``metadata_props``.

    Args:
        loaded: the model (see :func:`endoedge.models.checkpoint.load_checkpoint`).
        output: destination ``.onnx`` path (written atomically).
        opset: ONNX opset, >= 17.
        dynamic_batch: export the batch axis as dynamic (``N``); else fixed at 1.
        simplify: simplify the graph with onnxslim when it is installed.
        sample: a normalized ``1 x 3 x H x W`` float32 input to trace with (real-looking
            frames are used when omitted).

    Raises:
        ExportError: the opset is too old, tracing fails, or the result fails ``onnx.checker``.
    """
    torch = require("torch", extra="torch", purpose="ONNX export")
    onnx = require("onnx", extra="torch", purpose="ONNX export")
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old; endoedge exports opset >= {MIN_OPSET}")
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = loaded.spec
    if sample is None:
        sample = real_looking_batch(spec, 1)
    module = loaded.raw_heads().cpu().eval()
    names = list(loaded.arch.output_names)
    axes = {n: {0: "N"} for n in [INPUT_NAME, *names]} if dynamic_batch else None
    tmp = out.with_name(out.name + ".tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TorchScript-exporter deprecation chatter
            torch.onnx.export(
                module,
                (torch.from_numpy(np.ascontiguousarray(sample)),),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=names,
                dynamic_axes=axes,
                do_constant_folding=True,
            )
        model = onnx.load(str(tmp))
    except Exception as err:  # noqa: BLE001 - torch.onnx raises many types
        tmp.unlink(missing_ok=True)
        raise ExportError(f"ONNX export of {spec.arch} failed: {type(err).__name__}: {err}") from err
    simplified = False
    if simplify:
        model, simplified = _simplify(model)
    spec = replace(spec, producer="endoedge")
    stamp_metadata(model, spec, f"torch {torch.__version__} TorchScript exporter, opset {opset}",
                   f"{spec.arch} raw heads for {', '.join(spec.class_names)}; see metadata_props")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as err:  # noqa: BLE001 - checker raises ValidationError / InferenceError
        tmp.unlink(missing_ok=True)
        raise ExportError(f"exported ONNX fails onnx.checker: {err}") from err
    onnx.save(model, str(tmp))
    tmp.replace(out)
    logger.info("exported %s (opset %d, simplified=%s)", out, opset, simplified)
    return ExportResult(path=out, spec=spec, simplified=simplified, opset=opset)


def stamp_metadata(model: Any, spec: ModelSpec, exporter: str, doc: str) -> None:
    """Replace an ONNX ``ModelProto``'s ``metadata_props`` with ``spec``'s (+ ``endoedge.exporter``)."""
    import onnx

    meta = spec.to_metadata()
    meta["endoedge.exporter"] = exporter
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, meta)
    model.producer_name = "endoedge"
    model.doc_string = doc


def _simplify(model: Any) -> tuple[Any, bool]:
    if not is_installed("onnxslim"):
        logger.info("onnxslim is not installed; exporting without graph simplification")
        return model, False
    import onnxslim

    try:
        return onnxslim.slim(model), True
    except Exception as err:  # noqa: BLE001 - a failed simplification must not lose the export
        logger.warning("onnxslim failed (%s); keeping the unsimplified graph", err)
        return model, False
