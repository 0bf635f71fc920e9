"""Capsule batch reader benchmark (issues 7, 18): ``endoedge batch`` vs the inference floor and a
naive per-image loop.

Both run the same ONNX (the shipped polyp detector exported with ``endoedge export``) over the
same >= 2,000 real images (Kvasir-SEG, repeated through symlinked folders when it has fewer),
alternating in one process, after one warm-up pass each (so the images are in the page cache
for both):

* naive: ``for f in files: det.detect(cv2.imread(f))`` (decode, pre-process, batch-1 inference,
  post-process, one after the other);
* batch: :func:`endoedge.batch.run_batch` (decode + pre-process in worker threads or processes
  overlapping batched inference, JSONL written and fsync-ed every 100 records).
* floor (issue 18): bare inference of the same model and batch size on frames decoded into RAM
  before the clock starts: ``Detector.detect_batch`` (pre-process + inference + post-process)
  per batch; ``floor`` is one ONNX Runtime session with every core, ``floor:N`` N sessions
  (cores/N threads each) taking batches concurrently, as ``endoedge batch --streams N`` does.
  The floor is the fastest of them; ``endoedge batch`` is reported as a fraction of it.

``--data`` picks the images: a folder of JPEGs (default Kvasir-SEG; e.g.
``../shared/data/wcebleedgen/train/images`` for 640 x 640 capsule frames).

Reports images/s (median over rounds, raw samples kept), the ratio, per-stage costs and the
projected minutes per 50,000-image study; ``uptime`` load before/after (the machine is shared).

Usage: ``python benchmarks/bench_batch.py --model /tmp/polyp.onnx [--images 2000] [--rounds 2]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
KVASIR = HERE.parent.parent / "shared" / "data" / "kvasir-seg" / "images"
RESULTS = HERE / "RESULTS.md"
START, END = "<!-- batch:start -->", "<!-- batch:end -->"
LABELS = {"floor": "floor: `Detector.detect_batch` on pre-decoded frames, 1 session",
          "floor:2": "floor: 2 sessions on pre-decoded frames (1 thread each)",
          "naive": "naive loop (`cv2.imread` + `Detector.detect`, ORT defaults)",
          "naive_nospin": "naive loop, ORT spin-wait off",
          "threads:1": "`endoedge batch --streams 1` (2 decode threads, 1 inference stream)",
          "threads:2": "`endoedge batch` (defaults: 2 decode threads, 2 inference streams)",
          "processes:1": "`endoedge batch --decode processes --streams 1`",
          "processes:2": "`endoedge batch --decode processes` (2 decode processes, 2 streams)"}


def make_study(n: int, root: Path, data: Path = KVASIR) -> Path:
    """``n`` images of ``data`` as symlinks in ``root/repK/`` folders (distinct paths, same files)."""
    files = sorted(data.glob("*.jpg"))
    if not files:
        raise SystemExit(f"no JPEG images in {data}")
    for i in range(n):
        rep = root / f"rep{i // len(files)}"
        rep.mkdir(parents=True, exist_ok=True)
        f = files[i % len(files)]
        (rep / f.name).symlink_to(f)
    return root


def naive(model: Path, files: list[Path], threads: int, spin: bool = True) -> dict:
    import cv2

    import endoedge

    with endoedge.load(model, intra_op_threads=threads, spin=spin) as det:
        read = pre = inf = post = 0.0
        t0 = time.perf_counter()
        for f in files:
            t1 = time.perf_counter()
            img = cv2.imread(str(f))
            read += time.perf_counter() - t1
            det.detect(img)
            pre, inf, post = pre + det.timings.preprocess, inf + det.timings.infer, post + det.timings.postprocess
        wall = time.perf_counter() - t0
    n = len(files)
    return {"images_per_s": n / wall, "wall_s": wall,
            "ms_per_image": {"decode": read * 1e3 / n, "preprocess": pre / n, "infer": inf / n, "postprocess": post / n}}


def floor(model: Path, images: list[np.ndarray], batch_size: int, streams: int, threads: int) -> dict:
    """Bare inference on pre-decoded frames: ``streams`` sessions take batches from one queue."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    import endoedge

    per = threads or max(1, (os.cpu_count() or 1) // streams)
    dets = [endoedge.load(model, intra_op_threads=per, spin=streams == 1) for _ in range(streams)]
    chunks = [images[i: i + batch_size] for i in range(0, len(images), batch_size)]
    try:
        for d in dets:
            d.detect_batch(chunks[0])
        t0 = time.perf_counter()
        if streams == 1:
            for c in chunks:
                dets[0].detect_batch(c)
        else:
            with ThreadPoolExecutor(streams) as pool:
                list(pool.map(lambda k: [dets[k].detect_batch(c) for c in chunks[k::streams]], range(streams)))
        wall = time.perf_counter() - t0
    finally:
        for d in dets:
            d.close()
    return {"images_per_s": len(images) / wall, "wall_s": wall, "ms_per_image": {}}


def batch(model: Path, study: Path, out: Path, *, batch_size: int, workers: int, decode: str, threads: int,
          streams: int = 1) -> dict:
    from endoedge.batch import BatchConfig, run_batch

    s = run_batch(BatchConfig(study, [str(model)], out, overwrite=True, progress=False, batch_size=batch_size,
                              workers=workers, decode=decode, intra_op_threads=threads, streams=streams))
    r = s["run"]
    return {"images_per_s": r["images_per_s"], "wall_s": r["wall_s"], "ms_per_image": r["stage_ms_per_image"],
            "counts": s["counts"]}


def render(out: dict) -> str:
    """The RESULTS.md section of a run."""
    med, rows = out["median_images_per_s"], []
    for v, ips in med.items():
        raw = ", ".join(f"{x['images_per_s']:.1f}" for x in out["samples"][v])
        ms = out["samples"][v][0]["ms_per_image"]
        stages = ", ".join(f"{k} {ms[k]:.1f}" for k in ("decode", "preprocess", "infer", "postprocess") if k in ms)
        ratio = ips / med["naive"] if "naive" in med else float("nan")
        floor_ratio = out.get("fraction_of_floor", {}).get(v, float("nan"))
        rows.append(f"| {LABELS.get(v, v)} | **{ips:.1f}** ({raw}) | {floor_ratio:.2f}x | {ratio:.2f}x | "
                    f"{50000 / ips / 60:.0f} | {stages} |")
    return "\n".join([
        f"Command: `{out['command']}`; raw samples in `benchmarks/results/batch.json`.",
        "",
        f"{out['machine']}, {out['date']}; {out['images']} images of `{out.get('data', 'kvasir-seg/images')}` "
        "(paths over its files, page-cached), the model exported to ONNX, ONNX Runtime CPU, batch size "
        f"{out.get('batch_size', 8)}. Floor = the fastest bare-inference variant on pre-decoded frames. "
        "Medians over alternating "
        "rounds (raw per round in brackets). The machine was shared with other sessions: "
        f"load before `{out['uptime_before'].split('load average: ')[-1]}`, after "
        f"`{out['uptime_after'].split('load average: ')[-1]}` (1/5/15-min averages on 2 cores).",
        "",
        "| variant | images/s | vs floor | vs naive | min per 50,000 | ms per image (first round; batch: "
        "decode/preprocess summed over workers, infer over streams) |",
        "|---|---|---|---|---|---|",
        *rows,
    ])


def write_results(section: str, start: str = START, end: str = END,
                  title: str = "Capsule batch reader (issue 7)") -> None:
    """Replace the ``start``..``end`` block of RESULTS.md with ``section`` (appended under
    ``title`` when the block is not there yet)."""
    text = RESULTS.read_text()
    block = f"{start}\n{section}\n{end}"
    if start in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + f"\n\n## {title}\n\n" + block + "\n"
    RESULTS.write_text(text)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--data", type=Path, default=KVASIR, help="folder of JPEG images (default Kvasir-SEG)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = one per core)")
    ap.add_argument("--variants", default="naive,threads:2,processes:2,threads:1,naive_nospin",
                    help="comma-separated: naive (default Detector), naive_nospin (ORT spin off, as "
                    "batch uses), threads, processes (batch decode workers), with :N = N inference streams")
    ap.add_argument("--warmup-images", type=int, default=100)
    ap.add_argument("--json", type=Path, default=HERE / "results" / "batch.json")
    ap.add_argument("--write-results", action="store_true", help="update the section in RESULTS.md")
    ap.add_argument("--render", type=Path, help="only render RESULTS.md from a saved JSON")
    args = ap.parse_args()
    if args.render:
        write_results(render(json.loads(args.render.read_text())))
        return
    variants = args.variants.split(",")
    load_before = uptime()
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        study = make_study(args.images, Path(tmp) / "study", args.data)
        warm = make_study(args.warmup_images, Path(tmp) / "warm", args.data)
        files = sorted(p for p in study.rglob("*.jpg"))
        decoded = [cv2.imread(str(f)) for f in files] if any(v.startswith("floor") for v in variants) else []
        samples: dict[str, list[dict]] = {v: [] for v in variants}

        def run(v: str, root: Path, fs: list[Path]) -> dict:
            if v.startswith("floor"):
                imgs = decoded if root == study else [cv2.imread(str(f)) for f in fs]
                return floor(args.model, imgs, args.batch_size, int(v.partition(":")[2] or 1), args.threads)
            if v in ("naive", "naive_nospin"):
                return naive(args.model, fs, args.threads, spin=v == "naive")
            decode, _, streams = v.partition(":")
            return batch(args.model, root, Path(tmp) / f"{decode}.jsonl", batch_size=args.batch_size,
                         workers=args.workers, decode=decode, threads=args.threads, streams=int(streams or 1))

        for v in variants:  # warm-up: page cache, ONNX Runtime, thread pools
            run(v, warm, sorted(warm.rglob("*.jpg")))
        for rnd in range(args.rounds):
            for v in variants if rnd % 2 == 0 else variants[::-1]:
                res = run(v, study, files)
                samples[v].append(res)
                print(f"round {rnd} {v}: {res['images_per_s']:.2f} img/s ({res['wall_s']:.1f} s)", flush=True)
    load_after = uptime()
    from endoedge.stats import env_info

    env = env_info()
    med = {v: float(np.median([s["images_per_s"] for s in samples[v]])) for v in variants}
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{env['cpu']}, {env['logical_cores']} logical CPUs",
        "versions": env["versions"],
        "command": "python benchmarks/bench_batch.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("json", "write_results", "render")),
        "images": args.images, "data": str(args.data).split("shared/data/")[-1], "batch_size": args.batch_size,
        "uptime_before": load_before, "uptime_after": load_after,
        "median_images_per_s": med,
        "speedup_vs_naive": {v: med[v] / med["naive"] for v in variants if "naive" in med and v != "naive"},
        "floor_images_per_s": max((med[v] for v in variants if v.startswith("floor")), default=None),
        "speedup_vs_naive_nospin": {v: med[v] / med["naive_nospin"] for v in variants
                                    if "naive_nospin" in med and v != "naive_nospin"},
        "minutes_per_50k": {v: 50000 / med[v] / 60 for v in variants},
        "samples": samples,
    }
    if out["floor_images_per_s"]:
        out["fraction_of_floor"] = {v: med[v] / out["floor_images_per_s"] for v in variants}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    if args.write_results:
        write_results(render(out))
    print(json.dumps({k: out[k] for k in ("median_images_per_s", "speedup_vs_naive", "fraction_of_floor",
                                          "minutes_per_50k", "uptime_before", "uptime_after") if k in out}, indent=1))
    for v in variants:
        print(f"{LABELS.get(v, v)}: {med[v]:.1f} img/s -> a 50,000-frame study in {50000 / med[v] / 60:.1f} min"
              + (f" ({out['fraction_of_floor'][v]:.2f}x the floor)" if "fraction_of_floor" in out else ""))


if __name__ == "__main__":
    main()
