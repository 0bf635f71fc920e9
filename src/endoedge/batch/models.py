"""The models of a batch job (detectors and classifiers) and how one batch becomes records.

``--model`` is ``PATH`` or ``NAME=PATH`` (default name: the file stem). With one model, its
result keys are at the top level of a record; with several, each model's result sits under its
name and the top-level ``score`` / ``flagged`` combine the models (max score over detectors,
flagged if any model flags).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import cv2
import numpy as np

from endoedge.batch.prepare import Prepared
from endoedge.data.hashing import file_sha256
from endoedge.errors import EndoedgeError, InputError, ModelFormatError
from endoedge.runtime.model import ModelRunner
from endoedge.spec import PreprocessSpec

if TYPE_CHECKING:
    from endoedge.classifier import Classifier
    from endoedge.detector import Detections, Detector
    from endoedge.spec.endoscopy import EndoscopyConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    """A ``--model`` argument: ``name`` (record key) and ``path``."""

    name: str
    path: Path

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """``PATH`` or ``NAME=PATH``."""
        name, sep, path = text.partition("=")
        if not sep or "/" in name or not name:
            name, path = Path(text).stem, text
        return cls(name, Path(path))


@dataclass
class StageTotals:
    """Summed milliseconds per stage over a job (decode/preprocess summed over workers)."""

    decode: float = 0.0
    preprocess: float = 0.0
    infer: float = 0.0
    postprocess: float = 0.0
    write: float = 0.0

    def add(self, other: StageTotals) -> None:
        """Add ``other``'s times to these."""
        for k, v in other.__dict__.items():
            setattr(self, k, getattr(self, k) + v)

    def as_dict(self) -> dict[str, float]:
        """``{stage: ms}``."""
        return {k: round(v, 3) for k, v in self.__dict__.items()}


R_co = TypeVar("R_co", bound=ModelRunner, covariant=True)  # a Detector or a Classifier


class BatchModel(Generic[R_co]):
    """One loaded model of the job; :meth:`run` turns a batch into per-image result parts."""

    kind = "base"

    def __init__(self, ref: ModelRef, runner: R_co, flag_threshold: float, flag_labels: frozenset[str]) -> None:
        self.ref = ref
        self.name = ref.name
        self.runner = runner
        self.spec = runner.spec
        self.flag_threshold = flag_threshold
        self.flag_labels = flag_labels
        self.slot = 0  # index of this model's tensor in Prepared.tensors (set by the job)
        self.needs_image = False
        self._batch = np.empty((0, 3, *runner.preprocess_spec.input_size), dtype=np.float32)

    @property
    def preprocess_spec(self) -> PreprocessSpec:
        """The model's input pre-processing."""
        return self.runner.preprocess_spec

    def _stack(self, items: Sequence[Prepared]) -> np.ndarray:
        """This model's tensors of ``items`` as one ``N x 3 x H x W`` batch (a reused buffer)."""
        n = len(items)
        if self._batch.shape[0] < n:
            self._batch = np.empty((n, *self._batch.shape[1:]), dtype=np.float32)
        out = self._batch[:n]
        for i, p in enumerate(items):
            out[i] = p.tensors[self.slot]
        return out

    def settings(self) -> dict[str, Any]:
        """What must not change between a run and its resume (file hash, thresholds)."""
        return {"name": self.name, "kind": self.kind, "file": str(self.ref.path),
                "sha256": file_sha256(self.ref.path), "arch": self.spec.arch,
                "class_names": list(self.spec.class_names)}

    def run(self, items: Sequence[Prepared], times: StageTotals) -> list[dict[str, Any]]:
        """Result parts of ``items`` (all decoded), one dict per item."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the backend."""
        self.runner.close()


