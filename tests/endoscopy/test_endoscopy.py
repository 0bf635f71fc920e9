"""Endoscopy frame cleaning: field of view, OSD masking, denoising, caching, Detector integration.

Oracles do not come from the code under test: the bundled HoloHub frames are checked with
pixel criteria (what lies outside the crop is black border, the burned-in text and the teal
scope-position box are gone), synthetic masks are drawn with OpenCV and their bounding boxes
read from the drawing, denoising is judged by PSNR against the clean frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from endoedge.data.imageio import read_image
from endoedge.endoscopy import EndoscopyConfig, FrameCleaner, to_source
from endoedge.endoscopy.denoise import psnr, wavelet_denoise
from endoedge.errors import InputError, ModelFormatError
from endoedge.spec import PREFIX, ModelSpec, PreprocessSpec

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
NEAR_BLACK = 45  # grey level; the HoloHub border is ~20, tissue > 45 except a dark lumen


def _teal(bgr: np.ndarray) -> np.ndarray:
    """Pixels of the HoloHub scope-position box's teal (hue ~85, high saturation)."""
    return cv2.inRange(cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV), (75, 150, 100), (95, 255, 255)) > 0


def _octagon(x0: int, y0: int, x1: int, y1: int, c: int) -> np.ndarray:
    return np.array([[x0 + c, y0], [x1 - c, y0], [x1, y0 + c], [x1, y1 - c], [x1 - c, y1],
                     [x0 + c, y1], [x0, y1 - c], [x0, y0 + c]], np.int32)


@pytest.fixture(scope="module")
def holohub(sample_paths) -> list[np.ndarray]:
    return [read_image(p) for p in sample_paths]


@pytest.fixture(scope="module")
def tissue(holohub) -> np.ndarray:
    """A 1080p frame of tissue only (no border, no OSD), from the right part of a real frame."""
    return cv2.resize(holohub[2][100:1000, 700:1700], (1920, 1080), interpolation=cv2.INTER_LINEAR)


# -- field of view and OSD on real frames -----------------------------------------------------
def test_holohub_crop_excludes_border_and_osd(holohub):
    cleaner = FrameCleaner(EndoscopyConfig(redetect_every=1))
    for frame in holohub:
        view, (ox, oy) = cleaner(frame)
        assert cleaner.fov is not None
        assert cleaner.fov.found
        x0, y0, x1, y1 = cleaner.fov.rect
        assert (ox, oy) == (x0, y0)
        assert view.shape == (y1 - y0, x1 - x0, 3)
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        teal = _teal(frame)
        text = np.zeros(grey.shape, bool)
        text[0:200, 0:330] = grey[0:200, 0:330] > 150  # "Video 576i / 2,66 Mbit/s / 1 Drop / 1 Buf"
        assert text.sum() > 2000
        assert teal.sum() > 100_000
        # Nothing but border and OSD lies outside the crop: no tissue is lost.
        outside = np.ones(grey.shape, bool)
        outside[y0:y1, x0:x1] = False
        plain = outside & ~teal & ~text
        assert (grey[plain] <= NEAR_BLACK).mean() > 0.99
        # The crop is tight: 6 px inside each edge there is tissue, i.e. pixels brighter than the
        # border's flat grey (~20, read in the bottom-right corner). The mask's edge is a ~4 px
        # ramp; the dark lumen at the right rim is ~30.
        tissue = grey > np.median(grey[-40:, -40:]) + 5
        inner = tissue[y0 + 6 : y1 - 6, x0 + 6 : x1 - 6]
        for line in (inner[0], inner[-1], inner[:, 0], inner[:, -1]):
            assert line.sum() >= 100
        # Inside the crop, border shows only in the octagon's cut corners.
        assert (grey[y0:y1, x0:x1] <= NEAR_BLACK - 15).mean() < 0.12
        # After cleaning, the OSD text and the teal box are gone.
        canvas = np.zeros_like(frame)
        canvas[y0:y1, x0:x1] = view
        assert int((canvas[text].max(axis=1) > 60).sum()) == 0
        assert int(_teal(canvas).sum()) == 0
        assert len(cleaner.osd_boxes) == 1
        bx0, by0, bx1, by1 = cleaner.osd_boxes[0]
        assert bx0 < 120
        assert by1 > 1030
        assert 680 < by0 < 730
        assert 640 < bx1 < 720


