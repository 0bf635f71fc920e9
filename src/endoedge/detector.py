"""The public detector API: ``endoedge.load(path) -> Detector``; ``Detector.detect(image)``.

Example:
    >>> import endoedge, cv2                                   # doctest: +SKIP
    >>> with endoedge.load("polyp.onnx") as det:               # doctest: +SKIP
    ...     result = det.detect(cv2.imread("frame.png"))
    ...     print(result.boxes, result.labels)
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from endoedge.data.imageio import to_bgr8
from endoedge.data.media import ENGINE_SUFFIXES
from endoedge.endoscopy import EndoscopyConfig, FrameCleaner, to_source
from endoedge.errors import InputError, ModelFormatError
from endoedge.postprocess import RawDetections, make_decoder
from endoedge.postprocess.mask import frame_scores, mask_to_source, rle_encode
from endoedge.preprocess import Geometry, Preprocessor
from endoedge.runtime import Backend, auto_backend, check_available
from endoedge.runtime.model import ModelRunner
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
        mask: multi-task models: ``H x W`` float32 polyp probability in 0..1 over the input
            image's pixels (mapped with the same geometry as the boxes, zero outside an
            endoscopy crop); ``None`` for box-only models.
        frame_label: multi-task models: the frame class (``normal`` / ``unclear`` / ``polyp``);
            ``None`` for box-only models.
        frame_scores: multi-task models: ``{frame class: probability}`` (softmax); else ``None``.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    labels: list[str] = field(default_factory=list)
    mask: np.ndarray | None = None
    frame_label: str | None = None
    frame_scores: dict[str, float] | None = None

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

    def frame_record(self, mask_threshold: float = 0.5) -> dict[str, Any]:
        """JSON-ready frame-level outputs of a multi-task model (``{}`` for box-only models):
        ``frame_label``, ``frame_scores`` and ``mask`` (COCO compressed RLE of ``mask >
        mask_threshold``, ``{"size": [h, w], "counts": str}``, decodable by pycocotools)."""
        out: dict[str, Any] = {}
        if self.frame_label is not None:
            out["frame_label"] = self.frame_label
            out["frame_scores"] = {k: round(float(v), 5) for k, v in (self.frame_scores or {}).items()}
        if self.mask is not None:
            out["mask"] = rle_encode(self.mask > mask_threshold)
        return out


@dataclass
class StageTimes:
    """Wall-clock milliseconds (``time.perf_counter_ns``) of the last call, per stage.

    ``preprocess`` = input checks + resize + normalize into the batch buffer; ``infer`` = the
    backend call (synchronous; includes host<->device copies on GPU backends) and, for a
    fixed-batch model, padding its short last chunk; ``postprocess`` =
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