class DetectorModel(BatchModel["Detector"]):
    """A detector: ``{"detections": [...], "score": max score or 0, "flagged": score >= threshold}``."""

    kind = "detect"

    def __init__(self, ref: ModelRef, runner: Detector, flag_threshold: float, flag_labels: frozenset[str]) -> None:
        super().__init__(ref, runner, flag_threshold, flag_labels)
        self.needs_image = runner.cleaner is not None

    def settings(self) -> dict[str, Any]:
        """Adds the detection thresholds and the flag threshold."""
        s = self.spec
        return {**super().settings(), "score_threshold": s.score_threshold, "iou_threshold": s.iou_threshold,
                "max_detections": s.max_detections, "flag_threshold": self.flag_threshold,
                "endoscopy": None if self.runner.cleaner is None else self.runner.cleaner.config.to_dict()}

    def run(self, items: Sequence[Prepared], times: StageTotals) -> list[dict[str, Any]]:
        """Batched inference; boxes mapped to source pixels (xyxy).

        Stage times: stacking the tensors + padding + the backend calls count as ``infer``;
        decoding, box mapping and building the result parts as ``postprocess``.
        """
        det = self.runner
        if self.needs_image:  # endoscopy cleaning is stateful: let the Detector run it
            results = det.detect_batch([_image(p) for p in items])
            times.preprocess += det.timings.preprocess + det.timings.clean
        else:
            t0 = time.perf_counter_ns()
            batch = self._stack(items)
            times.infer += (time.perf_counter_ns() - t0) / 1e6
            results = det.detect_prepared(batch, [p.geoms[self.slot] for p in items])
        times.infer += det.timings.infer
        times.postprocess += det.timings.postprocess
        t1 = time.perf_counter_ns()
        done = [self._part(r, p) for r, p in zip(results, items, strict=True)]
        times.postprocess += (time.perf_counter_ns() - t1) / 1e6
        return done

    def _part(self, d: Detections, p: Prepared) -> dict[str, Any]:
        if p.scale != 1.0 and len(d):
            boxes = d.boxes * np.float32(p.scale)
            np.clip(boxes[:, 0::2], 0, p.width, out=boxes[:, 0::2])
            np.clip(boxes[:, 1::2], 0, p.height, out=boxes[:, 1::2])
            d = replace(d, boxes=boxes)  # keeps a multi-task model's mask and frame label
        if d.mask is not None and d.mask.shape != (p.height, p.width) and p.width and p.height:
            d = replace(d, mask=cv2.resize(d.mask, (p.width, p.height), interpolation=cv2.INTER_LINEAR))
        score = round(float(d.scores.max()), 5) if len(d) else 0.0
        return {"detections": d.to_records(), **d.frame_record(), "score": score, "flagged": score >= self.flag_threshold}


def _image(p: Prepared) -> np.ndarray:
    """The decoded frame the job kept for a model that needs it (``ModelSet.needs_image``)."""
    if p.image is None:
        raise EndoedgeError(f"'{p.item.path}': the decoded frame was not kept; the job must keep images for endoscopy")
    return p.image


class ClassifierModel(BatchModel["Classifier"]):
    """A frame classifier: ``{"label", "class_id", "score", "top_k", "flagged": label in --flag-label}``."""

    kind = "classify"
    runner: Classifier

    def settings(self) -> dict[str, Any]:
        """Adds top-k and the labels that flag a frame."""
        return {**super().settings(), "top_k": self.runner.top_k, "flag_labels": sorted(self.flag_labels)}

    def run(self, items: Sequence[Prepared], times: StageTotals) -> list[dict[str, Any]]:
        """Batched inference + softmax (``infer``) + top-k and records (``postprocess``)."""
        clf = self.runner
        t0 = time.perf_counter_ns()
        batch = self._stack(items)
        times.infer += (time.perf_counter_ns() - t0) / 1e6
        results = clf.classify_prepared(batch)
        times.infer += clf.timings["infer"]
        times.postprocess += clf.timings["postprocess"]
        t1 = time.perf_counter_ns()
        parts = []
        for c in results:
            rec = c.to_record()
            rec["flagged"] = c.label in self.flag_labels
            parts.append(rec)
        times.postprocess += (time.perf_counter_ns() - t1) / 1e6
        return parts