def test_box_is_filled_with_a_tissue_colour_not_black(holohub):
    cleaner = FrameCleaner()
    view, (ox, oy) = cleaner(holohub[0])
    bx0, by0, bx1, by1 = cleaner.osd_boxes[0]
    fill = view[by0 - oy + 20, bx1 - ox - 20]
    assert fill[2] > fill[1] > 40  # reddish-brown: the frame's mean tissue colour


@pytest.mark.shared_data
def test_kvasir_frames_keep_their_field_of_view():
    paths = sorted((SHARED_DATA / "kvasir-seg" / "images").glob("*.jpg"))[:40:4]
    cleaner = FrameCleaner()
    for p in paths:
        frame = read_image(p)
        cleaner.reset()
        view, _ = cleaner(frame)
        h, w = frame.shape[:2]
        x0, y0, x1, y1 = cleaner.fov.rect
        # Kvasir-SEG images are already cut to the field of view (octagon touching the edges).
        assert (x1 - x0) >= 0.9 * w
        assert (y1 - y0) >= 0.9 * h
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        outside = np.ones(grey.shape, bool)
        outside[y0:y1, x0:x1] = False
        assert not outside.any() or (grey[outside] <= NEAR_BLACK).mean() > 0.95


# -- synthetic scope masks drawn on a real frame ----------------------------------------------
@pytest.mark.parametrize(
    ("name", "draw"),
    [
        ("octagon", lambda m: cv2.fillPoly(m, [_octagon(300, 60, 1650, 1030, 200)], 255)),
        ("octagon_wide", lambda m: cv2.fillPoly(m, [_octagon(40, 0, 1880, 1079, 300)], 255)),
        ("circle", lambda m: cv2.circle(m, (960, 540), 470, 255, -1)),
        ("circle_cut", lambda m: cv2.circle(m, (900, 560), 600, 255, -1)),
    ],
)
@pytest.mark.parametrize("border", [0, 22])
def test_drawn_mask_bounding_box_is_found(tissue, name, draw, border):
    mask = np.zeros(tissue.shape[:2], np.uint8)
    draw(mask)
    ys, xs = np.nonzero(mask)
    truth = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    frame = np.full_like(tissue, border)
    frame[mask > 0] = tissue[mask > 0]
    cleaner = FrameCleaner()
    view, offset = cleaner(frame)
    found = np.array(cleaner.fov.rect)
    assert np.abs(found - truth).max() <= 3, (name, found, truth)
    assert offset == (found[0], found[1])
    # Outside the drawn shape the cleaned view is 0 (up to the shape's anti-aliased rim).
    sub = mask[found[1] : found[3], found[0] : found[2]]
    outside = cv2.erode(255 - sub, np.ones((9, 9), np.uint8)) > 0
    assert view[outside].max(initial=0) == 0


def test_dark_frame_falls_back_to_whole_frame():
    frame = np.full((480, 640, 3), 10, np.uint8)
    cleaner = FrameCleaner()
    view, offset = cleaner(frame)
    assert offset == (0, 0)
    assert view.shape == frame.shape
    assert cleaner.fov is not None
    assert not cleaner.fov.found


# -- caching ----------------------------------------------------------------------------------
def test_fov_is_cached_and_redetected_on_change(holohub, tissue):
    cleaner = FrameCleaner(EndoscopyConfig(redetect_every=5))
    flags = []
    for frame in holohub[:8]:  # one video: the mask does not change
        cleaner(frame)
        flags.append(cleaner.timings.redetected)
    assert flags == [True, False, False, False, False, True, False, False]
    # A different scope mask of the same size is seen at once.
    mask = np.zeros(tissue.shape[:2], np.uint8)
    cv2.circle(mask, (960, 540), 400, 255, -1)
    other = np.zeros_like(tissue)
    other[mask > 0] = tissue[mask > 0]
    cleaner(other)
    assert cleaner.timings.redetected
    assert abs(cleaner.fov.rect[0] - 560) <= 3
    # ... and back to the video: the border turned bright, re-detect.
    cleaner(holohub[0])
    assert cleaner.timings.redetected
    assert abs(cleaner.fov.rect[0] - 120) <= 6
    # A new frame size re-detects.
    cleaner(np.ascontiguousarray(holohub[0][:, :1800]))
    assert cleaner.timings.redetected


def test_slots_keep_batch_outputs_apart(holohub):
    cleaner = FrameCleaner()
    a, _ = cleaner(holohub[0], slot=0)
    a_copy = a.copy()
    b, _ = cleaner(holohub[9], slot=1)
    assert not np.shares_memory(a, b)
    assert np.array_equal(a, a_copy)


