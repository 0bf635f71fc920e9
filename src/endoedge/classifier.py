"""Frame-level classifiers: ``endoedge.load_classifier(path) -> Classifier``; ``classify(image)``.

A classifier ONNX has one input (``N x 3 x H x W`` float32, normalized as its spec says) and one
``N x C`` output: logits (``decoder_params["activation"] == "softmax"``, the default: endoedge
applies the softmax) or probabilities (``"none"``). Its :class:`~endoedge.spec.ModelSpec` has
``decoder="classify"`` and travels in the same ``endoedge.*`` metadata as a detector's (see
:func:`endoedge.export.export_classifier`).

Example:
    >>> import endoedge, cv2                                          # doctest: +SKIP
    >>> with endoedge.load_classifier("kvasir_site.onnx") as clf:     # doctest: +SKIP
    ...     print(clf.classify(cv2.imread("frame.jpg")).label)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from endoedge.data.imageio import to_bgr8
from endoedge.errors import ModelFormatError
from endoedge.preprocess import Preprocessor
from endoedge.runtime import Backend, check_available
from endoedge.runtime.model import ModelRunner
from endoedge.spec import ModelSpec, read_onnx_metadata

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Classification:
    """The class probabilities of one image.

    Attributes:
        class_id: index of the most probable class.
        label: its name.
        score: its probability (0..1).
        probs: ``C`` float32 probabilities over ``class_names`` (sum 1 after a softmax).
        top_k: the ``k`` most probable ``(label, probability)`` pairs, descending.
    """

    class_id: int
    label: str
    score: float
    probs: np.ndarray
    top_k: list[tuple[str, float]]

    def to_record(self) -> dict[str, Any]:
        """JSON-ready ``{"label", "class_id", "score", "top_k": [{"label", "prob"}]}`` (5 decimals)."""
        return {
            "label": self.label,
            "class_id": self.class_id,
            "score": round(self.score, 5),
            "top_k": [{"label": lab, "prob": round(p, 5)} for lab, p in self.top_k],
        }


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of an ``N x C`` array, in float32 (max-subtracted, so no overflow)."""
    z = logits.astype(np.float32, copy=True)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


