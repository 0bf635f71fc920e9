"""Output-aware INT8 weight rounding: the greedy rounding never does worse than round-to-nearest
(and finds the exhaustive optimum on small problems), the input patches reproduce torch's
convolution, and on a real Q/DQ copy the layers' outputs (measured with ONNX Runtime) move
towards FP32's while the file keeps TensorRT's Q/DQ rules."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from endoedge.calibration.qdq_check import check_qdq
from endoedge.calibration.weight_rounding import QMAX, greedy_round, patches

pytest.importorskip("onnxruntime")


def _err(w, q, cov):
    e = w - q
    return np.einsum("gcd,gde,gce->gc", e, cov, e)


def _exhaustive(w, cov):
    """Best floor/ceil choice per row by trying all 2^d."""
    lo, hi = np.floor(w), np.ceil(w)
    best = np.full(w.shape[:2], np.inf)
    for bits in itertools.product((0, 1), repeat=w.shape[-1]):
        q = np.where(np.array(bits, bool), hi, lo)
        best = np.minimum(best, _err(w, q, cov))
    return best


def test_greedy_round_beats_nearest_and_reaches_the_optimum_of_small_problems():
    rng = np.random.default_rng(0)
    g, rows, d = 6, 5, 6
    a = rng.normal(size=(g, d, 3 * d))
    cov = a @ a.transpose(0, 2, 1) / (3 * d) + 0.5  # correlated inputs (all share a positive mean part)
    w = rng.uniform(-20, 20, size=(g, rows, d))
    q, toggles = greedy_round(w, cov)
    near = np.round(w)
    assert toggles > 0
    assert np.all(np.abs(q - w) < 1)  # every weight on one of its two neighbouring grid points
    assert np.all(_err(w, q, cov) <= _err(w, near, cov) + 1e-12)
    opt = _exhaustive(w, cov)
    assert _err(w, q, cov).sum() <= 1.05 * opt.sum()  # greedy lands within 5% of the optimum here
    assert np.mean(np.isclose(_err(w, q, cov), opt)) > 0.7


def test_greedy_round_flips_one_of_two_equal_inputs_and_keeps_independent_ones_nearest():
    w = np.array([[[3.4, 7.4]]])  # both round down by 0.4: with identical inputs the errors add
    same = np.ones((1, 2, 2))
    q, _ = greedy_round(w, same)
    assert sorted(q[0, 0].tolist()) in ([3.0, 8.0], [4.0, 7.0])  # output error 0.8 -> 0.2
    q, toggles = greedy_round(w, np.eye(2)[None])  # independent inputs: nearest is optimal
    assert toggles == 0
    assert q[0, 0].tolist() == [3.0, 7.0]


def test_greedy_round_stays_in_the_int8_range():
    w = np.array([[[127.0, -126.6, 126.7]]])
    q, _ = greedy_round(w, np.ones((1, 3, 3)))
    assert q.max() <= QMAX
    assert q.min() >= -QMAX


@pytest.mark.parametrize(("kernel", "stride", "pad", "dil", "groups"),
                         [((3, 3), 1, 1, 1, 4), ((5, 5), 2, 2, 1, 8), ((1, 1), 1, 0, 1, 1), ((3, 3), 2, 1, 2, 2)])
def test_patches_reproduce_torch_convolution(kernel, stride, pad, dil, groups):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 8, 13, 11)).astype(np.float32)
    w = rng.normal(size=(8, 8 // groups, *kernel)).astype(np.float32)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=stride, padding=pad,
                                     dilation=dil, groups=groups).numpy()
    p = patches(x.astype(np.float64), kernel, [stride] * 2, [pad] * 4, [dil] * 2)  # N, C, k, L
    n, c, k, positions = p.shape
    p = p.reshape(n, groups, (c // groups) * k, positions)
    wg = w.reshape(groups, 8 // groups, -1).astype(np.float64)
    out = np.einsum("god,ngdl->ngol", wg, p).reshape(n, 8, *ref.shape[2:])
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_round_weights_through_quantize_moves_layer_outputs_towards_fp32_and_keeps_qdq_rules(
        ssdlite, int8, calib, tmp_path):
    import onnx

    from endoedge.calibration.quantize import quantize_int8
    from endoedge.calibration.weight_rounding import _layers
    from endoedge.errors import ExportError

    # the ``int8`` fixture's ranges: same scales, so the two differ by the rounding only
    res = quantize_int8(ssdlite[2], tmp_path / "wr.onnx", calib, method="minmax", weight_rounding=True,
                        bias_correction_images=2, cache_path=int8.path.parent / "ranges.json")
    rec = json.loads(res.metadata["endoedge.quant_weight_rounding"])
    assert rec["images"] == 2
    assert rec["layers"] > 10
    assert rec["flipped"] > 0
    assert rec["error_after"] < 0.8 * rec["error_before"]
    props = {p.key: p.value for p in onnx.load(str(res.path)).metadata_props}
    assert json.loads(props["endoedge.quant_weight_rounding"]) == rec

    before, after, ref = onnx.load(str(int8.path)), onnx.load(str(res.path)), onnx.load(str(ssdlite[2]))
    rep = check_qdq(res.path)
    assert rep.ok, rep.violations
    assert [n.op_type for n in after.graph.node] == [n.op_type for n in before.graph.node]
    # only float weights behind Q/DQ pairs change, each to s * q with q the floor or ceil of w / s
    fp32_tensors = {o for n in ref.graph.node for o in n.output} | {i.name for i in ref.graph.input}
    layers = {lay.weight: lay for lay in _layers(before, fp32_tensors)}
    old = {t.name: onnx.numpy_helper.to_array(t) for t in before.graph.initializer}
    changed = 0
    for t in after.graph.initializer:
        new = onnx.numpy_helper.to_array(t)
        if np.array_equal(new, old[t.name]):
            continue
        assert t.name in layers, t.name
        s = old[layers[t.name].scale].reshape(-1, *([1] * (new.ndim - 1)))
        q = new / s
        np.testing.assert_allclose(q, np.round(q), atol=1e-3)
        assert np.all(np.abs(q - old[t.name] / s) < 1 + 1e-3)
        changed += 1
    assert changed > 0.5 * rec["layers"]

    # an independent look (torch's convolution on FP32's own layer inputs, from ONNX Runtime, of
    # a calibration batch the rounding did not see): each layer's output error, less its per-channel
    # mean (bias correction's part), summed over the layers, is smaller than round-to-nearest's
    torch = pytest.importorskip("torch")
    from endoedge.calibration.bias_correction import probe_session

    feeds = list(calib)[1:2]
    lays = list(layers.values())
    lays = lays[:: max(1, len(lays) // 12)]  # a dozen layers spread over the depth keep this fast
    sources = list(dict.fromkeys(lay.source for lay in lays))
    sess = probe_session(ref, sources)
    inputs = [dict(zip(sources, sess.run(sources, f), strict=True)) for f in feeds]
    new_w = {t.name: onnx.numpy_helper.to_array(t) for t in after.graph.initializer}
    err = {"nearest": 0.0, "rounded": 0.0}
    for lay in lays:
        w = old[lay.weight]
        s = old[lay.scale].reshape(-1, *([1] * (w.ndim - 1)))
        attrs = {a.name: (list(a.ints) or a.i) for a in lay.node.attribute}
        kw = {"stride": tuple(attrs.get("strides", [1, 1])), "dilation": tuple(attrs.get("dilations", [1, 1])),
              "groups": int(attrs.get("group", 1))}
        pads = attrs.get("pads", [0, 0, 0, 0])

        def conv(weight, x, kw=kw, pads=pads):
            x = torch.nn.functional.pad(torch.from_numpy(x), (pads[1], pads[3], pads[0], pads[2]))
            return torch.nn.functional.conv2d(x, torch.from_numpy(weight.astype(np.float32)), **kw).numpy().astype(np.float64)


        for inp in inputs:
            x = inp[lay.source]
            fp = conv(w, x)
            for key, weight in (("nearest", np.clip(np.round(w / s), -127, 127) * s), ("rounded", new_w[lay.weight])):
                e = conv(weight.astype(np.float32), x) - fp
                e -= e.mean(axis=(0, 2, 3), keepdims=True)
                err[key] += float(np.mean(e**2))
    assert err["rounded"] < 0.8 * err["nearest"], err

    with pytest.raises(ExportError, match="needs the calibration images"):
        quantize_int8(ssdlite[2], tmp_path / "n.onnx", None, cache_path=tmp_path / "none.json",
                      weight_rounding=True)
