"""Multi-task models through the stack: export, ORT vs torch, masks in source pixels, RLE, overlay.

Oracles: the torch module itself (its raw mask / frame outputs), ``cv2.resize`` of the mask to the
source size, pycocotools' ``mask.encode`` / ``decode``.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from endoedge.postprocess.mask import mask_to_source, paste, rle_decode, rle_encode


def test_onnx_describes_mask_and_frame_outputs(multitask):
    import onnx

    from endoedge.spec import ModelSpec, read_onnx_metadata

    _, _, onnx_path = multitask
    outputs = [o.name for o in onnx.load(str(onnx_path)).graph.output]
    assert outputs == ["bbox_regression", "cls_logits", "mask", "frame_logits"]
    spec = ModelSpec.from_metadata(read_onnx_metadata(onnx_path))
    assert spec.decoder_params["mask_output"] == "mask"
    assert spec.decoder_params["frame_output"] == "frame_logits"
    assert spec.decoder_params["frame_classes"] == ["normal", "unclear", "polyp"]


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_mask_and_frame_match_the_torch_module(multitask, frames, backend):
    torch = pytest.importorskip("torch")
    import endoedge
    from endoedge.preprocess import Preprocessor

    loaded, ckpt, onnx_path = multitask
    module = loaded.raw_heads()
    image = frames[2]  # portrait 576 x 720
    with endoedge.load(onnx_path if backend == "onnxruntime" else ckpt, backend=backend) as det:
        result = det.detect(image)
        batch, _ = Preprocessor(loaded.spec.preprocess)([image])
    with torch.no_grad():
        _, _, mask, frame_logits = (o.numpy() for o in module(torch.from_numpy(batch.copy())))
    h, w = image.shape[:2]
    expected = cv2.resize(mask[0, 0], (w, h), interpolation=cv2.INTER_LINEAR)
    assert result.mask is not None
    assert result.mask.shape == (h, w)
    assert result.mask.dtype == np.float32
    np.testing.assert_allclose(result.mask, expected, atol=2e-4)
    probs = np.exp(frame_logits[0] - frame_logits[0].max())
    probs /= probs.sum()
    assert result.frame_scores is not None
    np.testing.assert_allclose([result.frame_scores[c] for c in ("normal", "unclear", "polyp")], probs, atol=1e-4)
    assert result.frame_label == ("normal", "unclear", "polyp")[int(np.argmax(probs))]
    record = result.frame_record()
    assert json.loads(json.dumps(record))["frame_label"] == result.frame_label
    np.testing.assert_array_equal(rle_decode(record["mask"]), result.mask > 0.5)


def test_mask_follows_the_endoscopy_crop(multitask, frames):
    import endoedge
    from endoedge.spec.endoscopy import EndoscopyConfig

    _, _, onnx_path = multitask
    frame = frames[0]  # 1920 x 1080 with black borders and OSD: the cleaner crops the field of view
    with endoedge.load(onnx_path, endoscopy=EndoscopyConfig()) as det:
        result = det.detect(frame)
        cleaned, (x, y) = det.cleaner(frame)  # the same crop, from the same (fresh) state
    assert result.mask is not None
    assert result.mask.shape == frame.shape[:2]
    h, w = cleaned.shape[:2]
    assert (x, y, w, h) != (0, 0, frame.shape[1], frame.shape[0])  # something was cropped
    outside = np.ones(frame.shape[:2], bool)
    outside[y:y + h, x:x + w] = False
    assert result.mask[outside].max() == 0
    assert result.mask[~outside].max() > 0


def test_box_only_models_have_no_frame_outputs(effssd, frames):
    import endoedge

    _, _, onnx_path = effssd
    with endoedge.load(onnx_path) as det:
        result = det.detect(frames[3])
    assert result.mask is None
    assert result.frame_label is None
    assert result.frame_scores is None
    assert result.frame_record() == {}


def test_letterbox_mask_mapping_is_exact_on_a_linear_map():
    # a map linear in network pixels is reproduced exactly by bilinear sampling: the oracle is the
    # linear function at each source pixel centre mapped into the network input
    big, small = 320, 80
    centres = (np.arange(small) + 0.5) * big / small
    prob = (0.001 * centres[None, :] + 0.002 * centres[:, None]).astype(np.float32)
    hs, ws = 540, 960  # letterboxed: scale 1/3, padded 70 px top and bottom
    scale, pad = (1 / 3, 1 / 3), (0.0, 70.0)
    out = mask_to_source(prob, (big, big), scale, pad, (hs, ws))
    ys, xs = np.mgrid[0:hs, 0:ws]
    xn, yn = (xs + 0.5) * scale[0] + pad[0], (ys + 0.5) * scale[1] + pad[1]
    expected = 0.001 * xn + 0.002 * yn
    inner = (xn > centres[0]) & (xn < centres[-1]) & (yn > centres[0]) & (yn < centres[-1])
    np.testing.assert_allclose(out[inner], expected[inner], atol=2e-3)
    pasted = paste(out, (10, 20), (600, 1000))
    np.testing.assert_array_equal(pasted[20:560, 10:970], out)
    assert pasted[:20].max() == 0
    # written straight into the frame (the detector's path) = mapped, then pasted
    for offset, frame in (((10, 20), (600, 1000)), ((0, 0), (hs, ws)), ((50, 100), (600, 1000))):
        direct = mask_to_source(prob, (big, big), scale, pad, (hs, ws), offset=offset, frame_size=frame)
        np.testing.assert_allclose(direct, paste(out, offset, frame), atol=1e-3)  # the last: cut by the edge
        assert direct.dtype == np.float32
        assert direct.shape == frame
    stretched = mask_to_source(prob, (big, big), (1 / 3, 320 / 540), (0.0, 0.0), (hs, ws), offset=(5, 7),
                               frame_size=(560, 980))
    np.testing.assert_allclose(stretched, paste(mask_to_source(prob, (big, big), (1 / 3, 320 / 540), (0.0, 0.0),
                                                               (hs, ws)), (5, 7), (560, 980)), atol=1e-3)
    saturated = mask_to_source(np.ones((small, small), np.float32), (big, big), scale, pad, (hs, ws),
                               offset=(10, 20), frame_size=(600, 1000))
    assert saturated.max() <= 1.0
    assert saturated.min() == 0.0


def test_rle_matches_pycocotools():
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    cases = [rng.random((37, 53)) < p for p in (0.0, 0.02, 0.5, 0.98, 1.0)]
    blob = np.zeros((720, 1280), bool)
    cv2.ellipse(blob.view(np.uint8), (600, 300), (200, 120), 15, 0, 360, 1, -1)
    for m in [*cases, blob]:
        ours = rle_encode(m)
        ref = mask_api.encode(np.asfortranarray(m.astype(np.uint8)))
        assert ours["counts"] == ref["counts"].decode("ascii")
        assert ours["size"] == list(ref["size"])
        np.testing.assert_array_equal(mask_api.decode({"size": ours["size"], "counts": ours["counts"].encode()}), m)
        np.testing.assert_array_equal(rle_decode(ours), m)


def test_overlay_draws_contour_and_marks_unclear_frames():
    from endoedge.detector import Detections
    from endoedge.render import MASK_COLOR, draw_detections

    mask = np.zeros((240, 320), np.float32)
    cv2.circle(mask, (160, 120), 50, 1.0, -1)
    det = Detections(boxes=np.array([[100, 60, 220, 180]], np.float32), scores=np.array([0.8], np.float32),
                     class_ids=np.zeros(1, np.int64), labels=["polyp"], mask=mask, frame_label="unclear",
                     frame_scores={"normal": 0.1, "unclear": 0.7, "polyp": 0.2})
    clear = Detections(boxes=det.boxes, scores=det.scores, class_ids=det.class_ids, labels=det.labels,
                       mask=mask, frame_label="polyp", frame_scores={"normal": 0.1, "unclear": 0.2, "polyp": 0.7})
    a = draw_detections(np.zeros((240, 320, 3), np.uint8), det)
    b = draw_detections(np.zeros((240, 320, 3), np.uint8), clear)
    on_contour = (a == np.array(MASK_COLOR, np.uint8)).all(2)
    assert on_contour.sum() > 100  # the circle's outline
    ys, xs = np.nonzero(on_contour)
    radius = np.hypot(xs - 160, ys - 120)
    assert np.abs(radius - 50).max() < 4
    assert not np.array_equal(a, b)  # the unclear frame's boxes and labels look different


def test_overlay_draws_the_mask_only_inside_shown_boxes():
    """A mask blob with no box around it (e.g. on normal mucosa) is not drawn; with no box at all
    nothing of the mask is; the Detections keep the full mask."""
    from endoedge.detector import Detections
    from endoedge.render import MASK_COLOR, draw_detections

    mask = np.zeros((240, 320), np.float32)
    cv2.circle(mask, (80, 120), 30, 1.0, -1)  # inside the box
    cv2.circle(mask, (260, 120), 30, 1.0, -1)  # stray blob, no box
    boxed = Detections(boxes=np.array([[40, 80, 120, 160]], np.float32), scores=np.array([0.8], np.float32),
                       class_ids=np.zeros(1, np.int64), labels=["polyp"], mask=mask, frame_label="polyp",
                       frame_scores={"normal": 0.1, "unclear": 0.1, "polyp": 0.8})
    a = draw_detections(np.zeros((240, 320, 3), np.uint8), boxed)
    ys, xs = np.nonzero((a == np.array(MASK_COLOR, np.uint8)).all(2))
    assert len(xs) > 50
    assert xs.max() < 125  # only the boxed blob's outline
    empty = Detections(boxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32),
                       class_ids=np.zeros(0, np.int64), labels=[], mask=mask, frame_label="normal",
                       frame_scores={"normal": 0.9, "unclear": 0.05, "polyp": 0.05})
    b = draw_detections(np.zeros((240, 320, 3), np.uint8), empty)
    assert not (b == np.array(MASK_COLOR, np.uint8)).all(2).any()
    assert empty.mask is mask
