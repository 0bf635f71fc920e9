"""The shipped multi-task checkpoint: small float16, its mask / triage outputs, its operating point
and its terms beside it; it loads into the multi-task architecture and produces a mask and a frame
label on a real frame."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from endoedge.models.pretrained import POLYP_MULTITASK, shipped_checkpoint

REPO = Path(__file__).resolve().parents[2]


def test_multitask_checkpoint_is_small_fp16_with_operating_point_and_terms():
    torch = pytest.importorskip("torch")
    path = shipped_checkpoint(POLYP_MULTITASK)
    assert "multitask" in path.name
    assert path.stat().st_size <= 25_000_000
    payload = torch.load(path, map_location="cpu", weights_only=True)
    floats = [v for v in payload["state_dict"].values() if v.is_floating_point()]
    assert all(v.dtype == torch.float16 for v in floats)
    assert payload["class_names"] == ["polyp"]
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["frame_classes"] == ["normal", "unclear", "polyp"]
    assert payload["postprocess"]["score_threshold"] == pytest.approx(meta["operating_threshold"])
    assert meta["operating_point"]["target_sensitivity"] is not None
    for text in (payload["notes"], meta["terms"], (path.parent / "NOTICE.md").read_text(),
                 (REPO / "README.md").read_text()):
        assert "Kvasir-SEG" in text
        assert "CC BY-NC-SA 4.0" in text


def test_multitask_checkpoint_gives_mask_and_frame_label(sample_paths):
    pytest.importorskip("torch")
    import endoedge
    from endoedge.data.imageio import read_image

    frame = read_image(sample_paths[0])
    with endoedge.load(shipped_checkpoint(POLYP_MULTITASK), device="cpu") as det:
        assert det.spec.arch == "ssdlite320_efficientnet_lite0_multitask"
        d = det.detect(frame)
    assert d.mask is not None
    assert d.mask.shape == frame.shape[:2]
    assert d.frame_label in ("normal", "unclear", "polyp")
    assert set(d.frame_scores) == {"normal", "unclear", "polyp"}