def test_source_frame_is_not_modified(holohub):
    frame = holohub[1].copy()
    FrameCleaner(EndoscopyConfig(denoise="median"))(frame)
    assert np.array_equal(frame, holohub[1])


def test_crop_only_returns_a_view_and_disabled_is_identity(holohub):
    frame = holohub[0]
    view, _ = FrameCleaner(EndoscopyConfig(mask_osd=False))(frame)
    assert np.shares_memory(view, frame)
    same, offset = FrameCleaner(EndoscopyConfig(enabled=False))(frame)
    assert same is frame
    assert offset == (0, 0)


def test_mask_without_crop_keeps_frame_size(holohub):
    frame = holohub[0]
    view, offset = FrameCleaner(EndoscopyConfig(fov_crop=False))(frame)
    assert offset == (0, 0)
    assert view.shape == frame.shape
    assert view[:30].max() == 0
    assert int(_teal(view).sum()) == 0


def test_timings_per_stage(holohub):
    cleaner = FrameCleaner(EndoscopyConfig(denoise="median"))
    cleaner(holohub[0])
    t = cleaner.timings
    assert t.fov > 0
    assert t.osd > 0
    assert t.denoise > 0
    assert t.as_dict()["total"] == pytest.approx(t.fov + t.osd + t.denoise)


def test_to_source_adds_the_offset():
    boxes = np.array([[0, 0, 10, 20], [5.5, 6.5, 7.5, 8.5]], np.float32)
    out = to_source(boxes, (100, 30))
    assert out is boxes
    np.testing.assert_array_equal(out, [[100, 30, 110, 50], [105.5, 36.5, 107.5, 38.5]])


# -- denoising --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clean_and_noisy(holohub) -> tuple[np.ndarray, np.ndarray]:
    clean = np.ascontiguousarray(holohub[2][150:950, 700:1700])
    rng = np.random.default_rng(4)
    noisy = np.clip(clean + rng.normal(0.0, 12.0, clean.shape), 0, 255).astype(np.uint8)
    return clean, noisy


@pytest.mark.parametrize("mode", ["median", "median+wavelet"])
def test_denoise_raises_psnr(clean_and_noisy, mode):
    if "wavelet" in mode:
        pytest.importorskip("pywt")
    clean, noisy = clean_and_noisy
    cfg = EndoscopyConfig(fov_crop=False, mask_osd=False, denoise=mode)
    out, offset = FrameCleaner(cfg)(noisy)
    assert offset == (0, 0)
    assert out.shape == noisy.shape
    before, after = psnr(clean, noisy), psnr(clean, out)
    assert after > before + 8.0, (before, after)


@pytest.mark.parametrize("rule", ["bayes", "visu"])
def test_wavelet_alone_raises_psnr(clean_and_noisy, rule):
    pytest.importorskip("pywt")
    clean, noisy = clean_and_noisy
    out = np.empty_like(noisy)
    wavelet_denoise(noisy, out, rule=rule)
    assert psnr(clean, out) > psnr(clean, noisy) + 8.0


def test_unknown_wavelet_fails_when_the_cleaner_is_built():
    pytest.importorskip("pywt")
    with pytest.raises(InputError, match="unknown wavelet 'sym99'"):
        FrameCleaner(EndoscopyConfig(denoise="median+wavelet", wavelet="sym99"))


def test_wavelet_with_zero_threshold_reconstructs_exactly(clean_and_noisy):
    pytest.importorskip("pywt")
    _, noisy = clean_and_noisy
    odd = np.ascontiguousarray(noisy[:333, :517])  # odd sizes: the reconstruction is cropped back
    out = np.empty_like(odd)
    wavelet_denoise(odd, out, strength=0.0)
    assert np.abs(out.astype(int) - odd).max() <= 1


# -- config and metadata ----------------------------------------------------------------------
def test_config_parse_and_round_trip():
    cfg = EndoscopyConfig.parse("fov_crop,median,redetect_every=1,dark_threshold=35")
    assert cfg.fov_crop
    assert not cfg.mask_osd
    assert cfg.denoise == "median"
    assert cfg.redetect_every == 1
    assert cfg.dark_threshold == 35
    assert EndoscopyConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert EndoscopyConfig.parse("all,wavelet").denoise == "median+wavelet"


