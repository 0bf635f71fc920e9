"""The exception hierarchy: one type per fault kind, all under EndoedgeError, old import paths kept."""

from __future__ import annotations

from endoedge import errors


def test_every_error_derives_from_endoedge_error():
    for name in dir(errors):
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == errors.__name__:
            assert issubclass(obj, errors.EndoedgeError), name


def test_fault_kinds_have_their_parents():
    assert issubclass(errors.SourceStalled, errors.SourceError)
    assert issubclass(errors.SourceError, errors.InputError)
    assert issubclass(errors.CudaError, errors.AcceleratorError)
    assert not issubclass(errors.CudaError, errors.BackendUnavailableError)  # a failure mid-run
    assert issubclass(errors.DeviceError, errors.InputError)


def test_moved_errors_stay_importable_from_their_old_modules():
    from endoedge.pipeline.capture import SourceStalled
    from endoedge.tensorrt.cuda_mem import CudaError

    assert SourceStalled is errors.SourceStalled
    assert CudaError is errors.CudaError
