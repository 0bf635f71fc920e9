"""Markers that skip with a reason when their requirement is absent, and shared fixtures."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Ultralytics writes a settings file under the home directory and may look online; keep it local.
os.environ.setdefault("YOLO_CONFIG_DIR", str(REPO / ".pytest_cache" / "ultralytics"))
os.environ.setdefault("YOLO_OFFLINE", "1")


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - any failure means no usable GPU
        return False


def _has_gstreamer() -> bool:
    # Through endoedge's own loader: it preloads libgcc_s before GStreamer brings libunwind.
    try:
        from endoedge.pipeline.gst import gst

        gst()
        return True
    except Exception:  # noqa: BLE001
        return False


def _has_tensorrt() -> bool:
    return importlib.util.find_spec("tensorrt") is not None and _has_cuda()


def _has_tensorrt_rtx() -> bool:
    return importlib.util.find_spec("tensorrt_rtx_bindings") is not None


SKIPS = {
    "gpu": (_has_cuda, "needs an NVIDIA GPU with CUDA (none on this machine)"),
    "trt": (_has_tensorrt, "needs TensorRT and an NVIDIA GPU (neither installable here)"),
    "trt_rtx": (_has_tensorrt_rtx, "needs TensorRT for RTX (tensorrt-rtx-cu12-* wheels; `make test` installs them "
                "where the platform has them)"),
    "gstreamer": (_has_gstreamer, "needs GStreamer with PyGObject (gi)"),
    "ultralytics": (
        lambda: importlib.util.find_spec("ultralytics") is not None,
        "needs the Ultralytics package (test-time peer; `make test` installs it)",
    ),
    "shared_data": (
        SHARED_DATA.is_dir,
        f"needs the shared data folder {SHARED_DATA} (absent in a user's clone)",
    ),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cache: dict[str, bool] = {}
    for item in items:
        for name, (check, reason) in SKIPS.items():
            if item.get_closest_marker(name) is not None:
                if name not in cache:
                    cache[name] = bool(check())
                if not cache[name]:
                    item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def _restore_rng():
    """Tests must not leak RNG state into each other (torchvision's prevent_leaking_rng)."""
    state = np.random.get_state()
    yield
    np.random.set_state(state)


@pytest.fixture(scope="session")
def sample_paths() -> list[Path]:
    from endoedge.data.samples import sample_frame_paths

    paths = sample_frame_paths()
    assert len(paths) == 10
    return paths


@pytest.fixture(scope="session")
def frames(sample_paths) -> list[np.ndarray]:
    """Real colonoscopy frames in the shapes deployments see: 1080p, Kvasir-like, portrait, small."""
    import cv2

    from endoedge.data.imageio import read_image

    full = read_image(sample_paths[2])
    return [
        full,  # 1920 x 1080 with OSD and black borders
        np.ascontiguousarray(full[60:1036, 420:1640]),  # 1220 x 976 crop of the field of view
        cv2.resize(full[100:1000, 500:1400], (576, 720)),  # portrait 576 x 720 (Kvasir-sized)
        cv2.resize(read_image(sample_paths[7]), (320, 240)),  # small, 4:3
    ]


@pytest.fixture(scope="session")
def ssdlite(tmp_path_factory):
    """The untrained, BN-calibrated demo SSDLite320 (3 classes), saved and exported."""
    return _exported("ssdlite320_mobilenet_v3_large", tmp_path_factory)


@pytest.fixture(scope="session")
def ssd300(tmp_path_factory):
    """The same for SSD300-VGG16."""
    return _exported("ssd300_vgg16", tmp_path_factory)


@pytest.fixture(scope="session")
def effssd(tmp_path_factory):
    """The same for SSDLite320-EfficientNet-Lite0 (random backbone: nothing is downloaded)."""
    return _exported("ssdlite320_efficientnet_lite0", tmp_path_factory)


def _exported(arch: str, tmp_path_factory):
    from endoedge.export import export_onnx
    from endoedge.models.checkpoint import load_checkpoint, save_checkpoint
    from endoedge.models.demo import make_demo_model

    d = tmp_path_factory.mktemp(arch)
    ckpt = save_checkpoint(d / f"{arch}.pt", make_demo_model(arch))
    loaded = load_checkpoint(ckpt)
    onnx_path = export_onnx(loaded, d / f"{arch}.onnx").path
    return loaded, ckpt, onnx_path


@pytest.fixture(scope="session")
def polyp_onnx(tmp_path_factory) -> Path:
    """The shipped polyp detector (SSDLite320-EfficientNet-Lite0, Kvasir) exported to ONNX."""
    from endoedge.export import export_onnx
    from endoedge.models.checkpoint import load_checkpoint

    weights = REPO / "src" / "endoedge" / "models" / "weights" / "polyp_ssdlite320_effl0_kvasir.pt"
    return export_onnx(load_checkpoint(weights), tmp_path_factory.mktemp("polyp") / "polyp.onnx").path


@pytest.fixture(scope="session")
def multitask(tmp_path_factory):
    """An untrained, BN-calibrated multi-task SSD (boxes + mask + triage, class "polyp"):
    ``(loaded, checkpoint whose name contains multitask, exported ONNX)``."""
    pytest.importorskip("torch")
    from endoedge.export import export_onnx
    from endoedge.models.checkpoint import load_checkpoint, save_checkpoint
    from endoedge.models.demo import make_demo_model

    d = tmp_path_factory.mktemp("multitask")
    model = make_demo_model("ssdlite320_efficientnet_lite0_multitask", ("polyp",))
    ckpt = save_checkpoint(d / "polyp_multitask_untrained.pt", model)
    loaded = load_checkpoint(ckpt)
    return loaded, ckpt, export_onnx(loaded, d / "polyp_multitask_untrained.onnx").path