@pytest.mark.parametrize(
    "bad", ["fov_crop,sharpen", "denoise=gauss", "median_ksize=4", "bogus_key=1", "box_min_fill=2"]
)
def test_config_errors_are_input_errors(bad):
    with pytest.raises(InputError):
        EndoscopyConfig.parse(bad)


def _spec(endoscopy=None) -> ModelSpec:
    return ModelSpec("x", ("polyp",), PreprocessSpec((320, 320)), "yolov8", endoscopy=endoscopy)


def test_spec_metadata_round_trip_and_backward_compatibility():
    cfg = EndoscopyConfig(denoise="median", redetect_every=10)
    meta = _spec(cfg.to_dict()).to_metadata()
    assert json.loads(meta[PREFIX + "endoscopy"])["redetect_every"] == 10
    back = ModelSpec.from_metadata(meta)
    assert EndoscopyConfig.from_dict(back.endoscopy) == cfg
    plain = _spec().to_metadata()
    assert PREFIX + "endoscopy" not in plain  # files without it are written as before
    assert ModelSpec.from_metadata(plain).endoscopy is None
    bad = dict(meta)
    bad[PREFIX + "endoscopy"] = '{"denoise": "sharpen"}'
    with pytest.raises(ModelFormatError, match="endoscopy"):
        ModelSpec.from_metadata(bad)


# -- Detector integration ---------------------------------------------------------------------
def test_detector_default_has_no_cleaner(ssdlite):
    import endoedge

    with endoedge.load(ssdlite[2]) as det:
        assert det.cleaner is None
        det.detect(np.zeros((64, 64, 3), np.uint8))
        assert det.timings.clean == 0.0


def test_detector_with_cleaner_maps_boxes_to_source(ssdlite, holohub):
    import endoedge

    frame = holohub[4]
    cfg = EndoscopyConfig(denoise="median")
    with endoedge.load(ssdlite[2], endoscopy=cfg, score_threshold=0.05) as det, \
            endoedge.load(ssdlite[2], score_threshold=0.05) as plain:
        assert det.cleaner is not None
        got = det.detect(frame)
        assert det.timings.clean > 0
        assert det.timings.total > det.timings.infer
        # Oracle: clean by hand, detect on the cleaned view, shift by the offset.
        view, offset = FrameCleaner(cfg)(frame)
        ref = plain.detect(view)
        assert len(got) == len(ref) > 0
        np.testing.assert_allclose(got.boxes, ref.boxes + [*offset, *offset], atol=1e-3)
        x0, y0, x1, y1 = det.cleaner.fov.rect
        assert (got.boxes[:, [0, 2]] >= x0).all()
        assert (got.boxes[:, [0, 2]] <= x1).all()
        assert (got.boxes[:, [1, 3]] >= y0).all()
        assert (got.boxes[:, [1, 3]] <= y1).all()
        # A batch uses one cleaner slot per frame and gives the same boxes.
        batch = det.detect_batch([frame, holohub[5], frame])
        np.testing.assert_allclose(batch[0].boxes, got.boxes, atol=1e-3)
        np.testing.assert_allclose(batch[2].boxes, got.boxes, atol=1e-3)


def test_export_stores_endoscopy_and_load_applies_it(ssdlite, holohub, tmp_path, capsys):
    import endoedge
    from endoedge.cli import main
    from endoedge.spec import read_onnx_metadata

    out = tmp_path / "clean.onnx"
    rc = main(["export", str(ssdlite[1]), "-o", str(out), "--no-check", "--endoscopy", "all,median"])
    assert rc == 0, capsys.readouterr().err
    spec = ModelSpec.from_metadata(read_onnx_metadata(out))
    assert spec.endoscopy is not None
    assert spec.endoscopy["denoise"] == "median"
    with endoedge.load(out) as det:
        assert det.cleaner is not None
        assert det.cleaner.config.denoise == "median"
        det.detect(holohub[0])
        assert det.cleaner.fov.rect[0] == pytest.approx(120, abs=6)
    with endoedge.load(out, endoscopy=EndoscopyConfig(enabled=False)) as det:
        assert det.cleaner is None
    rc = main(["export", str(ssdlite[1]), "-o", str(out), "--no-check", "--endoscopy", "crop"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "unknown endoscopy option 'crop'" in err
    # the fix it names survives the CLI's credential redaction (it read "or key=***")
    assert "name=value (e.g. redetect_every=1)" in err
    assert "***" not in err
