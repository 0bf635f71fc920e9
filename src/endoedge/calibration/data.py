"""``CalibrationData``: the chosen images, pre-processed exactly as the runtime does, in batches.

The same object feeds ONNX Runtime's ``quantize_static`` (:meth:`CalibrationData.as_ort_reader`,
or the object itself: it has ``get_next``) and TensorRT's implicit calibrator (iterate it): the
protocol is backend-neutral, an iterable of ``{input_name: N x 3 x H x W float32}``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from endoedge.calibration.sources import Item, discover, likely_causes, select
from endoedge.errors import CalibrationError, EndoedgeError
from endoedge.spec import ModelSpec

logger = logging.getLogger(__name__)

HASH_VERSION = b"endoedge-calibration-v1"


class CalibrationData:
    """Calibration batches of a model's pre-processed input (see :func:`load_calibration_data`).

    Attributes:
        input_name: the model input the batches feed.
        batch_size: images per batch.
        num_images: distinct images used (unreadable ones are skipped and listed in ``skipped``).
        content_hash: sha256 (hex) of the exact float32 tensors, in iteration order, with the
            input name and the tensor shape: equal hashes mean equal calibration inputs.
        batch_shape: ``(batch_size, 3, H, W)``.
        items: the images used (``Item.describe()`` gives ``path`` or ``path#frame``).
        skipped: ``(item, reason)`` of items that could not be read.
        source: the source as given.

    Batches: ``len(data)`` = ``ceil(num_images / batch_size)``. The last batch is **padded** to
    ``batch_size`` with the first images of the selection (wrapping around), so every batch has
    ``batch_shape`` and no chosen image is dropped; ``num_images`` and the hash count each image
    once. Batches are fresh C-contiguous float32 arrays (safe to keep or modify).
    """

    def __init__(self, spec: ModelSpec, items: list[Item], *, source: str, batch_size: int = 1,
                 input_name: str = "images", max_cache_mb: float = 1024.0) -> None:
        if batch_size < 1:
            raise CalibrationError(f"calibration batch size must be >= 1, got {batch_size}")
        self.spec = spec
        self.source = source
        self.input_name = input_name
        self.batch_size = batch_size
        h, w = spec.preprocess.input_size
        self._image_shape = (3, int(h), int(w))
        self.skipped: list[tuple[Item, str]] = []
        per_image = 3 * h * w * 4
        keep = len(items) * per_image <= max_cache_mb * 2**20
        self._cache: np.ndarray | None = None
        digest = hashlib.sha256(HASH_VERSION + input_name.encode() + repr(self._image_shape).encode())
        good: list[Item] = []
        tensors: list[np.ndarray] = []
        for item, tensor in self._decode(items, record=True):
            digest.update(tensor.tobytes())
            good.append(item)
            if keep:
                tensors.append(tensor.copy())
        if not good:
            reasons = "; ".join(f"{it.describe()}: {why}" for it, why in self.skipped[:2])
            raise CalibrationError(f"none of the {len(items)} calibration images of '{source}' could be "
                                   f"read ({reasons}); {likely_causes(source)}")
        if self.skipped:
            logger.warning("calibration: %d of %d images could not be read and were skipped (first: %s)",
                           len(self.skipped), len(items), self.skipped[0][1])
        self.items = good
        self.num_images = len(good)
        self.content_hash = digest.hexdigest()
        if keep:
            self._cache = np.stack(tensors)
        self._reader: Iterator[dict[str, np.ndarray]] | None = None

    # -- the public protocol ----------------------------------------------------------------
    @property
    def batch_shape(self) -> tuple[int, int, int, int]:
        """``(batch_size, 3, H, W)`` of every batch."""
        return (self.batch_size, *self._image_shape)

    def __len__(self) -> int:
        """Number of batches."""
        return -(-self.num_images // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        """Batches ``{input_name: batch_shape float32}`` in a fixed order (see the class doc)."""
        return self.batches()

    def batches(self, start: int = 0, stop: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Batches ``start`` .. ``stop - 1`` (batch indices).

        Without the in-memory cache the images are decoded once per call, in order (a video is
        read forward, not re-opened per batch).
        """
        stop = len(self) if stop is None else min(stop, len(self))
        bs = self.batch_size
        if start >= stop:
            return
        if self._cache is not None:
            for b in range(start, stop):
                idx = [(b * bs + j) % self.num_images for j in range(bs)]
                out = np.empty((bs, *self._image_shape), dtype=np.float32)
                np.take(self._cache, idx, axis=0, out=out)
                yield {self.input_name: out}
            return
        first, last = start * bs, min(stop * bs, self.num_images)
        out = np.empty((bs, *self._image_shape), dtype=np.float32)
        j = 0
        for _, tensor in self._decode(self.items[first:last]):
            out[j] = tensor
            j += 1
            if j == bs:
                yield {self.input_name: out}
                out, j = np.empty_like(out), 0
        if j:  # the last batch: pad with the first images of the selection
            pad = [self.items[k % self.num_images] for k in range(bs - j)]
            for k, (_, tensor) in enumerate(self._decode(pad)):
                out[j + k] = tensor
            yield {self.input_name: out}

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary (source, counts, hash, shape) for reports and metadata."""
        return {"source": self.source, "num_images": self.num_images, "num_skipped": len(self.skipped),
                "batch_shape": list(self.batch_shape), "input_name": self.input_name,
                "sha256": self.content_hash}

    # -- ONNX Runtime CalibrationDataReader duck typing -------------------------------------
    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch, or ``None`` at the end (then starts over): ORT's reader protocol."""
        if self._reader is None:
            self._reader = self.batches()
        batch = next(self._reader, None)
        if batch is None:
            self._reader = None
        return batch

    def rewind(self) -> None:
        """Start :meth:`get_next` from the first batch again."""
        self._reader = None

    def as_ort_reader(self, start: int = 0, stop: int | None = None) -> Any:
        """An ``onnxruntime.quantization.CalibrationDataReader`` over batches ``start..stop-1``
        (supports ``len`` and ``set_range``, so ORT can calibrate in chunks)."""
        from endoedge.calibration.ort_reader import OrtCalibrationReader

        return OrtCalibrationReader(self, start, stop)

    # -- decoding -----------------------------------------------------------------------------
    def _decode(self, items: list[Item], *, record: bool = False) -> Iterator[tuple[Item, np.ndarray]]:
        """Read, clean (the model's endoscopy cleaning) and pre-process each item, in order.

        Yields a view of a reused buffer. Videos are read forward once per call (frames sorted).
        """
        from endoedge.preprocess import Preprocessor

        pre = Preprocessor(self.spec.preprocess)
        cleaner = _cleaner(self.spec)
        for item, frame in read_frames(items, self.skipped if record else None):
            if cleaner is not None:
                cleaner.reset()  # independent images: find each one's field of view
                frame, _ = cleaner(frame)
            batch, _ = pre([frame])
            yield item, batch[0]


def _cleaner(spec: ModelSpec) -> Any:
    """The spec's endoscopy :class:`~endoedge.endoscopy.FrameCleaner`, as the Detector builds it."""
    if spec.endoscopy is None:
        return None
    from endoedge.endoscopy import EndoscopyConfig, FrameCleaner

    config = EndoscopyConfig.from_dict(spec.endoscopy)
    return FrameCleaner(config) if config.active else None


def read_frames(items: list[Item], skipped: list[tuple[Item, str]] | None) -> Iterator[tuple[Item, np.ndarray]]:
    """``(item, uint8 BGR frame)`` for each readable item, in order (a video is read forward
    once); failures go to ``skipped``."""
    import cv2

    from endoedge.data.imageio import read_image, to_bgr8

    cap: Any = None
    cap_path: Path | None = None
    pos = 0
    try:
        for item in items:
            try:
                if item.frame < 0:
                    frame = read_image(item.path)
                else:
                    if cap_path != item.path:
                        if cap is not None:
                            cap.release()
                        cap, cap_path, pos = cv2.VideoCapture(str(item.path)), item.path, 0
                    if item.frame < pos:  # only when items are out of order
                        cap.set(cv2.CAP_PROP_POS_FRAMES, item.frame)
                        pos = item.frame
                    while pos < item.frame and cap.grab():
                        pos += 1
                    ok, raw = cap.read()
                    pos += 1
                    if not ok or raw is None:
                        raise CalibrationError(f"frame {item.frame} of video '{item.path}' cannot be decoded")
                    frame = to_bgr8(raw, name=item.describe())
            except EndoedgeError as err:
                if skipped is not None:
                    skipped.append((item, str(err)))
                continue
            yield item, frame
    finally:
        if cap is not None:
            cap.release()


def load_calibration_data(
    source: str | Path,
    spec: ModelSpec,
    *,
    num_images: int = 500,
    batch_size: int = 1,
    input_name: str = "images",
    seed: int = 0,
    split: str | Path | None = None,
    max_cache_mb: float = 1024.0,
    exclude: Collection[Item] = (),
) -> CalibrationData:
    """Choose, read and pre-process calibration images for a model.

    Args:
        source: image folder (recursive), image or video file, glob pattern, or labelled
            dataset (Kvasir-SEG folder, COCO ``.json``, YOLO folder); see
            :func:`endoedge.calibration.sources.discover`.
        spec: the model's spec: its pre-processing (:class:`~endoedge.preprocess.Preprocessor`,
            uint8 resize as the runtime's default) and endoscopy frame cleaning are applied.
        num_images: images to use (default 500), spread over folders / videos and evenly
            within each (:func:`~endoedge.calibration.sources.select`); all when fewer exist.
        batch_size: images per batch.
        input_name: the model input name the batches are keyed by.
        seed: seed of the selection offsets (same source + seed = same images).
        split: optional file of image stems (one a line) to keep, e.g. a train split.
        max_cache_mb: keep the pre-processed tensors in memory up to this size (500 images at
            320x320 take 600 MB); larger sets are decoded again on every pass.
        exclude: items of the source never to use (e.g. frames held out for the agreement gate).

    Raises:
        CalibrationError: the source is missing or empty, or no chosen image can be read.
    """
    items = discover(source, split=split)
    if exclude:
        held = set(exclude)
        items = [it for it in items if it not in held]
        if not items:
            raise CalibrationError(f"calibration source '{source}' has no image left after the "
                                   f"{len(held)} held-out ones; give more images")
    chosen = select(items, num_images, seed)
    logger.info("calibration: %d of %d images from %s", len(chosen), len(items), source)
    return CalibrationData(spec, chosen, source=str(source), batch_size=batch_size,
                           input_name=input_name, max_cache_mb=max_cache_mb)
