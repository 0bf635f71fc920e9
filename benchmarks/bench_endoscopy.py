"""Cost of endoscopy frame cleaning (``FrameCleaner``) per 1920x1080 frame, per stage.

Configurations run round-robin in blocks (default 20 calls, the first 2 of each block untimed)
over the 10 bundled HoloHub frames, cycled (one video: the field of view is cached and
re-detected every ``redetect_every`` frames, 30 by default; the "re-detect every frame" row
shows the worst case, e.g. independent still images). Stages are timed by the cleaner itself
with ``time.perf_counter_ns`` on the calling thread (``FrameCleaner.timings``): ``fov`` =
analysis copy (bilinear 1/4 downscale) + border-change test (+ re-detection), ``osd`` = green-box
search + masked copy of the crop + box fill, ``denoise`` = median 5x5 (+ Sym4 wavelet). Raw
samples go to ``benchmarks/results/endoscopy_latency.json``; the summary replaces the marked
section of ``benchmarks/RESULTS.md``.

Usage: ``python benchmarks/bench_endoscopy.py [--runs 200] [--wavelet-runs 20]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from bench_detect import HERE, machine, pct, write_section

START, END = "<!-- endoscopy-latency:start -->", "<!-- endoscopy-latency:end -->"
STAGES = ("fov", "osd", "denoise", "total")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200, help="timed calls per configuration")
    ap.add_argument("--wavelet-runs", type=int, default=20, help="timed calls with the wavelet step")
    ap.add_argument("--block", type=int, default=20, help="calls per configuration before switching")
    ap.add_argument("--block-warmup", type=int, default=2, help="untimed calls at each block start")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)

    import cv2
    import pywt

    import endoedge
    from endoedge.data.imageio import read_image
    from endoedge.data.samples import sample_frame_paths
    from endoedge.endoscopy import EndoscopyConfig, FrameCleaner

    frames = [read_image(p) for p in sample_frame_paths()]
    configs = {
        "crop only": EndoscopyConfig(mask_osd=False),
        "crop + OSD mask (default)": EndoscopyConfig(),
        "crop + OSD mask, re-detect every frame": EndoscopyConfig(redetect_every=1),
        "crop + OSD mask + median 5x5": EndoscopyConfig(denoise="median"),
        "crop + OSD mask + median + Sym4 wavelet": EndoscopyConfig(denoise="median+wavelet"),
    }
    wanted = {n: (args.wavelet_runs if c.denoise == "median+wavelet" else args.runs) for n, c in configs.items()}
    cleaners = {n: FrameCleaner(c) for n, c in configs.items()}
    samples: dict[str, dict[str, list[float]]] = {n: {k: [] for k in STAGES} for n in configs}
    load_before = os.getloadavg()
    i = 0
    while any(len(samples[n]["total"]) < wanted[n] for n in configs):
        for name, cleaner in cleaners.items():
            if len(samples[name]["total"]) >= wanted[name]:
                continue
            for j in range(args.block):
                cleaner(frames[i % len(frames)])
                i += 1
                if j >= args.block_warmup and len(samples[name]["total"]) < wanted[name]:
                    for k, v in cleaner.timings.as_dict().items():
                        samples[name][k].append(v)
    load_after = os.getloadavg()

    env = {
        "machine": machine(),
        "python": sys.version.split()[0],
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "pywavelets": pywt.__version__,
        "endoedge": endoedge.__version__,
        "load_average_1min": [round(load_before[0], 2), round(load_after[0], 2)],
        "frames": "10 bundled HoloHub frames (1920x1080, OSD, black border), cycled",
        "crop": "1668x1004 field of view",
    }
    rows = []
    for name, s in samples.items():
        m = {k: statistics.median(v) for k, v in s.items()}
        rows.append(f"| {name} | {len(s['total'])} | {m['fov']:.2f} | {m['osd']:.2f} | {m['denoise']:.2f} | "
                    f"**{m['total']:.2f}** | {pct(s['total'], 90):.2f} |")
    lines = [
        START,
        f"Machine: {env['machine']}; Python {env['python']}, OpenCV {env['opencv']} "
        f"({env['opencv_threads']} threads), PyWavelets {env['pywavelets']}. 1-minute load average "
        f"{env['load_average_1min'][0]} before / {env['load_average_1min'][1]} after (other jobs "
        "share the machine when it is above ~0.5). Configurations round-robin in blocks of "
        f"{args.block} calls ({args.block_warmup} untimed at each block start) over the 10 bundled "
        "1920x1080 HoloHub frames; medians in ms (`FrameCleaner.timings`, perf_counter_ns). "
        "Command: `python benchmarks/bench_endoscopy.py`.",
        "",
        "| configuration | calls | fov p50 | osd p50 | denoise p50 | total p50 | total p90 |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Raw samples: `benchmarks/results/endoscopy_latency.json`.",
        END,
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "endoscopy_latency.json").write_text(json.dumps({"env": env, "samples_ms": samples}))
        write_section(text, START, END, "Endoscopy frame cleaning at 1080p (CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
