"""The shipped polyp detector: present, small, labelled with its licence, and as good as claimed."""

from __future__ import annotations

from pathlib import Path

import pytest

from endoedge.errors import ModelFormatError
from endoedge.models.pretrained import POLYP_DETECTOR, shipped_checkpoint

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"

KVASIR = SHARED_DATA / "kvasir-seg"


def test_shipped_checkpoint_is_small_fp16_and_says_its_licence():
    torch = pytest.importorskip("torch")
    path = shipped_checkpoint()
    assert path.stat().st_size <= 25_000_000
    payload = torch.load(path, map_location="cpu", weights_only=True)
    floats = [v for v in payload["state_dict"].values() if v.is_floating_point()]
    assert floats
    assert all(v.dtype == torch.float16 for v in floats)
    assert payload["class_names"] == ["polyp"]
    assert "Kvasir-SEG" in payload["notes"]
    assert "research and educational use only" in payload["notes"]
    notice = (path.parent / "NOTICE.md").read_text()
    assert "research and educational" in notice
    assert "Kvasir-SEG" in (REPO / "README.md").read_text()


def test_unknown_shipped_name_lists_the_known_ones():
    with pytest.raises(ModelFormatError, match=POLYP_DETECTOR):
        shipped_checkpoint("yolo_everything")


@pytest.mark.shared_data
@pytest.mark.slow
def test_shipped_detector_reaches_the_target_on_the_committed_val_split():
    """Issue 4's acceptance: COCO mAP@0.5 >= 0.85 at 320 px on data/splits/kvasir_seg_val.txt."""
    from endoedge.evaluation import evaluate_model

    report = evaluate_model(shipped_checkpoint(), KVASIR, split=REPO / "data/splits/kvasir_seg_val.txt",
                            backend="torch", device="cpu")
    assert report["n_images"] == 120
    assert report["coco"]["map50"] >= 0.85
