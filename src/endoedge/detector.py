"""The public detector API: ``endoedge.load(path) -> Detector``; ``Detector.detect(image)``.

Example:
    >>> import endoedge, cv2                                   # doctest: +SKIP
    >>> with endoedge.load("polyp.onnx") as det:               # doctest: +SKIP
    ...     result = det.detect(cv2.imread("frame.png"))
    ...     print(result.boxes, result.labels)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from endoedge.data.imageio import to_bgr8
from endoedge.data.media import ENGINE_SUFFIXES
from endoedge.endoscopy import EndoscopyConfig, FrameCleaner, to_source
from endoedge.errors import ModelFormatError
from endoedge.postprocess import RawDetections, make_decoder
from endoedge.preprocess import Preprocessor
from endoedge.runtime import Backend, auto_backend, check_available
from endoedge.spec import ModelSpec, read_onnx_metadata

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detections:
    """Detections of one image.

    Attributes:
        boxes: ``N x 4`` float32, xyxy, in the input image's pixel coordinates.
        scores: ``N`` float32 in 0..1, descending.
        class_ids: ``N`` int64, 0-based over the model's class names (background excluded).
        labels: ``N`` class names.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    labels: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to_records(self) -> list[dict[str, Any]]:
        """JSON-ready list of ``{"box": [x1, y1, x2, y2], "score", "class_id", "label"}``."""
        boxes = np.round(self.boxes.astype(np.float64), 2).tolist()
        scores = np.round(self.scores.astype(np.float64), 5).tolist()
        return [
            {"box": b, "score": s, "class_id": c, "label": lab}
            for b, s, c, lab in zip(boxes, scores, self.class_ids.tolist(), self.labels, strict=True)
        ]


@dataclass
class StageTimes:
    """Wall-clock milliseconds (``time.perf_counter_ns``) of the last call, per stage.

    ``preprocess`` = input checks + resize + normalize into the batch buffer; ``infer`` = the
    backend call (synchronous; includes host<->device copies on GPU backends); ``postprocess`` =
    decode + NMS + mapping boxes to source pixels; ``clean`` = endoscopy frame cleaning (0 when
    the detector has none; its own stages are in ``Detector.cleaner.timings``).
    """

    preprocess: float = 0.0
    infer: float = 0.0
    postprocess: float = 0.0
    clean: float = 0.0

    @property
    def total(self) -> float:
        """Sum of the stages, ms."""
        return self.clean + self.preprocess + self.infer + self.postprocess


