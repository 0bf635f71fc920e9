"""Bad models and bad images: every user mistake ends in an EndoedgeError that says what to do."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

import endoedge  # noqa: E402
from endoedge.data.imageio import read_image, to_bgr8  # noqa: E402
from endoedge.errors import InputError, ModelFormatError, UnknownNameError  # noqa: E402
from endoedge.models import arch_names  # noqa: E402
from endoedge.models.checkpoint import load_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def bare_state_dict(ssdlite, tmp_path_factory):
    """The SSDLite demo weights saved as a bare torchvision state_dict (no endoedge header)."""
    path = tmp_path_factory.mktemp("bare") / "ssdlite_state_dict.pth"
    torch.save(ssdlite[0].model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def detector(ssdlite):
    """ONNX Runtime detector with half the demo's score threshold, so every frame has boxes."""
    with endoedge.load(ssdlite[2], device="cpu", score_threshold=ssdlite[0].spec.score_threshold / 2) as det:
        yield det


# -- checkpoints ----------------------------------------------------------------------------
def test_missing_checkpoint(tmp_path):
    missing = tmp_path / "nowhere" / "model.pt"
    with pytest.raises(ModelFormatError, match="does not exist"):
        load_checkpoint(missing)
    with pytest.raises(ModelFormatError, match="does not exist"):
        endoedge.load(missing)


def test_corrupt_checkpoint(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(np.random.default_rng(0).bytes(64 * 1024))
    with pytest.raises(ModelFormatError, match="not a PyTorch file") as info:
        load_checkpoint(path)
    assert "state_dict" not in str(info.value)  # not mistaken for a pickled model


def test_truncated_checkpoint(ssdlite, tmp_path):
    data = ssdlite[1].read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="cannot be read as a PyTorch file"):
        load_checkpoint(path)


def test_pickled_whole_module_asks_for_a_state_dict(ssdlite, tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(ssdlite[0].model, path)
    with pytest.raises(ModelFormatError, match=r"state_dict\(\)"):
        load_checkpoint(path)


def test_bare_state_dict_needs_arch_and_classes(ssdlite, bare_state_dict):
    loaded = ssdlite[0]
    with pytest.raises(ModelFormatError, match="--arch"):
        load_checkpoint(bare_state_dict)
    with pytest.raises(ModelFormatError, match="--arch"):
        load_checkpoint(bare_state_dict, arch=loaded.arch.name)  # classes still missing
    again = load_checkpoint(bare_state_dict, arch=loaded.arch.name, class_names=",".join(loaded.spec.class_names))
    assert again.spec.class_names == loaded.spec.class_names
    ref = loaded.model.state_dict()
    got = again.model.state_dict()
    assert got.keys() == ref.keys()
    for key, value in ref.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0)


def test_reference_script_checkpoint_with_model_key(ssdlite, tmp_path):
    """torchvision's reference scripts save {"model": state_dict, "optimizer": ...}."""
    loaded = ssdlite[0]
    path = tmp_path / "model_5.pth"
    torch.save({"model": loaded.model.state_dict(), "epoch": 5}, path)
    again = load_checkpoint(path, arch=loaded.arch.name, class_names=list(loaded.spec.class_names))
    assert again.spec.class_names == loaded.spec.class_names


def test_bare_state_dict_with_wrong_class_count(ssdlite, bare_state_dict):
    n = len(ssdlite[0].spec.class_names)
    wrong = ",".join(f"class{i}" for i in range(n + 2))
    with pytest.raises(ModelFormatError, match="classes") as info:
        load_checkpoint(bare_state_dict, arch=ssdlite[0].arch.name, class_names=wrong)
    assert "size mismatch" in str(info.value)


def test_bare_state_dict_with_unknown_arch(ssdlite, bare_state_dict):
    with pytest.raises(UnknownNameError) as info:
        load_checkpoint(bare_state_dict, arch="ssd512_resnet50", class_names="polyp")
    for name in arch_names():
        assert name in str(info.value)


def test_bare_state_dict_of_another_arch(ssdlite, bare_state_dict):
    other = next(n for n in arch_names() if n != ssdlite[0].arch.name)
    with pytest.raises(ModelFormatError, match=f"do not fit architecture '{other}'"):
        load_checkpoint(bare_state_dict, arch=other, class_names=list(ssdlite[0].spec.class_names))


@pytest.mark.parametrize("names", ["a,,b", "a,a", ""])
def test_bad_class_name_lists(bare_state_dict, names):
    with pytest.raises(ModelFormatError, match="class names"):
        load_checkpoint(bare_state_dict, arch="ssdlite320_mobilenet_v3_large", class_names=names)


# -- ONNX files -----------------------------------------------------------------------------
def test_onnx_without_metadata_suggests_decoder_flags(ssdlite, tmp_path):
    model = onnx.load(str(ssdlite[2]))
    del model.metadata_props[:]
    bare = tmp_path / "no_metadata.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(ModelFormatError, match="--decoder"):
        endoedge.load(bare, device="cpu")


def test_text_file_named_onnx(tmp_path):
    fake = tmp_path / "model.onnx"
    fake.write_text("this is a README, not an ONNX model\n")
    with pytest.raises(ModelFormatError, match="not a readable ONNX file"):
        endoedge.load(fake, device="cpu")


