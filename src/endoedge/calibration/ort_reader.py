"""The thin adapter from :class:`~endoedge.calibration.CalibrationData` to ONNX Runtime's
``CalibrationDataReader`` (imported here only, so ``endoedge.calibration`` stays light)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader


class OrtCalibrationReader(CalibrationDataReader):
    """Batches ``start .. stop - 1`` of a :class:`~endoedge.calibration.CalibrationData`.

    ``len()`` and ``set_range`` let ``quantize_static`` calibrate in chunks
    (``extra_options={"CalibStridedMinMax": k}``), which bounds the memory of the histogram
    calibrators (entropy, percentile) that otherwise keep every activation of every batch.
    """

    def __init__(self, data: Any, start: int = 0, stop: int | None = None) -> None:
        self.data = data
        self.set_range(start, len(data) if stop is None else stop)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Serve batches ``start_index .. end_index - 1`` from the next :meth:`get_next` on."""
        self.start, self.stop = start_index, min(end_index, len(self.data))
        self._it: Iterator[dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.data)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch of the range, or ``None`` at its end."""
        if self._it is None:
            self._it = self.data.batches(self.start, self.stop)
        return next(self._it, None)

    def rewind(self) -> None:
        """Start the range again."""
        self._it = None