class Detector:
    """Runs a detection model on BGR images through one backend.

    Create with :func:`load`. Call :meth:`close` (or use ``with``) to release the backend.

    Args:
        spec: the model's description (pre-processing, decoder, classes, thresholds).
        backend: an inactive or active backend; the detector activates it.
        precise_resize: resize in float32 (torchvision's transform to float rounding) instead of
            uint8 (faster; see :class:`~endoedge.preprocess.Preprocessor`).
        endoscopy: endoscopy frame cleaning before pre-processing; ``None`` = the spec's stored
            config (none by default), ``EndoscopyConfig(enabled=False)`` = off.

    Attributes:
        cleaner: the :class:`~endoedge.endoscopy.FrameCleaner` applied to every frame, or
            ``None``. Boxes are returned in source pixels either way.
    """

    def __init__(
        self,
        spec: ModelSpec,
        backend: Backend,
        *,
        precise_resize: bool = False,
        endoscopy: EndoscopyConfig | None = None,
    ) -> None:
        self.spec = spec
        self.backend = backend
        if not backend.is_active:
            backend.activate()
        try:
            self.decoder = make_decoder(spec, backend.output_names)
        except BaseException:
            backend.deactivate()
            raise
        self.preprocessor = Preprocessor(spec.preprocess, precise=precise_resize)
        if endoscopy is None and spec.endoscopy is not None:
            endoscopy = EndoscopyConfig.from_dict(spec.endoscopy)
        self.cleaner = FrameCleaner(endoscopy) if endoscopy is not None and endoscopy.active else None
        self.timings = StageTimes()
        self._labels = np.asarray(spec.class_names, dtype=object)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The model's foreground class names."""
        return self.spec.class_names

    def detect(self, image_bgr: np.ndarray) -> Detections:
        """Detect objects in one ``H x W x 3`` uint8 BGR image (gray/BGRA/uint16 are converted).

        Returns:
            :class:`Detections` with boxes in ``image_bgr``'s pixel coordinates.

        Raises:
            InputError: the image cannot be used (see :func:`endoedge.data.imageio.to_bgr8`).
        """
        return self.detect_batch([image_bgr])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect objects in several images, run as one batch where the model allows it.

        A model with a fixed batch size runs in chunks of that size (a short last chunk is padded
        by repeating its last image). Stage times of the whole call are in :attr:`timings`.
        """
        if len(images) == 0:
            return []
        t0 = time.perf_counter_ns()
        frames = [to_bgr8(img, name=f"image {i}") for i, img in enumerate(images)]
        chunk = self.backend.max_batch or len(frames)
        results: list[Detections] = []
        pre, inf, post, clean = time.perf_counter_ns() - t0, 0, 0, 0  # conversion counts as pre-process
        for start in range(0, len(frames), chunk):
            part = frames[start : start + chunk]
            t1 = time.perf_counter_ns()
            offsets: list[tuple[int, int]] = []
            if self.cleaner is not None:
                cleaned = [self.cleaner(f, slot=j) for j, f in enumerate(part)]
                part = [view for view, _ in cleaned]
                offsets = [off for _, off in cleaned]
                t_clean = time.perf_counter_ns()
                clean += t_clean - t1
                t1 = t_clean
            batch, geoms = self.preprocessor(part + [part[-1]] * (chunk - len(part)))
            t2 = time.perf_counter_ns()
            outputs = self.backend.infer({self.backend.input_name: batch})
            t3 = time.perf_counter_ns()
            for i, geom in enumerate(geoms[: len(part)]):
                raw = self.decoder(
                    outputs, i, self.spec.score_threshold, self.spec.iou_threshold, self.spec.max_detections
                )
                boxes = geom.to_source(raw.boxes)
                results.append(self._finish(raw, to_source(boxes, offsets[i]) if offsets else boxes))
            t4 = time.perf_counter_ns()
            pre += t2 - t1
            inf += t3 - t2
            post += t4 - t3
        self.timings = StageTimes(pre / 1e6, inf / 1e6, post / 1e6, clean / 1e6)
        return results

    def _finish(self, raw: RawDetections, boxes: np.ndarray) -> Detections:
        return Detections(
            boxes=boxes,
            scores=raw.scores,
            class_ids=raw.class_ids,
            labels=self._labels[raw.class_ids].tolist(),
        )

    def close(self) -> None:
        """Release the backend (session, engine, GPU memory)."""
        self.backend.deactivate()

    def __enter__(self) -> Detector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Detector(arch={self.spec.arch!r}, classes={list(self.spec.class_names)}, "
            f"backend={self.backend.describe()!r})"
        )


def load(
    model_path: str | Path,
    backend: str = "auto",
    device: str = "auto",
    score_threshold: float | None = None,
    iou_threshold: float | None = None,
    max_detections: int | None = None,
    *,
    spec: ModelSpec | None = None,
    precise_resize: bool = False,
    endoscopy: EndoscopyConfig | None = None,
    **backend_options: Any,
) -> Detector:
    """Load a detector from an exported ONNX (endoedge or Ultralytics), a TensorRT engine or a checkpoint.

    Args:
        model_path: ``.onnx``, TensorRT ``.engine`` (with its ``.engine.json`` manifest, which
            holds the pre-processing spec) or endoedge checkpoint (``.pt``/``.pth``).
        backend: ``"auto"`` (by file type: ONNX -> onnxruntime, engine -> tensorrt, checkpoint
            -> torch) or a registered backend name (:func:`endoedge.runtime.backend_names`);
            ``backend="tensorrt"`` on an ``.onnx`` builds it once into the engine cache before
            the backend runs the engine (``precision=``, ``batch=``, ``cache_dir=``,
            ``rebuild_if_stale=`` go to that build step,
            :func:`endoedge.tensorrt.prepare.prepare_engine`; ``cuda_graph=`` and
            ``cuda_bindings=`` to :class:`~endoedge.runtime.tensorrt.TensorRTBackend`).
        device: ``"auto"``, ``"cpu"``, ``"cuda[:N]"`` (onnxruntime also ``"tensorrt[:N]"``).
        score_threshold: minimum score; ``None`` = the model's default.
        iou_threshold: per-class NMS IoU threshold; ``None`` = the model's default.
        max_detections: maximum detections per image; ``None`` = the model's default.
        spec: describe a model that carries no metadata (see
            :func:`endoedge.spec.spec_for_foreign_yolo`); overrides the file's metadata.
        precise_resize: resize in float32 instead of uint8 (slower; exact torchvision parity).
        endoscopy: endoscopy frame cleaning (:class:`~endoedge.endoscopy.EndoscopyConfig`) to
            apply before pre-processing; ``None`` = what the model stores (``endoedge.endoscopy``
            metadata; none unless exported with it), ``EndoscopyConfig(enabled=False)`` = off.
        **backend_options: passed to the backend (e.g. ``intra_op_threads`` for onnxruntime).

    Raises:
        EndoedgeError: a missing/corrupt model, unknown backend, unavailable backend, or
            thresholds out of range; the message says how to fix it.
    """
    path = Path(model_path)
    if not path.is_file():
        raise ModelFormatError(f"model '{path}' does not exist or is not a file")
    name = auto_backend(path) if backend == "auto" else backend
    engine = path.suffix.lower() in ENGINE_SUFFIXES
    if engine and spec is None:  # an engine's pre-processing travels in its manifest
        from endoedge.tensorrt.manifest import read_manifest

        spec = ModelSpec.from_metadata(read_manifest(path).spec, where=f"engine '{path}'")
    cls = check_available(name)  # unknown names raise with the list of known backends
    loaded = None
    if spec is None:
        if path.suffix.lower() == ".onnx":
            spec = ModelSpec.from_metadata(read_onnx_metadata(path), where=str(path))
        else:
            from endoedge.models.checkpoint import load_checkpoint

            loaded = load_checkpoint(path)
            spec = loaded.spec
    spec = spec.with_thresholds(score_threshold, iou_threshold, max_detections)  # validates
    if name == "torch" and "loaded" not in backend_options:
        from endoedge.models.checkpoint import load_for_torch

        backend_options["loaded"] = loaded if loaded is not None else load_for_torch(path)
    from endoedge.tensorrt.prepare import model_for_backend

    # backend="tensorrt": the build step (an .onnx built into the engine cache); the backend runs engines only
    runs, backend_options = model_for_backend(name, path, device, backend_options)
    runner = cls(runs, device=device, **backend_options)
    logger.debug("loading %s with %s", runs, name)
    return Detector(spec, runner, precise_resize=precise_resize, endoscopy=endoscopy)