# -- images handed to detect ----------------------------------------------------------------
def _assert_inside(det, image):
    h, w = image.shape[:2]
    assert det.boxes.dtype == np.float32
    assert np.all(det.boxes >= 0)
    assert np.all(det.boxes[:, [0, 2]] <= w)
    assert np.all(det.boxes[:, [1, 3]] <= h)
    assert np.all(det.boxes[:, 2] >= det.boxes[:, 0])
    assert np.all(det.boxes[:, 3] >= det.boxes[:, 1])


def _assert_same(a, b):
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.class_ids, b.class_ids)


@pytest.mark.parametrize("layout", ["HxW", "HxWx1"])
def test_grayscale_images(detector, frames, layout):
    gray = cv2.cvtColor(frames[3], cv2.COLOR_BGR2GRAY)
    image = gray if layout == "HxW" else gray[..., None]
    result = detector.detect(image)
    _assert_inside(result, image)
    assert len(result) > 0
    # Same as the gray image replicated to three channels.
    _assert_same(result, detector.detect(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)))


def test_bgra_image_drops_alpha(detector, frames):
    image = cv2.cvtColor(frames[1], cv2.COLOR_BGR2BGRA)
    image[..., 3] = np.random.default_rng(0).integers(0, 256, image.shape[:2], dtype=np.uint8)
    result = detector.detect(image)
    _assert_inside(result, image)
    assert len(result) > 0
    _assert_same(result, detector.detect(frames[1]))


def test_uint16_image_is_rescaled(detector, frames):
    image16 = frames[3].astype(np.uint16) * 257  # the full 16-bit range, as a 16-bit PNG holds it
    result = detector.detect(image16)
    _assert_inside(result, image16)
    assert len(result) > 0
    _assert_same(result, detector.detect(frames[3]))


def test_non_contiguous_views_are_accepted(detector, frames):
    rgb = np.ascontiguousarray(frames[1][..., ::-1])  # e.g. a frame from PIL or a video decoder
    bgr_view = rgb[..., ::-1]  # negative channel stride
    assert bgr_view.strides[2] < 0
    _assert_same(detector.detect(bgr_view), detector.detect(frames[1]))
    crop = frames[0][::2, ::2]  # strided view
    _assert_inside(detector.detect(crop), crop)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda f: f.astype(np.float32) / 255, "dtype float32"),
        (lambda f: f[:0], "empty"),
        (lambda f: np.concatenate([f, f[..., :2]], axis=2), "shape"),
        (lambda f: f.tolist()[:4], "numpy array"),
        (lambda f: f[None], "shape"),
    ],
    ids=["float32", "empty", "5-channel", "list", "4-d"],
)
def test_unusable_images_raise_input_error(detector, frames, make, message):
    bad = make(frames[3])
    with pytest.raises(InputError, match=message):
        detector.detect(bad)
    with pytest.raises(InputError, match=message):
        to_bgr8(bad)


def test_one_bad_image_in_a_batch_names_its_index(detector, frames):
    with pytest.raises(InputError, match="image 1"):
        detector.detect_batch([frames[3], frames[3].astype(np.float64)])


# -- image files ----------------------------------------------------------------------------
def test_read_image_failures_have_distinct_messages(sample_paths, tmp_path):
    empty = tmp_path / "empty.png"
    empty.touch()
    data = sample_paths[0].read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.jpg"
    text.write_text("procedure notes, not a picture\n")
    missing = tmp_path / "missing.jpg"

    messages = {}
    for name, path in {"empty": empty, "truncated": truncated, "text": text, "missing": missing}.items():
        with pytest.raises(InputError) as info:
            read_image(path)
        messages[name] = str(info.value)
        assert str(path) in messages[name]
    assert "zero-byte" in messages["empty"]
    assert "truncated" in messages["truncated"]
    assert "JPEG" in messages["truncated"]
    assert "not an image" in messages["text"]
    assert "does not exist" in messages["missing"]
    assert len(set(m.replace(str(p), "") for m, p in zip(
        messages.values(), (empty, truncated, text, missing), strict=True))) == 4


def test_jpeg_without_end_marker_is_refused(sample_paths, tmp_path):
    """OpenCV 4.x decodes a cut-short JPEG into a grey-filled frame; read_image must not."""
    data = sample_paths[0].read_bytes()
    assert data.rstrip(b"\0").endswith(b"\xff\xd9")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) - 2])
    with pytest.raises(InputError, match="truncated"):
        read_image(cut)


def test_read_image_of_good_files(sample_paths, tmp_path):
    image = read_image(sample_paths[0])
    assert image.dtype == np.uint8
    assert image.ndim == 3
    assert image.shape[2] == 3
    # A 16-bit grayscale PNG comes back as 8-bit BGR with the same content.
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    png16 = tmp_path / "gray16.png"
    assert cv2.imwrite(str(png16), gray.astype(np.uint16) * 257)
    back = read_image(png16)
    np.testing.assert_array_equal(back, cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))


def test_wrong_input_size_is_a_one_line_input_error(ssdlite):
    from endoedge.errors import InputError
    from endoedge.runtime import get_backend_class

    with get_backend_class("onnxruntime")(ssdlite[2], device="cpu") as backend:
        batch = np.random.default_rng(0).random((1, 3, 200, 200), dtype=np.float32)
        with pytest.raises(InputError, match="--imgsz") as info:
            backend.infer({backend.input_name: batch})
    assert "\n" not in str(info.value)
