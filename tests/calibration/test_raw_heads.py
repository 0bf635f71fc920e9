"""Raw-head errors of a candidate's outputs against the reference's (calibration/raw_heads.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from endoedge.calibration.raw_heads import raw_head_errors


class _Fake:
    """A stand-in backend: ``infer`` returns ``scale * x + shift`` (and ``x`` as ``extra``)."""

    def __init__(self, scale: float = 1.0, shift: float = 0.0, name: str = "images", extra: bool = False):
        self.input_name, self.scale, self.shift, self.extra = name, scale, shift, extra

    def infer(self, feed):
        x = feed[self.input_name]
        out = {"head": self.scale * x + self.shift}
        if self.extra:
            out["only_ref"] = x
        return out


def _feeds():
    rng = np.random.default_rng(0)
    return [{"images": rng.normal(size=(2, 3, 4, 4)).astype(np.float32)} for _ in range(3)]


def test_identical_models_have_no_error():
    errs = raw_head_errors(_Fake(), _Fake(name="x"), _feeds())  # input names may differ
    e = errs["head"]
    assert (e.max_abs_err, e.mean_abs_err, e.rmse, e.nmse) == (0.0, 0.0, 0.0, 0.0)
    assert e.cosine == pytest.approx(1.0)


def test_known_offset_and_outputs_the_candidate_lacks():
    errs = raw_head_errors(_Fake(extra=True), _Fake(shift=0.5), _feeds())
    assert set(errs) == {"head"}
    e = errs["head"]
    assert e.max_abs_err == pytest.approx(0.5)
    assert e.mean_abs_err == pytest.approx(0.5)
    assert e.rmse == pytest.approx(0.5)
    ref = np.concatenate([f["images"].ravel() for f in _feeds()]).astype(np.float64)
    assert e.nmse == pytest.approx(0.25 / ref.var())
    assert e.cosine < 1.0


def test_constant_reference_gives_infinite_nmse():
    feeds = [{"images": np.ones((1, 2), np.float32)}]
    e = raw_head_errors(_Fake(), _Fake(scale=2.0), feeds)["head"]
    assert math.isinf(e.nmse)
    assert e.cosine == pytest.approx(1.0)