class Classifier(ModelRunner):
    """Runs a frame classifier on BGR images through one backend. Create with :func:`load_classifier`.

    Use ``with`` (or :meth:`close`) to release the backend; :attr:`preprocess_spec`,
    :attr:`input_size`, :attr:`max_batch` and :meth:`describe` come from
    :class:`~endoedge.runtime.model.ModelRunner`, as for :class:`~endoedge.detector.Detector`.

    Args:
        spec: the model's spec (``decoder == "classify"``).
        backend: an inactive or active backend; the classifier activates it.
        top_k: how many of the most probable classes a :class:`Classification` lists
            (default: ``decoder_params["top_k"]``, else 5; at most the number of classes).
    """

    def __init__(self, spec: ModelSpec, backend: Backend, *, top_k: int | None = None) -> None:
        if spec.decoder != "classify":
            raise ModelFormatError(
                f"'{spec.arch}' is a '{spec.decoder}' detector, not a classifier; load it with endoedge.load()"
            )
        self.spec = spec
        self.backend = backend
        if not backend.is_active:
            backend.activate()
        self.preprocessor = Preprocessor(spec.preprocess)
        self.activation = str(spec.decoder_params.get("activation", "softmax"))
        if self.activation not in ("softmax", "none"):
            backend.deactivate()
            raise ModelFormatError(f"classifier activation '{self.activation}' is unknown; expected softmax or none")
        k = int(top_k if top_k is not None else spec.decoder_params.get("top_k", 5))
        self.top_k = max(1, min(k, len(spec.class_names)))
        self._labels = list(spec.class_names)
        self.timings: dict[str, float] = {"preprocess": 0.0, "infer": 0.0, "postprocess": 0.0}

    @property
    def class_names(self) -> tuple[str, ...]:
        """The model's class names, in output order."""
        return self.spec.class_names

    def classify(self, image_bgr: np.ndarray) -> Classification:
        """Classify one ``H x W x 3`` uint8 BGR image (gray/BGRA/uint16 are converted)."""
        return self.classify_batch([image_bgr])[0]

    def classify_batch(self, images: Sequence[np.ndarray]) -> list[Classification]:
        """Classify several images as batches (chunks of the model's fixed batch size, if any)."""
        if len(images) == 0:
            return []
        t0 = time.perf_counter_ns()
        frames = [to_bgr8(img, name=f"image {i}") for i, img in enumerate(images)]
        batch, _ = self.preprocessor(frames)
        t1 = time.perf_counter_ns()
        out = self.classify_prepared(batch)
        self.timings["preprocess"] = (t1 - t0) / 1e6
        return out

    def classify_prepared(self, batch: np.ndarray) -> list[Classification]:
        """Classify an already pre-processed ``N x 3 x H x W`` float32 batch (see :attr:`preprocess_spec`).

        :attr:`timings` holds ``infer`` (:meth:`probabilities`) and ``postprocess`` (:meth:`finish`);
        ``preprocess`` is 0.
        """
        t1 = time.perf_counter_ns()
        probs = self.probabilities(batch)
        t2 = time.perf_counter_ns()
        out = self.finish(probs)
        t3 = time.perf_counter_ns()
        self.timings = {"preprocess": 0.0, "infer": (t2 - t1) / 1e6, "postprocess": (t3 - t2) / 1e6}
        return out

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Run a pre-processed ``N x 3 x H x W`` batch; return ``N x C`` float32 probabilities."""
        n = batch.shape[0]
        chunk = self.backend.max_batch or n
        parts = []
        for start in range(0, n, chunk):
            part = batch[start : start + chunk]
            if part.shape[0] < chunk:  # a fixed-batch model: pad with the last image
                part = np.concatenate([part, np.repeat(part[-1:], chunk - part.shape[0], axis=0)])
            outputs = self.backend.infer({self.backend.input_name: part})
            scores = next(iter(outputs.values()))
            if scores.ndim != 2 or scores.shape[1] != len(self._labels):
                raise ModelFormatError(
                    f"classifier output has shape {tuple(scores.shape)}; expected N x {len(self._labels)} "
                    "(one score per class name)"
                )
            parts.append(scores[: min(chunk, n - start)])
        raw = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return softmax(raw) if self.activation == "softmax" else raw.astype(np.float32, copy=False)

    def finish(self, probs: np.ndarray) -> list[Classification]:
        """Turn ``N x C`` probabilities into :class:`Classification` results (top-k vectorized)."""
        order = np.argsort(-probs, axis=1, kind="stable")[:, : self.top_k]
        top = np.take_along_axis(probs, order, axis=1).astype(np.float64)
        results = []
        for row, idx, p in zip(probs, order.tolist(), top.tolist(), strict=True):
            results.append(Classification(
                class_id=idx[0], label=self._labels[idx[0]], score=p[0], probs=row.copy(),
                top_k=[(self._labels[i], v) for i, v in zip(idx, p, strict=True)],
            ))
        return results

    def __repr__(self) -> str:
        return f"Classifier(arch={self.spec.arch!r}, classes={list(self.class_names)}, backend={self.describe()!r})"


def load_classifier(
    model_path: str | Path, backend: str = "onnxruntime", device: str = "auto", *,
    top_k: int | None = None, **backend_options: Any,
) -> Classifier:
    """Load a classification ONNX exported by :func:`endoedge.export.export_classifier`.

    Raises:
        ModelFormatError: the file is missing, not ONNX, or not a classifier.
        BackendUnavailableError: the backend cannot run here.
    """
    path = Path(model_path)
    spec = ModelSpec.from_metadata(read_onnx_metadata(path), where=str(path))
    if spec.decoder != "classify":
        raise ModelFormatError(f"'{path}' is a '{spec.decoder}' detector, not a classifier; load it with endoedge.load()")
    cls = check_available(backend)
    from endoedge.tensorrt.prepare import model_for_backend

    # backend="tensorrt": the build step (an .onnx built into the engine cache); the backend runs engines only
    runs, backend_options = model_for_backend(backend, path, device, backend_options)
    return Classifier(spec, cls(runs, device=device, **backend_options), top_k=top_k)


def is_classifier(model_path: str | Path) -> bool:
    """Whether an ONNX file's endoedge metadata says it is a classifier (``decoder == "classify"``)."""
    path = Path(model_path)
    if path.suffix.lower() != ".onnx":
        return False
    return read_onnx_metadata(path).get("endoedge.decoder") == "classify"