class Detector(ModelRunner):
    """Runs a detection model on BGR images through one backend.

    Create with :func:`load`. Call :meth:`close` (or use ``with``) to release the backend.
    :attr:`preprocess_spec`, :attr:`input_size`, :attr:`max_batch` and :meth:`describe` come
    from :class:`~endoedge.runtime.model.ModelRunner`.

    Args:
        spec: the model's description (pre-processing, decoder, classes, thresholds).
        backend: an inactive or active backend; the detector activates it.
        precise_resize: resize in float32 (torchvision's transform to float rounding) instead of
            uint8 (faster; see :class:`~endoedge.preprocess.Preprocessor`).
        endoscopy: endoscopy frame cleaning before pre-processing; ``None`` = the spec's stored
            config (none by default), ``EndoscopyConfig(enabled=False)`` = off.

    Attributes:
        spec: the model's :class:`~endoedge.spec.ModelSpec`; read it freely, and use
            :meth:`with_thresholds` rather than assigning it to change thresholds.
        backend: the :class:`~endoedge.runtime.Backend` (kept for compatibility; prefer
            :meth:`describe` and :attr:`max_batch`).
        cleaner: the :class:`~endoedge.endoscopy.FrameCleaner` applied to every frame, or
            ``None``. Boxes are returned in source pixels either way.
        timings: :class:`StageTimes` of the last call.
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
        params = spec.decoder_params
        self._mask_output = params.get("mask_output") if params.get("mask_output") in backend.output_names else None
        self._frame_output = params.get("frame_output") if params.get("frame_output") in backend.output_names else None
        self._frame_classes = tuple(str(c) for c in params.get("frame_classes", ()))
        self._pad = np.empty((0, 3, *spec.preprocess.input_size), dtype=np.float32)

    # -- read-only facts ----------------------------------------------------------------------
    @property
    def class_names(self) -> tuple[str, ...]:
        """The model's foreground class names."""
        return self.spec.class_names

    # -- detection ----------------------------------------------------------------------------
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
        chunk = self.max_batch or len(frames)
        results: list[Detections] = []
        pre, inf, post, clean = time.perf_counter_ns() - t0, 0, 0, 0  # conversion counts as pre-process
        for start in range(0, len(frames), chunk):
            part = frames[start : start + chunk]
            t1 = time.perf_counter_ns()
            offsets: list[tuple[int, int]] | None = None
            if self.cleaner is not None:
                cleaned = [self.cleaner(f, slot=j) for j, f in enumerate(part)]
                part = [view for view, _ in cleaned]
                offsets = [off for _, off in cleaned]
                t_clean = time.perf_counter_ns()
                clean += t_clean - t1
                t1 = t_clean
            batch, geoms = self.preprocessor(part)
            pre += time.perf_counter_ns() - t1
            i_ns, p_ns = self._infer_decode(batch, geoms, offsets, results, [f.shape[:2] for f in frames[start: start + chunk]])
            inf += i_ns
            post += p_ns
        self.timings = StageTimes(pre / 1e6, inf / 1e6, post / 1e6, clean / 1e6)
        return results

    def detect_prepared(self, batch: np.ndarray, geoms: Sequence[Geometry]) -> list[Detections]:
        """Detect objects in an already pre-processed batch (no endoscopy cleaning is applied).

        Args:
            batch: ``N x 3 x H x W`` float32, normalized as :attr:`preprocess_spec` says (what
                :class:`~endoedge.preprocess.Preprocessor` makes for this model); not modified.
            geoms: ``N`` geometries; ``geoms[i]`` maps network-input pixels of row ``i`` back to
                its source image (from the same :class:`~endoedge.preprocess.Preprocessor` call).

        Returns:
            one :class:`Detections` per row, boxes in source pixels (xyxy). A fixed-batch model
            runs in chunks of :attr:`max_batch`, the short last chunk padded by repeating its last
            row. :attr:`timings` holds ``infer`` (padding + backend calls) and ``postprocess``
            (decode + NMS + mapping); ``preprocess`` and ``clean`` are 0.

        Raises:
            InputError: the batch is not ``N x 3 x H x W`` float32 for this model, or ``geoms``
                has another length.
        """
        h, w = self.input_size
        if batch.ndim != 4 or batch.shape[1:] != (3, h, w) or batch.dtype != np.float32:
            raise InputError(
                f"prepared batch is {batch.dtype} {tuple(batch.shape)}; expected float32 N x 3 x {h} x {w} "
                "(pre-process it with this model's Preprocessor)"
            )
        if len(geoms) != batch.shape[0]:
            raise InputError(f"prepared batch has {batch.shape[0]} rows but {len(geoms)} geometries; give one per row")
        if len(geoms) == 0:
            return []
        results: list[Detections] = []
        inf, post = self._infer_decode(batch, geoms, None, results)
        self.timings = StageTimes(0.0, inf / 1e6, post / 1e6, 0.0)
        return results

    def _infer_decode(
        self,
        batch: np.ndarray,
        geoms: Sequence[Geometry],
        offsets: Sequence[tuple[int, int]] | None,
        out: list[Detections],
        frame_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> tuple[int, int]:
        """Run ``batch`` in chunks of :attr:`max_batch`, decode, map boxes; append to ``out``.

        ``offsets[i]`` (endoscopy crops) shifts row ``i``'s boxes after ``geoms[i]``; a mask is
        pasted at that offset into a frame of ``frame_sizes[i]`` (default: the geometry's source).
        Returns ``(infer_ns, postprocess_ns)``: padding + backend calls, decode + mapping.
        """
        spec, backend = self.spec, self.backend
        n = batch.shape[0]
        chunk = backend.max_batch or n
        inf = post = 0
        for start in range(0, n, chunk):
            t0 = time.perf_counter_ns()
            part = self._padded(batch[start : start + chunk], chunk)
            outputs = backend.infer({backend.input_name: part})
            t1 = time.perf_counter_ns()
            for i in range(min(chunk, n - start)):
                raw = self.decoder(outputs, i, spec.score_threshold, spec.iou_threshold, spec.max_detections)
                geom = geoms[start + i]
                boxes = geom.to_source(raw.boxes)
                det = self._finish(raw, to_source(boxes, offsets[start + i]) if offsets else boxes)
                if self._mask_output is not None or self._frame_output is not None:
                    offset = offsets[start + i] if offsets else (0, 0)
                    size = frame_sizes[start + i] if frame_sizes else geom.source_size
                    det = self._with_frame_outputs(det, outputs, i, geom, offset, size)
                out.append(det)
            t2 = time.perf_counter_ns()
            inf += t1 - t0
            post += t2 - t1
        return inf, post

    def _with_frame_outputs(
        self,
        det: Detections,
        outputs: Mapping[str, np.ndarray],
        row: int,
        geom: Geometry,
        offset: tuple[int, int],
        frame_size: tuple[int, int],
    ) -> Detections:
        """``det`` plus the mask (in source pixels) and the frame label / scores of ``row``."""
        mask = label = scores = None
        if self._mask_output is not None:
            prob = outputs[self._mask_output][row].reshape(outputs[self._mask_output].shape[-2:])
            mask = mask_to_source(prob, self.spec.preprocess.input_size, geom.scale, geom.pad, geom.source_size,
                                  offset=offset, frame_size=(int(frame_size[0]), int(frame_size[1])))
        if self._frame_output is not None:
            probs = frame_scores(outputs[self._frame_output][row])
            names = self._frame_classes or tuple(str(k) for k in range(len(probs)))
            label = names[int(np.argmax(probs))]
            scores = {n: float(p) for n, p in zip(names, probs, strict=False)}
        return replace(det, mask=mask, frame_label=label, frame_scores=scores)

    def _padded(self, part: np.ndarray, chunk: int) -> np.ndarray:
        """``part`` itself when it has ``chunk`` rows, else a reused buffer with its last row repeated."""
        n = part.shape[0]
        if n == chunk:
            return part
        if self._pad.shape[0] < chunk:
            self._pad = np.empty((chunk, *part.shape[1:]), dtype=np.float32)
        padded = self._pad[:chunk]
        padded[:n] = part
        padded[n:] = part[n - 1]
        return padded

    def _finish(self, raw: RawDetections, boxes: np.ndarray) -> Detections:
        return Detections(
            boxes=boxes,
            scores=raw.scores,
            class_ids=raw.class_ids,
            labels=self._labels[raw.class_ids].tolist(),
        )

    # -- views and lifetime ----------------------------------------------------------------------
    def with_thresholds(
        self,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        max_detections: int | None = None,
    ) -> Detector:
        """A view of this detector with other thresholds (``None`` keeps the current value).

        The view shares this detector's active backend, decoder, pre-processor (and its reused
        buffers) and endoscopy cleaner (and its per-slot state); only the spec's thresholds and
        :attr:`timings` are its own. Use both from one thread. Closing either one
        (:meth:`~endoedge.runtime.model.ModelRunner.close`) releases the shared backend, after
        which neither can detect: close the original once (e.g. ``with endoedge.load(...) as
        det``) and let views go.

        Raises:
            InputError: a threshold out of range (the same message as :func:`load`).
        """
        spec = self.spec.with_thresholds(score_threshold, iou_threshold, max_detections)  # validates
        view = copy.copy(self)
        view.spec = spec
        view.timings = StageTimes()
        return view

    def __repr__(self) -> str:
        return (
            f"Detector(arch={self.spec.arch!r}, classes={list(self.spec.class_names)}, "
            f"backend={self.describe()!r})"
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
