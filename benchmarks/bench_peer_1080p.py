"""endoedge vs Ultralytics on a 1080p clip, same YOLOv8n ONNX, same ONNX Runtime (issue 19).

Variants, timed in turns (one of each per repeat, so background load hits all alike):

* ``endoedge_prescale``: ``endoedge run`` path with detections only (``--prescale auto``): frames
  scaled to the model input in GStreamer before the BGR conversion;
* ``endoedge_full``: the same with full-size BGR frames (``--prescale off``, the old path);
* ``endoedge_h264``: full-size frames plus annotated H.264 video out (``--video``);
* ``ultralytics``: ``YOLO(onnx).predict(clip, stream=True, imgsz=320)``.

Wall time per frame = whole run / frames (pipeline start included, after one untimed warm-up run
of each). CPU time per frame = the process's user + system CPU time over the run / frames (all
threads: GStreamer's, ONNX Runtime's, Python's): the work each variant does per frame, which a
loaded machine (other jobs on the same cores) disturbs much less than wall time. The YOLOv8n is built from Ultralytics' yaml (random weights, BN calibrated on the bundled
frames, class logits tempered; the tests' ``build_ultralytics_onnx``) and exported by Ultralytics:
nothing is downloaded. The clip: the 10 bundled 1920x1080 HoloHub frames x ``--loops``, H.264.

Usage: ``nice -n 10 python benchmarks/bench_peer_1080p.py [--loops 15] [--repeats 3]``
Results: ``benchmarks/results/peer_1080p.json`` and the marked section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
START, END = "<!-- peer1080:start -->", "<!-- peer1080:end -->"


def make_clip(path: Path, loops: int) -> int:
    from endoedge.data.imageio import read_image
    from endoedge.data.samples import sample_frame_paths
    from endoedge.pipeline.writer import VideoWriter

    frames = [read_image(p) for p in sample_frame_paths()]
    writer = VideoWriter(path, 30)
    for _ in range(loops):
        for f in frames:
            writer.write(f)
    writer.close()
    return loops * len(frames)


def run_endoedge(det, clip: Path, *, prescale: bool, video: Path | None = None) -> tuple[int, float]:
    from endoedge.pipeline.prescale import prescale_pipeline
    from endoedge.pipeline.runner import Pipeline, RunOptions
    from endoedge.pipeline.sources import make_capture_factory, parse_source
    from endoedge.pipeline.writer import VideoWriter

    spec = parse_source(str(clip))
    make, run_det = make_capture_factory(spec, live=False, stall_timeout_s=20, loop=False, jetson="off"), det
    if prescale:
        pre = prescale_pipeline(spec, det, live=False, stall_timeout_s=20, jetson="off")
        assert pre is not None
        make, run_det = pre.make_capture, pre.detector
    sink = VideoWriter(video, 30) if video is not None else None
    t0 = time.perf_counter()
    pipe = Pipeline(run_det, make, RunOptions(live=False, warmup=0), video=sink)
    stats = pipe.run()
    if sink is not None:
        sink.close()
    return stats.frames, time.perf_counter() - t0


def run_ultralytics(yolo, clip: Path) -> tuple[int, float, float]:
    t0 = time.perf_counter()
    n, infer = 0, []
    for res in yolo.predict(str(clip), stream=True, imgsz=320, verbose=False, save=False):
        n += 1
        infer.append(res.speed["inference"])
    return n, time.perf_counter() - t0, float(np.median(infer))


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loops", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "peer_1080p.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        from bench_pipeline import build_peer_onnx
        from ultralytics import YOLO

        import endoedge
        from endoedge.stats import env_info

        clip = tmp / "clip1080.mp4"
        n_frames = make_clip(clip, args.loops)
        onnx = build_peer_onnx(tmp)
        yolo = YOLO(str(onnx), task="detect")
        names = ("endoedge_prescale", "endoedge_full", "endoedge_h264", "ultralytics")
        rows: dict[str, list[float]] = {k: [] for k in (*names, *(f"{n}_cpu" for n in names), "ultralytics_infer")}
        with endoedge.load(onnx, device="cpu") as det:
            run_endoedge(det, clip, prescale=True)  # warm-up runs (untimed)
            run_ultralytics(yolo, clip)
            for r in range(args.repeats):
                for name in names:
                    c0 = _cpu_s()
                    if name == "ultralytics":
                        n, wall, inf = run_ultralytics(yolo, clip)
                        rows["ultralytics_infer"].append(inf)
                    else:
                        n, wall = run_endoedge(det, clip, prescale=name == "endoedge_prescale",
                                               video=tmp / f"o{r}.mp4" if name == "endoedge_h264" else None)
                    rows[name].append(1e3 * wall / n)
                    rows[f"{name}_cpu"].append(1e3 * (_cpu_s() - c0) / n)
                    print(f"repeat {r} {name}: {1e3 * wall / n:.2f} ms/frame wall, "
                          f"{rows[f'{name}_cpu'][-1]:.2f} CPU-ms/frame ({n} frames; load {os.getloadavg()[0]:.1f})",
                          flush=True)
    med = {k: float(np.median(v)) for k, v in rows.items()}
    u = med["ultralytics"]
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "env": env_info(), "frames": n_frames,
              "clip": "1920x1080 H.264, the 10 bundled HoloHub frames looped", "model": "YOLOv8n (Ultralytics yaml, "
              "random weights, BN-calibrated), Ultralytics ONNX export, imgsz 320",
              "ms_per_frame_median": med,
              "ratio_vs_ultralytics": {k: med[k] / u for k in names[:3]},
              "cpu_ratio_vs_ultralytics": {k: med[f"{k}_cpu"] / med["ultralytics_cpu"] for k in names[:3]},
              "load_average_end": os.getloadavg(),
              "samples_ms_per_frame": rows, "command": " ".join(sys.argv)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("ms_per_frame_median", "ratio_vs_ultralytics",
                                             "cpu_ratio_vs_ultralytics")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
