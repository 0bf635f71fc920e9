"""Export a torchvision-style image classifier (``N x 3 x H x W`` -> ``N x C`` logits) to ONNX.

The file gets the same ``endoedge.*`` metadata as a detector export, with ``decoder="classify"``,
so :func:`endoedge.load_classifier` and ``endoedge batch`` need nothing but the ``.onnx``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from endoedge._optional import require
from endoedge.errors import ExportError
from endoedge.export.onnx_export import INPUT_NAME, MIN_OPSET, stamp_metadata
from endoedge.preprocess import real_looking_batch
from endoedge.spec import ModelSpec, PreprocessSpec

logger = logging.getLogger(__name__)

OUTPUT_NAME = "logits"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def classifier_spec(
    class_names: Sequence[str],
    input_size: tuple[int, int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    arch: str = "classifier",
    top_k: int = 5,
    activation: str = "softmax",
) -> ModelSpec:
    """The :class:`~endoedge.spec.ModelSpec` of a classifier: stretch resize, RGB, ``mean``/``std`` on 0..1."""
    if not class_names:
        raise ExportError("a classifier needs at least one class name")
    return ModelSpec(
        arch=arch,
        class_names=tuple(str(c) for c in class_names),
        preprocess=PreprocessSpec(
            input_size=(int(input_size[0]), int(input_size[1])), resize="stretch", color="RGB",
            mean=(float(mean[0]), float(mean[1]), float(mean[2])),
            std=(float(std[0]), float(std[1]), float(std[2])),
        ),
        decoder="classify",
        decoder_params={"activation": activation, "top_k": int(top_k)},
    )


def export_classifier(
    model: Any,
    output: str | Path,
    class_names: Sequence[str],
    input_size: tuple[int, int] = (224, 224),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    arch: str | None = None,
    top_k: int = 5,
    opset: int = 17,
) -> ModelSpec:
    """Export ``model`` (a ``torch.nn.Module`` returning ``N x len(class_names)`` logits) to ``output``.

    The batch axis is dynamic. The softmax is applied by endoedge after inference, so the graph
    ends at the logits (``endoedge.decoder_params.activation = "softmax"``).

    Args:
        model: e.g. ``torchvision.models.mobilenet_v3_small(num_classes=8)``; put in eval mode.
        output: destination ``.onnx`` (written atomically).
        class_names: the output classes, in logit order.
        input_size: network input ``(height, width)`` in pixels.
        mean, std: per-channel RGB normalization on the 0..1 scale.
        arch: name stored in the metadata (default: the module's class name).
        top_k: how many classes a result lists by default.

    Returns:
        The spec stored in the file.

    Raises:
        ExportError: tracing fails, the output does not have one score per class, or onnx.checker fails.
    """
    torch = require("torch", extra="torch", purpose="classifier export")
    onnx = require("onnx", extra="torch", purpose="classifier export")
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old; endoedge exports opset >= {MIN_OPSET}")
    spec = classifier_spec(class_names, input_size, mean, std, arch=arch or type(model).__name__, top_k=top_k)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    sample = torch.from_numpy(np.ascontiguousarray(real_looking_batch(spec, 2)))
    module = model.cpu().eval()
    with torch.no_grad():
        logits = module(sample)
    if tuple(logits.shape) != (2, len(spec.class_names)):
        raise ExportError(
            f"the classifier returns shape {tuple(logits.shape)} for 2 images; expected (2, {len(spec.class_names)}) "
            "(one logit per class name)"
        )
    tmp = out.with_name(out.name + ".tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (sample,), str(tmp), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}}, do_constant_folding=True,
            )
        onnx_model = onnx.load(str(tmp))
        stamp_metadata(onnx_model, spec, f"torch {torch.__version__} TorchScript exporter, opset {opset}",
                       f"{spec.arch} classifier over {', '.join(spec.class_names)}; see metadata_props")
        onnx.checker.check_model(onnx_model, full_check=True)
        onnx.save(onnx_model, str(tmp))
    except Exception as err:  # noqa: BLE001 - torch.onnx / checker raise many types
        tmp.unlink(missing_ok=True)
        raise ExportError(f"classifier export failed: {type(err).__name__}: {err}") from err
    tmp.replace(out)
    logger.info("exported classifier %s (%d classes, opset %d)", out, len(spec.class_names), opset)
    return spec