@dataclass
class ModelSet:
    """The job's models and the distinct pre-processing specs their inputs need."""

    models: list[BatchModel[ModelRunner]]
    specs: list[PreprocessSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        for m in self.models:
            if m.preprocess_spec not in self.specs:
                self.specs.append(m.preprocess_spec)
            m.slot = self.specs.index(m.preprocess_spec)

    @property
    def needs_image(self) -> bool:
        """Whether a model needs the decoded frame itself (not only its tensor)."""
        return any(m.needs_image for m in self.models)

    def settings(self) -> list[dict[str, Any]]:
        """Each model's :meth:`BatchModel.settings`."""
        return [m.settings() for m in self.models]

    def records(self, items: Sequence[Prepared], times: StageTotals) -> list[dict[str, Any]]:
        """One record per item: ok items run through every model, failed ones get an error record."""
        ok = [p for p in items if p.error is None]
        parts = {m.name: m.run(ok, times) for m in self.models} if ok else {}
        t0 = time.perf_counter_ns()
        out, j = [], 0
        for p in items:
            rec: dict[str, Any] = {"path": p.item.path}
            if p.item.frame is not None:
                rec["frame"] = p.item.frame
            if p.error is not None:
                rec["error"] = p.error
                out.append(rec)
                continue
            rec["width"], rec["height"] = p.width, p.height
            if len(self.models) == 1:
                rec.update(parts[self.models[0].name][j])
            else:
                scores = []
                for m in self.models:
                    part = parts[m.name][j]
                    rec[m.name] = part
                    if m.kind == "detect":
                        scores.append(part["score"])
                rec["score"] = max(scores) if scores else None
                rec["flagged"] = any(rec[m.name]["flagged"] for m in self.models)
            out.append(rec)
            j += 1
        times.postprocess += (time.perf_counter_ns() - t0) / 1e6
        return out

    def close(self) -> None:
        """Release every backend."""
        for m in self.models:
            m.close()


def load_models(
    refs: Sequence[ModelRef], *, device: str = "auto", flag_threshold: float = 0.5,
    flag_labels: Sequence[str] = (), score_threshold: float | None = None, iou_threshold: float | None = None,
    max_detections: int | None = None, intra_op_threads: int = 0, spin: bool = False,
    endoscopy: EndoscopyConfig | None = None,
) -> ModelSet:
    """Load every model: classification ONNX -> :class:`ClassifierModel`, else a detector.

    ONNX models run on ONNX Runtime with ``intra_op_threads`` (0 = one per core) and, by
    default, without spin-waiting (``spin=False``): spinning intra-op threads take the cores the
    decode workers need (measured in ``benchmarks/RESULTS.md``).

    Raises:
        InputError: duplicate model names, or a bad threshold.
        ModelFormatError: a model cannot be loaded.
    """
    from endoedge.classifier import is_classifier, load_classifier
    from endoedge.detector import load

    names = [r.name for r in refs]
    if len(set(names)) != len(names):
        raise InputError(f"model names {names} are not unique; name them: --model NAME=PATH")
    if not 0.0 <= flag_threshold <= 1.0:
        raise InputError(f"--flag-threshold must be in [0, 1], got {flag_threshold}")
    labels = frozenset(flag_labels)
    models: list[BatchModel[ModelRunner]] = []
    try:
        for ref in refs:
            if not ref.path.is_file():
                raise ModelFormatError(f"model '{ref.path}' does not exist or is not a file")
            is_onnx = ref.path.suffix.lower() == ".onnx"
            opts: dict[str, Any] = {"intra_op_threads": intra_op_threads, "spin": spin} if is_onnx else {}
            if is_classifier(ref.path):
                models.append(ClassifierModel(ref, load_classifier(ref.path, device=device, **opts), flag_threshold, labels))
            else:
                det = load(ref.path, device=device, score_threshold=score_threshold, iou_threshold=iou_threshold,
                           max_detections=max_detections, endoscopy=endoscopy, **opts)
                models.append(DetectorModel(ref, det, flag_threshold, labels))
    except BaseException:
        for m in models:
            m.close()
        raise
    return ModelSet(models)
