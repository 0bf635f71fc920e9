"""Is an INT8 copy's loss a property of the Q/DQ file or of ONNX Runtime's CPU kernels (issue 14)?

ONNX Runtime's CPU provider does not execute a Q/DQ graph as written: its graph optimizations fuse
DequantizeLinear -> Conv -> QuantizeLinear into integer kernels and quantize each Conv's float bias
to int32 at the scale ``input_scale * weight_scale[c]``, clamping what does not fit. TensorRT keeps
Q/DQ biases float. This script scores the same copy both ways against its FP32 model on issue 14's
cross-centre sets (``bench_quant_xcentre``):

* ``optimized``: ONNX Runtime as endoedge runs it (``ORT_ENABLE_ALL``: integer kernels);
* ``qdq_float``: graph optimizations off (``ORT_DISABLE_ALL``): every QuantizeLinear/DequantizeLinear
  runs as the float operator it is and the bias is added in float, the semantics TensorRT's explicit
  quantization implements (up to accumulation order).

It also counts, statically, the Conv output channels whose float bias does not fit int32 at that
scale (``|bias| > (2^31 - 1) * input_scale * weight_scale[c]``: ONNX Runtime clamps them; channels
whose weights are all near zero have a tiny weight scale).

    python benchmarks/bench_int8_numerics.py --pair ssd=SSD.onnx,SSD.int8.onnx \\
        --pair yolov8n=Y.onnx,Y.int8.onnx --json benchmarks/results/int8_numerics.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_quant_xcentre as xc  # noqa: E402  (a sibling script, not a package)

MODES = ("optimized", "qdq_float")


def clamped_bias_channels(copy: Path) -> dict:
    """Conv output channels whose float bias exceeds the int32 range at input_scale * weight_scale."""
    import onnx

    from endoedge.calibration.bias_correction import _quantized_convs
    from endoedge.calibration.int32_bias import clamped_bias_layers

    model = onnx.load(str(copy), load_external_data=False)
    dims = {t.name: t.dims for t in model.graph.initializer}
    channels = sum(int(dims[c.input[2]][0]) for c in _quantized_convs(model) if len(c.input) > 2 and c.input[2] in dims)
    layers = [{"conv": x.conv, "channels": x.channels, "of": x.of, "max_abs_bias": round(x.max_abs_bias, 4)}
              for x in clamped_bias_layers(copy)]
    return {"channels": channels, "clamped": sum(x["channels"] for x in layers), "layers": layers}


def predictions(model: Path, paths: list[Path], mode: str) -> list:
    """``bench_quant_xcentre.predictions`` with ONNX Runtime's graph optimizations as ``mode`` says."""
    import onnxruntime as ort

    if mode == "optimized":
        return xc.predictions(model, paths)
    real = ort.InferenceSession

    def plain(path: Any, sess_options: Any = None, *args: Any, **kwargs: Any) -> Any:
        opts = sess_options or ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return real(path, opts, *args, **kwargs)

    ort.InferenceSession = plain
    try:
        return xc.predictions(model, paths)
    finally:
        ort.InferenceSession = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", action="append", required=True, metavar="NAME=FP32,COPY")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    pairs = {}
    for spec in args.pair:
        name, _, files = spec.partition("=")
        fp32, _, copy = files.partition(",")
        if not (name and fp32 and copy):
            sys.exit(f"--pair {spec!r}: expected NAME=FP32.onnx,COPY.onnx")
        for f in (fp32, copy):
            if not Path(f).is_file():
                sys.exit(f"--pair {name}: {f} is not a file")
        pairs[name] = (Path(fp32), Path(copy))
    if args.json.is_dir():
        sys.exit(f"--json {args.json} is a folder; give a file path")
    sets = xc.frame_sets()
    out: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "sets": {k: len(v) for k, v in sets.items()},
                 "pairs": {}}
    from endoedge.errors import EndoedgeError

    for name, (fp32, copy) in pairs.items():
        try:
            thr = xc.threshold_of(fp32)
            ref = {k: xc.predictions(fp32, v) for k, v in sets.items()}
            entry: dict = {"fp32": str(fp32), "copy": str(copy), "threshold": thr,
                           "bias": clamped_bias_channels(copy)}
        except EndoedgeError as err:
            sys.exit(f"--pair {name}: {err} (pairs already measured are in {args.json})")
        for mode in MODES:
            t = time.perf_counter()
            entry[mode] = {k: xc.compare(ref[k], predictions(copy, v, mode), thr) for k, v in sets.items()}
            entry[mode + "_s"] = round(time.perf_counter() - t, 1)
            print(name, mode, json.dumps({k: (s["box_agreement"], s["alarm_share_reference"], s["alarm_share_candidate"])
                                          for k, s in entry[mode].items()}), flush=True)
        print(name, "bias channels beyond int32:", entry["bias"]["clamped"], "of", entry["bias"]["channels"], flush=True)
        out["pairs"][name] = entry
        args.json.write_text(json.dumps(out, indent=1) + "\n")  # after each pair: a later failure keeps it


if __name__ == "__main__":
    main()
