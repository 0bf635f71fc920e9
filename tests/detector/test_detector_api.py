"""Detector's public entry points for callers that pre-process themselves (batch) or change
thresholds (evaluation): ``detect_prepared``, ``with_thresholds`` and the read-only facts.

Oracle: ``detect_batch`` on the same frames (one shared chunk/pad/infer/decode path, so equal
to the bit), and a dynamic-batch detector for the padded fixed-batch path.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("torch")  # the fixtures export the demo models

import endoedge  # noqa: E402
from endoedge.detector import Detector  # noqa: E402
from endoedge.endoscopy import EndoscopyConfig  # noqa: E402
from endoedge.errors import EndoedgeError, InputError  # noqa: E402
from endoedge.preprocess import Preprocessor  # noqa: E402
from endoedge.runtime import get_backend_class  # noqa: E402
from endoedge.spec import ModelSpec, read_onnx_metadata  # noqa: E402

LOW = 0.01  # a score threshold that keeps many boxes of the untrained demo model


def assert_same(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
        assert a.labels == b.labels


def prepared(det: Detector, frames):
    batch, geoms = Preprocessor(det.preprocess_spec)(frames)
    return batch.copy(), geoms


@pytest.fixture(scope="module")
def det(ssdlite):
    with endoedge.load(ssdlite[2], device="cpu", score_threshold=LOW) as d:
        yield d


def test_detect_prepared_equals_detect_batch(det, frames):
    batch, geoms = prepared(det, frames)
    before = batch.copy()
    got = det.detect_prepared(batch, geoms)
    t = det.timings
    assert (t.preprocess, t.clean) == (0.0, 0.0)
    assert t.infer > 0
    assert t.postprocess > 0
    want = det.detect_batch(frames)
    assert sum(len(d) for d in want) > 0  # the comparison is not vacuous
    assert_same(got, want)
    np.testing.assert_array_equal(batch, before)  # the caller's batch is not modified


def test_fixed_batch_pads_the_last_chunk(ssdlite, det, frames):
    """max_batch 3 over 4 frames: two backend calls of exactly 3 rows (the second padded)."""
    onnx_path = ssdlite[2]
    spec = ModelSpec.from_metadata(read_onnx_metadata(onnx_path)).with_thresholds(score_threshold=LOW)
    backend = get_backend_class("onnxruntime")(onnx_path, device="cpu")
    backend.activate()
    backend.max_batch = 3  # as a model exported with a fixed batch of 3 reports it
    shapes: list[tuple[int, ...]] = []
    infer = backend.infer

    def spy(feed):
        shapes.append(feed[backend.input_name].shape)
        return infer(feed)

    backend.infer = spy  # type: ignore[method-assign]
    with Detector(spec, backend) as fixed:
        assert fixed.max_batch == 3
        batch, geoms = prepared(fixed, frames)
        got = fixed.detect_prepared(batch, geoms)
        assert [s[0] for s in shapes] == [3, 3]
        shapes.clear()
        assert_same(fixed.detect_batch(frames), got)
        assert [s[0] for s in shapes] == [3, 3]
        want = det.detect_batch(frames)  # dynamic batch: one call of 4
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


def test_detect_prepared_rejects_wrong_input(det, frames):
    batch, geoms = prepared(det, frames[:2])
    with pytest.raises(InputError, match="expected float32 N x 3 x 320 x 320") as err:
        det.detect_prepared(batch[:, :, :100], geoms)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="float32"):
        det.detect_prepared(batch.astype(np.float64), geoms)
    with pytest.raises(InputError, match="2 rows but 1 geometries"):
        det.detect_prepared(batch, geoms[:1])
    assert det.detect_prepared(batch[:0], []) == []


def test_read_only_facts(det):
    assert det.describe() == det.backend.describe()
    assert "onnxruntime" in det.describe()
    assert det.max_batch is None
    assert det.input_size == (320, 320) == det.preprocess_spec.input_size
    assert det.preprocess_spec is det.spec.preprocess
    assert det.describe() in repr(det)


def test_with_thresholds_changes_only_thresholds_and_shares_the_backend(ssdlite, frames):
    with endoedge.load(ssdlite[2], device="cpu", endoscopy=EndoscopyConfig()) as base:
        spec0 = base.spec
        view = base.with_thresholds(score_threshold=0.5, iou_threshold=0.3, max_detections=7)
        assert base.spec is spec0  # the original is untouched
        assert dataclasses.replace(view.spec, score_threshold=base.spec.score_threshold,
                                   iou_threshold=base.spec.iou_threshold,
                                   max_detections=base.spec.max_detections) == base.spec
        assert (view.spec.score_threshold, view.spec.iou_threshold, view.spec.max_detections) == (0.5, 0.3, 7)
        assert view.backend is base.backend
        assert view.decoder is base.decoder
        assert view.preprocessor is base.preprocessor
        assert view.cleaner is base.cleaner
        assert view.cleaner is not None
        assert view.timings is not base.timings
        kept = view.with_thresholds()  # None keeps every value
        assert kept.spec == view.spec
        low = base.with_thresholds(score_threshold=LOW, max_detections=100)
        many = low.detect_batch(frames)
        few = view.detect_batch(frames)
        for m, f in zip(many, few, strict=True):
            assert len(f) <= min(len(m), 7)
            assert (f.scores >= 0.5).all()
    # Closing the original releases the shared backend: the views cannot detect any more.
    assert not view.backend.is_active
    with pytest.raises(EndoedgeError, match="not active"):
        view.detect(frames[3])


@pytest.mark.parametrize(
    "kwargs",
    [{"score_threshold": 1.5}, {"iou_threshold": -0.1}, {"max_detections": 0}],
    ids=["score", "iou", "max_det"],
)
def test_bad_thresholds_raise_the_same_error_as_load(det, ssdlite, kwargs):
    with pytest.raises(InputError) as from_load:
        endoedge.load(ssdlite[2], device="cpu", **kwargs)
    with pytest.raises(InputError) as from_view:
        det.with_thresholds(**kwargs)
    assert str(from_view.value) == str(from_load.value)
    assert "\n" not in str(from_view.value)
    assert det.spec.score_threshold == LOW  # the detector itself is untouched
