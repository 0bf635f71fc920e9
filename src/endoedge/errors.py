"""The exception types endoedge raises for user and environment errors.

Everything that derives from :class:`EndoedgeError` is a problem the user can fix (a bad path, a
model without metadata, a backend that is not installed). The CLI prints such errors as one line
and exits 1. Any other exception is a bug and propagates with its traceback.
"""

from __future__ import annotations


class EndoedgeError(Exception):
    """Base class of every user-facing endoedge error.

    Its text is always one line: line breaks (from a value quoted out of a damaged file, or a
    library's multi-line message) are folded into spaces, so the CLI's error stays one line.
    """

    def __str__(self) -> str:
        text = super().__str__()
        if "\n" in text or "\r" in text:
            return " ".join(text.split())
        return text


class ModelFormatError(EndoedgeError):
    """A checkpoint or ONNX file is missing, corrupt, or lacks the metadata needed to run it."""


class UnknownNameError(EndoedgeError):
    """A registry lookup (architecture, backend) used a name that is not registered."""


class BackendUnavailableError(EndoedgeError):
    """A backend is registered but cannot be used here (missing package, no GPU)."""


class InputError(EndoedgeError):
    """An image or tensor handed to a detector cannot be used (wrong dtype, shape, empty)."""


class ExportError(EndoedgeError):
    """Export to ONNX failed or the exported file does not match the source model."""


class ParityError(ExportError):
    """The exported ONNX disagrees with PyTorch beyond the tolerance."""


class EngineBuildError(ExportError):
    """A TensorRT engine cannot be built: impossible options for this TensorRT line, parser or builder failure."""


class StaleEngineError(ModelFormatError):
    """A TensorRT engine was built for another TensorRT, GPU, JetPack or ONNX than the one here."""


class CalibrationError(InputError):
    """A calibration source is missing, empty or unreadable, or its images cannot be used."""


class DeviceError(InputError, BackendUnavailableError):
    """A ``--device`` string is not one endoedge understands, or names a device a backend cannot use.

    It is an :class:`InputError` (the user typed it) and, for callers that caught the older
    per-backend errors, a :class:`BackendUnavailableError`.
    """


class SourceError(InputError):
    """A capture source (camera, stream, video file, image folder) failed while frames were read."""


class SourceStalled(SourceError):
    """A source delivered no frame within the stall timeout (unplugged card, dead stream)."""


class AcceleratorError(EndoedgeError):
    """A call into the GPU runtime failed while running (out of memory, driver or launch error)."""


class CudaError(AcceleratorError):
    """A CUDA runtime call failed (the message names the call and the CUDA error)."""
