"""The shipped capsule bleeding detector: small float16, its classes, threshold and terms beside
it, and (with the shared data) as good on the held-out WCEBleedGen frames as its metadata says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from endoedge.models.pretrained import CAPSULE_BLEEDING_DETECTOR, shipped_checkpoint

REPO = Path(__file__).resolve().parents[2]
WCE = REPO.parent / "shared" / "data" / "wcebleedgen" / "train"
VAL = REPO / "data" / "splits" / "wcebleedgen" / "wcebleedgen_val.txt"


def _meta(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


def test_capsule_checkpoint_is_small_fp16_with_threshold_and_terms():
    torch = pytest.importorskip("torch")
    path = shipped_checkpoint(CAPSULE_BLEEDING_DETECTOR)
    assert "bleed" in path.name
    assert "capsule" in path.name
    assert path.stat().st_size <= 25_000_000
    payload = torch.load(path, map_location="cpu", weights_only=True)
    floats = [v for v in payload["state_dict"].values() if v.is_floating_point()]
    assert floats
    assert all(v.dtype == torch.float16 for v in floats)
    assert payload["class_names"] == ["bleeding"]
    meta = _meta(path)
    assert meta["classes"] == ["bleeding"]
    assert payload["postprocess"]["score_threshold"] == pytest.approx(meta["operating_threshold"])
    assert meta["held_out"]["at_threshold"]["sensitivity"] >= 0.95
    for text in (payload["notes"], meta["attribution"], (path.parent / "NOTICE.md").read_text(),
                 (REPO / "README.md").read_text()):
        assert "WCEBleedGen" in text
        assert "CC BY 4.0" in text


def test_val_split_never_shares_a_stem_with_train():
    from endoedge.data.datasets import read_split

    train, val = read_split(VAL.parent)
    assert len(train) + len(val) == 1952
    assert not set(train) & set(val)


@pytest.mark.shared_data
@pytest.mark.slow
def test_capsule_detector_reaches_its_stated_held_out_numbers(tmp_path):
    """The stated numbers were measured in PyTorch; the exported ONNX on ONNX Runtime (what
    ``endoedge batch`` deploys, and 2.5x faster here) must read them too."""
    if not WCE.is_dir():
        pytest.skip(f"{WCE} is absent (shared data)")
    from endoedge.cli import main
    from endoedge.evaluation import evaluate_model

    path = shipped_checkpoint(CAPSULE_BLEEDING_DETECTOR)
    held = _meta(path)["held_out"]
    onnx_path = tmp_path / "bleeding.onnx"
    assert main(["export", str(path), "-o", str(onnx_path), "--no-check"]) == 0
    report = evaluate_model(onnx_path, WCE, split=VAL, fmt="yolo", class_names=["bleeding"],
                            backend="onnxruntime", device="cpu")
    assert report["n_images"] == held["frames"]
    assert report["auc"]["value"] == pytest.approx(held["frame_auc"], abs=0.005)
    assert report["coco"]["map50"] == pytest.approx(held["box_map50"], abs=0.01)
    assert report["frame"]["sensitivity"] >= 0.95 - 0.01
